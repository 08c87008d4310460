"""``citytwin model ...``: the vendor's tools for thing models and device bindings.

Exit codes: 0 valid (or clean), 1 invalid (or, for ``lint``, any warning), 2 bad usage or a
file that cannot be read. ``--format json`` prints one JSON document for machines.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from citytwin.thingmodels.library import (
    library_document,
    library_names,
    library_text,
    load_library_model,
)
from citytwin.thingmodels.loader import Resolver
from citytwin.thingmodels.positions import DocumentSyntaxError, parse_document
from citytwin.thingmodels.types import ThingModel
from citytwin.thingmodels.validator import Report, validate_text

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


class Unreadable(Exception):
    """A file that cannot be read or decoded: exit 2, not 1."""


def read_text(path: str) -> str:
    try:
        return Path(path).read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise Unreadable(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise Unreadable(f"{path}: cannot read: not UTF-8 ({exc.reason} at byte {exc.start})") from None


def file_resolver(base_dir: Path) -> Resolver:
    """Module ``model`` references: a library name, else a JSON/YAML file beside the model."""

    def resolve(ref: str) -> Mapping[str, Any]:
        if ref in library_names():
            return library_document(ref)
        path = base_dir / ref
        if not path.is_file():
            raise LookupError(f"neither a library model nor a file in {base_dir}")
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise LookupError(f"{path}: cannot read: {exc}") from None
        try:
            data = parse_document(text, str(path)).data
        except DocumentSyntaxError as exc:
            raise LookupError(f"{path}: {exc}") from None
        if not isinstance(data, Mapping):
            raise LookupError(f"{path} is not a JSON object")
        return data

    return resolve


def _reports(files: list[str], lint: bool) -> tuple[list[Report], list[str]]:
    reports, unreadable = [], []
    for name in files:
        try:
            text = read_text(name)
        except Unreadable as exc:
            unreadable.append(str(exc))
            continue
        reports.append(validate_text(text, name, file_resolver(Path(name).parent), lint=lint))
    return reports, unreadable


def _emit(args: argparse.Namespace, reports: list[Report], unreadable: list[str], ok: bool) -> None:
    if args.format == "json":
        doc = {
            "valid": ok and not unreadable,
            "files": [r.as_dict() for r in reports],
            "unreadable": unreadable,
        }
        print(json.dumps(doc, ensure_ascii=False, indent=2))
        return
    for message in unreadable:
        print(message, file=sys.stderr)
    for report in reports:
        for finding in report.findings:
            print(finding)
        if not report.findings:
            print(f"{report.source}: OK")
    errors = sum(len(r.errors) for r in reports)
    warnings = sum(len(r.warnings) for r in reports)
    print(f"{len(reports)} file(s) checked: {errors} error(s), {warnings} warning(s)", file=sys.stderr)


def cmd_validate(args: argparse.Namespace) -> int:
    reports, unreadable = _reports(args.files, args.lint)
    valid = all(r.valid for r in reports)
    _emit(args, reports, unreadable, valid)
    if unreadable:
        return EXIT_USAGE
    return EXIT_OK if valid else EXIT_INVALID


def cmd_lint(args: argparse.Namespace) -> int:
    reports, unreadable = _reports(args.files, lint=True)
    clean = all(not r.findings for r in reports)
    _emit(args, reports, unreadable, clean)
    if unreadable:
        return EXIT_USAGE
    return EXIT_OK if clean else EXIT_INVALID


def _summary(name: str, model: ThingModel) -> dict[str, Any]:
    return {
        "name": name,
        "productKey": model.product_key,
        "title": model.ext.get("title", ""),
        "properties": len(model.properties),
        "events": len(model.events),
        "services": len(model.services),
        "modules": list(model.modules),
    }


def cmd_list(args: argparse.Namespace) -> int:
    rows = [_summary(name, load_library_model(name)) for name in library_names()]
    if args.format == "json":
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return EXIT_OK
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        counts = f"{r['properties']:>3} properties {r['events']:>2} events {r['services']:>2} services"
        print(f"{r['name']:<{width}}  {counts}  {r['title']}")
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    try:
        text = library_text(args.name)
    except KeyError as exc:
        print(exc.args[0], file=sys.stderr)
        return EXIT_USAGE
    if args.format == "json":
        print(text, end="" if text.endswith("\n") else "\n")
        return EXIT_OK
    model = load_library_model(args.name)
    summary = _summary(args.name, model)
    print(f"{args.name}: {summary['title']} ({model.product_key})")
    if "description" in model.ext:
        print(f"  {model.ext['description']}")
    for module in model.modules.values():
        print(f"  module {module.identifier}: {module.name} (model {module.ref or 'inline'})")
    for key, prop in model.properties.items():
        dt = prop.data_type
        span = f" {dt.min}..{dt.max}" if dt.min is not None or dt.max is not None else ""
        unit = f" {dt.unit}" if dt.unit else ""
        print(f"  property {key} [{prop.access_mode}] {dt.type}{span}{unit}: {prop.name}")
    for key, event in model.events.items():
        print(f"  event {key} [{event.type}] ({', '.join(event.output)}): {event.name}")
    for key, service in model.services.items():
        print(f"  service {key} [{service.call_type}] ({', '.join(service.inputs)}): {service.name}")
    return EXIT_OK


def add_model_commands(subparsers: Any) -> None:
    """Register ``model`` and its actions on the top-level ``citytwin`` subparsers."""
    model = subparsers.add_parser("model", help="validate, lint, convert and browse thing models")
    sub = model.add_subparsers(dest="model_command", required=True, metavar="ACTION")

    validate = sub.add_parser("validate", help="report every error in model files (JSON or YAML)")
    validate.add_argument("files", nargs="+", metavar="FILE")
    validate.add_argument("--format", choices=["text", "json"], default="text")
    validate.add_argument("--lint", action="store_true", help="also report lint warnings")
    validate.set_defaults(func=cmd_validate)

    lint = sub.add_parser("lint", help="report warnings that do not make a model invalid")
    lint.add_argument("files", nargs="+", metavar="FILE")
    lint.add_argument("--format", choices=["text", "json"], default="text")
    lint.set_defaults(func=cmd_lint)

    listing = sub.add_parser("list", help="list the bundled standard models")
    listing.add_argument("--format", choices=["text", "json"], default="text")
    listing.set_defaults(func=cmd_list)

    show = sub.add_parser("show", help="print a bundled model (its JSON, or a summary)")
    show.add_argument("name")
    show.add_argument("--format", choices=["json", "text"], default="json")
    show.set_defaults(func=cmd_show)
