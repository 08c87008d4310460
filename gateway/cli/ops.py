"""``citytwin status`` and ``citytwin reload``: ask the running gateway through its HTTP API.

The gateway is found by its config file (``http.host``/``http.port``) or by ``--url``. With
``-c`` the answering gateway's id must be the file's ``gateway.id``: with two gateways on one box
the second may have failed to bind the port, and the first one's health is not its health. Reload
is a ``POST /reload`` rather than a signal to a pid file: the answer carries what was added,
removed and changed, or the file:line errors of a refused file, so the operator sees the
result where they typed the command. (SIGHUP does the same, with the result in the log.)

Exit codes: 0 healthy / applied; 1 unhealthy, the gateway could not be reached, or another
gateway answered on its port; 2 bad usage, an unreadable config, or a reload refused because
the file is invalid.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from citytwin.gateway import overrides
from citytwin.gateway.config import ConfigError, HttpSection
from citytwin.gateway.configfile import read_config_text

TIMEOUT = 30.0  # s; a reload waits for in-flight commands of the devices it restarts


class Unreachable(Exception):
    pass


def add_ops_commands(sub: Any) -> None:
    status = sub.add_parser("status", help="show the running gateway's health, hub link and devices")
    _target(status)
    status.add_argument("--json", action="store_true", help="print the gateway's JSON status as is")
    status.add_argument("-q", "--quiet", action="store_true", help="print nothing; only the exit code")
    status.set_defaults(func=cmd_status)
    reload = sub.add_parser("reload", help="make the running gateway re-read its config file")
    _target(reload)
    reload.set_defaults(func=cmd_reload)


def _target(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("-c", "--config", help="the running gateway's config file: http.host/http.port say where to ask, "
                       "and the gateway answering there must have its gateway.id")
    where.add_argument("--url", help="the gateway's HTTP API, e.g. http://127.0.0.1:9108")


def target(args: argparse.Namespace) -> tuple[str, str | None]:
    """The gateway's HTTP API and, with ``-c``, the gateway id that must answer there."""
    if args.url:
        return str(args.url).rstrip("/"), None
    path = Path(args.config)
    text = read_config_text(path)
    env = overrides.from_env()  # the running gateway saw the same CITYTWIN__… settings
    expected: str | None
    try:
        config = overrides.parse(text, str(path), env)[0]
        http, expected = config.http, config.gateway.id
    except ConfigError:
        # a file being edited may be invalid elsewhere: its http section is enough to find
        # the gateway, which then answers (and refuses an invalid file) itself
        http, expected = _http_section_only(text, path, env)
    if not http.enabled:
        raise Unreachable(f"{path}: http.enabled is false, so the gateway has no HTTP API to ask "
                          "(send SIGHUP to reload: systemctl reload citytwin-gateway)")
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(http.host, http.host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{http.port}", expected


def _http_section_only(text: str, path: Path, env: list[overrides.Override]) -> tuple[HttpSection, str | None]:
    try:
        data = yaml.safe_load(text)
        if isinstance(data, dict):
            overrides.apply(data, env)
        else:
            data = {}
        section = data.get("gateway")
        expected = section.get("id") if isinstance(section, dict) else None
        return (HttpSection.model_validate(data.get("http") or {}),
                expected if isinstance(expected, str) else None)
    except (yaml.YAMLError, ValidationError, AttributeError):
        overrides.parse(text, str(path), env)  # raises ConfigError with every issue, file:line
        raise


def _call(url: str, method: str = "GET") -> tuple[int, Any]:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read())
        except ValueError:
            raise Unreachable(f"{url}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Unreachable(f"cannot reach the gateway at {url}: {reason}") from None


def _resolve(args: argparse.Namespace) -> tuple[str, str | None] | int:
    try:
        return target(args)
    except ConfigError as exc:
        for issue in exc.issues:
            print(str(issue), file=sys.stderr)
        return 2
    except Unreachable as exc:
        print(str(exc), file=sys.stderr)
        return 1


class WrongGateway(Unreachable):
    """Another gateway answers where the config's should: its status is not this one's."""


def check_identity(args: argparse.Namespace, base: str, expected: str | None, doc: Any) -> None:
    answered = doc.get("gateway") if isinstance(doc, dict) else None
    if expected is not None and answered != expected:
        raise WrongGateway(
            f"{base} is answered by gateway {answered!r}, not {expected!r} of {args.config}: "
            f"another gateway holds the port, so {expected} is not running or could not bind it "
            f"(its log says why; give each gateway its own http.port)")


def cmd_status(args: argparse.Namespace) -> int:
    resolved = _resolve(args)
    if isinstance(resolved, int):
        return resolved
    base, expected = resolved
    try:
        _, doc = _call(f"{base}/status")
        check_identity(args, base, expected, doc)
    except Unreachable as exc:
        if not args.quiet:
            print(str(exc), file=sys.stderr)
        return 1
    healthy = bool(doc.get("health", {}).get("healthy"))
    if args.json:
        print(json.dumps(doc, indent=2))
    elif not args.quiet:
        print(render_status(doc))
    return 0 if healthy else 1


def render_status(doc: dict[str, Any]) -> str:
    health = doc.get("health", {})
    hub = doc.get("hub", {})
    backlog = hub.get("backlog", {})
    lines = [
        f"gateway {doc.get('gateway')}: {'healthy' if health.get('healthy') else 'NOT HEALTHY'}"
        f" (up {_duration(doc.get('uptime', 0))})",
        f"hub     {hub.get('url')} {'connected' if hub.get('connected') else 'DISCONNECTED'};"
        f" {hub.get('published', 0)} published, {hub.get('dropped', 0)} dropped;"
        f" backlog {backlog.get('messages', 0)} message(s), {backlog.get('bytes', 0)} B,"
        f" oldest {_duration(backlog.get('oldest_age', 0))}",
    ]
    devices = doc.get("devices", {})
    width = max((len(d) for d in devices), default=0)
    for device_id, dev in sorted(devices.items()):
        if dev.get("online"):
            detail = f"online   last poll {dev.get('silent_for', 0):.1f} s ago, {dev.get('polls', 0)} polls"
        else:
            detail = f"OFFLINE  silent {_duration(dev.get('silent_for', 0))}: {dev.get('last_error') or 'not answered yet'}"
        lines.append(f"device  {device_id.ljust(width)}  {detail}")
    if not devices:
        lines.append("device  (none configured)")
    for problem in health.get("problems", []):
        lines.append(f"problem {problem}")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


def cmd_reload(args: argparse.Namespace) -> int:
    resolved = _resolve(args)
    if isinstance(resolved, int):
        return resolved
    base, expected = resolved
    try:
        if expected is not None:  # never make another gateway re-read its file
            check_identity(args, base, expected, _call(f"{base}/status")[1])
        code, doc = _call(f"{base}/reload", method="POST")
    except Unreachable as exc:
        print(str(exc), file=sys.stderr)
        return 1
    result = doc.get("result")
    if result == "applied":
        parts = [f"{key} {', '.join(doc[key])}" for key in ("added", "removed", "changed") if doc.get(key)]
        print(f"reloaded: {'; '.join(parts) if parts else 'no device changed'}")
        if doc.get("restart_needed"):
            print(f"note: changes to {', '.join(doc['restart_needed'])} take effect only after a restart")
        return 0
    for error in doc.get("errors", [doc.get("error", f"HTTP {code}")]):
        print(str(error), file=sys.stderr)
    if result == "refused":
        print(f"{len(doc.get('errors', []))} error(s); the running devices were left as they were", file=sys.stderr)
        return 2
    return 1
