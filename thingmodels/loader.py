"""Parse a TSL-shaped document into a ``ThingModel``, collecting every issue before failing.

The parser is deliberately lenient about what it does not understand (unknown keys such as
Alibaba's ``method`` or ``schema`` are ignored, as are the default ``set``/``get``/``post``
entries) and strict about what it does, so documents exported by Alibaba load unchanged.
Each parse step notes how many issues existed when it began and yields None when it added
any, so one broken property never hides problems in the next.
"""

from __future__ import annotations

import json
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
from citytwin.thingmodels.errors import Issue, ModelError, pointer
from citytwin.thingmodels.types import (
    AccessMode,
    CallType,
    DataType,
    Event,
    EventType,
    Kind,
    Param,
    Profile,
    Property,
    Service,
    ThingModel,
)

IDENTIFIER: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,49}")
PRODUCT_KEY: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_TEXT_LENGTH: Final = 10240
MAX_ARRAY_SIZE: Final = 512
MAX_NESTING: Final = 8  # struct/array depth; Alibaba itself allows 2

_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")
_PROPERTY_METHODS = frozenset(
    {"thing.service.property.set", "thing.service.property.get", "thing.event.property.post"}
)
_DEFAULT_SERVICES = frozenset({"set", "get", "propertySet", "propertyGet"})
_DEFAULT_EVENTS = frozenset({"post", "propertyPost"})
_MISSING: Final = object()
_KINDS: Final = tuple(k.value for k in Kind)

_T = TypeVar("_T")
_E = TypeVar("_E", AccessMode, EventType, CallType)


def parse_model(doc: Mapping[str, Any], source: str = "<model>") -> ThingModel:
    """The model ``doc`` describes; raises ``ModelError`` listing every issue found."""
    parser = _Parser()
    model = parser.model(doc)
    if model is None or parser.issues:
        raise ModelError(source, parser.issues)
    return model


def load_model_json(text: str, source: str = "<model>") -> ThingModel:
    """Parse JSON text (NaN/Infinity rejected) into a model; JSON errors are ModelErrors too."""
    try:
        doc = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise ModelError(source, [Issue("", f"invalid JSON at {where}: {exc.msg}")]) from None
    except (ValueError, RecursionError) as exc:
        raise ModelError(source, [Issue("", f"invalid JSON: {exc}")]) from None
    return parse_model(doc, source)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _is_default_service(entry: Mapping[str, Any]) -> bool:
    return entry.get("method") in _PROPERTY_METHODS or entry.get("identifier") in _DEFAULT_SERVICES


def _is_default_event(entry: Mapping[str, Any]) -> bool:
    return entry.get("method") in _PROPERTY_METHODS or entry.get("identifier") in _DEFAULT_EVENTS


