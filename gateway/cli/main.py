"""The ``citytwin`` command.

Exit codes: 0 success, 1 failure at run time (e.g. the demo's checks failed), 2 bad usage
or an invalid configuration (printed as ``file:line: path: message``, never a traceback),
141 the reader of stdout went away (``citytwin config schema | head``), as for a process
ended by SIGPIPE, with nothing printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from citytwin.gateway.config import ConfigError, GatewayConfig
from citytwin.gateway.logs import setup_logging

log = logging.getLogger("citytwin")


T = TypeVar("T")


def _run_async(main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def _stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT/SIGTERM; installed before anything starts, so an early signal still stops cleanly."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def _until_signal(work: Coroutine[Any, Any, int]) -> int:
    """Run ``work`` until it ends or SIGINT/SIGTERM arrives (then cancel it and return 0)."""
    stop = _stop_on_signals()
    waiter = asyncio.create_task(stop.wait())
    job = asyncio.create_task(work)
    await asyncio.wait({waiter, job}, return_when=asyncio.FIRST_COMPLETED)
    if job.done():
        waiter.cancel()
        return job.result()
    job.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await job
    return 0


def _print_config_error(exc: ConfigError) -> int:
    for issue in exc.issues:
        print(str(issue), file=sys.stderr)
    print(f"{len(exc.issues)} error(s); nothing was started", file=sys.stderr)
    return 2


def _exit_cleanly(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def add_override_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                        help="override one setting of the file, e.g. hub.url=mqtt://broker:1883 or "
                             "devices[0].poll_period=2 (repeatable; wins over CITYTWIN__HUB__URL-style "
                             "environment variables, which win over the file)")


def _overrides(args: argparse.Namespace) -> list[Any] | int:
    """The environment's overrides, then the ``--set`` ones; 2 after printing a malformed one."""
    from citytwin.gateway import overrides

    try:
        given = overrides.from_set(args.overrides)
    except ValueError as exc:
        print(f"citytwin {args.command}: {exc}", file=sys.stderr)
        return 2
    overrides.use(given)  # a reload of the file applies them again
    return overrides.active()


def cmd_run(args: argparse.Namespace) -> int:
    # a stop requested while the modules load (seconds on a slow box) is a clean stop too: nothing
    # has started yet; once the loop runs, its own handlers take over and shut down in order
    signal.signal(signal.SIGTERM, _exit_cleanly)
    from citytwin.gateway.app import Gateway
    from citytwin.gateway.bootstrap import prepare_file
    from citytwin.gateway.remoteconfig import restore

    overrides = _overrides(args)
    if isinstance(overrides, int):
        return overrides
    try:
        config, specs = prepare_file(args.config, overrides)
    except ConfigError as exc:
        return _print_config_error(exc)
    # the last good config the hub sent, if any, runs instead (its locked sections from the file)
    config, specs, active = restore(Path(args.config), config, specs)

    async def main() -> int:
        stop = _stop_on_signals()
        hup = asyncio.Event()  # SIGHUP reloads the config (installed early: its default would kill us)
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, hup.set)
        gw = Gateway(config, specs, Path(args.config), settle_heap=True)
        gw.remote.active = active
        async with gw as gateway:

            async def reload_on_hup() -> None:
                while True:
                    await hup.wait()
                    hup.clear()
                    await gateway.reload()

            reloader = asyncio.create_task(reload_on_hup(), name="sighup")
            await stop.wait()
            reloader.cancel()
            await asyncio.gather(reloader, return_exceptions=True)
        return 0

    return _run_async(main())


def cmd_config_check(args: argparse.Namespace) -> int:
    from citytwin.gateway.bootstrap import prepare_file

    overrides = _overrides(args)
    if isinstance(overrides, int):
        return overrides
    try:
        config, specs = prepare_file(args.file, overrides)
    except ConfigError as exc:
        return _print_config_error(exc)
    points = sum(len(s.points) for s in specs.values())
    print(f"{args.file}: OK: gateway {config.gateway.id}, {len(specs)} device(s), {points} bound properties")
    for override in overrides:
        print(f"  {override.shown_path} = {override.shown_value()}  (from {override.origin})")
    from citytwin.gateway.templates_config import template_counts

    counts = template_counts(config.devices)
    if set(counts) != {""}:
        for name, count in counts.items():
            print(f"  {f'template {name}' if name else 'written out in full'}: {count} device(s)")
    return 0


def cmd_config_schema(args: argparse.Namespace) -> int:
    print(json.dumps(GatewayConfig.model_json_schema(), indent=2))
    return 0


def run_until_signal(work: Callable[[], Awaitable[None]]) -> int:
    """Run a long-lived coroutine (a simulator) until SIGINT/SIGTERM."""

    async def main() -> int:
        await work()
        return 0

    return _run_async(_until_signal(main()))


