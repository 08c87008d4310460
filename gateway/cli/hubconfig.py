"""``citytwin hub config push|get|diff``: a gateway's config from the hub's side.

``get`` reads the retained ``{p}/{gw}/config/reported`` (the active config with secrets
masked, its locked sections named but not shown, and the answer to the last push); ``push``
sends a config file (and the inventory files it names, or only those) on ``config/desired`` as
the operator and waits for the answer; ``diff`` compares a local file with the active config,
leaving out the sections the gateway locks (a push may not change them, and their contents
are not shown to compare). docs/hub-cli.md.

Exit codes: 0 applied / equal; 1 broker; 2 usage (also: nothing to diff against); 3 refused /
different / remote configuration disabled on the gateway; 4 rolled back; 5 no answer in time.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import secrets
import sys
from pathlib import Path
from typing import Any

import orjson
import yaml
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from citytwin.gateway.cli.hub import (
    EXIT_OK,
    EXIT_REJECTED,
    EXIT_TIMEOUT,
    UsageError,
    cmd_hub,
    duration,
    emit_json,
)
from citytwin.gateway.cli.hubclient import HubSession
from citytwin.gateway.remoteconfig import locked_sections, shown

EXIT_ROLLED_BACK = 4
EXIT_BY_STATUS = {"applied": EXIT_OK, "refused": EXIT_REJECTED, "rolled_back": EXIT_ROLLED_BACK}


def _gateway(args: argparse.Namespace) -> str:
    if not args.gateway:
        raise UsageError("name the gateway: --gateway GW")
    return str(args.gateway)


async def reported(session: HubSession, gateway: str, args: argparse.Namespace) -> dict[str, Any] | None:
    topic = session.topics(gateway).config_reported
    for seen in await session.retained([topic], args.settle, args.wait):
        if seen.kind == "config" and isinstance(seen.body, dict):
            return seen.body
    return None


def render_errors(doc: dict[str, Any]) -> list[str]:
    lines = []
    for e in doc.get("errors", []):
        where = f"{e['source']}:{e['line']}: " if e.get("source") else ""
        lines.append(f"  {where}{e['path'] + ': ' if e.get('path') else ''}{e['message']}")
    return lines


async def cmd_get(session: HubSession, args: argparse.Namespace) -> int:
    gateway = _gateway(args)
    doc = await reported(session, gateway, args)
    if doc is None:
        raise UsageError(f"gateway {gateway!r} has no retained config/reported (not running, or too old)")
    disabled = doc.get("enabled") is False
    if args.json:
        emit_json(doc)
        return EXIT_REJECTED if disabled else EXIT_OK
    active = doc.get("active", {})
    version = active.get("version")
    if disabled:
        print(f"{gateway}: remote configuration is disabled (remote_config.enabled: false): it takes no config "
              "from the hub and shows none")
    else:
        print(f"{gateway}: {'hub config v' + str(version) if version else 'the local file'} "
              f"(digest {active.get('digest')})")
    if doc.get("status"):
        print(f"last push: v{doc.get('version')} by {doc.get('operator')}: {doc['status']}")
        print("\n".join(render_errors(doc)) or "", end="\n" if doc.get("errors") else "")
    if disabled:
        return EXIT_REJECTED
    for name in doc.get("locked", []):
        print(f"# {name}: locked (the gateway keeps its own; not shown, a push may not change it)")
    print(yaml.safe_dump(doc.get("config"), sort_keys=False, allow_unicode=True), end="")
    for name, text in sorted(doc.get("inventory", {}).items()):
        print(f"# --- inventory {name} ---\n{text}", end="" if text.endswith("\n") else "\n")
    return EXIT_OK


def _files(path: Path, text: str) -> dict[str, str]:
    """The inventory files a config names, read next to it."""
    data = yaml.safe_load(text)
    names = data.get("inventory", []) if isinstance(data, dict) else []
    names = [names] if isinstance(names, str) else names
    files = {}
    for name in names:
        try:
            files[name] = (path.parent / name).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read inventory {name!r}: {exc.strerror}") from None
    return files


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None


async def cmd_push(session: HubSession, args: argparse.Namespace) -> int:
    gateway = _gateway(args)
    text = _read(args.file)
    files = _files(args.file, text)
    if args.inventory_only and not files:
        raise UsageError(f"{args.file} names no inventory files")
    topics = session.topics(gateway)
    version = args.version
    if version is None:
        doc = await reported(session, gateway, args) or {}
        version = max(doc.get("active", {}).get("version") or 0, doc.get("version") or 0) + 1
    body: dict[str, Any] = {"id": f"cfg-{secrets.token_hex(6)}", "version": version, "inventory": files}
    if not args.inventory_only:
        body["config"] = text
    if session.options.operator and session.options.operator_in_payload:
        body["operator"] = session.options.operator
    await session.subscribe(topics.config_reported)
    properties = None
    if session.v5 and session.options.operator:
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.UserProperty = [("operator", session.options.operator)]
    await session.client.publish(topics.config_desired, orjson.dumps(body), qos=1, properties=properties)
    until = asyncio.get_running_loop().time() + args.timeout
    async for seen in session.messages(until=until):
        answer = seen.body
        if seen.kind != "config" or not isinstance(answer, dict) or answer.get("id") != body["id"]:
            continue
        status = answer.get("status")
        if status == "applying":
            if not args.json:
                print(f"v{version}: applied; waiting for {', '.join(answer.get('added', []) + answer.get('changed', [])) or 'no'}"
                      " device(s) to come online")
            continue
        if args.json:
            emit_json({k: v for k, v in answer.items() if k not in ("config", "inventory")})
        else:
            changes = ", ".join(f"{k} {', '.join(answer[k])}" for k in ("added", "removed", "changed") if answer.get(k))
            print(f"v{version}: {status}" + (f": {changes}" if changes and status == "applied" else "")
                  + (f": {answer['error']['message']}" if answer.get("error") else ""))
            for line in render_errors(answer):
                print(line)
        return EXIT_BY_STATUS.get(str(status), EXIT_REJECTED)
    print(f"v{version}: no answer from {gateway} within {args.timeout:g} s")
    return EXIT_TIMEOUT


async def cmd_diff(session: HubSession, args: argparse.Namespace) -> int:
    gateway = _gateway(args)
    doc = await reported(session, gateway, args)
    if doc is None:
        raise UsageError(f"gateway {gateway!r} has no retained config/reported")
    if doc.get("enabled") is False:
        raise UsageError(f"gateway {gateway!r} has remote configuration disabled: it shows no config to compare")
    text = _read(args.file)
    mine = shown(text, ())
    skipped: list[str] = []
    if isinstance(mine, dict):  # neither the gateway's locked sections nor the file's are compared
        locked = locked_sections(mine) | set(doc.get("locked") or ())
        skipped = sorted(locked & set(mine))
        mine = {k: v for k, v in mine.items() if k not in locked}
    if skipped:
        print(f"not compared (locked on {gateway}): {', '.join(skipped)}", file=sys.stderr)
    ours = yaml.safe_dump(mine, sort_keys=True, allow_unicode=True).splitlines(keepends=True)
    theirs = yaml.safe_dump(doc.get("config"), sort_keys=True, allow_unicode=True).splitlines(keepends=True)
    out = list(difflib.unified_diff(theirs, ours, f"{gateway} (active)", str(args.file)))
    files, active_files = _files(args.file, text), doc.get("inventory", {})
    for name in sorted(set(files) | set(active_files)):
        out += difflib.unified_diff(active_files.get(name, "").splitlines(keepends=True),
                                    files.get(name, "").splitlines(keepends=True), f"{gateway}: {name}", name)
    print("".join(out), end="")
    return EXIT_REJECTED if out else EXIT_OK


def add_config_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """``hub config ACTION`` (the locked sections and secrets never leave the gateway)."""
    config = sub.add_parser("config", help="a gateway's config: get, diff, push (admins of @gateway)")
    actions = config.add_subparsers(dest="config_action", required=True, metavar="ACTION")

    def action(name: str, func: Any, help: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(name, parents=[common], help=help)
        parser.set_defaults(func=cmd_hub, hub_func=func)
        return parser

    action("get", cmd_get, "the active config (locked sections named, not shown) and the last push")
    diff = action("diff", cmd_diff, "compare a config file with the active config (exit 3 when they differ)")
    diff.add_argument("file", type=Path, metavar="FILE", help="the config file to compare")
    push = action("push", cmd_push, "send a config file (and the inventory files it names)")
    push.add_argument("file", type=Path, metavar="FILE", help="the config file to send")
    push.add_argument("--version", type=int, help="default: one more than the active (or last pushed) version")
    push.add_argument("--inventory-only", action="store_true", help="send only the inventory files FILE names")
    push.add_argument("--timeout", type=duration, default=120.0, metavar="DURATION",
                      help="how long to wait for the answer, rollback window included (default 120s)")
