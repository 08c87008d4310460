"""The SDF rules ``citytwin model validate`` checks before it converts an SDF document.

The checks follow RFC 9880's grammar (its CDDL, which the OneDM playground's
``sdf-validation`` JSON Schema also encodes): the shape of each class keyword, the JSON types
of the data qualities, ``type`` and ``sdfType`` values, ``sdfRef`` and ``sdfRequired``
pointers, and the pre-RFC ``odm*`` keywords. Extension qualities (``WotProtocolBinding``…) are
warnings: RFC 9880 lets ecosystems add them, but nothing here reads them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from citytwin.thingmodels.errors import Issue, pointer, split_pointer
from citytwin.thingmodels.rules import Rule, Severity
from citytwin.thingmodels.sdf import legacy_keywords
from citytwin.thingmodels.sdfrefs import NAMED, QUALITIES, expand

SDF_RULES: Final[dict[str, Rule]] = {
    rule.id: rule
    for rule in (
        Rule("sdf-legacy", Severity.ERROR, "a pre-RFC odm* keyword (odmObject, odmProperty, odmRef...)"),
        Rule("sdf-shape", Severity.ERROR, "a class keyword (sdfObject, sdfProperty...) or info/namespace is not an object of the right shape"),
        Rule("sdf-value-type", Severity.ERROR, "a quality has the wrong JSON type"),
        Rule("sdf-type", Severity.ERROR, "type is not number, string, boolean, integer, array or object; or sdfType is unknown"),
        Rule("sdf-ref", Severity.ERROR, "an sdfRef or sdfRequired pointer is malformed, points nowhere or loops"),
        Rule("sdf-ref-remote", Severity.WARNING, "an sdfRef into a namespace no given file defines (not fetched)"),
        Rule("sdf-quality", Severity.WARNING, "a quality RFC 9880 does not define (an extension nothing here reads)"),
    )
}

_TYPES: Final = ("number", "string", "boolean", "integer", "array", "object")
_SDF_TYPES: Final = ("byte-string", "unix-time")
_TOP: Final = frozenset({"info", "namespace", "defaultNamespace", "sdfThing", "sdfObject", "sdfProperty", "sdfAction",
                         "sdfEvent", "sdfData", "$comment"})
_NUMBERS: Final = ("minimum", "maximum", "multipleOf")
_COUNTS: Final = ("minLength", "maxLength", "minItems", "maxItems")
_STRINGS: Final = ("description", "label", "$comment", "unit", "pattern", "format", "contentFormat")
_BOOLS: Final = ("writable", "readable", "observable", "nullable", "uniqueItems")


def check_sdf(doc: Any, others: Sequence[Mapping[str, Any]] = ()) -> list[Issue]:
    """Every SDF rule broken by ``doc`` (errors and warnings, each with its pointer)."""
    if not isinstance(doc, Mapping):
        return [Issue("", "an SDF document must be a JSON object", "sdf-shape")]
    legacy = legacy_keywords(doc)
    if legacy:
        return [Issue("", f"pre-RFC OneDM keywords {', '.join(legacy)}: RFC 9880 renamed them sdf*", "sdf-legacy")]
    issues: list[Issue] = []
    for key in doc:
        if key not in _TOP:
            issues.append(Issue(pointer("", str(key)), f"{key!r} is not an SDF top-level keyword", "sdf-quality"))
    if "info" in doc and not isinstance(doc["info"], Mapping):
        issues.append(Issue("/info", "info must be an object", "sdf-shape"))
    names = doc.get("namespace", {})
    if not isinstance(names, Mapping) or not all(isinstance(v, str) for v in names.values()):
        issues.append(Issue("/namespace", "namespace must map prefixes to URI strings", "sdf-shape"))
    elif "defaultNamespace" in doc and (not isinstance(doc["defaultNamespace"], str) or doc["defaultNamespace"] not in names):
        issues.append(Issue("/defaultNamespace", f"defaultNamespace {doc['defaultNamespace']!r} is not a prefix in namespace", "sdf-shape"))
    _definition(doc, "", issues, top=True)
    _, problems = expand(doc, others)
    for problem in problems:
        issues.append(Issue(problem.pointer, problem.message, "sdf-ref-remote" if problem.kind == "remote" else "sdf-ref"))
    return issues


def _definition(node: Mapping[str, Any], at: str, issues: list[Issue], top: bool = False) -> None:
    for key, value in node.items():
        key_at = pointer(at, str(key))
        if key in NAMED:
            if not isinstance(value, Mapping) or not all(isinstance(v, Mapping) for v in value.values()):
                issues.append(Issue(key_at, f"{key} must map names to definitions (objects)", "sdf-shape"))
                continue
            for name, sub in value.items():
                _definition(sub, pointer(key_at, str(name)), issues)
        elif key in ("sdfInputData", "sdfOutputData", "items"):
            if isinstance(value, Mapping):
                _definition(value, key_at, issues)
            else:
                issues.append(Issue(key_at, f"{key} must be one data definition (an object)", "sdf-value-type"))
        elif top:
            continue
        elif key == "type" and value not in _TYPES:
            issues.append(Issue(key_at, f"type {value!r} is not one of {', '.join(_TYPES)}", "sdf-type"))
        elif key == "sdfType" and value not in _SDF_TYPES:
            issues.append(Issue(key_at, f"sdfType {value!r} is not one of {', '.join(_SDF_TYPES)}", "sdf-type"))
        elif key in _NUMBERS and (isinstance(value, bool) or not isinstance(value, (int, float))):
            issues.append(Issue(key_at, f"{key} must be a number", "sdf-value-type"))
        elif key in _COUNTS and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            issues.append(Issue(key_at, f"{key} must be a non-negative integer", "sdf-value-type"))
        elif key in _STRINGS and not isinstance(value, str):
            issues.append(Issue(key_at, f"{key} must be a string", "sdf-value-type"))
        elif key in _BOOLS and not isinstance(value, bool):
            issues.append(Issue(key_at, f"{key} must be true or false", "sdf-value-type"))
        elif key in ("sdfRequired", "required", "enum") and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            issues.append(Issue(key_at, f"{key} must be a list of strings", "sdf-value-type"))
        elif key == "sdfRequired":
            for index, ref in enumerate(value):
                tokens = split_pointer(ref[1:]) if ref.startswith("#/") else None
                if tokens is None:
                    issues.append(Issue(pointer(key_at, index), f"sdfRequired entry {ref!r} is not a '#/...' pointer", "sdf-ref"))
        elif key not in QUALITIES:
            issues.append(Issue(key_at, f"quality {key!r} is not defined by RFC 9880 (an extension; ignored)", "sdf-quality"))
