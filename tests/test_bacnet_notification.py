"""The hand-written UnconfirmedCOVNotification decoder against bacpypes3's own encoder."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from bacpypes3.apdu import UnconfirmedCOVNotificationRequest
from bacpypes3.basetypes import BinaryPV, PropertyValue, StatusFlags
from bacpypes3.constructeddata import Any as AnyValue
from bacpypes3.constructeddata import ArrayOf
from bacpypes3.primitivedata import (
    Boolean,
    CharacterString,
    Double,
    Integer,
    Null,
    ObjectIdentifier,
    Real,
    Unsigned,
)

from citytwin.drivers.bacnet import notification


def encoded(values: list[PropertyValue], process_id: int = 70000, obj: str = "analog-input,5") -> bytes:
    request = UnconfirmedCOVNotificationRequest(
        subscriberProcessIdentifier=process_id,
        initiatingDeviceIdentifier=ObjectIdentifier("device,1001"),
        monitoredObjectIdentifier=ObjectIdentifier(obj),
        timeRemaining=290,
        listOfValues=values,
    )
    return bytes(request.encode().encode().pduData)


def value(prop: str, element: Any, **extra: Any) -> PropertyValue:
    return PropertyValue(propertyIdentifier=prop, value=AnyValue(element), **extra)


@pytest.mark.parametrize(("element", "expected"), [
    (Real(21.5), (notification.TAG_REAL, 21.5)),
    (Real(-0.1), (notification.TAG_REAL, struct.unpack(">f", struct.pack(">f", -0.1))[0])),  # REAL is single
    (BinaryPV("active"), (notification.TAG_ENUMERATED, 1)),
    (Unsigned(70000), (notification.TAG_UNSIGNED, 70000)),
    (Integer(-300), (notification.TAG_SIGNED, -300)),
    (Boolean(True), (notification.TAG_BOOLEAN, True)),
    (Double(1e300), (notification.TAG_DOUBLE, 1e300)),
    (CharacterString("zone 1 — ok, a longer text"), (notification.TAG_CHARACTER_STRING, "zone 1 — ok, a longer text")),
    (Null(()), (notification.TAG_NULL, None)),
], ids=["real", "real-single", "binary", "unsigned", "signed", "boolean", "double", "string", "null"])
async def test_primitives_decode_as_bacpypes3_encodes_them(element: Any, expected: tuple[int, Any]) -> None:
    flags = value("status-flags", StatusFlags([1, 0, 0, 1]))
    data = encoded([value("present-value", element), flags], process_id=4194302, obj="binary-output,4194302")
    decoded = notification.decode(data)
    assert decoded is not None
    process_id, monitored, values = decoded
    assert process_id == 4194302
    assert monitored == (4 << 22) | 4194302
    assert values[notification.PRESENT_VALUE] == expected
    assert values[notification.STATUS_FLAGS] == (notification.TAG_BIT_STRING, [1, 0, 0, 1])


async def test_anything_else_is_left_to_bacpypes3() -> None:
    good = encoded([value("present-value", Real(1.0))])
    assert notification.decode(good) is not None
    for data in (
        good[:-1],  # truncated
        good[:5],
        b"\x10\x08" + good[2:],  # another unconfirmed service (Who-Is)
        b"\x00" + good[1:],  # a confirmed request
        encoded([value("priority-array", ArrayOf(Real)([1.0, 2.0]))]),  # more than one value
        encoded([value("present-value", Real(1.0), propertyArrayIndex=1)]),  # an array index
        good + b"\x00",  # trailing octets
    ):
        assert notification.decode(data) is None, data.hex()


async def test_priority_after_a_value_is_skipped() -> None:
    data = encoded([value("present-value", Real(3.0), priority=8), value("status-flags", StatusFlags([0, 0, 0, 0]))])
    decoded = notification.decode(data)
    assert decoded is not None and decoded[2] == {
        notification.PRESENT_VALUE: (notification.TAG_REAL, 3.0),
        notification.STATUS_FLAGS: (notification.TAG_BIT_STRING, [0, 0, 0, 0]),
    }
