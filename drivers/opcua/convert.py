"""Between asyncua's values and ours: NodeIds, typed Variants, and DataValues as Readings.

A write or a call sends exactly the Variant type its binding names: Python's ``int`` would
otherwise go out as Int64, which a server checking argument types (node-opcua does)
refuses with BadTypeMismatch.
"""

from __future__ import annotations

import base64
import math
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from asyncua import ua

from citytwin.drivers.base import Quality, Reading
from citytwin.drivers.errors import BindingError
from citytwin.drivers.opcua.nodeid import NodeIdText

_RANGES: dict[str, tuple[int, int]] = {
    "SByte": (-(2**7), 2**7 - 1), "Byte": (0, 2**8 - 1),
    "Int16": (-(2**15), 2**15 - 1), "UInt16": (0, 2**16 - 1),
    "Int32": (-(2**31), 2**31 - 1), "UInt32": (0, 2**32 - 1),
    "Int64": (-(2**63), 2**63 - 1), "UInt64": (0, 2**64 - 1),
}
_FLOAT32_MAX = 3.4028234663852886e38
_KIND = {"i": ua.NodeIdType.Numeric, "s": ua.NodeIdType.String, "g": ua.NodeIdType.Guid, "b": ua.NodeIdType.ByteString}


def to_nodeid(text: NodeIdText, namespaces: Sequence[str]) -> ua.NodeId:
    """Raises BindingError when the namespace URI is not in the server's namespace array."""
    index = text.namespace
    if text.uri is not None:
        try:
            index = list(namespaces).index(text.uri)
        except ValueError:
            raise BindingError(f"namespace {text.uri!r} is not on the server") from None
    ident: Any = text.identifier
    if text.kind == "i":
        ident = int(ident)
    elif text.kind == "g":
        ident = uuid.UUID(ident)
    elif text.kind == "b":
        ident = base64.b64decode(ident)
    return ua.NodeId(ident, ua.Int16(index), _KIND[text.kind])


def variant(value: Any, type_name: str) -> ua.Variant:
    """``value`` as a Variant of exactly ``type_name``; raises BindingError if it does not fit."""
    vtype = getattr(ua.VariantType, type_name)
    if type_name == "Boolean":
        if not isinstance(value, bool | int) or value not in (0, 1):
            raise BindingError(f"{value!r} is not a Boolean")
        return ua.Variant(bool(value), vtype)
    if type_name in _RANGES:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BindingError(f"{value!r} is not a number for {type_name}")
        if isinstance(value, float):
            if not value.is_integer():
                raise BindingError(f"{value!r} is not an integer for {type_name}")
            value = int(value)
        lo, hi = _RANGES[type_name]
        if not lo <= value <= hi:
            raise BindingError(f"{value} does not fit {type_name} ({lo}..{hi})")
        return ua.Variant(value, vtype)
    if type_name in ("Float", "Double"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BindingError(f"{value!r} is not a number for {type_name}")
        number = float(value)
        if type_name == "Float" and math.isfinite(number) and abs(number) > _FLOAT32_MAX:
            raise BindingError(f"{value} does not fit Float")
        return ua.Variant(number, vtype)
    if not isinstance(value, str):
        raise BindingError(f"{value!r} is not a String")
    return ua.Variant(value, vtype)


def epoch_ms(stamp: datetime | None) -> int:
    if stamp is None:
        return time.time_ns() // 1_000_000
    return int(stamp.timestamp() * 1000)


def status_text(status: ua.StatusCode) -> str:
    """``BadNodeIdUnknown (The node id refers to a node that does not exist ...)``."""
    try:
        return f"{status.name} ({status.doc.rstrip('.')})"
    except (KeyError, AttributeError):
        return f"status 0x{status.value:08X}"


def quality_of(status: ua.StatusCode | None) -> Quality:
    if status is None:
        return Quality.GOOD
    severity = status.value & 0xC0000000
    if severity == 0:
        return Quality.GOOD
    return Quality.UNCERTAIN if severity == 0x40000000 else Quality.BAD


def reading(point: str, data: ua.DataValue) -> Reading:
    """SourceTimestamp is the reading's time (the server's when the source gave none)."""
    status = data.StatusCode
    quality = quality_of(status)
    value = data.Value.Value if data.Value is not None else None
    ts = epoch_ms(data.SourceTimestamp or data.ServerTimestamp)
    if quality is Quality.GOOD:
        return Reading(point, value, ts, quality)
    assert status is not None
    return Reading(point, value if quality is Quality.UNCERTAIN else None, ts, quality, status_text(status))