def cmd_demo(args: argparse.Namespace) -> int:
    from citytwin.gateway.cli.demo import run_demo

    return _run_async(_until_signal(run_demo(args.duration, args.broker, Path(args.log_file))))


# the drivers without a discover, and why (a URL with one of these schemes gets the reason)
_CANNOT_DISCOVER: dict[str, str] = {
    **dict.fromkeys(("modbus", "modbus-tcp", "modbus-rtu", "modbus-rtu-over-tcp"), (
        "Modbus devices cannot be discovered: the protocol has no request that lists a device's registers "
        "or says what they hold (type, word order, scale, unit); bind the points from the vendor's register "
        "map (deploy/examples/pump-station.yaml)")),
    **dict.fromkeys(("mqtt", "mqtts"), (
        "MQTT devices cannot be discovered: a broker does not know which topics a device will publish "
        "or what their payloads mean; bind the topics and JSON pointers from the device's documentation "
        "(deploy/examples/meters.yaml)")),
    **dict.fromkeys(("dlt645", "cjt188"), (
        "DL/T 645 and CJ/T 188 meters cannot be discovered: a meter answers only the data identifiers it "
        "is asked for and has no request that lists them; bind the identifiers from the standard's tables "
        "(deploy/examples/energy-meters.yaml, water-heat-meters.yaml)")),
    **dict.fromkeys(("hj212", "sl651"), (
        "HJ 212 and SL 651 stations call in and cannot be asked what they hold; run the gateway with a "
        "listener for them and see the factors they report in its log and twins (deploy/examples)")),
}


def cmd_discover(args: argparse.Namespace) -> int:
    """Browse a device with the discoverer its URL scheme names in the driver registry."""
    from citytwin.drivers.errors import DriverError
    from citytwin.drivers.registry import discoverer

    url: str = args.url
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in _CANNOT_DISCOVER:
        print(f"citytwin discover: {url}: {_CANNOT_DISCOVER[scheme]}", file=sys.stderr)
        return 2
    try:
        discover = discoverer(url)
    except LookupError as exc:
        print(f"citytwin discover: {exc}", file=sys.stderr)
        return 2
    try:
        if args.template is None and args.model is None:
            print(_run_async(discover.run(url, args.timeout)), end="")
        else:
            return _discover_template(args, discover.browse)
    except (DriverError, OSError, TimeoutError, ValueError) as exc:
        print(f"citytwin discover: {url}: {exc}", file=sys.stderr)
        return 1
    except ImportError as exc:
        print(f"citytwin discover: {exc}", file=sys.stderr)
        return 1
    return 0


