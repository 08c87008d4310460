"""Parse and check TSL data types, collecting every issue with its pointer and rule id.

Limits follow Alibaba's TSL documentation (docs/thing-models.md cites each): int is int32,
text length 1..10240, array size 1..512 with int/float/double/text/struct items, struct
fields of any type but struct and array. Numeric specs may be numbers or, as Alibaba writes
them, numeric strings. Each step notes how many issues existed when it began and yields None
when it added any, so one broken type never hides problems in the next.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from math import isfinite
from typing import Any, Final, TypeVar

from citytwin.thingmodels.checks import (
    DOUBLE_MAX,
    FLOAT32_MAX,
    INT32_MAX,
    INT32_MIN,
    compile_check,
    compile_normalize,
    number_text,
    show,
)
from citytwin.thingmodels.errors import Issue, pointer
from citytwin.thingmodels.types import DataType, Kind, Param, Written

IDENTIFIER: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,49}")
MAX_TEXT_LENGTH: Final = 10240
MAX_ARRAY_SIZE: Final = 512
ITEM_KINDS: Final = (Kind.INT, Kind.FLOAT, Kind.DOUBLE, Kind.TEXT, Kind.STRUCT)
EXT: Final = "x-citytwin"

_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")
_KINDS: Final = tuple(k.value for k in Kind)
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S+")
_UCUM = re.compile(r"[!-~]{1,64}")
MISSING: Final = object()

_T = TypeVar("_T")
_E = TypeVar("_E")

PARAM_EXT: Final = frozenset({"semanticType", "ucum", "default"})


class DataTypeParser:
    """Collects issues; the feature parser in ``loader`` builds on it."""

    def __init__(self) -> None:
        self.issues: list[Issue] = []

    def fail(self, at: str, message: str, rule: str) -> None:
        self.issues.append(Issue(at, message, rule))

    # -- lists of identified entries ------------------------------------------------------

    def items(
        self,
        raw: Any,
        at: str,
        parse: Callable[[Mapping[str, Any], str], _T | None],
        skip: Callable[[Mapping[str, Any], int], bool] | None = None,
        first_at: dict[str, str] | None = None,
    ) -> dict[str, _T] | None:
        """A list of identified entries, keyed by identifier, identifiers unique.

        ``first_at`` may be shared between lists whose identifiers share one namespace
        (a module's properties, events and services).
        """
        if not isinstance(raw, list):
            self.fail(at, "must be an array", "value-type")
            return None
        start = len(self.issues)
        result: dict[str, _T] = {}
        seen = first_at if first_at is not None else {}
        for index, entry in enumerate(raw):
            entry_at = pointer(at, index)
            if not isinstance(entry, Mapping):
                self.fail(entry_at, "must be an object", "value-type")
                continue
            if skip is not None and skip(entry, index):
                continue
            parsed = parse(entry, entry_at)
            identifier = entry.get("identifier")
            if isinstance(identifier, str) and IDENTIFIER.fullmatch(identifier):
                if identifier in seen:
                    self.fail(
                        pointer(entry_at, "identifier"),
                        f"duplicate identifier {identifier!r} (first at {seen[identifier]})",
                        "identifier-duplicate",
                    )
                else:
                    seen[identifier] = entry_at
            if parsed is not None and isinstance(identifier, str):
                result[identifier] = parsed
        return None if len(self.issues) > start else result

    def param(self, entry: Mapping[str, Any], at: str, role: str = "param") -> Param | None:
        start = len(self.issues)
        identifier = self.identifier(entry, at)
        name = self.name(entry, at)
        data_type = self.data_type_of(entry, at, role)
        ext = self.extension(entry, at, PARAM_EXT)
        if len(self.issues) > start or data_type is None or ext is None:
            return None
        check = compile_check(data_type)
        self.check_default(ext, check, at)
        if len(self.issues) > start:
            return None
        return Param(
            identifier,
            name,
            data_type,
            check=check,
            normalize=compile_normalize(data_type),
            ext=ext,
            written=written(entry, at, ("identifier", "name", "dataType", EXT)),
        )

    # -- data types -----------------------------------------------------------------------

    def data_type_of(self, entry: Mapping[str, Any], at: str, role: str = "param") -> DataType | None:
        raw = self.required(entry, "dataType", at)
        if raw is MISSING:
            return None
        return self.data_type(raw, pointer(at, "dataType"), role)

    def data_type(self, raw: Any, at: str, role: str) -> DataType | None:
        """``role`` is "param" (any type), "field" (a struct field) or "item" (array items)."""
        if not isinstance(raw, Mapping):
            self.fail(at, "dataType must be an object with 'type' and 'specs'", "value-type")
            return None
        name = self.required(raw, "type", at)
        if name is MISSING:
            return None
        if not isinstance(name, str) or name not in _KINDS:
            known = ", ".join(_KINDS)
            self.fail(pointer(at, "type"), f"unknown type {name!r}; expected one of {known}", "data-type")
            return None
        kind = Kind(name)
        if role == "item" and kind not in ITEM_KINDS:
            self.fail(
                pointer(at, "type"),
                f"array items must be int, float, double, text or struct, not {name!r}",
                "array-item-type",
            )
            return None
        if role == "field" and kind in (Kind.STRUCT, Kind.ARRAY):
            self.fail(
                pointer(at, "type"),
                f"a struct field cannot be {'an' if kind is Kind.ARRAY else 'a'} {name}:"
                " TSL does not nest structs or arrays in structs",
                "struct-field-type",
            )
            return None
        specs_at = pointer(at, "specs")
        specs = raw.get("specs", MISSING)
        shape = written(raw, at, ("type", "specs"))
        if isinstance(specs, Mapping):
            shape = Written(shape.at, shape.keys, shape.extra, dict(specs))
        parsed: DataType | None
        if kind is Kind.INT or kind is Kind.FLOAT or kind is Kind.DOUBLE:
            parsed = self.numeric(kind, {} if specs is MISSING else specs, specs_at)
        elif kind is Kind.BOOL or kind is Kind.ENUM:
            parsed = self.named(kind, specs, specs_at)
        elif kind is Kind.TEXT:
            parsed = self.text(specs, specs_at)
        elif kind is Kind.DATE:
            if specs is not MISSING and not isinstance(specs, Mapping):
                self.fail(specs_at, "date specs must be an object (it is ignored)", "specs-shape")
                return None
            parsed = DataType(kind)
        elif kind is Kind.STRUCT:
            parsed = self.struct(specs, specs_at)
        else:
            parsed = self.array(specs, specs_at)
        if parsed is None:
            return None
        return _with_written(parsed, shape)

    def numeric(self, kind: Kind, specs: Any, at: str) -> DataType | None:
        if not isinstance(specs, Mapping):
            self.fail(at, f"{kind} specs must be an object", "specs-shape")
            return None
        start = len(self.issues)
        low = self.number(specs, "min", at, kind)
        high = self.number(specs, "max", at, kind)
        step = self.number(specs, "step", at, kind)
        if step is not None and step <= 0:
            self.fail(pointer(at, "step"), f"step must be positive, not {number_text(step)}", "step-positive")
        elif step is not None and low is not None and high is not None and low < high and step > high - low:
            self.fail(
                pointer(at, "step"),
                f"step {number_text(step)} is larger than the range {number_text(low)}..{number_text(high)}",
                "step-range",
            )
        if low is not None and high is not None and low > high:
            self.fail(
                pointer(at, "min"),
                f"min {number_text(low)} is greater than max {number_text(high)}",
                "range-order",
            )
        unit = self.optional_str(specs, "unit", at)
        unit_name = self.optional_str(specs, "unitName", at)
        if len(self.issues) > start:
            return None
        return DataType(kind, low, high, step, unit, unit_name)

    def number(self, specs: Mapping[str, Any], key: str, at: str, kind: Kind) -> int | float | None:
        """A numeric spec written as a number or, as Alibaba does, a string; int for int types."""
        raw = specs.get(key)
        if raw is None:
            return None
        at = pointer(at, key)
        value: int | float
        if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
            self.fail(at, f"{key} must be a number or a numeric string", "number-format")
            return None
        if isinstance(raw, str):
            text = raw.strip()
            if _INTEGER.fullmatch(text):
                value = int(text)
            elif _NUMBER.fullmatch(text):
                value = float(text)
            else:
                self.fail(at, f"{key} {raw!r} is not a number", "number-format")
                return None
        else:
            value = raw
        if isinstance(value, float) and not isfinite(value):
            self.fail(at, f"{key} must be finite", "number-finite")
            return None
        if kind is Kind.INT:
            if isinstance(value, float):
                if not value.is_integer():
                    self.fail(at, f"{key} {raw!r} must be an integer for type int", "int-spec")
                    return None
                value = int(value)
            if not INT32_MIN <= value <= INT32_MAX:
                self.fail(at, f"{key} {value} is outside the int32 range", "number-range")
                return None
            return value
        limit = FLOAT32_MAX if kind is Kind.FLOAT else DOUBLE_MAX
        if abs(value) > limit:
            self.fail(at, f"{key} {show(value)} is outside the {kind} range", "number-range")
            return None
        return float(value)

    def named(self, kind: Kind, specs: Any, at: str) -> DataType | None:
        """bool and enum: value -> display name."""
        if not isinstance(specs, Mapping):
            self.fail(at, f"{kind} specs must be an object mapping values to names", "specs-shape")
            return None
        start = len(self.issues)
        names: dict[int, str] = {}
        rule = "bool-keys" if kind is Kind.BOOL else "enum-key"
        for key, label in specs.items():
            key_at = pointer(at, key)
            value: int | None = None
            if isinstance(key, int) and not isinstance(key, bool):
                value = key
            elif isinstance(key, str) and _INTEGER.fullmatch(key) and str(int(key)) == key:
                value = int(key)
            if kind is Kind.BOOL and value not in (0, 1):
                self.fail(key_at, f"bool specs keys must be '0' and '1', not {key!r}", rule)
                continue
            if value is None:
                self.fail(key_at, f"enum value {key!r} must be an integer such as '1'", rule)
                continue
            if not INT32_MIN <= value <= INT32_MAX:
                self.fail(key_at, f"enum value {value} is outside the int32 range", rule)
                continue
            if not isinstance(label, str) or not label.strip():
                self.fail(key_at, "name must be a non-empty string", "name-empty")
                continue
            names[value] = label
        if kind is Kind.BOOL and len(self.issues) == start and set(names) != {0, 1}:
            self.fail(at, "bool specs need names for both '0' and '1'", rule)
        if kind is Kind.ENUM and not specs:
            self.fail(at, "enum specs need at least one value", "enum-empty")
        if len(self.issues) > start:
            return None
        return DataType(kind, names=names)

    def text(self, specs: Any, at: str) -> DataType | None:
        if not isinstance(specs, Mapping):
            self.fail(at, "text specs must be an object with 'length'", "specs-shape")
            return None
        start = len(self.issues)
        if self.required(specs, "length", at) is MISSING:
            return None
        length = self.number(specs, "length", at, Kind.INT)
        if length is not None and not 1 <= length <= MAX_TEXT_LENGTH:
            self.fail(pointer(at, "length"), f"length must be 1..{MAX_TEXT_LENGTH}, not {length}", "text-length")
        if len(self.issues) > start or length is None:
            return None
        return DataType(Kind.TEXT, length=int(length))

    def struct(self, specs: Any, at: str) -> DataType | None:
        if not isinstance(specs, list):
            self.fail(at, "struct specs must be an array of fields", "specs-shape")
            return None
        if not specs:
            self.fail(at, "struct specs need at least one field", "struct-empty")
            return None

        def field(entry: Mapping[str, Any], field_at: str) -> Param | None:
            return self.param(entry, field_at, "field")

        fields = self.items(specs, at, field)
        if fields is None:
            return None
        return DataType(Kind.STRUCT, fields=tuple(fields.values()))

    def array(self, specs: Any, at: str) -> DataType | None:
        if not isinstance(specs, Mapping):
            self.fail(at, "array specs must be an object with 'size' and 'item'", "specs-shape")
            return None
        start = len(self.issues)
        size: int | float | None = None
        if self.required(specs, "size", at) is not MISSING:
            size = self.number(specs, "size", at, Kind.INT)
            if size is not None and not 1 <= size <= MAX_ARRAY_SIZE:
                self.fail(pointer(at, "size"), f"size must be 1..{MAX_ARRAY_SIZE}, not {size}", "array-size")
        item = None
        raw_item = self.required(specs, "item", at)
        if raw_item is not MISSING:
            item = self.data_type(raw_item, pointer(at, "item"), "item")
        if len(self.issues) > start or size is None or item is None:
            return None
        return DataType(Kind.ARRAY, size=int(size), item=item)

    # -- the extension block --------------------------------------------------------------

    def extension(self, entry: Mapping[str, Any], at: str, allowed: frozenset[str]) -> dict[str, Any] | None:
        """The validated ``x-citytwin`` block of ``entry`` ({} when absent)."""
        raw = entry.get(EXT, MISSING)
        if raw is MISSING:
            return {}
        at = pointer(at, EXT)
        if not isinstance(raw, Mapping):
            self.fail(at, f"{EXT} must be an object", "extension")
            return None
        start = len(self.issues)
        for key, value in raw.items():
            key_at = pointer(at, key)
            if key not in allowed:
                known = ", ".join(sorted(allowed))
                self.fail(key_at, f"unknown extension key {key!r}; expected one of {known}", "extension")
            elif key == "semanticType" and not (isinstance(value, str) and _URI.fullmatch(value)):
                self.fail(key_at, f"semanticType must be an absolute URI such as 'https://...', not {show(value)}", "extension")
            elif key == "ucum" and not (value is None or (isinstance(value, str) and _UCUM.fullmatch(value))):
                # null says the unit has no UCUM code (NTU, for one)
                self.fail(key_at, f"ucum must be a UCUM code such as 'm3/h' (printable ASCII, no spaces) or null, not {show(value)}", "extension")
            elif key in ("writeOnly",) and not isinstance(value, bool):
                self.fail(key_at, f"{key} must be true or false", "extension")
            elif key in ("title", "description") and not (isinstance(value, str) and value.strip()):
                self.fail(key_at, f"{key} must be a non-empty string", "extension")
        if len(self.issues) > start:
            return None
        return dict(raw)

    def check_default(self, ext: Mapping[str, Any], check: Callable[[Any], str | None], at: str) -> None:
        if "default" in ext:
            reason = check(ext["default"])
            if reason is not None:
                self.fail(pointer(pointer(at, EXT), "default"), f"default {reason}", "default-value")

    # -- scalar fields --------------------------------------------------------------------

    def required(self, entry: Mapping[str, Any], key: str, at: str) -> Any:
        value = entry.get(key, MISSING)
        if value is MISSING:
            self.fail(at, f"missing required key {key!r}", "required-key")
        return value

    def identifier(self, entry: Mapping[str, Any], at: str) -> str:
        value = self.required(entry, "identifier", at)
        if value is MISSING:
            return ""
        if not isinstance(value, str) or not IDENTIFIER.fullmatch(value):
            self.fail(
                pointer(at, "identifier"),
                f"identifier {value!r} must be 1-50 letters, digits or '_', starting with a letter",
                "identifier-pattern",
            )
            return ""
        return value

    def name(self, entry: Mapping[str, Any], at: str) -> str:
        value = self.required(entry, "name", at)
        if value is MISSING:
            return ""
        if not isinstance(value, str) or not value.strip():
            self.fail(pointer(at, "name"), "name must be a non-empty string", "name-empty")
            return ""
        return value

    def optional_str(self, entry: Mapping[str, Any], key: str, at: str) -> str | None:
        value = entry.get(key)
        if value is not None and not isinstance(value, str):
            self.fail(pointer(at, key), f"{key} must be a string", "value-type")
            return None
        return value

    def flag(self, entry: Mapping[str, Any], key: str, at: str) -> bool:
        value = entry.get(key, False)
        if not isinstance(value, bool):
            self.fail(pointer(at, key), "must be true or false", "value-type")
            return False
        return value

    def choice(self, entry: Mapping[str, Any], key: str, at: str, choices: type[_E], rule: str) -> _E | None:
        value = self.required(entry, key, at)
        if value is MISSING:
            return None
        allowed_values = [c.value for c in choices]  # type: ignore[attr-defined]
        if not isinstance(value, str) or value not in allowed_values:
            allowed = ", ".join(map(repr, allowed_values))
            self.fail(pointer(at, key), f"{key} must be one of {allowed}, not {value!r}", rule)
            return None
        return choices(value)  # type: ignore[call-arg]


def written(entry: Mapping[str, Any], at: str, known: tuple[str, ...]) -> Written:
    """How ``entry`` was written: its keys, and verbatim the ones the model does not carry."""
    keys = tuple(str(k) for k in entry)
    extra = {str(k): v for k, v in entry.items() if k not in known}
    return Written(at, keys, extra)


def _with_written(dt: DataType, shape: Written) -> DataType:
    return DataType(
        dt.type, dt.min, dt.max, dt.step, dt.unit, dt.unit_name, dt.names, dt.length,
        dt.size, dt.item, dt.fields, written=shape,
    )
