"""``citytwin hub …``: the hub operator's command line, speaking the hub topic contract over MQTT.

Read: ``devices``, ``twin``, ``watch``, ``events``. Act: ``invoke``, ``set``, ``desired`` (each
waits for the gateway's reply). DEVICE is ``DEV`` or ``GW/DEV``; a bare ``DEV`` is looked up in
the retained status topics (``--gateway`` restricts the search). Tables by default, ``--json``
for scripts. The broker connection options go before or after ACTION; each comes from its
option, else the environment (``$CITYTWIN_BROKER``, ``$CITYTWIN_OPERATOR``, …), else a profile
(``--profile NAME`` of ``~/.config/citytwin/hub.yaml``), else its default. The password comes
from ``--password-file`` or ``$CITYTWIN_HUB_PASSWORD``, never from the command line.

Exit codes: 0 succeeded; 1 the broker could not be reached or refused the connection;
2 usage (bad arguments, unknown or ambiguous DEVICE); 3 rejected (nothing was written);
4 failed; 5 timeout: no reply in time, or the gateway answered ``timeout`` or ``unknown``
(the effect on the device is not known).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import re
import secrets
import signal
import sys
from pathlib import Path
from typing import Any

import orjson

from citytwin.gateway.cli.hubclient import BrokerOptions, HubError, HubSession, Seen, now_ms
from citytwin.gateway.cli.hubprofile import DEFAULT_BROKER, SETTINGS, ProfileError
from citytwin.gateway.cli.hubprofile import resolve as resolve_settings

EXIT_OK, EXIT_BROKER, EXIT_USAGE, EXIT_REJECTED, EXIT_FAILED, EXIT_TIMEOUT = 0, 1, 2, 3, 4, 5
EXIT_BY_STATUS = {"succeeded": EXIT_OK, "rejected": EXIT_REJECTED, "failed": EXIT_FAILED,
                  "timeout": EXIT_TIMEOUT, "unknown": EXIT_TIMEOUT}
PASSWORD_ENV = "CITYTWIN_HUB_PASSWORD"

EPILOG = """exit codes: 0 succeeded, 1 broker unreachable or refused, 2 usage (or unknown/ambiguous DEVICE),
3 rejected (nothing written), 4 failed, 5 timeout (no reply in time) or unknown outcome.
Password: --password-file FILE or $CITYTWIN_HUB_PASSWORD (never on the command line)."""


class UsageError(Exception):
    pass


# --- argument values ------------------------------------------------------------------
def duration(text: str) -> float:
    """``30s``, ``500ms``, ``2m``, ``1h`` or plain seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 30s, 500ms, 2m)")
    return float(match[1]) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[match[2] or "s"]


