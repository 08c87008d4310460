"""``citytwin audit verify|show``: check and read the hash-chained command audit log."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from citytwin.gateway.audit import read_records, verify


def _path(args: argparse.Namespace) -> Path | None:
    if args.file is not None:
        return Path(args.file)
    from citytwin.gateway.bootstrap import prepare_file
    from citytwin.gateway.config import ConfigError

    try:
        config, _ = prepare_file(args.config)
    except ConfigError as exc:
        for issue in exc.issues:
            print(str(issue), file=sys.stderr)
        return None
    return Path(config.gateway.data_dir) / "audit.log"


def cmd_verify(args: argparse.Namespace) -> int:
    path = _path(args)
    if path is None:
        return 2
    if not path.exists():
        print(f"{path}: no audit log", file=sys.stderr)
        return 2
    count, problems = verify(path)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{path}: {len(problems)} problem(s) in {count} record(s): the log was altered")
        return 1
    print(f"{path}: {count} record(s), chain intact")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    path = _path(args)
    if path is None:
        return 2
    if not path.exists():
        print(f"{path}: no audit log", file=sys.stderr)
        return 2
    records = [r for _, r, _ in read_records(path) if r is not None]
    if args.device:
        records = [r for r in records if r.get("device") == args.device]
    records = records[-args.last:] if args.last else records
    if args.json:
        for record in records:
            print(json.dumps(record, ensure_ascii=False))
        return 0
    for r in records:
        print(_line(r))
    return 0


def _line(r: dict[str, Any]) -> str:
    import time

    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.get("ts", 0) / 1000))
    error = f"  {r['error'].get('code')}: {r['error'].get('message')}" if isinstance(r.get("error"), dict) else ""
    return (f"{when}Z {r.get('device', '?'):<20} {r.get('target', '?')!s:<18} {r.get('status', '?'):<10} "
            f"by {r.get('operator') or 'anonymous':<14} id {r.get('id')}{error}")


def add_audit_commands(sub: Any) -> None:
    audit = sub.add_parser("audit", help="verify or read the command audit log")
    actions = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")

    def where(parser: argparse.ArgumentParser) -> None:
        group = parser.add_mutually_exclusive_group(required=True)
        group.add_argument("-c", "--config", help="the gateway's config (the log is in its data_dir)")
        group.add_argument("--file", help="an audit.log file")

    check = actions.add_parser("verify", help="check the hash chain; exit 1 if any record was edited or removed")
    where(check)
    check.set_defaults(func=cmd_verify)
    show = actions.add_parser("show", help="print audit records")
    where(show)
    show.add_argument("--device")
    show.add_argument("--last", type=int, default=0, help="only the last N records")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_show)
