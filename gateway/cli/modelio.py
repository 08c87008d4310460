"""What the ``model`` commands share: reading files (a file that cannot be read is exit 2, not
1), resolving module references beside a model, the SDF documents ``sdfRef`` may reach, and
findings for a model converted from another format.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from citytwin.thingmodels.formats import Format, detect_format
from citytwin.thingmodels.library import library_document, library_names
from citytwin.thingmodels.loader import Resolver, check_model
from citytwin.thingmodels.positions import DocumentSyntaxError, ParsedDocument, parse_document
from citytwin.thingmodels.rules import Severity, severity_of
from citytwin.thingmodels.sdfcheck import SDF_RULES
from citytwin.thingmodels.types import ThingModel
from citytwin.thingmodels.validator import Finding

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


def finding(source: str, parsed: ParsedDocument | None, at: str, rule: str, message: str,
             severity: Severity | None = None) -> Finding:
    where = parsed.position_of(at) if parsed is not None else None
    rule_severity = SDF_RULES[rule].severity if rule in SDF_RULES else severity_of(rule)
    return Finding(source, where.line if where else 0, where.column if where else 0, at, rule,
                   severity or rule_severity, message)


def converted(source: str, fmt: Format, doc: Mapping[str, Any], resolve: Resolver) -> tuple[ThingModel | None, list[Finding]]:
    model, issues = check_model(doc, resolve)
    findings = [Finding(source, 0, 0, i.pointer, i.rule or "value-type", Severity.ERROR,
                        f"{i.message} (in the model converted from {fmt})") for i in issues]
    return (model if not issues else None), findings


def sdf_documents(files: list[str], search: list[str]) -> list[Mapping[str, Any]]:
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


