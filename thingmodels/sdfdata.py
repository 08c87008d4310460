"""SDF data definitions (RFC 9880 data qualities) to TSL data types, every loss listed.

integer/number -> int (double beyond int32 or with fractional bounds), ``minimum``/``maximum``
-> min/max, ``multipleOf`` -> step, SenML ``unit`` -> display unit and UCUM code; string ->
text (``maxLength``, 10240 when absent); boolean -> bool; ``sdfChoice`` with integer (or
boolean) ``const`` values -> enum (or named bool), names without values -> enum 0..n-1;
array -> array (``maxItems``, 512 when absent), object -> struct; ``sdfType`` unix-time ->
date, byte-string -> text; ``default`` (and ``const``, which TSL lacks) -> the extension's
default when the TSL type accepts it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from citytwin.thingmodels.checks import INT32_MAX, INT32_MIN, compile_check
from citytwin.thingmodels.datatypes import MAX_ARRAY_SIZE, MAX_TEXT_LENGTH, DataTypeParser
from citytwin.thingmodels.errors import pointer
from citytwin.thingmodels.interchange import listing, mapping, tsl_identifier
from citytwin.thingmodels.sdfrefs import QUALITIES
from citytwin.thingmodels.tsl import Loss
from citytwin.thingmodels.units import from_senml

DATA_QUALITIES: Final = QUALITIES - {"sdfProperty", "sdfAction", "sdfEvent", "sdfData", "sdfObject", "sdfThing", "sdfRequired",
                             "sdfInputData", "sdfOutputData"}
DEFINITION_ONLY: Final = frozenset(
    {"description", "label", "$comment", "sdfRequired", "sdfProperty", "sdfAction", "sdfEvent", "sdfData",
     "sdfObject", "sdfThing", "minItems", "maxItems"}
)



class SdfData:
    """Collects losses while converting data definitions; the SDF importer builds on it."""

    def __init__(self, losses: list[Loss]) -> None:
        self.losses = losses

    def lose(self, at: str, what: str) -> None:
        self.losses.append(Loss(at, what))

    def unknown(self, node: Mapping[str, Any], at: str, allowed: frozenset[str]) -> None:
        for key in node:
            if key not in allowed and key != "sdfRef":
                self.lose(pointer(at, str(key)), f"quality {key!r} has no TSL place; dropped")

    def param(self, name: str, data: Mapping[str, Any], at: str, taken: set[str], role: str = "param") -> dict[str, Any] | None:
        ext: dict[str, Any] = {}
        dt = self.data_type(data, at, role, ext)
        if dt is None:
            self.lose(at, f"parameter {name!r} has no type TSL can hold; dropped")
            return None
        self.value_defaults(data, at, dt, ext)
        ext.pop("writeOnly", None)
        entry: dict[str, Any] = {"identifier": tsl_identifier(name, at, self.losses, feature=False, taken=taken),
                                 "name": data.get("label") or name, "dataType": dt}
        if isinstance(data.get("description"), str):
            self.lose(pointer(at, "description"), "a parameter description has no TSL place")
        for key in ("writable", "readable", "observable"):
            if key in data:
                self.lose(pointer(at, key), f"{key} means nothing on a parameter")
        self.unknown(data, at, DATA_QUALITIES)
        if ext:
            entry["x-citytwin"] = ext
        return entry

    def value_defaults(self, node: Mapping[str, Any], at: str, dt: dict[str, Any], ext: dict[str, Any]) -> None:
        """``default`` (and ``const``, which TSL lacks) become the extension's default."""
        for key in ("default", "const"):
            if key not in node:
                continue
            value = node[key]
            parser = DataTypeParser()
            parsed = parser.data_type(dt, "", "param")
            fits = parsed is not None and compile_check(parsed)(_tsl_value(value, dt)) is None
            if key == "const":
                self.lose(at, f"const {value!r}: TSL has no constant"
                          + ("; kept as the default" if fits and "default" not in node else ""))
            if fits and "default" not in ext:
                ext["default"] = _tsl_value(value, dt)
            elif key == "default" and not fits:
                self.lose(pointer(at, "default"), f"default {value!r} does not fit the TSL type; dropped")

    # -- data -------------------------------------------------------------------------------

    def data_type(self, node: Mapping[str, Any], at: str, role: str, ext: dict[str, Any]) -> dict[str, Any] | None:
        """The TSL data type for an SDF data definition; ``role`` is param, field or item."""
        if "sdfChoice" in node and isinstance(node["sdfChoice"], Mapping):
            return self.choice(node, at, role, ext)
        if isinstance(node.get("enum"), list):
            values = node["enum"]
            self.lose(at, "SDF enum values are strings; TSL enums are integers: imported as 0..n-1 named by the strings")
            return {"type": "enum", "specs": {str(i): str(v) for i, v in enumerate(values)}} if values else None
        kind = node.get("type")
        if kind is None and "const" in node:
            value = node["const"]
            kind = ("boolean" if isinstance(value, bool) else "integer" if isinstance(value, int)
                    else "number" if isinstance(value, float) else "string" if isinstance(value, str) else None)
        if kind is None:
            kind = "object" if "properties" in node else "array" if "items" in node else None
        for key in ("nullable", "contentFormat"):
            if key in node:
                self.lose(pointer(at, key), f"{key} has no TSL place; dropped")
        sdf_type = node.get("sdfType")
        if sdf_type == "unix-time":
            self.lose(pointer(at, "sdfType"), "unix-time (seconds, a number) becomes TSL date (milliseconds, a string)")
            return {"type": "date", "specs": {}}
        if sdf_type == "byte-string":
            self.lose(pointer(at, "sdfType"), "byte-string becomes TSL text (the bytes base64-encoded)")
        elif sdf_type is not None:
            self.lose(pointer(at, "sdfType"), f"sdfType {sdf_type!r} is unknown; ignored")
        if kind in ("integer", "number"):
            return self.number(node, at, kind, ext)
        if kind == "string":
            for key in ("minLength", "pattern", "format"):
                if key in node:
                    self.lose(pointer(at, key), f"{key} has no TSL text spec; dropped")
            length = node.get("maxLength")
            if not isinstance(length, int) or isinstance(length, bool) or not 1 <= length <= MAX_TEXT_LENGTH:
                if length is not None:
                    self.lose(pointer(at, "maxLength"), f"maxLength {length!r} does not fit TSL text (1..{MAX_TEXT_LENGTH})")
                length = MAX_TEXT_LENGTH
            return {"type": "text", "specs": {"length": str(length)}}
        if kind == "boolean":
            return {"type": "bool", "specs": {"0": "false", "1": "true"}}
        if kind == "array":
            return self.array(node, at, role)
        if kind == "object":
            return self.struct(node, at, role)
        if kind is not None:
            self.lose(pointer(at, "type"), f"type {kind!r} is not an SDF type")
        return None

    def number(self, node: Mapping[str, Any], at: str, kind: str, ext: dict[str, Any]) -> dict[str, Any]:
        tsl = "int" if kind == "integer" else "double"
        specs: dict[str, Any] = {}
        bounds: dict[str, Any] = {}
        for key, name in (("minimum", "min"), ("maximum", "max")):
            value = node.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                bounds[name] = value
        for key in ("exclusiveMinimum", "exclusiveMaximum"):
            if key in node:
                self.lose(pointer(at, key), f"{key} has no TSL spec; dropped")
        if tsl == "int" and any(not INT32_MIN <= v <= INT32_MAX for v in bounds.values()):
            self.lose(at, "an integer range beyond int32: TSL int cannot hold it; imported as double")
            tsl = "double"
        elif tsl == "int" and any(isinstance(v, float) and not v.is_integer() for v in bounds.values()):
            self.lose(at, "a fractional bound on an integer: imported as double")
            tsl = "double"
        for name, value in bounds.items():
            specs[name] = _text(value)
        step = node.get("multipleOf")
        if isinstance(step, (int, float)) and not isinstance(step, bool) and step > 0:
            if tsl == "int" and isinstance(step, float) and not step.is_integer():
                self.lose(pointer(at, "multipleOf"), f"multipleOf {step} on an integer; dropped")
            else:
                specs["step"] = _text(step)
        unit = node.get("unit")
        if isinstance(unit, str):
            known = from_senml(unit)
            if known is None:
                specs["unit"] = unit
                self.lose(pointer(at, "unit"), f"unit {unit!r} is not a SenML unit with a UCUM code here; kept as display text only")
            else:
                if known.display:
                    specs["unit"] = known.display
                ext["ucum"] = known.ucum
        return {"type": tsl, "specs": specs}

    def choice(self, node: Mapping[str, Any], at: str, role: str, ext: dict[str, Any]) -> dict[str, Any] | None:
        choice_at = pointer(at, "sdfChoice")
        alternatives = [(str(n), a) for n, a in node["sdfChoice"].items() if isinstance(a, Mapping)]
        if not alternatives:
            self.lose(choice_at, "an empty sdfChoice; dropped")
            return None
        consts = [a.get("const") for _, a in alternatives]
        for name, alt in alternatives:
            label = alt.get("label")
            if isinstance(label, str) and label != name:
                self.lose(pointer(choice_at, name), f"choice name {name!r} (labelled {label!r}): TSL keeps one name per value, the label")
            if isinstance(alt.get("description"), str):
                self.lose(pointer(pointer(choice_at, name), "description"), "a choice description has no TSL place")
        if all(isinstance(c, bool) for c in consts) and len(set(consts)) == len(consts):
            names = {"0": "false", "1": "true"}
            for (name, alt), value in zip(alternatives, consts, strict=True):
                names["1" if value else "0"] = alt.get("label") or name
            return {"type": "bool", "specs": names}
        if all(isinstance(c, int) and not isinstance(c, bool) and INT32_MIN <= c <= INT32_MAX for c in consts):
            specs: dict[str, str] = {}
            for (name, alt), value in zip(alternatives, consts, strict=True):
                if str(value) in specs:
                    self.lose(pointer(choice_at, name), f"value {value} is chosen twice; the first name is kept")
                    continue
                specs[str(value)] = alt.get("label") or name
            return {"type": "enum", "specs": specs}
        if all(c is None for c in consts) and all(a.get("type") in (None, "string") and len(a) <= 3 for _, a in alternatives):
            self.lose(at, "the choice names are the values in SDF; TSL enums are integers: imported as 0..n-1")
            return {"type": "enum", "specs": {str(i): a.get("label") or n for i, (n, a) in enumerate(alternatives)}}
        self.lose(at, "alternatives with their own types or ranges: TSL has no union type; the first typed alternative is kept")
        for _, alt in alternatives:
            merged = {**{k: v for k, v in node.items() if k != "sdfChoice"}, **alt}
            if merged.get("type") is not None or "const" in merged:
                merged.pop("const", None)
                merged.pop("default", None)
                return self.data_type(merged, at, role, ext)
        return None

    def array(self, node: Mapping[str, Any], at: str, role: str) -> dict[str, Any] | None:
        if role != "param":
            self.lose(at, "an array inside a struct or an array: TSL does not nest them; dropped")
            return None
        items = node.get("items")
        if not isinstance(items, Mapping):
            self.lose(pointer(at, "items"), "array items are not one data definition; dropped")
            return None
        for key in ("description", "label", "unit", "default", "const"):
            if key in items:
                self.lose(pointer(pointer(at, "items"), key), f"{key} of array items has no TSL place; dropped")
        item = self.data_type(items, pointer(at, "items"), "item", {})
        if item is None or item["type"] not in ("int", "float", "double", "text", "struct"):
            self.lose(pointer(at, "items"), "TSL arrays hold int, float, double, text or struct only; dropped")
            return None
        size = node.get("maxItems")
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_ARRAY_SIZE:
            self.lose(pointer(at, "maxItems"), f"array size {size!r} does not fit TSL (1..{MAX_ARRAY_SIZE}); {MAX_ARRAY_SIZE} used")
            size = MAX_ARRAY_SIZE
        for key in ("minItems", "uniqueItems"):
            if key in node:
                self.lose(pointer(at, key), f"{key} has no TSL array spec; dropped")
        return {"type": "array", "specs": {"size": str(size), "item": item}}

    def struct(self, node: Mapping[str, Any], at: str, role: str) -> dict[str, Any] | None:
        if role == "field":
            self.lose(at, "an object inside a struct: TSL does not nest structs; dropped")
            return None
        fields = mapping(node.get("properties"))
        required = [r for r in listing(node.get("required")) if isinstance(r, str)]
        if set(fields) - set(required):
            self.lose(pointer(at, "required"), "optional struct fields: every TSL struct field is required")
        taken: set[str] = set()
        specs = []
        for name, sub in fields.items():
            if isinstance(sub, Mapping):
                field = self.param(str(name), sub, pointer(pointer(at, "properties"), str(name)), taken, "field")
                if field is not None:
                    specs.append(field)
        if not specs:
            self.lose(at, "an object without fields has no TSL type; dropped")
            return None
        return {"type": "struct", "specs": specs}


def _text(value: int | float) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


def _tsl_value(value: Any, dt: Mapping[str, Any]) -> Any:
    """An SDF value as our checker takes it (a bool stays a bool, a unix time in ms)."""
    if dt.get("type") == "date" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value * 1000)
    return value
