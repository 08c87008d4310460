"""A decoder for one APDU only: the UnconfirmedCOVNotification, on the COV hot path.

Written by hand because bacpypes3's generic decoder costs about half a millisecond of CPU
per notification (a class-driven ASN.1 walk with ``inspect.getattr_static`` on every
element): at a thousand notifications a second that alone is half a core. This decoder
reads the one fixed structure (ASHRAE 135 clause 13.7: context tags 0–3, then the list of
BACnetPropertyValue in context tag 4) with the application-tagged primitives a present
value or status-flags can carry. Anything else — a constructed value, an extended tag, an
unknown application tag, more than one value in a property — returns None, and the
notification takes bacpypes3's own path unchanged. Tests compare it with bacpypes3's
encoder for every primitive it accepts.
"""

from __future__ import annotations

import struct
from typing import Any

UNCONFIRMED_REQUEST, COV_NOTIFICATION = 0x10, 0x02
TAG_NULL, TAG_BOOLEAN, TAG_UNSIGNED, TAG_SIGNED, TAG_REAL, TAG_DOUBLE = 0, 1, 2, 3, 4, 5
TAG_CHARACTER_STRING, TAG_BIT_STRING, TAG_ENUMERATED = 7, 8, 9
PLAIN_TAGS = frozenset({TAG_BOOLEAN, TAG_UNSIGNED, TAG_SIGNED, TAG_REAL, TAG_DOUBLE, TAG_CHARACTER_STRING})
"""application tags whose decoded value is the reading's raw value as it is"""
PRESENT_VALUE, STATUS_FLAGS = 85, 111  # property identifiers


class _Malformed(Exception):
    pass


def _tag(data: bytes, pos: int) -> tuple[int, bool, int, int]:
    """(tag number, context?, length-or-value, position after the tag octets)."""
    if pos >= len(data):
        raise _Malformed
    first = data[pos]
    number, context, lvt = first >> 4, bool(first & 0x08), first & 0x07
    pos += 1
    if number == 15:
        raise _Malformed  # extended tag numbers do not occur in this service
    if lvt == 5:  # the length follows (opening and closing tags are 6 and 7)
        if pos >= len(data):
            raise _Malformed
        lvt = data[pos]
        pos += 1
        if lvt == 254:
            lvt = int.from_bytes(data[pos:pos + 2], "big")
            pos += 2
        elif lvt == 255:
            lvt = int.from_bytes(data[pos:pos + 4], "big")
            pos += 4
    return number, context, lvt, pos


def _context(data: bytes, pos: int, number: int) -> tuple[bytes, int]:
    tag, context, length, pos = _tag(data, pos)
    if not context or tag != number or length > 4:
        raise _Malformed
    end = pos + length
    if end > len(data):
        raise _Malformed
    return data[pos:end], end


def _is(data: bytes, pos: int, number: int, lvt: int) -> bool:
    """Is the octet at ``pos`` the opening (6) or closing (7) tag ``number``?"""
    return pos < len(data) and data[pos] == (number << 4) | 0x08 | lvt


def _primitive(data: bytes, pos: int) -> tuple[tuple[int, Any], int]:
    tag, context, length, pos = _tag(data, pos)
    if context:
        raise _Malformed
    if tag == TAG_BOOLEAN:
        return (tag, bool(length)), pos
    end = pos + length
    if end > len(data):
        raise _Malformed
    body = data[pos:end]
    value: Any
    if tag == TAG_NULL:
        value = None
    elif tag in (TAG_UNSIGNED, TAG_ENUMERATED):
        value = int.from_bytes(body, "big")
    elif tag == TAG_SIGNED:
        value = int.from_bytes(body, "big", signed=True)
    elif tag == TAG_REAL and length == 4:
        value = struct.unpack(">f", body)[0]
    elif tag == TAG_DOUBLE and length == 8:
        value = struct.unpack(">d", body)[0]
    elif tag == TAG_BIT_STRING and length >= 1:
        unused = body[0]
        bits = [(octet >> (7 - i)) & 1 for octet in body[1:] for i in range(8)]
        value = bits[:len(bits) - unused] if unused else bits
    elif tag == TAG_CHARACTER_STRING and length >= 1 and body[0] == 0:  # UTF-8
        value = bytes(body[1:]).decode("utf-8")
    else:
        raise _Malformed
    return (tag, value), end


def decode(apdu: bytes) -> tuple[int, int, dict[int, tuple[int, Any]]] | None:
    """(subscriber process id, monitored object as its 32-bit identifier,
    {property id: (application tag, value)}) of an UnconfirmedCOVNotification APDU, or None."""
    if len(apdu) < 2 or apdu[0] != UNCONFIRMED_REQUEST or apdu[1] != COV_NOTIFICATION:
        return None
    try:
        raw, pos = _context(apdu, 2, 0)
        process_id = int.from_bytes(raw, "big")
        _, pos = _context(apdu, pos, 1)  # the initiating device
        raw, pos = _context(apdu, pos, 2)
        if len(raw) != 4:
            return None
        monitored = int.from_bytes(raw, "big")
        _, pos = _context(apdu, pos, 3)  # time remaining
        if not _is(apdu, pos, 4, 6):
            return None
        pos += 1
        values: dict[int, tuple[int, Any]] = {}
        while not _is(apdu, pos, 4, 7):
            raw, pos = _context(apdu, pos, 0)
            prop = int.from_bytes(raw, "big")
            if pos < len(apdu) and (apdu[pos] & 0xF8) == 0x18:  # context 1: an array index
                return None  # an array index: not a present value or status-flags
            if not _is(apdu, pos, 2, 6):
                return None
            value, pos = _primitive(apdu, pos + 1)
            if not _is(apdu, pos, 2, 7):
                return None  # more than one value: a constructed property
            pos += 1
            if pos < len(apdu) and (apdu[pos] & 0xF8) == 0x38:  # context 3: priority
                _, pos = _context(apdu, pos, 3)
            values[prop] = value
        if pos + 1 != len(apdu):
            return None
    except _Malformed:
        return None
    return process_id, monitored, values
