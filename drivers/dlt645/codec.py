"""DL/T 645-2007 frames and BCD values, without I/O.

A frame on the wire::

    FE…FE  68  A0…A5  68  C  L  DATA(L bytes, each + 33H)  CS  16

0 to 4 wake-up bytes FEH precede it; the address is 12 BCD digits, lowest byte first; the
control code ``C`` says direction (D7), exception answer (D6), follow-up frames (D5) and the
function (D4..D0); CS is the sum modulo 256 of every byte from the first 68H to the last data
byte. Data items (DI0..DI3 and values) travel lowest byte first, each byte plus 33H.

We wrote this codec instead of using ``dlt645`` from PyPI (3.2.0): see docs/drivers.md.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from citytwin.drivers.errors import DecodeError

START, END, WAKE = 0x68, 0x16, 0xFE
BROADCAST = bytes([0x99] * 6)
"""the broadcast address (time sync): meters act on it and do not answer"""

READ, READ_FOLLOW, READ_ADDRESS, WRITE, TIME_SYNC, CONTROL = 0x11, 0x12, 0x13, 0x14, 0x08, 0x1C
ANSWER, EXCEPTION, FOLLOWS = 0x80, 0x40, 0x20
MAX_DATA = 200
"""the standard's limit on one frame's data field; longer answers come in follow-up frames"""

ERROR_BITS: tuple[str, ...] = (
    "other error",
    "no such data requested",
    "password wrong or not authorized",
    "baud rate cannot be changed",
    "too many annual time zones",
    "too many daily time periods",
    "too many tariffs",
    "reserved error bit 7",
)
"""the exception answer's error byte (ERR), bit 0 first"""


def error_reason(err: int) -> str:
    """E.g. ``meter error 0x02 (no such data requested)``."""
    names = [name for bit, name in enumerate(ERROR_BITS) if err >> bit & 1] or ["no error bit set"]
    return f"meter error 0x{err:02X} ({', '.join(names)})"


@dataclass(frozen=True, slots=True)
class Frame:
    address: bytes  # as on the wire, lowest byte first
    control: int
    data: bytes  # with the 33H offset removed

    @property
    def is_exception(self) -> bool:
        return bool(self.control & EXCEPTION)

    @property
    def has_follow_up(self) -> bool:
        return bool(self.control & FOLLOWS)

    @property
    def function(self) -> int:
        return self.control & 0x1F


def parse_address(text: str) -> bytes:
    """12 digits as printed on the meter (``000012345678``) to wire order; ``AA`` bytes are
    the standard's wildcard (one meter alone on a line answers whatever its address)."""
    if len(text) != 12 or not all(c in "0123456789Aa" for c in text):
        raise ValueError("a DL/T 645 address is 12 BCD digits (AA for a wildcard byte)")
    return bytes.fromhex(text)[::-1]


def show_address(wire: bytes) -> str:
    return wire[::-1].hex().upper()


def encode_frame(address: bytes, control: int, data: bytes = b"", wake_up: int = 4) -> bytes:
    body = bytes([START, *address, START, control, len(data), *((b + 0x33) & 0xFF for b in data)])
    return bytes([WAKE] * wake_up) + body + bytes([sum(body) & 0xFF, END])


def encode_di(di: int) -> bytes:
    return di.to_bytes(4, "little")


def read_request(address: bytes, di: int, wake_up: int = 4) -> bytes:
    return encode_frame(address, READ, encode_di(di), wake_up)


def follow_request(address: bytes, di: int, seq: int, wake_up: int = 4) -> bytes:
    return encode_frame(address, READ_FOLLOW, encode_di(di) + bytes([seq & 0xFF]), wake_up)


def _address_matches(got: bytes, wanted: bytes) -> bool:
    return all(w == 0xAA or g == w for g, w in zip(got, wanted, strict=True))


