"""Is a WoT document what it says it is? A Thing Model checked as a Thing Model, a Thing
Description as a Thing Description, before anything is converted.

Two layers: the W3C JSON Schemas (``schemas/tm-schema.json``, ``schemas/td-schema.json``,
the playground's pinned copies) for shape, and the rules the schemas cannot express: the
Thing Model rules of TD 1.1 §10 (placeholders, ``tm:ref``, ``tm:optional``/``tm:required``,
``version``) and the TD's own cross-references (security names, ``op`` lists, one
``rel: type`` link, enum values of the declared type). Every issue carries a rule id from
``WOT_RULES`` so a vendor's CI can key on it, like the TSL rules in ``rules``.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator, Mapping
from importlib import resources
from typing import Any, Final

import jsonschema
from jsonschema.exceptions import ValidationError

from citytwin.thingmodels.errors import Issue, pointer
from citytwin.thingmodels.rules import Rule, Severity

PLACEHOLDER: Final = re.compile(r"\{\{([^{}]+)\}\}")
AFFORDANCE_SECTIONS: Final = ("properties", "actions", "events")
_AFFORDANCE_POINTER: Final = re.compile(r"/(properties|actions|events)/([^/]+)")


def _rules(severity: Severity, *pairs: tuple[str, str]) -> dict[str, Rule]:
    return {rule_id: Rule(rule_id, severity, summary) for rule_id, summary in pairs}


WOT_RULES: Final[dict[str, Rule]] = {
    **_rules(
        Severity.ERROR,
        ("wot-schema", "the document fails the W3C Thing Model / Thing Description JSON Schema"),
        ("tm-type", "a Thing Model's @type does not include tm:ThingModel"),
        ("tm-placeholder", "a placeholder is used as a key, has no value, or its value does not fit"),
        ("tm-version", "a Thing Model carries version.instance (only a TD has an instance version)"),
        ("tm-ref", "a tm:ref or tm:extends is malformed, missing, or loops"),
        ("tm-optional", "a tm:optional / tm:required entry is not /properties|actions|events/NAME of this model"),
        ("td-security", "a security name is not defined in securityDefinitions"),
        ("td-op", "a form's op list is empty"),
        ("td-link-type", "more than one link with rel 'type' (a TD has at most one Thing Model)"),
        ("td-enum-type", "an enum or const value is not of the data schema's declared type"),
        ("wot-remote-ref", "a remote tm:extends / tm:ref was not fetched (the document was not checked)"),
    ),
    **_rules(
        Severity.WARNING,
        ("tm-ref-escaping", "a tm:ref pointer matched a key only when read literally (not RFC 6901-unescaped)"),
        ("wot-description-empty", "a description is the empty string"),
        ("tm-unfilled", "placeholders have no value, so the model was checked but not converted"),
    ),
}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def as_map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def wot_severity(rule_id: str) -> Severity:
    rule = WOT_RULES.get(rule_id)
    return rule.severity if rule is not None else Severity.ERROR


# -- the JSON Schemas ---------------------------------------------------------------------------


@functools.cache
def _validator(name: str) -> jsonschema.Draft7Validator:
    text = resources.files("citytwin.thingmodels").joinpath("schemas", name).read_text(encoding="utf-8")
    return jsonschema.Draft7Validator(json.loads(text))


def _pointer_of(path: Any) -> str:
    at = ""
    for token in path:
        at = pointer(at, token)
    return at


def _telling(error: ValidationError) -> tuple[str, str]:
    """(pointer, message) of the most telling failure under an anyOf/oneOf. Where every
    alternative fails on the same value (a security scheme, an op), the allowed values are
    listed together; otherwise the deepest failure that is not "is not of type" from the
    placeholder-string branch the TM schema puts beside most terms."""
    leaves = list(_leaves(error))
    deepest = max(len(e.absolute_path) for e in leaves)
    at_value = [e for e in leaves if len(e.absolute_path) == deepest]
    if error.context and all(e.validator in ("enum", "const", "pattern") for e in at_value):
        allowed: list[str] = []
        for e in at_value:
            values = e.validator_value if e.validator == "enum" else [e.validator_value] if e.validator == "const" else []
            allowed += [json.dumps(v) for v in values if json.dumps(v) not in allowed]
        if any(e.validator == "pattern" for e in at_value):
            allowed.append("a {{PLACEHOLDER}}" if "{" in str(at_value[0].validator_value) else "a string of its pattern")
        if allowed:
            return _pointer_of(at_value[0].absolute_path), f"{at_value[0].instance!r} is not one of {', '.join(allowed)}"
    ranked = min(leaves, key=lambda e: (e.validator == "type", -len(e.absolute_path)))
    return _pointer_of(ranked.absolute_path), ranked.message


def _leaves(error: ValidationError) -> Iterator[ValidationError]:
    if not error.context:
        yield error
        return
    for sub in error.context:
        yield from _leaves(sub)


def _schema_issues(doc: Any, name: str, what: str) -> list[Issue]:
    issues = []
    for error in _validator(name).iter_errors(doc):
        at, message = _telling(error)
        message = message if len(message) <= 200 else message[:197] + "..."
        issues.append(Issue(at, f"{message} (W3C {what} JSON Schema)", "wot-schema"))
    return issues


# -- Thing Model rules (TD 1.1 §10) -------------------------------------------------------------


def check_tm(doc: Any) -> list[Issue]:
    """Every problem with ``doc`` as a Thing Model as written (references not yet resolved)."""
    issues = []
    if isinstance(doc, Mapping):
        if "tm:ThingModel" not in _types(doc):
            issues.append(Issue("/@type", "a Thing Model's @type must include 'tm:ThingModel'", "tm-type"))
        version = doc.get("version")
        if isinstance(version, Mapping) and "instance" in version:
            issues.append(Issue("/version/instance", "a Thing Model has no instance version; "
                                "version.instance belongs in the Thing Descriptions made from it", "tm-version"))
        for key in ("tm:optional", "tm:required"):
            entries = doc.get(key)
            for index, entry in enumerate(entries if isinstance(entries, list) else []):
                if not (isinstance(entry, str) and affordance_of(entry) is not None):
                    issues.append(Issue(pointer(pointer("", key), index),
                                        f"{key} entry {entry!r} must name an interaction affordance: "
                                        "/properties/NAME, /actions/NAME or /events/NAME", "tm-optional"))
    for at, key in _keys(doc, ""):
        if PLACEHOLDER.search(key):
            issues.append(Issue(at, f"placeholder in the key {key!r}: placeholders stand for values, "
                                "never for names (TD 1.1 §10.4)", "tm-placeholder"))
    for at, ref in _refs(doc, ""):
        if not isinstance(ref, str) or "#" not in ref or not ref.partition("#")[2].startswith("/"):
            issues.append(Issue(at, f"tm:ref {ref!r} must be [URI]#/JSON/POINTER", "tm-ref"))
    issues.extend(_enum_types(doc, ""))
    return _merge(issues, _schema_issues(doc, "tm-schema.json", "Thing Model"))


def affordance_of(entry: str) -> tuple[str, str] | None:
    """(section, name) for a tm:optional pointer; ``#/...`` (older drafts) is taken too."""
    match = _AFFORDANCE_POINTER.fullmatch(entry[1:] if entry.startswith("#") else entry)
    if match is None:
        return None
    return match.group(1), match.group(2).replace("~1", "/").replace("~0", "~")


