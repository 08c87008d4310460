"""SL 651-2014 message bodies: element identifiers, data definitions, reports and queries.

A HEX body (clause 7, 8 and annex C): serial number (2 bytes) + send time (6 BCD bytes,
YYMMDDhhmmss), then for reports the station address identifier ``F1F1`` + address (5) +
station category (1), the observation time identifier ``F0F0`` + time (5 BCD, YYMMDDhhmm),
then elements: identifier (1) + data definition (1: high 5 bits the value's byte count,
low 3 bits its decimal places) + the value in BCD (a first byte ``FF`` marks a negative
value, all ``FF`` no value). ASCII bodies carry the same fields as space-separated text,
elements under their ASCII identifiers (``PJ 0.5 Z 12.345``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from citytwin.drivers.sl651.frames import FrameError


@dataclass(frozen=True, slots=True)
class Element:
    code: int
    name: str  # the ASCII identifier
    definition: int  # the data definition we send (N(digits, decimals) as byte count << 3 | decimals)
    unit: str
    label: str


# annex C, table C.1 (the subset a rain gauge and a water-level station report); the ones
# marked * are checked against the published example frames in the tests
ELEMENTS = {e.code: e for e in (
    Element(0x1A, "P1", 0x19, "mm", "1 h period rainfall"),
    Element(0x1F, "PD", 0x19, "mm", "daily rainfall"),
    Element(0x20, "PJ", 0x19, "mm", "current rainfall *"),
    Element(0x22, "PN05", 0x19, "mm", "5 min period rainfall"),
    Element(0x23, "PN10", 0x19, "mm", "10 min period rainfall"),
    Element(0x24, "PN30", 0x19, "mm", "30 min period rainfall"),
    Element(0x26, "PT", 0x19, "mm", "accumulated rainfall *"),
    Element(0x27, "Q", 0x2B, "m3/s", "instantaneous flow"),
    Element(0x38, "VT", 0x12, "V", "supply voltage *"),
    Element(0x39, "Z", 0x23, "m", "instantaneous river water level *"),
    Element(0x45, "ZT", 0x20, "", "station status and alarm bits (HEX, not BCD)"),
)}
BY_NAME = {e.name: e for e in ELEMENTS.values()}
STEP_CODE = 0x04  # DRxnn, time step code, data definition 0x18 (3 BCD bytes: days, hours, minutes)
CATEGORIES = {"P": "rainfall", "H": "river", "K": "reservoir", "Z": "sluice", "D": "pumping station",
              "T": "tide", "M": "soil moisture", "G": "groundwater", "Q": "water quality",
              "I": "water intake", "O": "drainage outlet"}

# function codes (clause 6.6, table 6.6): what our listener answers and what the driver sends
KEEPALIVE, TEST, EVEN, TIMED, ADDED, HOURLY = 0x2F, 0x30, 0x31, 0x32, 0x33, 0x34
QUERY_REALTIME, QUERY_PERIOD, SET_CLOCK, QUERY_CLOCK = 0x37, 0x38, 0x4A, 0x51
REPORTS = {TEST, EVEN, TIMED, ADDED, HOURLY}


@dataclass(slots=True)
class Report:
    """A decoded body: header fields, then element values (a list for a period's series)."""

    serial: int
    sent: str  # YYMMDDhhmmss
    station: str | None = None
    category: str | None = None
    observed: str | None = None  # YYMMDDhhmm
    step: str | None = None  # DDhhmm
    values: dict[str, Any] = field(default_factory=dict)


def bcd_value(raw: bytes, decimals: int) -> float | None:
    if all(b == 0xFF for b in raw):
        return None
    negative = raw[0] == 0xFF
    digits = raw[1:].hex() if negative else raw.hex()
    if not digits.isdigit():
        raise FrameError("format", f"value {raw.hex().upper()} is not BCD")
    value: float = int(digits) / 10**decimals
    return -value if negative else value


def bcd_bytes(value: float, definition: int) -> bytes:
    size, decimals = definition >> 3, definition & 7
    scaled = round(abs(value) * 10**decimals)
    if value < 0:
        return b"\xff" + bytes.fromhex(f"{scaled:0{2 * size - 2}d}")
    return bytes.fromhex(f"{scaled:0{2 * size}d}")


def _element_value(element: Element | None, code: int, raw: bytes, decimals: int) -> Any:
    if code == 0x45:
        return int.from_bytes(raw, "big")
    return bcd_value(raw, decimals)


def parse_hex(body: bytes, series: bool = False) -> Report:
    """A HEX body; ``series`` (answers to 38) reads every value after the element as its series."""
    if len(body) < 8:
        raise FrameError("format", "body shorter than serial number and send time")
    report = Report(int.from_bytes(body[:2], "big"), body[2:8].hex())
    i = 8
    while i < len(body):
        if i + 2 > len(body):
            raise FrameError("format", f"truncated element at byte {i}")
        code, definition = body[i], body[i + 1]
        if code == 0xF1 and definition == 0xF1:
            if i + 8 > len(body):
                raise FrameError("format", "truncated station address")
            report.station, report.category = body[i + 2:i + 7].hex().upper(), chr(body[i + 7])
            i += 8
            continue
        if code == 0xF0 and definition == 0xF0:
            report.observed = body[i + 2:i + 7].hex()
            i += 7
            continue
        if code == STEP_CODE and definition == 0x18:
            report.step = body[i + 2:i + 5].hex()
            i += 5
            continue
        size, decimals = definition >> 3, definition & 7
        element = ELEMENTS.get(code)
        name = element.name if element else f"0x{code:02X}"
        if size == 0:
            raise FrameError("format", f"element {name} has a zero-length data definition")
        if series:
            rest = body[i + 2:]
            report.values[name] = [_element_value(element, code, rest[j:j + size], decimals)
                                   for j in range(0, len(rest) - size + 1, size)]
            break
        raw = body[i + 2:i + 2 + size]
        if len(raw) < size:
            raise FrameError("format", f"element {name} truncated: {len(raw)} of {size} bytes")
        report.values[name] = _element_value(element, code, raw, decimals)
        i += 2 + size
    return report


def parse_ascii(body: bytes, series: bool = False) -> Report:
    try:
        tokens = body.decode("ascii").split()
    except UnicodeDecodeError:
        raise FrameError("format", "ASCII body is not ASCII") from None
    if len(tokens) < 2:
        raise FrameError("format", "body shorter than serial number and send time")
    try:
        report = Report(int(tokens[0], 16), tokens[1])
    except ValueError:
        raise FrameError("format", f"serial number {tokens[0]!r} is not hexadecimal") from None
    i = 2
    while i < len(tokens):
        token = tokens[i]
        if token == "ST" and i + 2 < len(tokens):
            report.station, report.category = tokens[i + 1].upper(), tokens[i + 2]
            i += 3
        elif token == "TT" and i + 1 < len(tokens):
            report.observed = tokens[i + 1]
            i += 2
        elif token.startswith("DR") and len(token) in (5, 8):  # DRxnn, or DR + DDhhmm
            report.step = token[2:]
            i += 1
        else:
            values: list[Any] = []
            i += 1
            while i < len(tokens) and _numeric(tokens[i]):
                values.append(float(tokens[i]))
                i += 1
            if not values:
                raise FrameError("format", f"element {token!r} has no value")
            report.values[token] = values if series else values[0]
    return report


def _numeric(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def parse(body: bytes, encoding: str, series: bool = False) -> Report:
    return parse_hex(body, series) if encoding == "hex" else parse_ascii(body, series)


def header(serial: int, sent: str, encoding: str) -> bytes:
    """Serial number and send time: the whole body of acknowledgements and simple queries."""
    if encoding == "hex":
        return serial.to_bytes(2, "big") + bytes.fromhex(sent)
    return f"{serial:04X} {sent}".encode()


def build(report: Report, encoding: str) -> bytes:
    """A report body (simulators, tests): header, station, observation time, elements."""
    if encoding == "hex":
        out = bytearray(header(report.serial, report.sent, "hex"))
        if report.station is not None:
            out += b"\xf1\xf1" + bytes.fromhex(report.station) + (report.category or "H").encode()
        if report.observed is not None:
            out += b"\xf0\xf0" + bytes.fromhex(report.observed)
        if report.step is not None:
            out += bytes([STEP_CODE, 0x18]) + bytes.fromhex(report.step)
        for name, value in report.values.items():
            element = BY_NAME[name]
            out += bytes([element.code, element.definition])
            for item in value if isinstance(value, list) else [value]:
                out += (int(item).to_bytes(element.definition >> 3, "big") if element.code == 0x45
                        else bcd_bytes(item, element.definition))
        return bytes(out)
    parts = [header(report.serial, report.sent, "ascii").decode()]
    if report.station is not None:
        parts.append(f"ST {report.station} {report.category or 'H'}")
    if report.observed is not None:
        parts.append(f"TT {report.observed}")
    if report.step is not None:
        parts.append(f"DR{report.step}")
    for name, value in report.values.items():
        decimals = BY_NAME[name].definition & 7
        items = value if isinstance(value, list) else [value]
        parts.append(" ".join([name, *(f"{float(v):.{decimals}f}" for v in items)]))
    return " ".join(parts).encode()


def period_query(serial: int, sent: str, begin: str, end: str, step: str, element: str, encoding: str) -> bytes:
    """Body of a 38 query: begin and end hours (YYMMDDhh), the step (DDhhmm) and one element."""
    known = BY_NAME.get(element)
    if known is None:
        raise ValueError(f"unknown element {element!r}")
    if encoding == "hex":
        return (header(serial, sent, "hex") + bytes.fromhex(begin) + bytes.fromhex(end)
                + bytes([STEP_CODE, 0x18]) + bytes.fromhex(step) + bytes([known.code, known.definition]))
    return f"{serial:04X} {sent} {begin} {end} DR{step} {element}".encode()


def parse_period_query(body: bytes, encoding: str) -> tuple[int, str, str, str, str, str]:
    """The simulator's side of a 38 query: serial, sent, begin, end, step, element."""
    if encoding == "hex":
        if len(body) < 23:
            raise FrameError("format", "38 query too short")
        code = body[21]
        element = ELEMENTS[code].name if code in ELEMENTS else f"0x{code:02X}"
        return (int.from_bytes(body[:2], "big"), body[2:8].hex(), body[8:12].hex(), body[12:16].hex(),
                body[18:21].hex(), element)
    tokens = body.decode("ascii").split()
    return int(tokens[0], 16), tokens[1], tokens[2], tokens[3], tokens[4][2:], tokens[5]


def to_epoch_ms(text: str, utc_offset_hours: float) -> int:
    """``YYMMDDhhmm[ss]`` in the station's local time to epoch milliseconds."""
    fmt = "%y%m%d%H%M%S" if len(text) == 12 else "%y%m%d%H%M" if len(text) == 10 else "%y%m%d%H"
    tz = dt.timezone(dt.timedelta(hours=utc_offset_hours))
    return int(dt.datetime.strptime(text, fmt).replace(tzinfo=tz).timestamp() * 1000)


def from_epoch_ms(epoch_ms: int, utc_offset_hours: float, fmt: str = "%y%m%d%H%M%S") -> str:
    tz = dt.timezone(dt.timedelta(hours=utc_offset_hours))
    return dt.datetime.fromtimestamp(epoch_ms / 1000, tz).strftime(fmt)