def scalar(text: str) -> Any:
    """A JSON scalar where the text is one (``1``, ``47.5``, ``true``, ``null``, ``"1"``), else the text."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
    return text if isinstance(value, (dict, list)) else value


def assignments(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"expected KEY=VALUE, got {pair!r}")
        if key in out:
            raise UsageError(f"{key!r} is given twice")
        out[key] = scalar(value)
    return out


def json_object(text: str) -> dict[str, Any]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


# --- output ---------------------------------------------------------------------------
def when(ts: Any) -> str:
    if not isinstance(ts, int):
        return "-"
    moment = dt.datetime.fromtimestamp(ts / 1000).astimezone()
    ago = max(0, (now_ms() - ts) // 1000)
    return f"{moment:%Y-%m-%d %H:%M:%S} ({_ago(ago)} ago)"


def _ago(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def show(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def emit_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value).decode() + "\n")
    sys.stdout.flush()


# --- DEVICE resolution ----------------------------------------------------------------
async def resolve(session: HubSession, args: argparse.Namespace, target: str) -> tuple[str, str]:
    """``GW/DEV`` as given, or the one gateway whose retained status names ``DEV``."""
    if "/" in target:
        gateway, _, device = target.partition("/")
        if not gateway or not device or "/" in device:
            raise UsageError(f"DEVICE must be DEV or GW/DEV, not {target!r}")
        if args.gateway and args.gateway != gateway:
            raise UsageError(f"{target!r} is not on --gateway {args.gateway}")
        return gateway, device
    if args.gateway:
        return args.gateway, target
    t = session.topics(None)
    found = await session.retained([t.device_status(target), t.twin(target)], args.settle, args.wait)
    gateways = sorted({s.gateway for s in found if s.device == target})
    if not gateways:
        raise UsageError(f"no gateway under {session.options.prefix!r} has a device {target!r}; give GW/DEV")
    if len(gateways) > 1:
        raise UsageError(f"device {target!r} is on several gateways ({', '.join(gateways)}); give GW/DEV")
    return gateways[0], target


# --- subcommands ----------------------------------------------------------------------
async def cmd_devices(session: HubSession, args: argparse.Namespace) -> int:
    t = session.topics(args.gateway)
    found = await session.retained([t.gateway_status, t.device_status("+"), t.twin("+"), t.meta("+")],
                                   args.settle, args.wait)
    gateways: dict[str, dict[str, Any]] = {}
    devices: dict[tuple[str, str], dict[str, Any]] = {}
    for seen in found:
        if not isinstance(seen.body, dict):
            continue
        if seen.device is None and seen.kind == "status":
            gateways[seen.gateway] = seen.body
        elif seen.device is not None and seen.kind in ("status", "twin", "meta"):
            devices.setdefault((seen.gateway, seen.device), {})[seen.kind] = seen.body
    rows: list[dict[str, Any]] = []
    for gw in sorted(set(gateways) | {g for g, _ in devices}):
        status = gateways.get(gw, {})
        rows.append({"gateway": gw, "device": None, "state": status.get("state", "unknown"),
                     "since": status.get("ts"), "last_seen": status.get("ts"), "reason": None})
        gw_online = status.get("state") == "online"
        for (g, dev), parts in sorted(devices.items()):
            if g != gw:
                continue
            if "status" not in parts and "twin" not in parts:
                continue  # only a meta document: not a device of this gateway (any more)
            dstatus, twin, meta = parts.get("status", {}), parts.get("twin", {}), parts.get("meta", {})
            state = dstatus.get("state") or twin.get("state") or "unknown"
            reason = dstatus.get("reason")
            if state == "online" and not gw_online:
                state, reason = "unknown", f"gateway {gw} is {status.get('state', 'unknown')}"
            rows.append({"gateway": gw, "device": dev, "state": state,
                         "since": dstatus.get("ts", twin.get("state_ts")),
                         "last_seen": _last_seen(dstatus, twin), "reason": reason,
                         "uid": meta.get("uid"), "location": meta.get("location"), "tags": meta.get("tags", {}),
                         "model": meta.get("model"), "template": meta.get("template")})
    if args.json:
        emit_json(rows)
    elif not rows:
        print(f"no gateways under {session.options.prefix!r} on {session.options.url}")
    else:
        print(table(["GATEWAY", "DEVICE", "STATE", "SINCE", "LAST SEEN", "UID", "LOCATION", "REASON"],
                    [[r["gateway"], r["device"] or "-", r["state"], when(r["since"]), when(r["last_seen"]),
                      r.get("uid") or "", _place(r.get("location")), r["reason"] or ""] for r in rows]))
    return EXIT_OK


def _place(location: Any) -> str:
    """``lat,lon`` (and the address) of a meta document's location, for the table."""
    if not isinstance(location, dict) or "latitude" not in location:
        return ""
    text = f"{location['latitude']},{location['longitude']}"
    return f"{text} {location['address']}" if location.get("address") else text


def _last_seen(status: dict[str, Any], twin: dict[str, Any]) -> int | None:
    stamps = [v for v in (status.get("ts"), twin.get("state_ts")) if isinstance(v, int)]
    reported = twin.get("metadata", {}).get("reported", {})
    if isinstance(reported, dict):
        stamps += [m["ts"] for m in reported.values() if isinstance(m, dict) and isinstance(m.get("ts"), int)]
    return max(stamps, default=None)


