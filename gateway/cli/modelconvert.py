"""``citytwin model convert``: read any format we know (recognised by content), import it with
that format's importer (one function each, in ``IMPORTERS``), export to ``--to`` and say
every loss: one line per kind by default, each with ``--verbose``, all of them with
``--format json``. A library model name works wherever a file does, as in ``model show``.
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
from citytwin.gateway.cli.wotimport import EXIT_CRASH, BadOption, ImporterCrash, load_wot
from citytwin.thingmodels.formats import Format, detect_format
from citytwin.thingmodels.iotda import from_iotda, to_iotda
from citytwin.thingmodels.library import library_names, library_source, library_text
from citytwin.thingmodels.loader import check_model
from citytwin.thingmodels.onenet import from_onenet, to_onenet
from citytwin.thingmodels.positions import DocumentSyntaxError, ParsedDocument, parse_document
from citytwin.thingmodels.rules import Severity
from citytwin.thingmodels.sdf import SdfImportError, from_sdf
from citytwin.thingmodels.sdfout import to_sdf
from citytwin.thingmodels.tsl import Loss, from_tsl, is_module_document, to_document, to_tsl
from citytwin.thingmodels.types import ThingModel
from citytwin.thingmodels.validator import Finding, locate, validate_parsed
from citytwin.thingmodels.wot import HubBinding, to_td, to_tm


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
    """A WoT TM checked as a TM, a TD as a TD (gateway/cli/wotimport.py), then converted."""
    first_name, first = inputs.first
    return load_wot(first_name, first, inputs.fmt is Format.WOT_TM, inputs.args, file_resolver(inputs.base))


def _import_sdf(inputs: Inputs) -> Imported:
    first_name, first = inputs.first
    others = [p.data for _, p in inputs.parsed[1:] if isinstance(p.data, Mapping)]
    others += sdf_documents([], inputs.args.search_path)
    try:
        doc, losses = from_sdf(first.data, others, inputs.args.product_key)
    except SdfImportError as exc:
        return None, [finding(first_name, first, "", "sdf-legacy", f"{first_name}: {exc}")], []
    model, findings = converted(first_name, inputs.fmt, doc, file_resolver(inputs.base))
    return model, findings, losses


def _import_iotda(inputs: Inputs) -> Imported:
    first_name, first = inputs.first
    doc, losses = from_iotda(first.data, inputs.args.product_key)
    model, findings = converted(first_name, inputs.fmt, doc, file_resolver(inputs.base))
    return model, findings, losses


def _import_onenet(inputs: Inputs) -> Imported:
    first_name, first = inputs.first
    doc, losses = from_onenet(first.data, inputs.args.product_key)
    model, findings = converted(first_name, inputs.fmt, doc, file_resolver(inputs.base))
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
            return None, [finding(first_name, first, "", "format-unknown", f"{first_name}: {UNKNOWN_FORMAT}")], [], None
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
    except (Unreadable, BadOption) as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    except ImporterCrash as exc:
        print(exc, file=sys.stderr)
        return EXIT_CRASH
    if model is None:
        if args.format == "json":
            print(json.dumps({"valid": False, "format": str(fmt) if fmt else None,
                              "findings": [f.as_dict() for f in findings]}, ensure_ascii=False, indent=2))
        for finding in findings:
            print(finding, file=sys.stderr)
        return EXIT_INVALID
    assert fmt is not None
    read_losses = len(losses)  # what our model could not take from the input; the rest, what --to cannot say
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
                          "loss_kinds": [{"kind": k, "count": n} for k, n in kinds.most_common()],
                          "lost_reading": read_losses, "lost_writing": len(losses) - read_losses},
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
    reading = f"{read_losses} thing(s) lost reading {fmt}; " if read_losses else ""
    print(f"{reading}{len(losses) - read_losses} thing(s) the {args.to} format cannot express, converting from {fmt}{hint}",
          file=sys.stderr)
    return EXIT_OK


