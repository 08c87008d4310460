"""``citytwin status`` and ``citytwin reload``: ask the running gateway through its HTTP API.

The gateway is found by its config file (``http.host``/``http.port``) or by ``--url``. Reload
is a ``POST /reload`` rather than a signal to a pid file: the answer carries what was added,
removed and changed, or the file:line errors of a refused file, so the operator sees the
result where they typed the command. (SIGHUP does the same, with the result in the log.)

Exit codes: 0 healthy / applied; 1 unhealthy, or the gateway could not be reached;
2 bad usage, an unreadable config, or a reload refused because the file is invalid.
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

from citytwin.gateway.config import ConfigError, ConfigIssue, HttpSection, parse_config

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
    where.add_argument("-c", "--config", help="the running gateway's config file (for http.host/http.port)")
    where.add_argument("--url", help="the gateway's HTTP API, e.g. http://127.0.0.1:9108")


def base_url(args: argparse.Namespace) -> str:
    if args.url:
        return str(args.url).rstrip("/")
    path = Path(args.config)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigIssue(source=str(path), line=0, path="", message=f"cannot read: {exc}")]) from None
    try:
        http = parse_config(text, str(path))[0].http
    except ConfigError:
        # a file being edited may be invalid elsewhere: its http section is enough to find
        # the gateway, which then answers (and refuses an invalid file) itself
        http = _http_section_only(text, path)
    if not http.enabled:
        raise Unreachable(f"{path}: http.enabled is false, so the gateway has no HTTP API to ask "
                          "(send SIGHUP to reload: systemctl reload citytwin-gateway)")
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(http.host, http.host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{http.port}"


def _http_section_only(text: str, path: Path) -> HttpSection:
    try:
        data = yaml.safe_load(text)
        return HttpSection.model_validate((data.get("http") if isinstance(data, dict) else None) or {})
    except (yaml.YAMLError, ValidationError):
        parse_config(text, str(path))  # raises ConfigError with every issue, file:line
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


def _resolve(args: argparse.Namespace) -> str | int:
    try:
        return base_url(args)
    except ConfigError as exc:
        for issue in exc.issues:
            print(str(issue), file=sys.stderr)
        return 2
    except Unreachable as exc:
        print(str(exc), file=sys.stderr)
        return 1


def cmd_status(args: argparse.Namespace) -> int:
    base = _resolve(args)
    if isinstance(base, int):
        return base
    try:
        _, doc = _call(f"{base}/status")
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
    base = _resolve(args)
    if isinstance(base, int):
        return base
    try:
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