async def cmd_twin(session: HubSession, args: argparse.Namespace) -> int:
    gateway, device = await resolve(session, args, args.device)
    twin: Any = None
    if not args.get:
        found = await session.retained([session.topics(gateway).twin(device)], args.settle, args.wait)
        twin = next((s.body for s in found if s.kind == "twin" and s.device == device), None)
    if twin is None:  # nothing retained: ask the gateway (twin/get)
        reply, code = await request(session, args, gateway, device, "get", {})
        if code != EXIT_OK or reply is None:
            return code
        twin = reply.get("output")
    if args.json:
        emit_json(twin)
    else:
        print(render_twin(gateway, device, twin))
    return EXIT_OK


def render_twin(gateway: str, device: str, twin: Any) -> str:
    if not isinstance(twin, dict):
        return f"{gateway}/{device}: {show(twin)}"
    reported, desired, delta = twin.get("reported", {}), twin.get("desired", {}), twin.get("delta", {})
    meta = twin.get("metadata", {}).get("reported", {})
    head = (f"{gateway}/{device}: {twin.get('state', 'unknown')} since {when(twin.get('state_ts'))}, "
            f"version {twin.get('version')}")
    rows = []
    for name in sorted(set(reported) | set(desired)):
        m = meta.get(name, {}) if isinstance(meta, dict) else {}
        rows.append([name, show(reported[name]) if name in reported else "",
                     show(desired[name]) if name in desired else "", show(delta[name]) if name in delta else "",
                     str(m.get("quality", "")), when(m.get("changed")) if "changed" in m else ""])
    return head + "\n" + table(["PROPERTY", "REPORTED", "DESIRED", "DELTA", "QUALITY", "CHANGED"], rows)


async def cmd_invoke(session: HubSession, args: argparse.Namespace) -> int:
    gateway, device = await resolve(session, args, args.device)
    inputs = {**(args.input or {}), **assignments(args.inputs)}
    return (await request(session, args, gateway, device, "invoke", {"input": inputs}, args.service))[1]


async def cmd_set(session: HubSession, args: argparse.Namespace) -> int:
    gateway, device = await resolve(session, args, args.device)
    properties = assignments(args.properties)
    if not properties:
        raise UsageError("give at least one PROPERTY=VALUE")
    return (await request(session, args, gateway, device, "set", {"properties": properties}))[1]


async def cmd_desired(session: HubSession, args: argparse.Namespace) -> int:
    gateway, device = await resolve(session, args, args.device)
    body: dict[str, Any] = {"desired": args.patch}
    if args.version is not None:
        body["version"] = args.version
    return (await request(session, args, gateway, device, "desired", body))[1]


async def request(
    session: HubSession, args: argparse.Namespace, gateway: str, device: str, kind: str,
    body: dict[str, Any], service: str | None = None,
) -> tuple[dict[str, Any] | None, int]:
    t = session.topics(gateway)
    if kind == "invoke":
        assert service is not None
        topic = t.invoke(device, service)
    elif kind == "set":
        topic = t.property_set(device)
    elif kind == "desired":
        topic = t.desired(device)
    else:
        topic = t.twin_get(device)
    command: dict[str, Any] = {"id": f"cli-{secrets.token_hex(8)}", **body}
    if getattr(args, "dry_run", False):
        command["dry_run"] = True
    if getattr(args, "expires", None) is not None:
        command["expires_at"] = now_ms() + round(args.expires * 1000)
    final: dict[str, Any] | None = None
    async for reply in session.command(gateway, device, topic, command, args.timeout):
        final = reply
        if reply.get("status") not in EXIT_BY_STATUS and not args.json:
            print(f"{reply.get('status')}: {show(reply.get('output', ''))}", file=sys.stderr)
    if final is None or final.get("status") not in EXIT_BY_STATUS:
        last = final.get("status") if final else None
        message = f"no {'final ' if last else ''}reply from {gateway}/{device} within {args.timeout:g} s"
        if args.json:
            emit_json({"id": command["id"], "status": "no_reply", "last_status": last,
                       "error": {"code": "no_reply", "message": message}})
        else:
            print(f"timeout: {message}" + (f" (last status: {last})" if last else ""), file=sys.stderr)
        return final, EXIT_TIMEOUT
    if kind == "get" and final.get("status") == "succeeded":
        return final, EXIT_OK  # the caller renders the twin
    if args.json:
        emit_json(final)
    else:
        print(render_reply(final))
    return final, EXIT_BY_STATUS[final["status"]]