def check_optional_targets(tm: Mapping[str, Any]) -> list[Issue]:
    """After resolution: each tm:optional / tm:required names an affordance the model has."""
    issues = []
    for key in ("tm:optional", "tm:required"):
        entries = tm.get(key)
        for index, entry in enumerate(entries if isinstance(entries, list) else []):
            found = affordance_of(entry) if isinstance(entry, str) else None
            if found is None:
                continue
            section, name = found
            if not (isinstance(tm.get(section), Mapping) and name in tm[section]):
                issues.append(Issue(pointer(pointer("", key), index),
                                    f"{key} names {entry!r}, which this model does not define", "tm-optional"))
    return issues


# -- Thing Description rules --------------------------------------------------------------------


def check_td(doc: Any) -> list[Issue]:
    """Every problem with ``doc`` as a Thing Description."""
    issues: list[Issue] = []
    schema = _schema_issues(doc, "td-schema.json", "Thing Description")
    if not isinstance(doc, Mapping):
        return schema
    tm_terms = sorted({k for _, k in _keys(doc, "") if k.startswith("tm:") and k != "tm:ref"})
    if schema and tm_terms:
        issues.append(Issue("/@type", f"uses Thing Model terms ({', '.join(tm_terms)}) but its @type does not "
                            "include 'tm:ThingModel'; a Thing Description cannot use them", "tm-type"))
    elif schema and not any(key in doc for key in ("security", "securityDefinitions", "forms")) and not _has_forms(doc):
        issues.append(Issue("/@type", "has neither security nor forms, so it is no Thing Description; "
                            "if it is a Thing Model, its @type must include 'tm:ThingModel'", "tm-type"))
    defined = as_map(doc.get("securityDefinitions"))
    issues.extend(_security_names(doc.get("security"), "/security", defined))
    for name, scheme in defined.items():
        if isinstance(scheme, Mapping) and scheme.get("scheme") == "combo":
            for key in ("oneOf", "allOf"):
                issues.extend(_security_names(scheme.get(key), pointer(pointer("/securityDefinitions", name), key), defined))
    for at, form in _forms(doc, ""):
        issues.extend(_security_names(form.get("security"), pointer(at, "security"), defined))
        if form.get("op") == []:
            issues.append(Issue(pointer(at, "op"), "op is an empty list: a form must name at least one operation", "td-op"))
    links = doc.get("links")
    typed = [i for i, link in enumerate(links if isinstance(links, list) else [])
             if isinstance(link, Mapping) and link.get("rel") == "type"]
    for index in typed[1:]:
        issues.append(Issue(f"/links/{index}/rel", "a second link with rel 'type': a Thing Description is an "
                            "instance of at most one Thing Model", "td-link-type"))
    issues.extend(_enum_types(doc, ""))
    if any(i.rule == "tm-type" for i in issues):
        return issues  # most likely a Thing Model without its type: the TD schema's complaints are noise
    return _merge(issues, schema)


