"""W3C WoT Thing Models and Thing Descriptions in: checked, resolved, converted, losses listed.

``import_wot`` is the one entry: a TM is checked as a TM (``wot_tm_rules.check_tm``), made
whole (``wot_tm_resolve``: tm:extends, tm:ref, placeholders), then converted; a TD is
checked as a TD and converted. Conversion maps affordances to TSL features: names TSL
refuses (``on-peak``, reserved words such as ``value``, names clashing across sections) are
renamed and each rename is a loss line; what TSL has no place for (forms, security
definitions, tm:submodel links, bare semantic terms, exclusive bounds, string enums...) is a
loss line too, never silently dropped. The result is our model document, which the caller
checks with ``loader.check_model`` like any other.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from citytwin.thingmodels.checks import INT32_MAX, INT32_MIN
from citytwin.thingmodels.datatypes import IDENTIFIER, MAX_ARRAY_SIZE, MAX_TEXT_LENGTH
from citytwin.thingmodels.errors import Issue
from citytwin.thingmodels.loader import RESERVED
from citytwin.thingmodels.rules import Severity
from citytwin.thingmodels.tsl import Loss
from citytwin.thingmodels.wot import DATE_PATTERN
from citytwin.thingmodels.wot_tm_resolve import Loader, Value, fill, placeholders, resolve_tm
from citytwin.thingmodels.wot_tm_rules import (
    affordance_of,
    as_list,
    as_map,
    check_optional_targets,
    check_td,
    check_tm,
    lint_wot,
    refs_in,
    wot_severity,
)

_SECTIONS: Final = (("properties", "properties"), ("actions", "services"), ("events", "events"))
# keys each part maps (or deliberately implies); any other key is a loss line
_THING_KEYS: Final = frozenset({"@context", "@type", "title", "description", "version", "properties", "actions",
                                "events", "tm:optional", "tm:required", "citytwin:productKey", "$comment"})
_AFFORDANCE_KEYS: Final = frozenset({"@type", "title", "description", "forms", "citytwin:eventType", "citytwin:ucum",
                                     "input", "output", "data", "synchronous", "observable", "$comment"})
_SCHEMA_KEYS: Final = frozenset({"@type", "title", "description", "type", "readOnly", "writeOnly", "unit",
                                 "minimum", "maximum", "oneOf", "enum", "const", "default", "maxLength",
                                 "maxItems", "items", "properties", "pattern", "required", "citytwin:ucum",
                                 "$comment", "observable"})
_UCUM: Final = re.compile(r"[!-~]{1,64}")
_PRODUCT_KEY: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
TD_CLASS: Final = "Thing"


@dataclass(slots=True)
class WotImport:
    """What importing one WoT document found; ``doc`` is our model document when converted."""

    format: str
    doc: dict[str, Any] | None = None
    issues: list[Issue] = field(default_factory=list)
    losses: list[Loss] = field(default_factory=list)
    remote: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if wot_severity(i.rule) is Severity.ERROR]


def import_wot(
    doc: Any,
    is_tm: bool,
    location: str,
    load: Loader,
    values: Mapping[str, Value] | None = None,
    product_key: str | None = None,
    need_values: bool = True,
) -> WotImport:
    """Check ``doc`` (a TM when ``is_tm``, else a TD), resolve it and convert it.

    ``need_values``: unfilled placeholders are an error (convert); without it (validate) they
    only skip the conversion.
    """
    result = WotImport("wot-tm" if is_tm else "wot-td")
    if not isinstance(doc, Mapping):
        result.issues.append(Issue("", "a Thing Model or Thing Description must be a JSON object", "wot-schema"))
        return result
    result.issues.extend(check_tm(doc) if is_tm else check_td(doc))
    result.issues.extend(lint_wot(doc))
    model: Mapping[str, Any] = doc
    if is_tm:
        resolution = resolve_tm(doc, location, load)
        result.issues.extend(resolution.issues)
        result.remote = resolution.remote
        if result.errors:
            return result
        result.issues.extend(check_optional_targets(resolution.doc))
        values = values or {}
        missing = sorted(placeholders(resolution.doc) - set(values))
        if missing:
            result.issues.append(Issue("", f"placeholders without a value: {', '.join(missing)} (give them with "
                                       "--set NAME=VALUE, or --set-json NAME=JSON)",
                                       "tm-placeholder" if need_values else "tm-unfilled"))
            return result
        model, fill_issues = fill(resolution.doc, values)
        result.issues.extend(fill_issues)
    elif any(True for _ in refs_in(doc)):  # a TD made from a TM may keep same-document tm:refs
        resolution = resolve_tm(doc, location, load)
        result.issues.extend(resolution.issues)
        result.remote = resolution.remote
        model = resolution.doc
    if result.errors:
        return result
    result.doc, result.losses = _Converter(is_tm).model(model, product_key)
    return result


class _Converter:
    def __init__(self, is_tm: bool) -> None:
        self.is_tm = is_tm
        self.losses: list[Loss] = []
        self.used: set[str] = set()

    def lose(self, at: str, what: str) -> None:
        self.losses.append(Loss(at, what))

    def model(self, tm: Mapping[str, Any], product_key: str | None) -> tuple[dict[str, Any], list[Loss]]:
        title = _text(tm.get("title"))
        key = product_key or _text(tm.get("citytwin:productKey"))
        if not (key and _PRODUCT_KEY.fullmatch(key)):
            key = re.sub(r"[^A-Za-z0-9._-]", "_", title or "")[:64].lstrip("._-") or "imported"
        out: dict[str, Any] = {"profile": {"productKey": key}}
        version = tm.get("version")
        if isinstance(version, Mapping):
            chosen = version.get("model") if self.is_tm else version.get("instance", version.get("model"))
            if _text(chosen):
                out["profile"]["version"] = chosen
        elif version is not None:
            self.lose("/version", f"version {version!r} is not an object like {{\"model\": \"1.0\"}}; not imported")
        ext: dict[str, Any] = {}
        if title:
            ext["title"] = title
        if _text(tm.get("description")):
            ext["description"] = tm["description"]
        ext.update(self.semantic(tm, "", _prefixes(tm.get("@context"))))
        if ext:
            out["x-citytwin"] = ext
        self.thing_losses(tm)
        required = _required(tm, self.is_tm)
        prefixes = _prefixes(tm.get("@context"))
        out["properties"], out["services"], out["events"] = [], [], []
        forms = 0
        for section, ours in _SECTIONS:
            raw = tm.get(section)
            for name, aff in (raw.items() if isinstance(raw, Mapping) else []):
                at = f"/{section}/{_escape(str(name))}"
                if not isinstance(aff, Mapping):
                    continue
                forms += 1 if aff.get("forms") else 0
                entry = getattr(self, section)(str(name), aff, at, prefixes)
                if entry is None:
                    continue
                entry["required"] = (section, str(name)) in required
                out[ours].append(entry)
        if forms:
            self.lose("", f"the forms of {forms} affordance(s) (protocol bindings: how to reach one device) "
                      "are not part of a thing model; the gateway's binding says that")
        return out, self.losses

    # -- the Thing ------------------------------------------------------------------------------

    def thing_losses(self, tm: Mapping[str, Any]) -> None:
        for key, value in tm.items():
            if key in _THING_KEYS or str(key).startswith("$"):  # $comment, $title...: notes to readers
                continue
            at = f"/{_escape(str(key))}"
            if key == "securityDefinitions" and isinstance(value, Mapping):
                schemes = ", ".join(f"{k}: {v.get('scheme')}" if isinstance(v, Mapping) else str(k) for k, v in value.items())
                self.lose(at, f"security definitions ({schemes}) are how to reach a device, not its model; not imported")
            elif key == "links" and isinstance(value, list):
                for index, link in enumerate(value):
                    if isinstance(link, Mapping) and link.get("rel") == "tm:submodel":
                        self.lose(f"{at}/{index}", f"tm:submodel {link.get('href')!r} (instance "
                                  f"{link.get('instanceName')!r}) is not imported: convert that model on its own")
                    else:
                        rel = link.get("rel") if isinstance(link, Mapping) else None
                        self.lose(f"{at}/{index}", f"link (rel {rel!r}) has no TSL term")
            elif key == "version":
                continue
            else:
                self.lose(at, f"{key!r} has no TSL term; not imported")

    def semantic(self, node: Mapping[str, Any], at: str, prefixes: Mapping[str, str]) -> dict[str, Any]:
        """The first @type that is (or expands to) an absolute URI; other terms are losses."""
        raw = node.get("@type")
        values = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else []
        kept: str | None = None
        for value in values:
            if not isinstance(value, str) or value in ("tm:ThingModel", TD_CLASS):
                continue
            uri = _expand(value, prefixes)
            if uri is not None and kept is None:
                kept = uri
            elif uri is None:
                self.lose(f"{at}/@type", f"@type {value!r} is a term of no vocabulary the @context names; "
                          "TSL keeps a semantic type only as an absolute URI")
            else:
                self.lose(f"{at}/@type", f"@type {value!r}: TSL keeps one semantic type ({kept!r})")
        return {"semanticType": kept} if kept else {}

    # -- affordances ----------------------------------------------------------------------------

    def identifier(self, name: str, at: str, scope: set[str], feature: bool) -> str:
        fixed = name
        if not IDENTIFIER.fullmatch(name):
            fixed = re.sub(r"[^A-Za-z0-9_]", "_", name)
            if not fixed[:1].isalpha():
                fixed = "p_" + fixed
            fixed = fixed[:50]
        if feature and fixed in RESERVED:
            fixed = f"{fixed}_"
        base, counter = fixed, 2
        while fixed in scope:
            suffix = f"_{counter}"
            fixed, counter = base[: 50 - len(suffix)] + suffix, counter + 1
        scope.add(fixed)
        if fixed != name:
            why = ("is reserved by TSL" if name in RESERVED and feature else
                   "is already used" if IDENTIFIER.fullmatch(name) and name not in RESERVED else
                   "is not a TSL identifier")
            self.lose(at, f"name {name!r} {why}; imported as {fixed!r}")
        return fixed

    def common(self, name: str, aff: Mapping[str, Any], at: str, prefixes: Mapping[str, str],
               known: frozenset[str]) -> dict[str, Any]:
        ident = self.identifier(name, at, self.used, True)
        entry: dict[str, Any] = {"identifier": ident, "name": _display(aff.get("title"), name, ident)}
        if _text(aff.get("description")):
            entry["desc"] = aff["description"]
        for key in aff:
            if key not in known and not str(key).startswith("$"):
                self.lose(f"{at}/{_escape(str(key))}", f"{key!r} has no TSL term; not imported")
        return entry

    def properties(self, name: str, aff: Mapping[str, Any], at: str, prefixes: Mapping[str, str]) -> dict[str, Any] | None:
        dt = self.data_type(aff, at, "property")
        if dt is None:
            self.lose(at, "property dropped: its data schema has no TSL type")
            return None
        entry = self.common(name, aff, at, prefixes, _AFFORDANCE_KEYS | _SCHEMA_KEYS)
        entry["accessMode"] = "r" if aff.get("readOnly") is True else "rw"
        entry["dataType"] = dt
        ext = self.semantic(aff, at, prefixes)
        if aff.get("writeOnly") is True and aff.get("readOnly") is not True:
            ext["writeOnly"] = True
        if "citytwin:ucum" in aff:
            ucum = aff["citytwin:ucum"]
            if ucum is None or (isinstance(ucum, str) and _UCUM.fullmatch(ucum)):
                ext["ucum"] = ucum
            else:
                self.lose(f"{at}/citytwin:ucum", f"{ucum!r} is no UCUM code; not imported")
        if "default" in aff:
            self.lose(f"{at}/default", "default value is not imported")
        if ext:
            entry["x-citytwin"] = ext
        return entry

    def actions(self, name: str, aff: Mapping[str, Any], at: str, prefixes: Mapping[str, str]) -> dict[str, Any]:
        entry = self.common(name, aff, at, prefixes, _AFFORDANCE_KEYS | {"safe", "idempotent"})
        entry["callType"] = "sync" if aff.get("synchronous") is True else "async"
        entry["inputData"] = self.params(aff.get("input"), f"{at}/input", "input")
        entry["outputData"] = self.params(aff.get("output"), f"{at}/output", "output")
        ext = self.semantic(aff, at, prefixes)
        if ext:
            entry["x-citytwin"] = ext
        return entry

    def events(self, name: str, aff: Mapping[str, Any], at: str, prefixes: Mapping[str, str]) -> dict[str, Any]:
        entry = self.common(name, aff, at, prefixes, _AFFORDANCE_KEYS)
        kind = aff.get("citytwin:eventType")
        if kind not in ("info", "alert", "error"):
            self.lose(at, "WoT events have no severity; imported as TSL type 'info'")
            kind = "info"
        entry["type"] = kind
        entry["outputData"] = self.params(aff.get("data"), f"{at}/data", "data")
        ext = self.semantic(aff, at, prefixes)
        if ext:
            entry["x-citytwin"] = ext
        return entry

    def params(self, schema: Any, at: str, single: str) -> list[dict[str, Any]]:
        if not isinstance(schema, Mapping):
            return []
        if schema.get("type") == "object" and isinstance(schema.get("properties"), Mapping):
            params, scope = [], set[str]()
            for name, sub in schema["properties"].items():
                sub_at = f"{at}/properties/{_escape(str(name))}"
                dt = self.data_type(sub, sub_at, "param") if isinstance(sub, Mapping) else None
                if dt is None:
                    self.lose(sub_at, "parameter dropped: its data schema has no TSL type")
                    continue
                assert isinstance(sub, Mapping)
                ident = self.identifier(str(name), sub_at, scope, False)
                param: dict[str, Any] = {"identifier": ident, "name": _display(sub.get("title"), str(name), ident),
                                         "dataType": dt}
                ext = self.semantic(sub, sub_at, {})
                if isinstance(sub.get("citytwin:ucum"), str) and _UCUM.fullmatch(sub["citytwin:ucum"]):
                    ext["ucum"] = sub["citytwin:ucum"]
                if ext:
                    param["x-citytwin"] = ext
                params.append(param)
            return params
        dt = self.data_type(schema, at, "param")
        if dt is None:
            self.lose(at, f"{single} dropped: its data schema has no TSL type")
            return []
        self.lose(at, f"a non-object {single} becomes one TSL parameter named {single!r}")
        return [{"identifier": single, "name": _text(schema.get("title")) or single, "dataType": dt}]

    # -- data schemas ---------------------------------------------------------------------------

    def data_type(self, schema: Mapping[str, Any], at: str, role: str) -> dict[str, Any] | None:
        """The TSL data type for a WoT data schema, or None (the caller says what was dropped)."""
        kind = schema.get("type")
        if not isinstance(kind, str):
            self.lose(at, "a data schema without a type has no TSL type")
            return None
        consts = [s for s in as_list(schema.get("oneOf")) if isinstance(s, Mapping) and "const" in s]
        for key in ("exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minLength", "minItems", "format",
                    "contentEncoding", "contentMediaType"):
            if key in schema:
                self.lose(f"{at}/{key}", f"{key} {schema[key]!r} has no TSL term")
        if kind == "boolean":
            names = {"0": "false", "1": "true"}
            for s in consts:
                if isinstance(s["const"], bool) and _text(s.get("title")):
                    names["1" if s["const"] else "0"] = s["title"]
            return {"type": "bool", "specs": names}
        if kind == "integer" and (consts or isinstance(schema.get("enum"), list)):
            values = [(s["const"], s.get("title")) for s in consts] or [(v, None) for v in schema["enum"]]
            if values and all(isinstance(v, int) and not isinstance(v, bool) and INT32_MIN <= v <= INT32_MAX
                              for v, _ in values):
                return {"type": "enum", "specs": {str(v): _text(t) or str(v) for v, t in values}}
            self.lose(f"{at}/enum", "the allowed values are not int32 integers; imported as a plain int")
        if kind in ("integer", "number"):
            return self.number(schema, kind, at)
        if kind == "string":
            if schema.get("pattern") == DATE_PATTERN:
                return {"type": "date", "specs": {}}
            if "pattern" in schema:
                self.lose(f"{at}/pattern", "a string pattern has no TSL term")
            if "enum" in schema or consts:
                self.lose(f"{at}/enum", "TSL enums are integers: the allowed strings are not imported")
            length = schema.get("maxLength")
            if not (isinstance(length, int) and not isinstance(length, bool) and 1 <= length <= MAX_TEXT_LENGTH):
                if length is not None:
                    self.lose(f"{at}/maxLength", f"maxLength {length!r} does not fit TSL text (1..{MAX_TEXT_LENGTH})")
                length = MAX_TEXT_LENGTH
            return {"type": "text", "specs": {"length": str(length)}}
        if kind == "object":
            if role == "field":
                self.lose(at, "TSL struct fields cannot be objects")
                return None
            fields, scope = [], set[str]()
            props = schema.get("properties")
            for name, sub in (props.items() if isinstance(props, Mapping) else []):
                sub_at = f"{at}/properties/{_escape(str(name))}"
                dt = self.data_type(sub, sub_at, "field") if isinstance(sub, Mapping) else None
                if dt is None:
                    self.lose(sub_at, "struct field dropped: its data schema has no TSL type")
                    continue
                assert isinstance(sub, Mapping)
                ident = self.identifier(str(name), sub_at, scope, False)
                fields.append({"identifier": ident, "name": _display(sub.get("title"), str(name), ident),
                               "dataType": dt})
            if fields:
                return {"type": "struct", "specs": fields}
            self.lose(at, "an object without typed properties has no TSL type")
            return None
        if kind == "array":
            if role == "field" or role == "item":
                self.lose(at, "TSL allows no array inside a struct field or an array")
                return None
            items = schema.get("items")
            if not isinstance(items, Mapping):
                self.lose(f"{at}/items", "an array without one item schema has no TSL type")
                return None
            item = self.data_type(items, f"{at}/items", "item")
            if item is None or item["type"] not in ("int", "float", "double", "text", "struct"):
                self.lose(f"{at}/items", "TSL arrays hold int, float, double, text or struct only")
                return None
            size = schema.get("maxItems")
            if not (isinstance(size, int) and not isinstance(size, bool) and 1 <= size <= MAX_ARRAY_SIZE):
                self.lose(f"{at}/maxItems", f"array size {size!r} does not fit TSL (1..{MAX_ARRAY_SIZE}); {MAX_ARRAY_SIZE} used")
                size = MAX_ARRAY_SIZE
            return {"type": "array", "specs": {"size": str(size), "item": item}}
        self.lose(at, f"a {kind!r} schema has no TSL type")
        return None

    def number(self, schema: Mapping[str, Any], kind: str, at: str) -> dict[str, Any]:
        tsl = "int" if kind == "integer" else "double"
        bounds: dict[str, float] = {}
        for key, name in (("minimum", "min"), ("maximum", "max")):
            value = schema.get(key)
            if key not in schema:
                continue
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)):
                self.lose(f"{at}/{key}", f"{key} {value!r} is not a number; the bound is not imported")
                continue
            bounds[name] = value
        if tsl == "int":
            for name, value in list(bounds.items()):
                if not INT32_MIN <= value <= INT32_MAX:
                    self.lose(f"{at}/{'minimum' if name == 'min' else 'maximum'}",
                              f"{value} is outside int32; imported as TSL double")
                    tsl = "double"
            if tsl == "int":
                for name, value in list(bounds.items()):
                    rounded = math.ceil(value) if name == "min" else math.floor(value)
                    if rounded != value:
                        self.lose(f"{at}/{'minimum' if name == 'min' else 'maximum'}",
                                  f"bound {value} of an integer is imported as {rounded}")
                    bounds[name] = rounded
        if "min" in bounds and "max" in bounds and bounds["min"] > bounds["max"]:
            self.lose(at, f"minimum {bounds['min']} is above maximum {bounds['max']}; neither bound is imported")
            bounds = {}
        specs: dict[str, Any] = {name: _number_text(value) for name, value in bounds.items()}
        if _text(schema.get("unit")):
            specs["unit"] = schema["unit"]
        return {"type": tsl, "specs": specs}


def _number_text(value: float) -> str:
    return str(int(value)) if isinstance(value, int) or (value.is_integer() and abs(value) < 2**53) else repr(value)


def _required(tm: Mapping[str, Any], is_tm: bool) -> set[tuple[str, str]]:
    """TD 1.1: in a TM every affordance is mandatory unless tm:optional names it; a model
    that uses the draft's tm:required instead marks exactly those; a TD has no such notion."""
    if not is_tm:
        return set()
    every = {(section, str(name)) for section, _ in _SECTIONS
             for name in as_map(tm.get(section))}
    optional, required = _named(tm.get("tm:optional")), _named(tm.get("tm:required"))
    if optional is not None:
        return every - optional
    if required is not None:
        return required
    return every


