"""WoT data schemas in: a JSON-Schema-style data schema to a TSL data type, with a loss line
for everything TSL has no place for, and the naming rules an imported feature must follow.

The base of ``wot_import``'s converter: what one affordance's schemas become (``bool`` and
integer ``enum`` from ``oneOf``/``const``, ``int``/``double`` with bounds, ``text``,
``date`` from our own digit pattern, ``struct`` one level deep, ``array`` of numbers, text or
structs), how a WoT name becomes a TSL identifier, and which ``@type`` becomes a semantic type.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Final

from citytwin.thingmodels.checks import INT32_MAX, INT32_MIN
from citytwin.thingmodels.datatypes import IDENTIFIER, MAX_ARRAY_SIZE, MAX_TEXT_LENGTH
from citytwin.thingmodels.loader import RESERVED
from citytwin.thingmodels.tsl import Loss
from citytwin.thingmodels.wot import DATE_PATTERN
from citytwin.thingmodels.wot_tm_rules import as_list

_NO_TERM: Final = ("exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minLength", "minItems", "format",
                   "contentEncoding", "contentMediaType", "const")
# what a parameter, struct field or array item keeps (besides what _NO_TERM reports)
_MEMBER_KEYS: Final = frozenset({"@type", "title", "type", "unit", "minimum", "maximum", "oneOf", "enum",
                                 "maxLength", "maxItems", "items", "properties", "pattern", "required",
                                 "citytwin:ucum"})
UCUM: Final = re.compile(r"[!-~]{1,64}")
TD_CLASS: Final = "Thing"


class SchemaReader:
    """Reads data schemas and names, collecting the losses."""

    def __init__(self) -> None:
        self.losses: list[Loss] = []
        self.used: set[str] = set()  # feature identifiers: one namespace across the sections

    def lose(self, at: str, what: str) -> None:
        self.losses.append(Loss(at, what))

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

    def params(self, schema: Any, at: str, single: str) -> list[dict[str, Any]]:
        if not isinstance(schema, Mapping):
            return []
        if schema.get("type") == "object" and isinstance(schema.get("properties"), Mapping):
            params, scope = [], set[str]()
            for name, sub in schema["properties"].items():
                sub_at = f"{at}/properties/{escape_token(str(name))}"
                dt = self.data_type(sub, sub_at, "param") if isinstance(sub, Mapping) else None
                if dt is None:
                    self.lose(sub_at, "parameter dropped: its data schema has no TSL type")
                    continue
                assert isinstance(sub, Mapping)
                ident = self.identifier(str(name), sub_at, scope, False)
                param: dict[str, Any] = {"identifier": ident, "name": display_name(sub.get("title"), str(name), ident),
                                         "dataType": dt}
                ext = self.semantic(sub, sub_at, {})
                if isinstance(sub.get("citytwin:ucum"), str) and UCUM.fullmatch(sub["citytwin:ucum"]):
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
        return [{"identifier": single, "name": nonblank(schema.get("title")) or single, "dataType": dt}]

    # -- data schemas ---------------------------------------------------------------------------

    def data_type(self, schema: Mapping[str, Any], at: str, role: str) -> dict[str, Any] | None:
        """The TSL data type for a WoT data schema, or None (the caller says what was dropped)."""
        kind = schema.get("type")
        if not isinstance(kind, str):
            self.lose(at, "a data schema without a type has no TSL type")
            return None
        consts = [s for s in as_list(schema.get("oneOf")) if isinstance(s, Mapping) and "const" in s]
        for key in _NO_TERM:
            if key in schema:
                self.lose(f"{at}/{key}", f"{key} {schema[key]!r} has no TSL term")
        if "enum" in schema and kind not in ("integer", "string"):
            self.lose(f"{at}/enum", f"the allowed values of a {kind} have no TSL term")
        if role != "property":  # an affordance's own keys are the caller's; here, a member's
            for key in schema:
                if key not in _MEMBER_KEYS and key not in _NO_TERM and not str(key).startswith("$"):
                    self.lose(f"{at}/{escape_token(str(key))}", f"{key!r} of a parameter or field has no TSL term")
        if kind == "boolean":
            names = {"0": "false", "1": "true"}
            for s in consts:
                if isinstance(s["const"], bool) and nonblank(s.get("title")):
                    names["1" if s["const"] else "0"] = s["title"]
            return {"type": "bool", "specs": names}
        if kind == "integer" and (consts or isinstance(schema.get("enum"), list)):
            values = [(s["const"], s.get("title")) for s in consts] or [(v, None) for v in schema["enum"]]
            if values and all(isinstance(v, int) and not isinstance(v, bool) and INT32_MIN <= v <= INT32_MAX
                              for v, _ in values):
                return {"type": "enum", "specs": {str(v): nonblank(t) or str(v) for v, t in values}}
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
                sub_at = f"{at}/properties/{escape_token(str(name))}"
                dt = self.data_type(sub, sub_at, "field") if isinstance(sub, Mapping) else None
                if dt is None:
                    self.lose(sub_at, "struct field dropped: its data schema has no TSL type")
                    continue
                assert isinstance(sub, Mapping)
                ident = self.identifier(str(name), sub_at, scope, False)
                fields.append({"identifier": ident, "name": display_name(sub.get("title"), str(name), ident),
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
                said = "no maxItems" if size is None else f"maxItems {size!r} outside TSL's 1..{MAX_ARRAY_SIZE}"
                self.lose(f"{at}/maxItems", f"{said}: the TSL array size is {MAX_ARRAY_SIZE}")
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
        specs: dict[str, Any] = {name: _numbernonblank(value) for name, value in bounds.items()}
        if nonblank(schema.get("unit")):
            specs["unit"] = schema["unit"]
        return {"type": tsl, "specs": specs}


def _numbernonblank(value: float) -> str:
    return str(int(value)) if isinstance(value, int) or (value.is_integer() and abs(value) < 2**53) else repr(value)


def context_prefixes(context: Any) -> dict[str, str]:
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


def display_name(title: Any, key: str, identifier: str) -> str:
    """TSL's display name: the title, else the WoT name, else the identifier (never blank)."""
    return nonblank(title) or nonblank(key) or identifier


def nonblank(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def escape_token(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")

