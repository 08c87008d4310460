"""BACnet values to raw readings and back, and status-flags to quality.

bacpypes3 decodes each property into its own types (Real, Unsigned, BinaryPV, StatusFlags
…); a reading carries plain Python values: analog -> float, binary -> bool (active is
True), multi-state and integers -> int, character strings -> str, enumerations -> their
name. A property the device could not read arrives as an error value and becomes a BAD
reading with the device's error class and code.
"""

from __future__ import annotations

import time
from typing import Any

from bacpypes3.basetypes import BinaryPV, StatusFlags
from bacpypes3.primitivedata import (
    Boolean,
    CharacterString,
    Enumerated,
    Null,
    Real,
)

from citytwin.drivers.bacnet.binding import BINARY
from citytwin.drivers.base import Quality
from citytwin.drivers.errors import BindingError

# status-flags bits (ASHRAE 135 clause 12, BACnetStatusFlags) and what each one means here
IN_ALARM, FAULT, OVERRIDDEN, OUT_OF_SERVICE = 0, 1, 2, 3
_FLAG_REASONS = (
    (FAULT, Quality.BAD, "fault: the device reports the object unreliable"),
    (OUT_OF_SERVICE, Quality.UNCERTAIN, "out-of-service: the value is not the process's"),
    (OVERRIDDEN, Quality.UNCERTAIN, "overridden: a local control overrides the value"),
    (IN_ALARM, Quality.GOOD, "in-alarm: the object's event state is not normal"),
)
_RANK = {Quality.GOOD: 0, Quality.UNCERTAIN: 1, Quality.BAD: 2}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def error_text(value: Any) -> str | None:
    """``object: unknown-object`` for an error value (class and code), else None."""
    code = getattr(value, "errorCode", None)
    if code is None:
        return None
    return f"{getattr(value, 'errorClass', '?')}: {code}"


def raw(value: Any) -> Any:
    """A decoded BACnet value as a plain Python value."""
    if isinstance(value, BinaryPV):
        return int(value) == 1
    if isinstance(value, Null) or value is None:
        return None
    if isinstance(value, Boolean):
        return bool(value)
    if isinstance(value, Enumerated):
        return str(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, CharacterString | str):
        return str(value)
    if isinstance(value, list):
        return [raw(v) for v in value]
    return str(value)


def flags(value: Any) -> tuple[int, ...]:
    """The four status-flags bits, or all clear for anything that is not a bit string."""
    if isinstance(value, StatusFlags | list):
        bits = tuple(int(b) for b in value)
        return (bits + (0, 0, 0, 0))[:4]
    return (0, 0, 0, 0)


def quality(bits: tuple[int, ...]) -> tuple[Quality, str | None]:
    """The worst quality the flags imply, with every set flag's reason.

    fault -> BAD; out-of-service and overridden -> UNCERTAIN (the value is real, but not
    what the process or the gateway's commands would make it); in-alarm keeps GOOD (the
    measurement is sound, the process is abnormal) and still names itself.
    """
    worst, reasons = Quality.GOOD, []
    for bit, level, reason in _FLAG_REASONS:
        if bits[bit]:
            reasons.append(reason)
            if _RANK[level] > _RANK[worst]:
                worst = level
    return worst, "; ".join(reasons) or None


def out_of_service(bits: tuple[int, ...]) -> bool:
    return bool(bits[OUT_OF_SERVICE])


def write_value(kind: str, value: Any) -> Any:
    """A raw value as bacpypes3 writes it to the present-value of an object of ``kind``."""
    if value is None:
        return Null(())
    if kind in BINARY:
        if isinstance(value, bool) or (isinstance(value, int | float) and value in (0, 1)):
            return BinaryPV("active" if value else "inactive")
        if value in ("active", "inactive"):
            return BinaryPV(value)
        raise BindingError(f"a binary object takes true/false (or 1/0), not {value!r}")
    if isinstance(value, bool):
        return int(value)
    if kind.startswith("analog") or kind == "large-analog-value":
        if not isinstance(value, int | float):
            raise BindingError(f"an analog object takes a number, not {value!r}")
        return Real(float(value)) if kind != "large-analog-value" else float(value)
    return value
