"""``citytwin model ...``: the vendor's tools for thing models and device bindings.

Exit codes: 0 valid, 1 invalid (warnings too with ``--strict``), 2 bad usage or a file that
cannot be read, 3 an internal error of an importer (a bug, not a bad model). ``--format json`` prints one JSON document for machines. ``validate`` and
``convert`` recognise the input's format from its content (``thingmodels.formats``), name it
in their messages and refuse an unknown one as such; each format's import is one function in
``IMPORTERS``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from citytwin.gateway.cli.modelconvert import cmd_convert
from citytwin.gateway.cli.modelio import (
    EXIT_INVALID,
    EXIT_OK,
    EXIT_USAGE,
    UNKNOWN_FORMAT,
    Unreadable,
    converted,
    file_resolver,
    finding,
    read_text,
    sdf_documents,
)
from citytwin.gateway.cli.wotimport import (
    EXIT_CRASH,
    BadOption,
    ImporterCrash,
    add_wot_arguments,
    validate_wot,
)
from citytwin.thingmodels.formats import Format, detect_format
from citytwin.thingmodels.iotda import from_iotda
from citytwin.thingmodels.iotdacheck import check_iotda
from citytwin.thingmodels.library import library_names, library_text, load_library_model
from citytwin.thingmodels.onenet import check_onenet, from_onenet
from citytwin.thingmodels.positions import DocumentSyntaxError, ParsedDocument, parse_document
from citytwin.thingmodels.rules import Severity
from citytwin.thingmodels.sdf import from_sdf
from citytwin.thingmodels.sdfcheck import check_sdf
from citytwin.thingmodels.types import ThingModel
from citytwin.thingmodels.validator import Report, validate_parsed, validate_text


def _validate_foreign(parsed: ParsedDocument, source: str, fmt: Format, lint: bool,
                      others: list[Mapping[str, Any]]) -> Report:
    """An SDF, IoTDA or OneNET document: its own rules first, then the converted model."""
    report = Report(source)
    data = parsed.data
    rules = {Format.SDF: lambda d: check_sdf(d, others), Format.IOTDA: check_iotda, Format.ONENET: check_onenet}[fmt]
    for issue in rules(data):
        found = finding(source, parsed, issue.pointer, issue.rule, issue.message)
        if found.severity is Severity.ERROR or lint:
            report.findings.append(found)
    if report.errors:
        report.findings.sort(key=lambda f: (f.line, f.column))
        return report
    if fmt is Format.SDF:
        doc, losses = from_sdf(data, others)
    elif fmt is Format.IOTDA:
        doc, losses = from_iotda(data)
    else:
        doc, losses = from_onenet(data)
    model, findings = converted(source, fmt, doc, file_resolver(Path(source).parent))
    report.findings.extend(findings)
    if lint:
        flagged = {f.pointer for f in report.findings}  # a broken rule already says what is lost there
        report.findings.extend(finding(source, parsed, loss.pointer, "conversion-loss", f"{loss.what} (lost converting from {fmt})",
                                        Severity.WARNING) for loss in losses if loss.pointer not in flagged)
    report.model = model
    report.findings.sort(key=lambda f: (f.line, f.column))
    return report


def _reports(files: list[str], lint: bool, search: list[str] | None = None,
             args: argparse.Namespace | None = None) -> tuple[list[tuple[Report, str]], list[str]]:
    reports: list[tuple[Report, str]] = []
    unreadable: list[str] = []
    for name in files:
        try:
            text = read_text(name)
        except Unreadable as exc:
            unreadable.append(str(exc))
            continue
        try:
            parsed = parse_document(text, name)
        except DocumentSyntaxError:
            reports.append((validate_text(text, name, file_resolver(Path(name).parent), lint=lint), "unknown"))
            continue
        fmt = detect_format(parsed.data)
        if fmt is None and isinstance(parsed.data, Mapping):
            report = Report(name, [finding(name, parsed, "", "format-unknown", f"{name}: {UNKNOWN_FORMAT}", Severity.ERROR)])
            reports.append((report, "unknown"))
        elif fmt in (Format.SDF, Format.IOTDA, Format.ONENET):
            others = [d for d in sdf_documents([f for f in files if f != name], search or []) if d is not parsed.data]
            reports.append((_validate_foreign(parsed, name, fmt, lint, others), str(fmt)))
        elif fmt in (Format.WOT_TM, Format.WOT_TD) and args is not None:
            # a WoT TM is checked as a TM, a TD as a TD (W3C schema and TD 1.1 rules), then converted
            resolver = file_resolver(Path(name).parent)
            reports.append((validate_wot(name, parsed, fmt is Format.WOT_TM, args, resolver, lint), str(fmt)))
        else:
            reports.append((validate_parsed(parsed, name, file_resolver(Path(name).parent), lint), str(fmt or Format.TSL)))
    return reports, unreadable


def _emit(args: argparse.Namespace, reports: list[tuple[Report, str]], unreadable: list[str], ok: bool) -> None:
    if args.format == "json":
        doc = {
            "valid": ok and not unreadable,
            "files": [{**r.as_dict(), "format": fmt} for r, fmt in reports],
            "unreadable": unreadable,
        }
        print(json.dumps(doc, ensure_ascii=False, indent=2))
        return
    for message in unreadable:
        print(message, file=sys.stderr)
    for report, fmt in reports:
        for item in report.findings:
            print(item)
        if not report.findings:
            print(f"{report.source}: OK ({fmt})")
    errors = sum(len(r.errors) for r, _ in reports)
    warnings = sum(len(r.warnings) for r, _ in reports)
    print(f"{len(reports)} file(s) checked: {errors} error(s), {warnings} warning(s)", file=sys.stderr)


def _exit(reports: list[tuple[Report, str]], unreadable: list[str], strict: bool) -> int:
    """One rule for both ``validate --lint`` and ``lint``: warnings exit 0 unless --strict."""
    if unreadable:
        return EXIT_USAGE
    if any(not r.valid for r, _ in reports):
        return EXIT_INVALID
    if strict and any(r.warnings for r, _ in reports):
        return EXIT_INVALID
    return EXIT_OK


def _check(args: argparse.Namespace, lint: bool) -> int:
    """``validate`` and ``lint``: report every file; exit by the one rule of ``_exit``."""
    try:
        reports, unreadable = _reports(args.files, lint, args.search_path, args)
    except ImporterCrash as exc:
        print(exc, file=sys.stderr)
        return EXIT_CRASH
    except BadOption as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    code = _exit(reports, unreadable, args.strict)
    _emit(args, reports, unreadable, code == EXIT_OK)
    return code


def cmd_validate(args: argparse.Namespace) -> int:
    return _check(args, args.lint or args.strict)


def cmd_lint(args: argparse.Namespace) -> int:
    return _check(args, True)


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

    search_help = "a folder of SDF files that sdfRef may reach (repeatable); other inputs count too"
    validate = sub.add_parser("validate", help="report every error in model files (any format we read; JSON or YAML)")
    validate.add_argument("files", nargs="+", metavar="FILE")
    validate.add_argument("--format", choices=["text", "json"], default="text", help="output format (default: text)")
    validate.add_argument("--lint", action="store_true", help="also report lint warnings (and conversion losses)")
    validate.add_argument("--strict", action="store_true", help="warnings exit 1 too (implies --lint)")
    validate.add_argument("--search-path", action="append", default=[], metavar="DIR", help=search_help)
    add_wot_arguments(validate, with_set=True)
    validate.set_defaults(func=cmd_validate)

    lint = sub.add_parser("lint", help="report warnings that do not make a model invalid (exit 0 unless --strict)")
    lint.add_argument("files", nargs="+", metavar="FILE")
    lint.add_argument("--format", choices=["text", "json"], default="text", help="output format (default: text)")
    lint.add_argument("--strict", action="store_true", help="exit 1 when there is any warning")
    lint.add_argument("--search-path", action="append", default=[], metavar="DIR", help=search_help)
    add_wot_arguments(lint, with_set=True)
    lint.set_defaults(func=cmd_lint)

    listing = sub.add_parser("list", help="list the bundled standard models")
    listing.add_argument("--format", choices=["text", "json"], default="text")
    listing.set_defaults(func=cmd_list)

    convert = sub.add_parser("convert", help="convert between our format, TSL, WoT TM/TD, SDF, IoTDA and OneNET")
    convert.add_argument("inputs", nargs="+", metavar="IN",
                         help="a model file in any format we read (or a library model name, as `model show` takes); "
                              "for TSL also its module documents, for SDF the files its sdfRef reach")
    convert.add_argument("--to", required=True, choices=["tsl", "citytwin", "wot-tm", "wot-td", "sdf", "iotda", "onenet"])
    convert.add_argument("-o", "--output", help="write here (TSL modules go beside it as OUT.<module>.json)")
    convert.add_argument("--format", choices=["text", "json"], default="text",
                         help="text, or json: the documents and every loss, machine-readable (default: text)")
    convert.add_argument("--verbose", action="store_true", help="list every loss, not one line per kind")
    convert.add_argument("--search-path", action="append", default=[], metavar="DIR", help=search_help)
    convert.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                         help="a Thing Model placeholder's value")
    convert.add_argument("--product-key", help="product key for an imported model (default: from the document)")
    add_wot_arguments(convert, with_set=False)
    convert.add_argument("--broker", default=None,
                         help="TD: the hub broker (default: mqtt://127.0.0.1:1883, said in the TD as assumed)")
    convert.add_argument("--prefix", default="citytwin/v1", help="TD: the hub topic prefix (default: citytwin/v1)")
    convert.add_argument("--gateway", default="gateway", help="TD: the gateway id (default: gateway)")
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
