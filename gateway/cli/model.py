"""``citytwin model ...``: the vendor's tools for thing models and device bindings.

Exit codes: 0 valid (or clean), 1 invalid (or, for ``lint``, any warning), 2 bad usage or a
file that cannot be read, 3 an internal error of an importer (a bug, not a bad model).
``--format json`` prints one JSON document for machines.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from citytwin.gateway.cli.wotimport import (
    EXIT_CRASH,
    BadOption,
    ImporterCrash,
    add_wot_arguments,
    load_wot,
    validate_wot,
)
from citytwin.thingmodels.formats import Format, detect_format
from citytwin.thingmodels.library import (
    library_document,
    library_names,
    library_text,
    load_library_model,
)
from citytwin.thingmodels.loader import Resolver, check_model
from citytwin.thingmodels.positions import DocumentSyntaxError, ParsedDocument, parse_document
from citytwin.thingmodels.rules import Severity
from citytwin.thingmodels.tsl import Loss, from_tsl, is_module_document, to_document, to_tsl
from citytwin.thingmodels.types import ThingModel
from citytwin.thingmodels.validator import Finding, Report, locate, validate_parsed, validate_text
from citytwin.thingmodels.wot import HubBinding, to_td, to_tm

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


def _reports(files: list[str], lint: bool, args: argparse.Namespace) -> tuple[list[Report], list[str]]:
    reports, unreadable = [], []
    for name in files:
        try:
            text = read_text(name)
        except Unreadable as exc:
            unreadable.append(str(exc))
            continue
        resolver = file_resolver(Path(name).parent)
        wot = _wot_document(text, name)
        if wot is not None:  # a WoT TM is checked as a TM, a TD as a TD (then converted)
            reports.append(validate_wot(name, wot[0], wot[1], args, resolver, lint))
            continue
        reports.append(validate_text(text, name, resolver, lint=lint))
    return reports, unreadable


def _wot_document(text: str, name: str) -> tuple[ParsedDocument, bool] | None:
    """The parsed document and whether it is a Thing Model, when it is W3C WoT at all."""
    try:
        parsed = parse_document(text, name)
    except DocumentSyntaxError:
        return None
    fmt = detect_format(parsed.data)
    return (parsed, fmt is Format.WOT_TM) if fmt in (Format.WOT_TM, Format.WOT_TD) else None


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
    try:
        reports, unreadable = _reports(args.files, args.lint, args)
    except ImporterCrash as exc:
        print(exc, file=sys.stderr)
        return EXIT_CRASH
    except BadOption as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    valid = all(r.valid for r in reports)
    _emit(args, reports, unreadable, valid)
    if unreadable:
        return EXIT_USAGE
    return EXIT_OK if valid else EXIT_INVALID


def cmd_lint(args: argparse.Namespace) -> int:
    try:
        reports, unreadable = _reports(args.files, True, args)
    except ImporterCrash as exc:
        print(exc, file=sys.stderr)
        return EXIT_CRASH
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


def _load_for_convert(args: argparse.Namespace) -> tuple[ThingModel | None, list[Finding], list[Loss]]:
    """Read the inputs (TSL with module documents, ours, or a WoT Thing Model) into a model."""
    parsed: list[tuple[str, ParsedDocument]] = []
    for name in args.inputs:
        text = read_text(name)
        try:
            parsed.append((name, parse_document(text, name)))
        except DocumentSyntaxError as exc:
            where = exc.position
            return None, [Finding(name, where.line, where.column, "", exc.rule, Severity.ERROR, exc.message)], []
    first_name, first = parsed[0]
    base = Path(first_name).parent
    data = first.data
    fmt = detect_format(data)
    if fmt in (Format.WOT_TM, Format.WOT_TD):
        return load_wot(first_name, first, fmt is Format.WOT_TM, args, file_resolver(base))
    modules = [d for _, p in parsed if isinstance((d := p.data), Mapping) and is_module_document(d)]
    mains = [(n, p) for n, p in parsed if not (isinstance(p.data, Mapping) and is_module_document(p.data))]
    if len(mains) != 1:
        message = "give one model document and, for TSL, its module documents (with functionBlockId)"
        return None, [Finding(first_name, 1, 1, "", "document-type", Severity.ERROR, message)], []
    main_name, main = mains[0]
    if not modules:
        report = validate_parsed(main, main_name, file_resolver(Path(main_name).parent))
        return report.model, report.errors, []
    doc = from_tsl(main.data, modules)
    model, issues = check_model(doc, file_resolver(Path(main_name).parent))
    return (model if not issues else None), locate(issues, main, main_name), []


def cmd_convert(args: argparse.Namespace) -> int:
    try:
        model, findings, losses = _load_for_convert(args)
    except (Unreadable, BadOption) as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    except ImporterCrash as exc:
        print(exc, file=sys.stderr)
        return EXIT_CRASH
    if model is None:
        if args.format == "json":
            print(json.dumps({"valid": False, "findings": [f.as_dict() for f in findings]}, ensure_ascii=False, indent=2))
        for finding in findings:
            print(finding, file=sys.stderr)
        return EXIT_INVALID
    documents: dict[str, Any] = {}
    if args.to == "tsl":
        export = to_tsl(model)
        documents["main"] = export.main
        documents.update(export.modules)
        losses += export.losses
    elif args.to == "citytwin":
        documents["main"] = to_document(model)
    elif args.to == "wot-tm":
        documents["main"], lost = to_tm(model)
        losses += lost
    else:
        binding = HubBinding(args.broker, args.prefix, args.gateway, args.device or model.product_key.replace(".", "-"),
                             secured=not args.nosec)
        documents["main"], lost = to_td(model, binding)
        losses += lost
    written: list[str] = []
    if args.output:
        out = Path(args.output)
        for key, doc in documents.items():
            target = out if key == "main" else out.with_name(f"{out.stem}.{key}{out.suffix or '.json'}")
            target.write_text(json.dumps(doc, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
            written.append(str(target))
    if args.format == "json":
        print(json.dumps({"valid": True, "documents": documents, "written": written,
                          "losses": [{"pointer": x.pointer, "what": x.what} for x in losses]},
                         ensure_ascii=False, indent=2))
    else:
        if not args.output:
            body: Any = documents["main"] if len(documents) == 1 else list(documents.values())
            print(json.dumps(body, ensure_ascii=False, indent=2))
        for path in written:
            print(f"wrote {path}", file=sys.stderr)
        for loss in losses:
            print(f"loss: {loss}", file=sys.stderr)
        print(f"{len(losses)} thing(s) the {args.to} format cannot express (listed above)", file=sys.stderr)
    return EXIT_OK


def cmd_check_binding(args: argparse.Namespace) -> int:
    from citytwin.gateway.cli.bindingcheck import (
        check_binding_text,  # loads the gateway's config models
    )

    try:
        text = read_text(args.config)
    except Unreadable as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    findings = check_binding_text(text, args.config, Path(args.config).parent)
    if args.format == "json":
        doc = {"file": args.config, "valid": not findings, "findings": [f.as_dict() for f in findings]}
        print(json.dumps(doc, ensure_ascii=False, indent=2))
    else:
        for finding in findings:
            print(finding)
        if not findings:
            print(f"{args.config}: OK")
    return EXIT_INVALID if findings else EXIT_OK


def add_model_commands(subparsers: Any) -> None:
    """Register ``model`` and its actions on the top-level ``citytwin`` subparsers."""
    model = subparsers.add_parser("model", help="validate, lint, convert and browse thing models")
    sub = model.add_subparsers(dest="model_command", required=True, metavar="ACTION")

    validate = sub.add_parser("validate", help="report every error in model files (JSON or YAML)")
    validate.add_argument("files", nargs="+", metavar="FILE")
    validate.add_argument("--format", choices=["text", "json"], default="text")
    validate.add_argument("--lint", action="store_true", help="also report lint warnings")
    add_wot_arguments(validate, with_set=True)
    validate.set_defaults(func=cmd_validate)

    lint = sub.add_parser("lint", help="report warnings that do not make a model invalid")
    lint.add_argument("files", nargs="+", metavar="FILE")
    lint.add_argument("--format", choices=["text", "json"], default="text")
    add_wot_arguments(lint, with_set=True)
    lint.set_defaults(func=cmd_lint)

    listing = sub.add_parser("list", help="list the bundled standard models")
    listing.add_argument("--format", choices=["text", "json"], default="text")
    listing.set_defaults(func=cmd_list)

    convert = sub.add_parser("convert", help="convert between TSL, our format and W3C WoT TM/TD")
    convert.add_argument("inputs", nargs="+", metavar="IN",
                         help="a model (ours or TSL; for TSL also its module documents) or a WoT Thing Model")
    convert.add_argument("--to", required=True, choices=["tsl", "citytwin", "wot-tm", "wot-td"])
    convert.add_argument("-o", "--output", help="write here (TSL modules go beside it as OUT.<module>.json)")
    convert.add_argument("--format", choices=["text", "json"], default="text")
    convert.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                         help="a Thing Model placeholder's value")
    convert.add_argument("--product-key", help="product key for a model imported from a Thing Model")
    add_wot_arguments(convert, with_set=False)
    convert.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="TD: the hub broker")
    convert.add_argument("--prefix", default="citytwin/v1", help="TD: the hub topic prefix")
    convert.add_argument("--gateway", default="gateway", help="TD: the gateway id")
    convert.add_argument("--device", help="TD: the device id (default: from the product key)")
    convert.add_argument("--nosec", action="store_true", help="TD: the broker takes no credentials")
    convert.set_defaults(func=cmd_convert)

    check = sub.add_parser("check-binding", help="check a gateway config's device bindings against their models")
    check.add_argument("config", metavar="CONFIG")
    check.add_argument("--format", choices=["text", "json"], default="text")
    check.set_defaults(func=cmd_check_binding)

    show = sub.add_parser("show", help="print a bundled model (its JSON, or a summary)")
    show.add_argument("name")
    show.add_argument("--format", choices=["json", "text"], default="json")
    show.set_defaults(func=cmd_show)