class _Parser:
    def __init__(self) -> None:
        self.issues: list[Issue] = []

    def fail(self, at: str, message: str) -> None:
        self.issues.append(Issue(at, message))

    # -- document structure ---------------------------------------------------------------

    def model(self, doc: Any) -> ThingModel | None:
        if not isinstance(doc, Mapping):
            self.fail("", "a thing model must be a JSON object")
            return None
        profile = self.profile(doc)
        properties = self.items(doc.get("properties", []), "/properties", self.property)
        events = self.items(doc.get("events", []), "/events", self.event, _is_default_event)
        services = self.items(
            doc.get("services", []), "/services", self.service, _is_default_service
        )
        if profile is None or properties is None or events is None or services is None:
            return None
        return ThingModel(profile, properties, events, services)

    def profile(self, doc: Mapping[str, Any]) -> Profile | None:
        raw = doc.get("profile", _MISSING)
        if raw is _MISSING:
            self.fail("", "missing required key 'profile'")
            return None
        if not isinstance(raw, Mapping):
            self.fail("/profile", "profile must be an object")
            return None
        start = len(self.issues)
        key_name = "productKey" if "productKey" in raw or "identifier" not in raw else "identifier"
        product_key = self.required(raw, key_name, "/profile")
        if product_key is not _MISSING and not (
            isinstance(product_key, str) and PRODUCT_KEY.fullmatch(product_key)
        ):
            self.fail(
                f"/profile/{key_name}",
                "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
            )
        version = self.optional_str(raw, "version", "/profile")
        if len(self.issues) > start:
            return None
        return Profile(product_key, version or None)

    def items(
        self,
        raw: Any,
        at: str,
        parse: Callable[[Mapping[str, Any], str], _T | None],
        skip: Callable[[Mapping[str, Any]], bool] | None = None,
    ) -> dict[str, _T] | None:
        """A list of identified entries, keyed by identifier, identifiers unique."""
        if not isinstance(raw, list):
            self.fail(at, "must be an array")
            return None
        start = len(self.issues)
        result: dict[str, _T] = {}
        first_at: dict[str, str] = {}
        for index, entry in enumerate(raw):
            entry_at = pointer(at, index)
            if not isinstance(entry, Mapping):
                self.fail(entry_at, "must be an object")
                continue
            if skip is not None and skip(entry):
                continue
            parsed = parse(entry, entry_at)
            identifier = entry.get("identifier")
            if isinstance(identifier, str) and IDENTIFIER.fullmatch(identifier):
                if identifier in first_at:
                    self.fail(
                        pointer(entry_at, "identifier"),
                        f"duplicate identifier {identifier!r} (first at {first_at[identifier]})",
                    )
                else:
                    first_at[identifier] = entry_at
            if parsed is not None and isinstance(identifier, str):
                result[identifier] = parsed
        return None if len(self.issues) > start else result

    def property(self, entry: Mapping[str, Any], at: str) -> Property | None:
        start = len(self.issues)
        identifier = self.identifier(entry, at)
        name = self.name(entry, at)
        access = self.choice(entry, "accessMode", at, AccessMode)
        required = self.required(entry, "required", at)
        if required is not _MISSING and not isinstance(required, bool):
            self.fail(pointer(at, "required"), "must be true or false")
        description = self.optional_str(entry, "desc", at)
        data_type = self.data_type_of(entry, at)
        if len(self.issues) > start or data_type is None or access is None:
            return None
        return Property(
            identifier,
            name,
            data_type,
            access,
            required,
            description or "",
            check=compile_check(data_type),
            normalize=compile_normalize(data_type),
        )

    def param(self, entry: Mapping[str, Any], at: str, depth: int = 0) -> Param | None:
        start = len(self.issues)
        identifier = self.identifier(entry, at)
        name = self.name(entry, at)
        data_type = self.data_type_of(entry, at, depth)
        if len(self.issues) > start or data_type is None:
            return None
        return Param(
            identifier,
            name,
            data_type,
            check=compile_check(data_type),
            normalize=compile_normalize(data_type),
        )

    def event(self, entry: Mapping[str, Any], at: str) -> Event | None:
        start = len(self.issues)
        identifier = self.identifier(entry, at)
        name = self.name(entry, at)
        kind = self.choice(entry, "type", at, EventType)
        description = self.optional_str(entry, "desc", at)
        output = self.items(entry.get("outputData", []), pointer(at, "outputData"), self.param)
        if len(self.issues) > start or kind is None or output is None:
            return None
        return Event(identifier, name, kind, output, description or "")

    def service(self, entry: Mapping[str, Any], at: str) -> Service | None:
        start = len(self.issues)
        identifier = self.identifier(entry, at)
        name = self.name(entry, at)
        call_type = self.choice(entry, "callType", at, CallType)
        description = self.optional_str(entry, "desc", at)
        inputs = self.items(entry.get("inputData", []), pointer(at, "inputData"), self.param)
        outputs = self.items(entry.get("outputData", []), pointer(at, "outputData"), self.param)
        if len(self.issues) > start or call_type is None or inputs is None or outputs is None:
            return None
        return Service(identifier, name, call_type, inputs, outputs, description or "")

    # -- data types -----------------------------------------------------------------------

    def data_type_of(self, entry: Mapping[str, Any], at: str, depth: int = 0) -> DataType | None:
        raw = self.required(entry, "dataType", at)
        if raw is _MISSING:
            return None
        return self.data_type(raw, pointer(at, "dataType"), depth)

    def data_type(self, raw: Any, at: str, depth: int) -> DataType | None:
        if not isinstance(raw, Mapping):
            self.fail(at, "dataType must be an object with 'type' and 'specs'")
            return None
        if depth >= MAX_NESTING:
            self.fail(at, f"data types nest more than {MAX_NESTING} levels deep")
            return None
        name = self.required(raw, "type", at)
        if name is _MISSING:
            return None
        if not isinstance(name, str) or name not in _KINDS:
            known = ", ".join(_KINDS)
            self.fail(pointer(at, "type"), f"unknown type {name!r}; expected one of {known}")
            return None
        kind = Kind(name)
        specs_at = pointer(at, "specs")
        specs = raw.get("specs", _MISSING)
        if kind is Kind.INT or kind is Kind.FLOAT or kind is Kind.DOUBLE:
            return self.numeric(kind, {} if specs is _MISSING else specs, specs_at)
        if kind is Kind.BOOL or kind is Kind.ENUM:
            return self.named(kind, specs, specs_at)
        if kind is Kind.TEXT:
            return self.text(specs, specs_at)
        if kind is Kind.DATE:
            if specs is not _MISSING and not isinstance(specs, Mapping):
                self.fail(specs_at, "date specs must be an object (it is ignored)")
                return None
            return DataType(kind)
        if kind is Kind.STRUCT:
            return self.struct(specs, specs_at, depth)
        return self.array(specs, specs_at, depth)

    def numeric(self, kind: Kind, specs: Any, at: str) -> DataType | None:
        if not isinstance(specs, Mapping):
            self.fail(at, f"{kind} specs must be an object")
            return None
        start = len(self.issues)
        low = self.number(specs, "min", at, kind)
        high = self.number(specs, "max", at, kind)
        step = self.number(specs, "step", at, kind)
        if step is not None and step <= 0:
            self.fail(pointer(at, "step"), f"step must be positive, not {number_text(step)}")
        if low is not None and high is not None and low > high:
            self.fail(
                pointer(at, "min"),
                f"min {number_text(low)} is greater than max {number_text(high)}",
            )
        unit = self.optional_str(specs, "unit", at)
        unit_name = self.optional_str(specs, "unitName", at)
        if len(self.issues) > start:
            return None
        return DataType(kind, low, high, step, unit or None, unit_name or None)

    def number(self, specs: Mapping[str, Any], key: str, at: str, kind: Kind) -> int | float | None:
        """A numeric spec written as a number or, as Alibaba does, a string; int for int types."""
        raw = specs.get(key)
        if raw is None:
            return None
        at = pointer(at, key)
        value: int | float
        if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
            self.fail(at, f"{key} must be a number or a numeric string")
            return None
        if isinstance(raw, str):
            text = raw.strip()
            if _INTEGER.fullmatch(text):
                value = int(text)
            elif _NUMBER.fullmatch(text):
                value = float(text)
            else:
                self.fail(at, f"{key} {raw!r} is not a number")
                return None
        else:
            value = raw
        if isinstance(value, float) and not isfinite(value):
            self.fail(at, f"{key} must be finite")
            return None
        if kind is Kind.INT:
            if isinstance(value, float):
                if not value.is_integer():
                    self.fail(at, f"{key} {raw!r} must be an integer for type int")
                    return None
                value = int(value)
            if not INT32_MIN <= value <= INT32_MAX:
                self.fail(at, f"{key} {value} is outside the int32 range")
                return None
            return value
        limit = FLOAT32_MAX if kind is Kind.FLOAT else DOUBLE_MAX
        if abs(value) > limit:
            self.fail(at, f"{key} {show(value)} is outside the {kind} range")
            return None
        return float(value)

    def named(self, kind: Kind, specs: Any, at: str) -> DataType | None:
        """bool and enum: value -> display name."""
        if not isinstance(specs, Mapping):
            self.fail(at, f"{kind} specs must be an object mapping values to names")
            return None
        start = len(self.issues)
        names: dict[int, str] = {}
        for key, label in specs.items():
            key_at = pointer(at, key)
            value: int | None = None
            if isinstance(key, int) and not isinstance(key, bool):
                value = key
            elif isinstance(key, str) and _INTEGER.fullmatch(key) and str(int(key)) == key:
                value = int(key)
            if kind is Kind.BOOL and value not in (0, 1):
                self.fail(key_at, f"bool specs keys must be '0' and '1', not {key!r}")
                continue
            if value is None:
                self.fail(key_at, f"enum value {key!r} must be an integer such as '1'")
                continue
            if not INT32_MIN <= value <= INT32_MAX:
                self.fail(key_at, f"enum value {value} is outside the int32 range")
                continue
            if not isinstance(label, str) or not label:
                self.fail(key_at, "name must be a non-empty string")
                continue
            names[value] = label
        if kind is Kind.BOOL and len(self.issues) == start and set(names) != {0, 1}:
            self.fail(at, "bool specs need names for both '0' and '1'")
        if kind is Kind.ENUM and not specs:
            self.fail(at, "enum specs need at least one value")
        if len(self.issues) > start:
            return None
        return DataType(kind, names=names)

    def text(self, specs: Any, at: str) -> DataType | None:
        if not isinstance(specs, Mapping):
            self.fail(at, "text specs must be an object with 'length'")
            return None
        start = len(self.issues)
        if self.required(specs, "length", at) is _MISSING:
            return None
        length = self.number(specs, "length", at, Kind.INT)
        if length is not None and not 1 <= length <= MAX_TEXT_LENGTH:
            self.fail(pointer(at, "length"), f"length must be 1..{MAX_TEXT_LENGTH}, not {length}")
        if len(self.issues) > start or length is None:
            return None
        return DataType(Kind.TEXT, length=int(length))

    def struct(self, specs: Any, at: str, depth: int) -> DataType | None:
        if not isinstance(specs, list):
            self.fail(at, "struct specs must be an array of fields")
            return None
        if not specs:
            self.fail(at, "struct specs need at least one field")
            return None

        def field(entry: Mapping[str, Any], field_at: str) -> Param | None:
            return self.param(entry, field_at, depth + 1)

        fields = self.items(specs, at, field)
        if fields is None:
            return None
        return DataType(Kind.STRUCT, fields=tuple(fields.values()))

    def array(self, specs: Any, at: str, depth: int) -> DataType | None:
        if not isinstance(specs, Mapping):
            self.fail(at, "array specs must be an object with 'size' and 'item'")
            return None
        start = len(self.issues)
        size: int | float | None = None
        if self.required(specs, "size", at) is not _MISSING:
            size = self.number(specs, "size", at, Kind.INT)
            if size is not None and not 1 <= size <= MAX_ARRAY_SIZE:
                self.fail(pointer(at, "size"), f"size must be 1..{MAX_ARRAY_SIZE}, not {size}")
        item = None
        raw_item = self.required(specs, "item", at)
        if raw_item is not _MISSING:
            item = self.data_type(raw_item, pointer(at, "item"), depth + 1)
        if len(self.issues) > start or size is None or item is None:
            return None
        return DataType(Kind.ARRAY, size=int(size), item=item)

    # -- scalar fields --------------------------------------------------------------------

    def required(self, entry: Mapping[str, Any], key: str, at: str) -> Any:
        value = entry.get(key, _MISSING)
        if value is _MISSING:
            self.fail(at, f"missing required key {key!r}")
        return value

    def identifier(self, entry: Mapping[str, Any], at: str) -> str:
        value = self.required(entry, "identifier", at)
        if value is _MISSING:
            return ""
        if not isinstance(value, str) or not IDENTIFIER.fullmatch(value):
            self.fail(
                pointer(at, "identifier"),
                f"identifier {value!r} must be 1-50 letters, digits or '_', starting with a letter",
            )
            return ""
        return value

    def name(self, entry: Mapping[str, Any], at: str) -> str:
        value = self.required(entry, "name", at)
        if value is _MISSING:
            return ""
        if not isinstance(value, str) or not value.strip():
            self.fail(pointer(at, "name"), "name must be a non-empty string")
            return ""
        return value

    def optional_str(self, entry: Mapping[str, Any], key: str, at: str) -> str | None:
        value = entry.get(key)
        if value is not None and not isinstance(value, str):
            self.fail(pointer(at, key), f"{key} must be a string")
            return None
        return value

    def choice(self, entry: Mapping[str, Any], key: str, at: str, choices: type[_E]) -> _E | None:
        value = self.required(entry, key, at)
        if value is _MISSING:
            return None
        allowed_values = [c.value for c in choices]
        if not isinstance(value, str) or value not in allowed_values:
            allowed = ", ".join(map(repr, allowed_values))
            self.fail(pointer(at, key), f"{key} must be one of {allowed}, not {value!r}")
            return None
        return choices(value)
