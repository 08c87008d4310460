"""CJ/T 188-2018 frames and the meter data answer, without I/O.

A frame on the wire::

    FE…FE  68  T  A0…A6  C  L  DI0 DI1 SER  DATA  CS  16

``T`` is the meter type (10H cold water … 20H heat, 30H gas), the address 14 BCD digits
lowest byte first, ``C`` the control code (D7 answer, D6 exception, D5..D0 function), ``L``
counts DI, SER and data; CS is the sum modulo 256 from 68H to the last data byte. Data has no
offset (unlike DL/T 645). The 2018 edition sends the DI lowest byte first (901FH as 1F 90);
many meters built to the 2004 edition send it as printed (90 1F): ``di_order`` chooses.

Numbers are BCD, lowest byte first; quantities carry a unit code, converted here to one
unit per quantity (m³, m³/h, kWh, kW) so a property keeps its unit whatever the meter sends.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from citytwin.drivers.errors import DecodeError

START, END, WAKE = 0x68, 0x16, 0xFE
READ_DATA, WRITE_DATA = 0x01, 0x04
ANSWER, EXCEPTION = 0x80, 0x40
DI_READ, DI_VALVE = 0x901F, 0xA017
VALVE_OPEN, VALVE_CLOSE = 0x55, 0x99

DiOrder = Literal["little", "big"]

METER_TYPES: dict[str, int] = {
    "cold_water": 0x10, "hot_water": 0x11, "drinking_water": 0x12, "reclaimed_water": 0x13,
    "heat": 0x20, "cooling": 0x21, "heat_and_cooling": 0x22, "gas": 0x30,
}


def family(meter_type: int) -> Literal["water", "heat", "gas", "other"]:
    """The layout of the meter data answer follows the type's range (10H..19H water, …)."""
    if 0x10 <= meter_type <= 0x19:
        return "water"
    if 0x20 <= meter_type <= 0x29:
        return "heat"
    if 0x30 <= meter_type <= 0x39:
        return "gas"
    return "other"


# unit code -> (quantity, factor to the quantity's unit)
UNITS: dict[int, tuple[str, float]] = {
    0x01: ("energy", 1 / 3.6e6), 0x02: ("energy", 1e-3), 0x05: ("energy", 1.0),
    0x08: ("energy", 1e3), 0x0A: ("energy", 1e5), 0x0B: ("energy", 1 / 3600),
    0x0E: ("energy", 1 / 3.6), 0x11: ("energy", 1e3 / 3.6), 0x13: ("energy", 1e5 / 3.6),
    0x14: ("power", 1e-3), 0x17: ("power", 1.0), 0x1A: ("power", 1e3),
    0x29: ("volume", 1e-3), 0x2C: ("volume", 1.0),
    0x32: ("flow", 1e-3), 0x35: ("flow", 1.0),
}
CANONICAL_UNIT = {"energy": "kWh", "power": "kW", "volume": "m³", "flow": "m³/h"}

VALVE_STATES = {0b00: "open", 0b01: "closed", 0b11: "abnormal", 0b10: "abnormal"}


@dataclass(frozen=True, slots=True)
class Frame:
    meter_type: int
    address: bytes  # as on the wire, lowest byte first
    control: int
    di: int
    ser: int
    data: bytes  # after DI and SER

    @property
    def is_exception(self) -> bool:
        return bool(self.control & EXCEPTION)

    @property
    def function(self) -> int:
        return self.control & 0x3F


def parse_address(text: str) -> bytes:
    """14 digits as printed on the meter to wire order; AA bytes are wildcards."""
    if len(text) != 14 or not all(c in "0123456789Aa" for c in text):
        raise ValueError("a CJ/T 188 address is 14 BCD digits (AA for a wildcard byte)")
    return bytes.fromhex(text)[::-1]


def encode_frame(
    meter_type: int, address: bytes, control: int, di: int, ser: int, data: bytes = b"",
    di_order: DiOrder = "little", wake_up: int = 4,
) -> bytes:
    payload = di.to_bytes(2, di_order) + bytes([ser & 0xFF]) + data
    body = bytes([START, meter_type, *address, control, len(payload), *payload])
    return bytes([WAKE] * wake_up) + body + bytes([sum(body) & 0xFF, END])


def _matches(got: bytes, wanted: bytes) -> bool:
    return all(w == 0xAA or g == w for g, w in zip(got, wanted, strict=True))


def scanner(meter_type: int, wanted: bytes, di_order: DiOrder = "little") -> Callable[[bytearray], Frame | None]:
    """A ``Line.receive`` scan for the answer of meter ``wanted`` (see ``dlt645.codec.scanner``).

    An answer's type must be in the asked type's range (a 10H water meter may answer as 11H)."""

    def scan(buffer: bytearray) -> Frame | None:
        while True:
            start = buffer.find(START)
            if start < 0:
                buffer.clear()
                return None
            del buffer[:start]
            if len(buffer) >= 2 and family(buffer[1]) != family(meter_type):
                del buffer[:1]  # no meter of this kind: a 68H inside noise
                continue
            if len(buffer) < 11:
                return None
            size = 13 + buffer[10]
            if len(buffer) < size:
                return None
            raw = bytes(buffer[:size])
            checksum = sum(raw[:-2]) & 0xFF
            if raw[-1] != END or raw[10] < 3:
                del buffer[:1]  # not a frame's head: a 68H inside noise
                continue
            del buffer[:size]
            if raw[-2] != checksum:
                raise DecodeError(
                    f"checksum 0x{raw[-2]:02X} in the answer, 0x{checksum:02X} computed: {raw.hex(' ')}"
                )
            kind, address, control = raw[1], raw[2:9], raw[9]
            if not control & ANSWER or not _matches(address, wanted) or family(kind) != family(meter_type):
                continue  # our own request echoed, or another meter's late answer
            return Frame(kind, address, control, int.from_bytes(raw[11:13], di_order), raw[13], raw[14:-2])

    return scan