def _security_names(value: Any, at: str, defined: Mapping[str, Any]) -> list[Issue]:
    names = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    return [Issue(at if isinstance(value, str) else pointer(at, i), f"security {name!r} is not defined in "
                  "securityDefinitions", "td-security")
            for i, name in enumerate(names) if isinstance(name, str) and name not in defined]


def _has_forms(doc: Mapping[str, Any]) -> bool:
    return any(True for _ in _forms(doc, ""))


# -- lint ---------------------------------------------------------------------------------------


def lint_wot(doc: Any) -> list[Issue]:
    """Advice: an empty description says nothing (TSL would refuse it; the importer drops it)."""
    return [Issue(at, "description is empty; it is not imported", "wot-description-empty")
            for at, value in _values(doc, "", "description") if value == ""]


# -- walking ------------------------------------------------------------------------------------


_JSON_TYPES: Final[Mapping[str, Any]] = {
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "object": lambda v: isinstance(v, Mapping),
    "array": lambda v: isinstance(v, list),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
}


def _enum_types(node: Any, at: str) -> Iterator[Issue]:
    """enum / const values that no value of the declared type can equal (pg-usingTM)."""
    if isinstance(node, Mapping):
        kind = node.get("type")
        check = _JSON_TYPES.get(kind) if isinstance(kind, str) else None
        if check is not None:
            if isinstance(node.get("enum"), list):
                for index, value in enumerate(node["enum"]):
                    if not check(value) and not (isinstance(value, str) and PLACEHOLDER.search(value)):
                        yield Issue(pointer(pointer(at, "enum"), index),
                                    f"enum value {value!r} is not of the declared type {kind!r}", "td-enum-type")
            if "const" in node and not check(node["const"]) and not (
                    isinstance(node["const"], str) and PLACEHOLDER.search(node["const"])):
                yield Issue(pointer(at, "const"), f"const {node['const']!r} is not of the declared type {kind!r}",
                            "td-enum-type")
        for key, value in node.items():
            if key not in ("enum", "const", "default", "examples"):
                yield from _enum_types(value, pointer(at, str(key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _enum_types(value, pointer(at, index))


def _keys(node: Any, at: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            here = pointer(at, str(key))
            yield here, str(key)
            yield from _keys(value, here)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _keys(value, pointer(at, index))


def _values(node: Any, at: str, wanted: str) -> Iterator[tuple[str, Any]]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            here = pointer(at, str(key))
            if key == wanted:
                yield here, value
            yield from _values(value, here, wanted)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _values(value, pointer(at, index), wanted)


def _refs(node: Any, at: str) -> Iterator[tuple[str, Any]]:
    return _values(node, at, "tm:ref")


def refs_in(doc: Any) -> Iterator[tuple[str, Any]]:
    """(pointer, value) of every tm:ref in ``doc``."""
    return _refs(doc, "")


def _forms(doc: Mapping[str, Any], at: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every form: the Thing's own and each affordance's (the places TD 1.1 puts them)."""
    for index, form in enumerate(as_list(doc.get("forms"))):
        if isinstance(form, Mapping):
            yield pointer(pointer(at, "forms"), index), form
    for section in AFFORDANCE_SECTIONS:
        affordances = doc.get(section)
        for name, aff in (affordances.items() if isinstance(affordances, Mapping) else []):
            if isinstance(aff, Mapping):
                yield from _forms(aff, pointer(pointer(at, section), str(name)))


def _types(node: Mapping[str, Any]) -> list[str]:
    value = node.get("@type")
    values = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    return [v for v in values if isinstance(v, str)]


def _merge(specific: list[Issue], schema: list[Issue]) -> list[Issue]:
    """Our specific issues first; a schema issue only where no specific one says it better
    (at the same place, inside it, or at a non-root place that contains it)."""
    covered = {i.pointer for i in specific}

    def said(at: str) -> bool:
        return any(at == c or at.startswith(c + "/") or (at and c.startswith(at + "/")) for c in covered)

    return specific + [i for i in schema if not said(i.pointer)]