def _discover_template(args: argparse.Namespace, browse: Any) -> int:
    """``discover --template FILE --model FILE``: a starting template and thing model."""
    from citytwin.gateway.discovertemplate import make_model, make_template, template_name

    if browse is None:
        print(f"citytwin discover: {args.url}: this driver's discover prints a binding only", file=sys.stderr)
        return 2
    found = _run_async(browse(args.url, args.timeout))
    name = args.name or template_name(args.url)
    model_path = Path(args.model) if args.model else Path(f"{name}.json")
    model = make_model(found, args.product_key or f"discovered.{name}")
    model_path.write_text(json.dumps(model, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if args.template:
        template_path = Path(args.template)
        ref = os.path.relpath(model_path.resolve(), template_path.resolve().parent)
        template_path.write_text(make_template(found, name, ref), encoding="utf-8")
    print(f"{args.url}: {len(model['properties'])} properties, {len(model['services'])} services -> "
          f"{model_path}" + (f", template {name!r} -> {args.template}" if args.template else ""))
    for note in found.get("notes", []):  # what the browse could not read, so nobody thinks it is all there
        print(f"  left out: {note}")
    return 0


# the commands each CLI module adds, imported only when one of them is asked for (or for help)
_GROUPS: dict[str, tuple[str, ...]] = {
    "sim": ("sim",), "audit": ("audit",), "hub": ("hub",), "model": ("model",),
    "ops": ("status", "reload"), "bench": ("bench",),
}
_BUILT_IN = ("run", "config", "discover", "demo")


def command_word(argv: Sequence[str]) -> str | None:
    """The command a command line names (``run`` in ``citytwin --log-level info run -c x``), if
    it is one we have; None otherwise, so that a typo is answered with every command's name."""
    args, i = list(argv), 0
    while i < len(args):
        if args[i] in ("--log-level", "--log-format"):
            i += 2
        elif args[i].startswith("-"):
            i += 1
        else:
            known = args[i] in _BUILT_IN or any(args[i] in names for names in _GROUPS.values())
            return args[i] if known else None
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """Every command, or with ``only`` the built-in ones and the group that holds ``only``.

    Why: the ``model`` tools import the WoT and SDF converters and jsonschema (~0.15 s of CPU),
    which ``citytwin run`` would pay before its first poll; under a quarter core that is 0.6 s.
    """
    from citytwin.gateway.cli.helpformat import Parser

    def wanted(group: str) -> bool:
        return only is None or only in _GROUPS[group]

    parser = Parser(prog="citytwin", description="Edge gateway and device-twin runtime for city digital twins.")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                        help="least severe log level written to stderr")
    parser.add_argument("--log-format", default="text", choices=["text", "json"],
                        help="log lines for people (text) or for log collectors (json)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the gateway")
    run.add_argument("-c", "--config", required=True, help="gateway config file (YAML)")
    add_override_options(run)
    run.set_defaults(func=cmd_run)

    config = sub.add_parser("config", help="check a config file or print its schema")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = config_sub.add_parser("check", help="validate a config file without starting")
    check.add_argument("file", help="gateway config file (YAML)")
    add_override_options(check)
    check.set_defaults(func=cmd_config_check)
    schema = config_sub.add_parser("schema", help="print the config's JSON Schema")
    schema.set_defaults(func=cmd_config_schema)

    if wanted("sim"):
        from citytwin.gateway.cli.sim import add_sim_commands

        add_sim_commands(sub)

    discover = sub.add_parser(
        "discover", help="browse a device and print a starting binding (or write a template and model)",
        epilog="OPC UA, BACnet and CoAP devices can be browsed (CoAP: the resources /.well-known/core lists, "
               "types guessed from one reading). Modbus, MQTT, DL/T 645 and CJ/T 188 devices cannot: their "
               "protocols have no way to list what a device holds (bind them from the vendor's map); HJ 212 and "
               "SL 651 stations call in. `citytwin discover modbus://…` says so and why.")
    discover.add_argument("url", help="a device URL whose scheme a driver discovers: opcua://HOST:PORT[/PATH], "
                                      "opc.tcp://HOST:PORT[/PATH], bacnet://HOST[:PORT], coap://HOST[:PORT]")
    discover.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                          help="give up on a server that does not answer within this long (default: %(default)s)")
    discover.add_argument("--template", metavar="FILE", help="write a starting template (a templates: entry) here")
    discover.add_argument("--model", metavar="FILE", help="write a starting TSL thing model here (default NAME.json)")
    discover.add_argument("--name", help="the template's name (default: from the URL's host)")
    discover.add_argument("--product-key", help="the model's productKey (default discovered.NAME)")
    # asyncua warns about routine negotiation (e.g. the session timeout it was granted); the
    # command's own output and errors say what matters
    discover.set_defaults(func=cmd_discover, quiet_loggers=("asyncua",))

    if wanted("audit"):
        from citytwin.gateway.cli.audit import add_audit_commands

        add_audit_commands(sub)

    demo = sub.add_parser("demo", help="run a whole street (four protocols, a broker, the gateway, an operator) on this machine")
    demo.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                      help="stop after SECONDS; exit 0 only if everything worked (default: until Ctrl-C)")
    demo.add_argument("--broker", default=None, metavar="URL",
                      help="use this broker (mqtt://HOST:PORT, MQTT 5) instead of the embedded one (default: embedded amqtt)")
    demo.add_argument("--log-file", default=str(Path(tempfile.gettempdir()) / "citytwin-demo.log"), metavar="FILE",
                      help="where the gateway's log lines go during the demo (warnings show on the console too)")
    demo.set_defaults(func=cmd_demo)
    if wanted("hub"):
        from citytwin.gateway.cli.hub import add_hub_commands
        add_hub_commands(sub)
    if wanted("model"):
        from citytwin.gateway.cli.model import add_model_commands
        add_model_commands(sub)
    if wanted("ops"):
        from citytwin.gateway.cli.ops import add_ops_commands
        add_ops_commands(sub)
    if wanted("bench"):
        from citytwin.gateway.cli.bench import add_bench_commands
        add_bench_commands(sub)
    return parser


EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for ``yes | head -1``


def main(argv: Sequence[str] | None = None) -> int:
    try:
        line = sys.argv[1:] if argv is None else argv
        args = build_parser(command_word(line)).parse_args(line)
        setup_logging(args.log_level, args.log_format)
        for name in getattr(args, "quiet_loggers", ()):
            logging.getLogger(name).setLevel(logging.ERROR)
        code = int(args.func(args))
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return _stdout_gone()


def _stdout_gone() -> int:
    """The reader of stdout went away (``| head``): stop quietly, as the Python docs recommend:
    point stdout at devnull so the interpreter's final flush cannot raise again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