def _named(entries: Any) -> set[tuple[str, str]] | None:
    if not isinstance(entries, list):
        return None
    return {found for e in entries if isinstance(e, str) and (found := affordance_of(e)) is not None}


def _prefixes(context: Any) -> dict[str, str]:
    items = context if isinstance(context, list) else [context]
    found: dict[str, str] = {}
    for item in items:
        if isinstance(item, Mapping):
            for key, value in item.items():
                if isinstance(key, str) and isinstance(value, str) and not key.startswith("@"):
                    found[key] = value
    return found


_ABSOLUTE: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S+")


def _expand(term: str, prefixes: Mapping[str, str]) -> str | None:
    """An absolute URI for a semantic type: a compact IRI expanded by the @context's prefixes,
    an absolute URI (or a compact IRI whose prefix the context leaves out) as written."""
    prefix, sep, rest = term.partition(":")
    if not sep or prefix in ("tm", "td"):
        return None
    if prefix in prefixes and not rest.startswith("//"):
        expanded = prefixes[prefix] + rest
        return expanded if _ABSOLUTE.fullmatch(expanded) else None
    return term if _ABSOLUTE.fullmatch(term) else None


def _display(title: Any, key: str, identifier: str) -> str:
    """TSL's display name: the title, else the WoT name, else the identifier (never blank)."""
    return _text(title) or _text(key) or identifier


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")
