"""``citytwin model ...``: the vendor's tools for thing models and device bindings.

Exit codes: 0 valid, 1 invalid (warnings too with ``--strict``), 2 bad usage or a file that
cannot be read. ``--format json`` prints one JSON document for machines. ``validate`` and
``convert`` recognise the input's format from its content (``thingmodels.formats``), name it
in their messages and refuse an unknown one as such; each format's import is one function in
``IMPORTERS``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from citytwin.thingmodels.formats import Format, detect_format
from citytwin.thingmodels.iotda import check_iotda, from_iotda, to_iotda
from citytwin.thingmodels.library import (
    library_document,
    library_names,
    library_source,
    library_text,
    load_library_model,
)
from citytwin.thingmodels.loader import Resolver, check_model
from citytwin.thingmodels.onenet import check_onenet, from_onenet, to_onenet
from citytwin.thingmodels.positions import DocumentSyntaxError, ParsedDocument, parse_document
from citytwin.thingmodels.rules import Severity, severity_of
from citytwin.thingmodels.sdf import SdfImportError, from_sdf
from citytwin.thingmodels.sdfcheck import SDF_RULES, check_sdf
from citytwin.thingmodels.sdfout import to_sdf
from citytwin.thingmodels.tsl import Loss, from_tsl, is_module_document, to_document, to_tsl
from citytwin.thingmodels.types import ThingModel
from citytwin.thingmodels.validator import Finding, Report, locate, validate_parsed, validate_text
from citytwin.thingmodels.wot import HubBinding, TmImportError, from_tm, to_td, to_tm

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


FORMAT_NAMES = {
    Format.CITYTWIN: "citytwin model", Format.TSL: "Alibaba TSL", Format.WOT_TM: "WoT Thing Model",
    Format.WOT_TD: "WoT Thing Description", Format.SDF: "OneDM SDF (RFC 9880)",
    Format.IOTDA: "Huawei IoTDA product model", Format.ONENET: "OneNET thing model",
}
UNKNOWN_FORMAT = ("unknown format: not a citytwin or TSL model, a WoT Thing Model/Description, an SDF document, "
                  "an IoTDA product model or a OneNET thing model")


def _finding(source: str, parsed: ParsedDocument | None, at: str, rule: str, message: str,
             severity: Severity | None = None) -> Finding:
    where = parsed.position_of(at) if parsed is not None else None
    rule_severity = SDF_RULES[rule].severity if rule in SDF_RULES else severity_of(rule)
    return Finding(source, where.line if where else 0, where.column if where else 0, at, rule,
                   severity or rule_severity, message)


def _converted(source: str, fmt: Format, doc: Mapping[str, Any], resolve: Resolver) -> tuple[ThingModel | None, list[Finding]]:
    model, issues = check_model(doc, resolve)
    findings = [Finding(source, 0, 0, i.pointer, i.rule or "value-type", Severity.ERROR,
                        f"{i.message} (in the model converted from {fmt})") for i in issues]
    return (model if not issues else None), findings


def _validate_foreign(parsed: ParsedDocument, source: str, fmt: Format, lint: bool,
                      others: list[Mapping[str, Any]]) -> Report:
    """An SDF, IoTDA or OneNET document: its own rules first (SDF), then the converted model."""
    report = Report(source)
    data = parsed.data
    rules = {Format.SDF: lambda d: check_sdf(d, others), Format.IOTDA: check_iotda, Format.ONENET: check_onenet}[fmt]
    for issue in rules(data):
        finding = _finding(source, parsed, issue.pointer, issue.rule, issue.message)
        if finding.severity is Severity.ERROR or lint:
            report.findings.append(finding)
    if report.errors:
        report.findings.sort(key=lambda f: (f.line, f.column))
        return report
    if fmt is Format.SDF:
        doc, losses = from_sdf(data, others)
    elif fmt is Format.IOTDA:
        doc, losses = from_iotda(data)
    else:
        doc, losses = from_onenet(data)
    model, findings = _converted(source, fmt, doc, file_resolver(Path(source).parent))
    report.findings.extend(findings)
    if lint:
        flagged = {f.pointer for f in report.findings}  # a broken rule already says what is lost there
        report.findings.extend(_finding(source, parsed, loss.pointer, "conversion-loss", f"{loss.what} (lost converting from {fmt})",
                                        Severity.WARNING) for loss in losses if loss.pointer not in flagged)
    report.model = model
    report.findings.sort(key=lambda f: (f.line, f.column))
    return report


def _reports(files: list[str], lint: bool, search: list[str] | None = None) -> tuple[list[tuple[Report, str]], list[str]]:
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
            report = Report(name, [_finding(name, parsed, "", "format-unknown", f"{name}: {UNKNOWN_FORMAT}", Severity.ERROR)])
            reports.append((report, "unknown"))
        elif fmt in (Format.SDF, Format.IOTDA, Format.ONENET):
            others = [d for d in _sdf_documents([f for f in files if f != name], search or []) if d is not parsed.data]
            reports.append((_validate_foreign(parsed, name, fmt, lint, others), str(fmt)))
        elif fmt in (Format.WOT_TM, Format.WOT_TD):
            report = Report(name, [_finding(name, parsed, "", "format-unsupported", f"{name}: a {FORMAT_NAMES[fmt]}: "
                                            "validate it with the W3C tools; `model convert` imports Thing Models", Severity.ERROR)])
            reports.append((report, str(fmt)))
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
        for finding in report.findings:
            print(finding)
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


def cmd_validate(args: argparse.Namespace) -> int:
    reports, unreadable = _reports(args.files, args.lint or args.strict, args.search_path)
    code = _exit(reports, unreadable, args.strict)
    _emit(args, reports, unreadable, code == EXIT_OK)
    return code


def cmd_lint(args: argparse.Namespace) -> int:
    reports, unreadable = _reports(args.files, True, args.search_path)
    code = _exit(reports, unreadable, args.strict)
    _emit(args, reports, unreadable, code == EXIT_OK)
    return code


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


def _tm_resolver(base_dir: Path) -> Any:
    def resolve(href: str) -> Mapping[str, Any]:
        path = base_dir / href
        try:
            data = parse_document(read_text(str(path)), str(path)).data
        except (Unreadable, DocumentSyntaxError) as exc:
            raise LookupError(str(exc)) from None
        if not isinstance(data, Mapping):
            raise LookupError(f"{path} is not a JSON object")
        return data

    return resolve


def _sdf_documents(files: list[str], search: list[str]) -> list[Mapping[str, Any]]:
    """SDF documents that ``sdfRef`` may reach: other inputs, then every JSON file in the
    search path (files that are unreadable or not SDF are skipped: they cannot be targets)."""
    paths = [Path(f) for f in files]
    for folder in search:
        paths.extend(sorted(Path(folder).glob("*.json")))
    found = []
    for path in paths:
        try:
            data = parse_document(read_text(str(path)), str(path)).data
        except (Unreadable, DocumentSyntaxError):
            continue
        if isinstance(data, Mapping) and detect_format(data) is Format.SDF:
            found.append(data)
    return found


@dataclass(frozen=True, slots=True)
class Inputs:
    """What ``convert`` read: the documents in command-line order, and its options."""

    args: argparse.Namespace
    parsed: list[tuple[str, ParsedDocument]]
    fmt: Format

    @property
    def first(self) -> tuple[str, ParsedDocument]:
        return self.parsed[0]

    @property
    def base(self) -> Path:
        return Path(self.parsed[0][0]).parent


Imported = tuple[ThingModel | None, list[Finding], list[Loss]]


def _import_tsl(inputs: Inputs) -> Imported:
    """Ours or TSL, with TSL module documents (``functionBlockId``) given beside the main one."""
    parsed = inputs.parsed
    modules = [d for _, p in parsed if isinstance((d := p.data), Mapping) and is_module_document(d)]
    mains = [(n, p) for n, p in parsed if not (isinstance(p.data, Mapping) and is_module_document(p.data))]
    first_name = parsed[0][0]
    if len(mains) != 1:
        message = "give one model document and, for TSL, its module documents (with functionBlockId)"
        return None, [Finding(first_name, 1, 1, "", "document-type", Severity.ERROR, message)], []
    main_name, main = mains[0]
    resolve = file_resolver(Path(main_name).parent)
    if not modules:
        report = validate_parsed(main, main_name, resolve)
        return report.model, report.errors, []
    doc = from_tsl(main.data, modules)
    model, issues = check_model(doc, resolve)
    return (model if not issues else None), locate(issues, main, main_name), []


def _import_wot(inputs: Inputs) -> Imported:
    first_name, first = inputs.first
    args = inputs.args
    placeholders = dict(item.split("=", 1) for item in args.set)
    try:
        doc, losses = from_tm(first.data, _tm_resolver(inputs.base), placeholders, args.product_key)
    except TmImportError as exc:
        return None, [Finding(first_name, 1, 1, "", "value-type", Severity.ERROR, str(exc))], []
    model, findings = _converted(first_name, inputs.fmt, doc, file_resolver(inputs.base))
    return model, findings, losses


def _import_sdf(inputs: Inputs) -> Imported:
    first_name, first = inputs.first
    others = [p.data for _, p in inputs.parsed[1:] if isinstance(p.data, Mapping)]
    others += _sdf_documents([], inputs.args.search_path)
    try:
        doc, losses = from_sdf(first.data, others, inputs.args.product_key)
    except SdfImportError as exc:
        return None, [_finding(first_name, first, "", "sdf-legacy", f"{first_name}: {exc}")], []
    model, findings = _converted(first_name, inputs.fmt, doc, file_resolver(inputs.base))
    return model, findings, losses


def _import_iotda(inputs: Inputs) -> Imported:
    first_name, first = inputs.first
    doc, losses = from_iotda(first.data, inputs.args.product_key)
    model, findings = _converted(first_name, inputs.fmt, doc, file_resolver(inputs.base))
    return model, findings, losses


def _import_onenet(inputs: Inputs) -> Imported:
    first_name, first = inputs.first
    doc, losses = from_onenet(first.data, inputs.args.product_key)
    model, findings = _converted(first_name, inputs.fmt, doc, file_resolver(inputs.base))
    return model, findings, losses


IMPORTERS: dict[Format, Callable[[Inputs], Imported]] = {
    Format.CITYTWIN: _import_tsl,
    Format.TSL: _import_tsl,
    Format.WOT_TM: _import_wot,
    Format.WOT_TD: _import_wot,
    Format.SDF: _import_sdf,
    Format.IOTDA: _import_iotda,
    Format.ONENET: _import_onenet,
}


def _read_input(name: str) -> tuple[str, str]:
    """A file, or (as ``model show`` takes it) the name of a library model."""
    if not Path(name).exists() and name in library_names():
        return library_source(name), library_text(name)
    return name, read_text(name)


def _load_for_convert(args: argparse.Namespace) -> tuple[ThingModel | None, list[Finding], list[Loss], Format | None]:
    """Read the inputs, recognise the first one's format and import them with its importer."""
    parsed: list[tuple[str, ParsedDocument]] = []
    for given in args.inputs:
        name, text = _read_input(given)
        try:
            parsed.append((name, parse_document(text, name)))
        except DocumentSyntaxError as exc:
            where = exc.position
            return None, [Finding(name, where.line, where.column, "", exc.rule, Severity.ERROR, exc.message)], [], None
    first_name, first = parsed[0]
    fmt = detect_format(first.data)
    if fmt is None:
        if not isinstance(first.data, Mapping):
            fmt = Format.TSL  # the TSL checks say what a non-object is
        else:
            return None, [_finding(first_name, first, "", "format-unknown", f"{first_name}: {UNKNOWN_FORMAT}")], [], None
    model, findings, losses = IMPORTERS[fmt](Inputs(args, parsed, fmt))
    return model, findings, losses, fmt


