"""Compile a data type into a checker closure and a normalizer, once, at model load.

Checkers run for every reported value and every command, so each closure captures its bounds
as locals, tests the exact common type first (``type(v) is float``) and only falls back to
``isinstance`` for subclasses. ``step`` is not enforced: in TSL it is a UI increment, and
Alibaba accepts off-step values. Text length counts characters, not bytes.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from math import isfinite
from typing import Any

from citytwin.thingmodels.types import Checker, DataType, Kind, Normalizer

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
FLOAT32_MAX = 3.4028234663852886e38
DOUBLE_MAX = sys.float_info.max
DATE_MAX_MS = 253402300799999  # 9999-12-31T23:59:59.999Z: catches µs/ns passed as ms

_SHOW_LIMIT = 40


def show(value: Any) -> str:
    """A short, JSON-flavoured rendering of a value for messages."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    text = repr(value)
    if len(text) > _SHOW_LIMIT:
        text = text[: _SHOW_LIMIT - 3] + "..."
    return text


def number_text(value: float) -> str:
    """6.0 -> "6": bounds read as the document wrote them."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value)


def compile_check(dt: DataType) -> Checker:
    """The checker for ``dt``; struct fields must already carry their own checkers."""
    kind = dt.type
    if kind is Kind.INT:
        return _int_check(dt)
    if kind is Kind.FLOAT or kind is Kind.DOUBLE:
        return _float_check(dt)
    if kind is Kind.BOOL:
        return _check_bool
    if kind is Kind.ENUM:
        return _enum_check(dt)
    if kind is Kind.TEXT:
        return _text_check(dt)
    if kind is Kind.DATE:
        return _check_date
    if kind is Kind.STRUCT:
        return _struct_check(dt)
    return _array_check(dt)


def compile_normalize(dt: DataType) -> Normalizer:
    """The normalizer for ``dt``: only meaningful for values its checker accepted."""
    kind = dt.type
    if kind is Kind.INT or kind is Kind.ENUM:
        return int
    if kind is Kind.FLOAT or kind is Kind.DOUBLE:
        return float
    if kind is Kind.BOOL:
        return bool
    if kind is Kind.TEXT:
        return str
    if kind is Kind.DATE:
        return _normalize_date
    if kind is Kind.STRUCT:
        fields = tuple((f.identifier, f.normalize) for f in dt.fields)

        def normalize_struct(value: Any) -> Any:
            return {ident: norm(value[ident]) for ident, norm in fields}

        return normalize_struct
    assert dt.item is not None
    item_normalize = compile_normalize(dt.item)

    def normalize_array(value: Any) -> Any:
        return [item_normalize(item) for item in value]

    return normalize_array


def _bounds(
    dt: DataType, type_min: float, type_max: float, type_name: str
) -> tuple[float, float, str, str]:
    """Effective (lo, hi) and the phrases naming them: the model's or the type's own limits."""
    if dt.min is not None:
        lo, lo_text = dt.min, f"min {number_text(dt.min)}"
    else:
        lo, lo_text = type_min, f"{type_name} min {number_text(type_min)}"
    if dt.max is not None:
        hi, hi_text = dt.max, f"max {number_text(dt.max)}"
    else:
        hi, hi_text = type_max, f"{type_name} max {number_text(type_max)}"
    return lo, hi, lo_text, hi_text


def _int_check(dt: DataType) -> Checker:
    lo, hi, lo_text, hi_text = _bounds(dt, INT32_MIN, INT32_MAX, "int32")

    def check_int(value: Any) -> str | None:
        if type(value) is not int and (isinstance(value, bool) or not isinstance(value, int)):
            return f"{show(value)} is not an integer"
        if value < lo:
            return f"{show(value)} is below {lo_text}"
        if value > hi:
            return f"{show(value)} is above {hi_text}"
        return None

    return check_int


def _float_check(dt: DataType) -> Checker:
    type_max = FLOAT32_MAX if dt.type is Kind.FLOAT else DOUBLE_MAX
    lo, hi, lo_text, hi_text = _bounds(dt, -type_max, type_max, dt.type.value)

    def check_float(value: Any) -> str | None:
        kind = type(value)
        if kind is float or (kind is not bool and kind is not int and isinstance(value, float)):
            if not isfinite(value):
                return f"{show(value)} is not a finite number"
        elif kind is not int and (kind is bool or not isinstance(value, int)):
            return f"{show(value)} is not a number"
        if value < lo:
            return f"{show(value)} is below {lo_text}"
        if value > hi:
            return f"{show(value)} is above {hi_text}"
        return None

    return check_float


def _check_bool(value: Any) -> str | None:
    if value is True or value is False:
        return None
    if type(value) is int and (value == 0 or value == 1):
        return None
    return f"{show(value)} is not a bool (true/false or 0/1)"


def _enum_check(dt: DataType) -> Checker:
    keys = frozenset(dt.names)
    listed = ", ".join(f"{k} ({name})" for k, name in list(dt.names.items())[:8])
    choices = listed if len(keys) <= 8 else f"{listed}, ... ({len(keys)} values)"

    def check_enum(value: Any) -> str | None:
        if type(value) is int:
            if value in keys:
                return None
        elif isinstance(value, bool) or not isinstance(value, int):
            return f"{show(value)} is not an enum value (an integer)"
        elif int(value) in keys:
            return None
        return f"{show(value)} is not one of {choices}"

    return check_enum


def _text_check(dt: DataType) -> Checker:
    length = dt.length if dt.length is not None else 10240

    def check_text(value: Any) -> str | None:
        if type(value) is not str and not isinstance(value, str):
            return f"{show(value)} is not text"
        if len(value) > length:
            return f"text of {len(value)} characters is longer than length {length}"
        return None

    return check_text


def _check_date(value: Any) -> str | None:
    kind = type(value)
    if kind is str or isinstance(value, str):
        if not (value.isascii() and value.isdigit()) or len(value) > 15:
            return f"{show(value)} is not a date (epoch milliseconds)"
        value = int(value)
    elif kind is not int and (kind is bool or not isinstance(value, int)):
        return f"{show(value)} is not a date (epoch milliseconds, string or integer)"
    if value < 0:
        return f"{show(value)} is not a date (negative epoch milliseconds)"
    if value > DATE_MAX_MS:
        return f"{show(value)} is not a date (after year 9999: µs or ns instead of ms?)"
    return None


def _normalize_date(value: Any) -> Any:
    """TSL carries dates as strings of UTC epoch milliseconds."""
    return str(int(value))


def _struct_check(dt: DataType) -> Checker:
    fields = tuple((f.identifier, f.check) for f in dt.fields)
    declared = frozenset(ident for ident, _ in fields)
    count = len(fields)

    def check_struct(value: Any) -> str | None:
        if type(value) is not dict and not isinstance(value, Mapping):
            return f"{show(value)} is not an object"
        for ident, check in fields:
            if ident not in value:
                return f"missing field {ident!r}"
            reason = check(value[ident])
            if reason is not None:
                return f"field {ident!r}: {reason}"
        if len(value) != count:
            extra = next(key for key in value if key not in declared)
            return f"unknown field {show(extra)}"
        return None

    return check_struct


def _array_check(dt: DataType) -> Checker:
    assert dt.item is not None and dt.size is not None
    size = dt.size
    check_item = compile_check(dt.item)

    def check_array(value: Any) -> str | None:
        if type(value) is not list and not isinstance(value, (list, tuple)):
            return f"{show(value)} is not an array"
        if len(value) > size:
            return f"array of {len(value)} items is longer than size {size}"
        for index, item in enumerate(value):
            reason = check_item(item)
            if reason is not None:
                return f"item {index}: {reason}"
        return None

    return check_array