def render_reply(reply: dict[str, Any]) -> str:
    line = f"{reply['status']}" + (" (duplicate: first reply repeated)" if reply.get("duplicate") else "")
    error = reply.get("error")
    if isinstance(error, dict):
        line += f": {error.get('code')}: {error.get('message')}"
    output = reply.get("output")
    if output:
        line += "\n" + orjson.dumps(output, option=orjson.OPT_INDENT_2).decode()
    return line


async def cmd_watch(session: HubSession, args: argparse.Namespace, events_only: bool = False) -> int:
    gateway, device = args.gateway, None
    if args.device:
        if "/" in args.device:
            gateway, device = await resolve(session, args, args.device)
        else:
            device = args.device
    t = session.topics(gateway)
    dev = device or "+"
    topics = [t.event(dev, "+")]
    if not events_only:
        topics += [t.device_status(dev), t.report(dev)]
    if device is None or gateway is not None:  # gateway-level topics only when they concern this device
        topics.append(t.gateway_event("+"))
        if not events_only:
            topics.append(t.gateway_status)
    await session.subscribe(*topics)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    until = None if args.duration is None else loop.time() + args.duration
    count = 0
    stream = session.messages(until=until)
    waiter = asyncio.create_task(stop.wait())
    try:
        while args.count is None or count < args.count:
            nxt = asyncio.ensure_future(anext(stream))
            await asyncio.wait({nxt, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if not nxt.done():
                nxt.cancel()
                break
            try:
                seen = nxt.result()
            except StopAsyncIteration:
                break
            if seen.kind not in ("status", "report", "event") or (events_only and seen.kind != "event"):
                continue
            count += 1
            print_seen(seen, args.json)
    finally:
        waiter.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return EXIT_OK


def print_seen(seen: Seen, as_json: bool) -> None:
    if as_json:
        emit_json({"gateway": seen.gateway, "device": seen.device, "kind": seen.kind, "name": seen.name,
                   "retained": seen.retained, "payload": seen.body})
        return
    who = seen.gateway + (f"/{seen.device}" if seen.device else "")
    body = seen.body if isinstance(seen.body, dict) else {}
    if seen.kind == "report":
        props = body.get("properties", {})
        detail = " ".join(
            f"{k}={show(v.get('value'))}" + ("" if v.get("quality", "good") == "good" else f"[{v.get('quality')}]")
            for k, v in props.items() if isinstance(v, dict)
        )
        detail = f"seq={body.get('seq')} {detail}" + (" (replay)" if body.get("replay") else "")
    elif seen.kind == "event":
        output = body.get("output", {})
        args = " ".join(f"{k}={show(v)}" for k, v in output.items()) if isinstance(output, dict) else show(output)
        detail = f"{seen.name} ({body.get('type', '?')}) {args}".rstrip()
    else:
        detail = f"{body.get('state', show(seen.body))}" + (f": {body['reason']}" if body.get("reason") else "")
        detail += " (retained)" if seen.retained else ""
    stamp = dt.datetime.now().astimezone().strftime("%H:%M:%S.%f")[:-3]
    print(f"{stamp} {who} {seen.kind:<6} {detail}", flush=True)


async def cmd_events(session: HubSession, args: argparse.Namespace) -> int:
    return await cmd_watch(session, args, events_only=True)


# --- wiring ---------------------------------------------------------------------------
def options_from(args: argparse.Namespace) -> BrokerOptions:
    """The connection: each setting from its flag, else the environment, else the profile, else
    the default (``hubprofile``); the resolved values are also set on ``args``."""
    given = {name: getattr(args, name) for name in SETTINGS if hasattr(args, name)}
    try:
        settings = resolve_settings(given, getattr(args, "profile", None))
    except ProfileError as exc:
        raise UsageError(str(exc)) from None
    for name, value in settings.items():
        setattr(args, name, value)
    password = os.environ.get(PASSWORD_ENV) or None
    if args.password_file is not None:
        try:
            password = Path(args.password_file).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise UsageError(f"cannot read --password-file: {exc.strerror}") from None
    return BrokerOptions(
        url=args.broker, protocol=args.protocol, prefix=args.prefix, operator=args.operator,
        operator_in_payload=args.operator_in_payload, client_id=args.client_id, username=args.username,
        password=password, cafile=args.cafile, cert=args.cert, key=args.key, insecure=args.insecure,
        connect_timeout=args.connect_timeout,
    )


def cmd_hub(args: argparse.Namespace) -> int:
    try:
        options = options_from(args)
    except UsageError as exc:
        print(f"citytwin hub: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if options.operator and options.protocol != "5" and not options.operator_in_payload:
        print("citytwin hub: MQTT 3.1.1 has no user properties: --operator is not sent "
              "(add --operator-in-payload if the gateway trusts the payload)", file=sys.stderr)

    async def main() -> int:
        async with HubSession(options) as session:
            return int(await args.hub_func(session, args))

    try:
        return asyncio.run(main())
    except UsageError as exc:
        print(f"citytwin hub {args.hub_command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except HubError as exc:
        print(f"citytwin hub: {exc}", file=sys.stderr)
        return EXIT_BROKER


def _connection() -> argparse.ArgumentParser:
    """The connection options, accepted before the action (``hub --broker URL devices``) and after
    it. Their defaults are resolved later (flag > environment > profile > default), so argparse
    keeps none: a value typed before the action is not overwritten by the action's default."""
    parent = argparse.ArgumentParser(add_help=False)
    broker = parent.add_argument_group("broker connection (before or after ACTION; "
                                       "flag > environment > profile > default)")
    keep = argparse.SUPPRESS
    broker.add_argument("--broker", default=keep, metavar="URL",
                        help=f"mqtt://HOST:PORT or mqtts://HOST:PORT (default: $CITYTWIN_BROKER, the profile's broker, "
                             f"else {DEFAULT_BROKER})")
    broker.add_argument("--operator", metavar="NAME", default=keep,
                        help="who you are: sent as MQTT 5 user property 'operator' on commands "
                             "(default: $CITYTWIN_OPERATOR, the profile's operator, else none)")
    broker.add_argument("--profile", metavar="NAME", default=keep,
                        help="settings from this profile of ~/.config/citytwin/hub.yaml "
                             "(default: $CITYTWIN_PROFILE, else the profile 'default' if the file has one)")
    broker.add_argument("--protocol", choices=["5", "3.1.1"], default=keep,
                        help="MQTT version (default: $CITYTWIN_HUB_PROTOCOL, the profile's, else 5)")
    broker.add_argument("--prefix", default=keep,
                        help="topic prefix of the hub contract (default: $CITYTWIN_HUB_PREFIX, the profile's, "
                             "else citytwin/v1)")
    broker.add_argument("--gateway", metavar="GW", default=keep, help="only this gateway (default: every gateway)")
    broker.add_argument("--operator-in-payload", action="store_true", default=keep,
                        help="also put the operator in the command payload (MQTT 3.1.1 hubs)")
    broker.add_argument("--client-id", metavar="ID", default=keep,
                        help="MQTT client id (default: citytwin-hub-OPERATOR-RANDOM)")
    broker.add_argument("--username", default=keep,
                        help="broker user name (default: $CITYTWIN_HUB_USERNAME, the profile's, else none)")
    broker.add_argument("--password-file", metavar="FILE", default=keep,
                        help=f"file holding the broker password (default: ${PASSWORD_ENV}, else none)")
    broker.add_argument("--cafile", type=Path, default=keep,
                        help="CA certificate(s) that sign the broker's certificate (default: the system's CAs)")
    broker.add_argument("--cert", type=Path, default=keep, help="client certificate for mutual TLS (default: none)")
    broker.add_argument("--key", type=Path, default=keep, help="client key, if not in --cert")
    broker.add_argument("--insecure", action="store_true", default=keep,
                        help="skip the broker's certificate check (lab use only)")
    broker.add_argument("--connect-timeout", type=duration, default=keep, metavar="DURATION",
                        help="give up on a broker that does not accept the connection within this long "
                             "(default: 10s)")
    return parent


def _output() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--json", action="store_true", help="JSON output for scripts")
    parent.add_argument("--wait", type=duration, default=3.0, metavar="DURATION",
                        help="longest wait for retained state (default: 3s)")
    parent.add_argument("--settle", type=duration, default=0.5, metavar="DURATION",
                        help="retained state is complete after this long without a new message (default: 0.5s)")
    return parent


def _command_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true", help="run every check, write nothing")
    parser.add_argument("--expires", type=duration, metavar="DURATION",
                        help="the gateway rejects the command if it cannot start within this time (default: never)")
    parser.add_argument("--timeout", type=duration, default=10.0, metavar="DURATION",
                        help="how long to wait for the reply (default: 10s)")


def add_hub_commands(subparsers: Any) -> None:
    """Add ``hub`` and its subcommands to the ``citytwin`` parser."""
    connection, output = _connection(), _output()
    hub = subparsers.add_parser("hub", help="operate devices through the hub broker (MQTT)",
                                description=re.sub(r"``(.+?)``", r"\1", __doc__ or ""), epilog=EPILOG,
                                parents=[connection])
    sub = hub.add_subparsers(dest="hub_command", required=True, metavar="ACTION")

    def action(name: str, func: Any, help: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(name, parents=[connection, output], help=help,
                                                         description=help, epilog=EPILOG)
        parser.set_defaults(func=cmd_hub, hub_func=func)
        return parser

    action("devices", cmd_devices, "every gateway and device, online state and last seen")
    twin = action("twin", cmd_twin, "a device's twin (retained; twin/get when none is retained)")
    twin.add_argument("device", metavar="DEVICE", help="DEV, or GW/DEV when several gateways have it")
    twin.add_argument("--get", action="store_true", help="ask the gateway (twin/get) instead of reading the retained twin")
    twin.add_argument("--timeout", type=duration, default=10.0, metavar="DURATION",
                      help="how long to wait for the twin/get reply (default: 10s)")
    invoke = action("invoke", cmd_invoke, "invoke a service: KEY=VALUE inputs (JSON scalars where possible)")
    invoke.add_argument("device", metavar="DEVICE", help="DEV, or GW/DEV when several gateways have it")
    invoke.add_argument("service", metavar="SERVICE", help="a service of the device's thing model")
    invoke.add_argument("inputs", nargs="*", metavar="KEY=VALUE", help="the service's inputs")
    invoke.add_argument("--input", type=json_object, metavar="JSON", help="inputs as a JSON object (KEY=VALUE wins)")
    _command_options(invoke)
    set_ = action("set", cmd_set, "set writable properties")
    set_.add_argument("device", metavar="DEVICE", help="DEV, or GW/DEV when several gateways have it")
    set_.add_argument("properties", nargs="+", metavar="PROPERTY=VALUE", help="the properties and their new values")
    _command_options(set_)
    desired = action("desired", cmd_desired, "update the desired state (a JSON merge patch)")
    desired.add_argument("device", metavar="DEVICE", help="DEV, or GW/DEV when several gateways have it")
    desired.add_argument("--patch", type=json_object, required=True, metavar="JSON",
                         help='the JSON merge patch (RFC 7396) of the desired state, e.g. \'{"pump1_frequency_setpoint": 48}\'; '
                              "null removes a property")
    desired.add_argument("--version", type=int, help="refused unless the twin is at this version (default: any)")
    _command_options(desired)
    for name, func, text in (("watch", cmd_watch, "live properties, events and status"),
                             ("events", cmd_events, "live events")):
        parser = action(name, func, text)
        parser.add_argument("device", nargs="?", metavar="DEVICE", help="only this device (default: every device)")
        parser.add_argument("--duration", type=duration, metavar="DURATION", help="stop after this long (default: until Ctrl-C)")
        parser.add_argument("--count", type=int, metavar="N", help="stop after N messages (default: no limit)")
    from citytwin.gateway.cli.hubconfig import add_config_commands  # it builds on this module

    add_config_commands(sub, argparse.ArgumentParser(add_help=False, parents=[connection, output]))