def scanner(wanted: bytes) -> Callable[[bytearray], Frame | None]:
    """A ``Line.receive`` scan for the answer from ``wanted``: skips wake-up bytes and noise,
    drops frames from other meters (a late answer), raises ``DecodeError`` for a broken one."""

    def scan(buffer: bytearray) -> Frame | None:
        while True:
            start = buffer.find(START)
            if start < 0:
                buffer.clear()
                return None
            del buffer[:start]
            if len(buffer) < 10:
                return None
            if buffer[7] != START:  # a 68H inside noise, not a frame's head
                del buffer[:1]
                continue
            size = 12 + buffer[9]
            if len(buffer) < size:
                return None
            raw = bytes(buffer[:size])
            del buffer[:size]
            checksum = sum(raw[:-2]) & 0xFF
            if raw[-2] != checksum:
                raise DecodeError(
                    f"checksum 0x{raw[-2]:02X} in the answer, 0x{checksum:02X} computed: {raw.hex(' ')}"
                )
            if raw[-1] != END:
                raise DecodeError(f"end byte 0x{raw[-1]:02X} instead of 16H: {raw.hex(' ')}")
            address, control = raw[1:7], raw[8]
            if not control & ANSWER or not _address_matches(address, wanted):
                continue  # our own request echoed, or another meter's late answer
            return Frame(address, control, bytes((b - 0x33) & 0xFF for b in raw[10:-2]))

    return scan


def decode_frame(raw: bytes) -> Frame:
    """One whole frame (wake-up bytes allowed), checked; for tests and tools."""
    buffer = bytearray(raw)
    frame = scanner(bytes([0xAA] * 6))(buffer)
    if frame is None:
        raise DecodeError(f"no complete answer frame in {raw.hex(' ')}")
    return frame


# -- values ------------------------------------------------------------------------------


def bcd_digits(data: bytes, what: str) -> str:
    """The decimal digits of ``data`` (lowest byte first), most significant first."""
    text = data[::-1].hex()
    if not text.isdigit():
        raise DecodeError(f"{what}: {data.hex(' ')} is not BCD")
    return text


def decode_number(data: bytes, decimals: int, signed: bool, what: str) -> float | int:
    """A BCD number; when ``signed``, bit 7 of the most significant byte is the sign."""
    negative = False
    if signed and data and data[-1] & 0x80:
        negative, data = True, data[:-1] + bytes([data[-1] & 0x7F])
    magnitude = int(bcd_digits(data, what))
    value: float | int = magnitude / 10**decimals if decimals else magnitude
    return -value if negative else value


def encode_number(value: float, size: int, decimals: int, signed: bool) -> bytes:
    """The inverse of ``decode_number`` (for simulators and tests)."""
    magnitude = round(abs(value) * 10**decimals)
    digits = f"{magnitude:0{2 * size}d}"
    if len(digits) > 2 * size:
        raise ValueError(f"{value} does not fit {size} BCD bytes")
    data = bytes.fromhex(digits)[::-1]
    if signed and value < 0:
        data = data[:-1] + bytes([data[-1] | 0x80])
    return data


def decode_datetime(data: bytes, fields: str, what: str) -> str:
    """BCD date/time fields, most significant first in ``fields`` (``YYMMDDhhmmss``, ``YYMMDDWW``,
    ``hhmmss``, ``YYMMDDhhmm``) as ISO 8601 text; the week day (WW) is dropped."""
    digits = bcd_digits(data, what)
    parts = {fields[i:i + 2]: int(digits[i:i + 2]) for i in range(0, len(fields), 2)}
    try:
        if "YY" in parts:
            date = dt.date(2000 + parts["YY"], parts["MM"], parts["DD"])
            if "hh" not in parts:
                return date.isoformat()
            time = dt.time(parts["hh"], parts["mm"], parts.get("ss", 0))
            return dt.datetime.combine(date, time).isoformat(timespec="seconds" if "ss" in parts else "minutes")
        return dt.time(parts["hh"], parts["mm"], parts["ss"]).isoformat()
    except ValueError as exc:
        raise DecodeError(f"{what}: {digits} is not a valid date or time ({exc})") from None


def encode_clock(when: dt.datetime, fields: str = "YYMMDDhhmmss") -> bytes:
    """``when`` as BCD fields, lowest byte (seconds) first: time sync, control validity."""
    values = {"YY": when.year % 100, "MM": when.month, "DD": when.day, "WW": when.isoweekday() % 7,
              "hh": when.hour, "mm": when.minute, "ss": when.second}
    digits = "".join(f"{values[fields[i:i + 2]]:02d}" for i in range(0, len(fields), 2))
    return bytes.fromhex(digits)[::-1]