def decode_frame(raw: bytes, di_order: DiOrder = "little") -> Frame:
    """One whole answer frame (wake-up bytes allowed), checked; for tests and tools."""
    buffer = bytearray(raw.lstrip(bytes([WAKE])))
    if len(buffer) < 2:
        raise DecodeError("no frame")
    frame = scanner(buffer[1], bytes([0xAA] * 7), di_order)(buffer)
    if frame is None:
        raise DecodeError(f"no complete answer frame in {raw.hex(' ')}")
    return frame


# -- the meter data answer (DI 901FH) ----------------------------------------------------


def bcd(data: bytes, decimals: int, what: str) -> float:
    text = data[::-1].hex()
    if not text.isdigit():
        raise DecodeError(f"{what}: {data.hex(' ')} is not BCD")
    return int(text) / 10.0**decimals


def quantity(data: bytes, decimals: int, expect: str, what: str) -> float:
    """A BCD value followed by its unit code, in the canonical unit of ``expect``."""
    unit = data[-1]
    kind, factor = UNITS.get(unit, ("unknown", 0.0))
    if kind != expect:
        raise DecodeError(f"{what}: unit code 0x{unit:02X} is not a {expect} unit")
    return float(round(bcd(data[:-1], decimals, what) * factor, 9))


def clock(data: bytes) -> str:
    """ss mm hh DD MM YY YY (lowest first) as ISO 8601."""
    text = data[::-1].hex()
    try:
        return dt.datetime(int(text[:4]), int(text[4:6]), int(text[6:8]),
                           int(text[8:10]), int(text[10:12]), int(text[12:14])).isoformat()
    except ValueError:
        raise DecodeError(f"real time {data.hex(' ')} is not a valid date and time") from None


# field -> (offset, length, decoder) in the answer's data (after DI and SER)
FieldDecoder = Callable[[bytes, str], object]
_WATER: dict[str, tuple[int, int, FieldDecoder]] = {
    "accumulated_flow": (0, 5, lambda d, w: quantity(d, 2, "volume", w)),
    "settlement_flow": (5, 5, lambda d, w: quantity(d, 2, "volume", w)),
    "clock": (10, 7, lambda d, w: clock(d)),
    "status": (17, 2, lambda d, w: int.from_bytes(d, "little")),
}
_HEAT: dict[str, tuple[int, int, FieldDecoder]] = {
    "settlement_heat": (0, 5, lambda d, w: quantity(d, 2, "energy", w)),
    "heat": (5, 5, lambda d, w: quantity(d, 2, "energy", w)),
    "heat_power": (10, 5, lambda d, w: quantity(d, 2, "power", w)),
    "flow_rate": (15, 5, lambda d, w: quantity(d, 4, "flow", w)),
    "accumulated_flow": (20, 5, lambda d, w: quantity(d, 2, "volume", w)),
    "supply_temperature": (25, 3, lambda d, w: bcd(d, 2, w)),
    "return_temperature": (28, 3, lambda d, w: bcd(d, 2, w)),
    "working_hours": (31, 3, lambda d, w: int(bcd(d, 0, w))),
    "clock": (34, 7, lambda d, w: clock(d)),
    "status": (41, 2, lambda d, w: int.from_bytes(d, "little")),
}
STATUS_FIELDS = ("valve_open", "valve_state", "battery_low")
LAYOUTS = {"water": _WATER, "gas": _WATER, "heat": _HEAT}
NUMERIC_FIELDS = frozenset(
    name for layout in LAYOUTS.values() for name in layout if name not in ("clock", "status")
)


def fields_of(meter_type: int) -> tuple[str, ...]:
    layout = LAYOUTS.get(family(meter_type), {})
    return (*layout, *STATUS_FIELDS)


def answer_size(meter_type: int) -> int:
    layout = LAYOUTS[family(meter_type)]
    return max(offset + length for offset, length, _ in layout.values())


def valve_state(status: int) -> str:
    return VALVE_STATES[status & 0b11]


def decode_field(meter_type: int, name: str, data: bytes) -> object:
    """One field of the meter data answer. The status bits (ST0: D0-D1 valve, D2 battery)
    are fields of their own; an abnormal valve has no open/closed value (DecodeError)."""
    layout = LAYOUTS[family(meter_type)]
    offset, length, decoder = layout["status" if name in STATUS_FIELDS else name]
    if len(data) < answer_size(meter_type):
        raise DecodeError(f"{len(data)} data bytes in the meter data answer, {answer_size(meter_type)} expected")
    value = decoder(data[offset:offset + length], name)
    if name == "valve_state":
        return valve_state(int(value))  # type: ignore[call-overload]
    if name == "valve_open":
        state = valve_state(int(value))  # type: ignore[call-overload]
        if state == "abnormal":
            raise DecodeError("the meter reports its valve abnormal (status bits D1 D0 = 11)")
        return state == "open"
    if name == "battery_low":
        return bool(int(value) & 0b100)  # type: ignore[call-overload]
    return value


def status_reason(status: bytes) -> str:
    word = int.from_bytes(status[-2:], "little") if len(status) >= 2 else 0
    return f"the meter answered with an exception (status 0x{word:04X}, valve {valve_state(word)})"