_DETAIL = re.compile(r"'[^']*'|\"[^\"]*\"|(?<![\w.-])-?\d+(?:\.\d+)?(?:e[+-]?\d+)?(?![\w-])")


def loss_kind(loss: Loss) -> str:
    """A loss without its particulars (names, numbers), so routine losses group by kind."""
    return _DETAIL.sub("…", loss.what)


def _export(model: ThingModel, args: argparse.Namespace, losses: list[Loss]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The documents for ``--to``, and what was assumed on the way (the TD's broker)."""
    documents: dict[str, Any] = {}
    assumed: dict[str, Any] = {}
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
    elif args.to == "wot-td":
        broker = args.broker or HubBinding().broker
        if args.broker is None:
            assumed["broker"] = broker
        binding = HubBinding(broker, args.prefix, args.gateway, args.device or model.product_key.replace(".", "-"),
                             secured=not args.nosec)
        documents["main"], lost = to_td(model, binding)
        if assumed:
            documents["main"]["citytwin:assumedBroker"] = broker
        losses += lost
    else:
        exporter = {"sdf": to_sdf, "iotda": to_iotda, "onenet": to_onenet}[args.to]
        documents["main"], lost = exporter(model)
        losses += lost
    return documents, assumed


def cmd_convert(args: argparse.Namespace) -> int:
    try:
        model, findings, losses, fmt = _load_for_convert(args)
    except Unreadable as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    if model is None:
        if args.format == "json":
            print(json.dumps({"valid": False, "format": str(fmt) if fmt else None,
                              "findings": [f.as_dict() for f in findings]}, ensure_ascii=False, indent=2))
        for finding in findings:
            print(finding, file=sys.stderr)
        return EXIT_INVALID
    assert fmt is not None
    documents, assumed = _export(model, args, losses)
    written: list[str] = []
    if args.output:
        out = Path(args.output)
        for key, doc in documents.items():
            target = out if key == "main" else out.with_name(f"{out.stem}.{key}{out.suffix or '.json'}")
            target.write_text(json.dumps(doc, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
            written.append(str(target))
    kinds = Counter(loss_kind(x) for x in losses)
    if args.format == "json":
        print(json.dumps({"valid": True, "from": str(fmt), "to": args.to, "documents": documents, "written": written,
                          "assumed": assumed,
                          "losses": [{"pointer": x.pointer, "what": x.what} for x in losses],
                          "loss_kinds": [{"kind": k, "count": n} for k, n in kinds.most_common()]},
                         ensure_ascii=False, indent=2))
        return EXIT_OK
    if not args.output:
        body: Any = documents["main"] if len(documents) == 1 else list(documents.values())
        print(json.dumps(body, ensure_ascii=False, indent=2))
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    if "broker" in assumed:
        print(f"wot-td: no --broker given; the TD assumes {assumed['broker']} (said in citytwin:assumedBroker)",
              file=sys.stderr)
    if args.verbose:
        for loss in losses:
            print(f"loss: {loss}", file=sys.stderr)
    else:
        for kind, count in kinds.most_common():
            print(f"loss ×{count}: {kind}", file=sys.stderr)
    hint = "" if args.verbose or not losses else " (--verbose lists each)"
    print(f"{len(losses)} thing(s) the {args.to} format cannot express, converting from {fmt}{hint}", file=sys.stderr)
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
    validate.set_defaults(func=cmd_validate)

    lint = sub.add_parser("lint", help="report warnings that do not make a model invalid (exit 0 unless --strict)")
    lint.add_argument("files", nargs="+", metavar="FILE")
    lint.add_argument("--format", choices=["text", "json"], default="text", help="output format (default: text)")
    lint.add_argument("--strict", action="store_true", help="exit 1 when there is any warning")
    lint.add_argument("--search-path", action="append", default=[], metavar="DIR", help=search_help)
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
