"""HJ 212-2017 packets: framing, the standard's CRC-16, the data segment and its CP field.

Written from the standard's text (HJ 212-2017 clause 6.3, communication packet; 6.3.2,
data segment; 6.3.3, command parameter CP; annex A, the CRC algorithm) because no package
on PyPI implements it with length and CRC checks, split packets and a bounded deframer
(docs/protocols-china.md says why and which examples the tests use). Pure: no I/O, so the
listener, the driver, the simulator and the tests share one reading of the standard.

A packet on the wire: ``##`` + 4 decimal digits (length of the data segment) + data
segment + 4 hexadecimal digits (CRC-16 of the data segment) + CR LF. The data segment:
``QN=…;ST=…;CN=…;PW=…;MN=…;Flag=…;[PNUM=…;PNO=…;]CP=&&…&&``.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass, field
from typing import Literal

HEADER = b"##"
TRAILER = b"\r\n"
MAX_DATA = 9999  # what 4 decimal digits can say; the standard's own limit is 1024 (6.3.1)
FLAG_A = 0x01  # the receiver must answer (6.3.2, table 4, bit A)
FLAG_D = 0x02  # split packet: PNUM and PNO follow (bit D)
VERSION_2017 = 0x04  # version bits V5..V0 = 000001 for HJ 212-2017

# return codes (6.6.3, tables 9 and 10)
QN_READY = 1
QN_REFUSED = 2
QN_BAD_PASSWORD = 3
QN_BAD_MN = 4
QN_BAD_CRC = 9
EXE_SUCCESS = 1
EXE_NO_DATA = 100
EXE_RESULTS = {
    1: "succeeded", 2: "failed, reason unknown", 3: "command condition error", 4: "communication timeout",
    5: "system busy", 6: "system fault", 100: "no data",
}
QN_RESULTS = {
    1: "ready to execute", 2: "refused", 3: "wrong password", 4: "MN error", 5: "ST error", 6: "Flag error",
    7: "QN error", 8: "CN error", 9: "CRC error", 100: "unknown error",
}
DATA_FLAGS = {  # 6.6.4 table 11 (data flags)
    "N": "normal", "F": "station stopped", "M": "maintenance", "S": "manual input", "D": "instrument fault",
    "C": "calibration", "T": "over the measuring range", "B": "communication fault",
}


def _table() -> tuple[int, ...]:
    table = []
    for value in range(256):
        for _ in range(8):
            value = (value >> 1) ^ 0xA001 if value & 1 else value >> 1
        table.append(value)
    return tuple(table)


_TABLE = _table()
_HIGH = bytes(v >> 8 for v in _TABLE)


def _powers() -> tuple[bytes, ...]:
    powers = [bytes(range(256))]
    for _ in range(7):
        powers.append(bytes(_HIGH[x] for x in powers[-1]))
    if bytes(_HIGH[x] for x in powers[-1]) != powers[0]:
        raise AssertionError("the CRC's byte map should have order 8")
    return tuple(powers)


_POWERS = _powers()  # the byte map A of one step and A^2 .. A^7 (A^8 is the identity)


def crc16(data: bytes) -> int:
    """Annex A's CRC: register 0xFFFF; per byte, shift the register right 8 and xor the byte in,
    then 8 rounds of shift right with 0xA001 xored on a carried-out 1. Not CRC-16/MODBUS.

    Computed without a Python loop over the bytes: after the first step the register fits in
    8 bits, so each byte's 8 rounds are one table lookup and only the high byte ``h`` carries:
    ``h' = A(h ^ byte)`` with ``A`` linear over GF(2) and ``A^8`` the identity. So the state
    before the last byte is ``A^n(0xFF)`` xor, for each residue c mod 8, ``A^((n - c) mod 8)``
    of the xor of the bytes at positions c, c+8, … — eight xor-sums that big-integer folding
    computes at C speed. The tests check this against the bitwise form as the standard writes it.
    """
    if not data:
        return 0xFFFF
    n = len(data) - 1
    high = _POWERS[n % 8][0xFF]
    if n:
        pad = -n % 8
        folded = int.from_bytes(bytes(data[:n]) + bytes(pad), "little")
        words = (n + pad) // 8
        while words > 1:  # fold 64-bit words onto each other: byte positions keep their residue
            half = words // 2
            folded = (folded & ((1 << (64 * half)) - 1)) ^ (folded >> (64 * half))
            words -= half
        for c in range(8):
            high ^= _POWERS[(n - c) % 8][(folded >> (8 * c)) & 0xFF]
    return _TABLE[high ^ data[n]]


class FrameError(Exception):
    """A packet that cannot be accepted; ``kind`` is what the listener counts it under."""

    def __init__(self, kind: Literal["garbage", "length", "crc", "format", "overflow"], message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(slots=True)
class Packet:
    """One data segment, its fields as text (the standard's fields are all character strings)."""

    qn: str | None
    st: str
    cn: str
    pw: str
    mn: str
    flag: int
    cp: str = ""
    pnum: int | None = None
    pno: int | None = None
    crc_ok: bool = True

    @property
    def wants_answer(self) -> bool:
        return bool(self.flag & FLAG_A)

    @property
    def split(self) -> bool:
        return bool(self.flag & FLAG_D)

    def segment(self) -> str:
        parts = [] if self.qn is None else [f"QN={self.qn}"]
        parts += [f"ST={self.st}", f"CN={self.cn}", f"PW={self.pw}", f"MN={self.mn}", f"Flag={self.flag}"]
        if self.pnum is not None and self.pno is not None:
            parts += [f"PNUM={self.pnum}", f"PNO={self.pno}"]
        parts.append(f"CP=&&{self.cp}&&")
        return ";".join(parts)


def encode(packet: Packet, *, bad_crc: bool = False) -> bytes:
    """The packet on the wire; ``bad_crc`` (simulator fault mode) flips the CRC's low bit."""
    data = packet.segment().encode()
    if len(data) > MAX_DATA:
        raise ValueError(f"data segment of {len(data)} characters exceeds {MAX_DATA}")
    crc = crc16(data) ^ (1 if bad_crc else 0)
    return b"%s%04d%s%04X%s" % (HEADER, len(data), data, crc, TRAILER)


def parse_segment(data: bytes, crc_ok: bool = True) -> Packet:
    """The fields of one data segment; ``FrameError('format')`` if it is not one."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise FrameError("format", "data segment is not ASCII") from None
    head, sep, rest = text.partition("CP=&&")
    if not sep or not rest.endswith("&&"):
        raise FrameError("format", "no CP=&&…&& field")
    fields: dict[str, str] = {}
    for item in head.split(";"):
        if not item:
            continue
        key, eq, value = item.partition("=")
        if not eq:
            raise FrameError("format", f"field {item[:20]!r} has no '='")
        fields[key] = value
    missing = [k for k in ("ST", "CN", "PW", "MN", "Flag") if k not in fields]
    if missing:
        raise FrameError("format", f"missing {', '.join(missing)}")
    try:
        flag = int(fields["Flag"])
        pnum = int(fields["PNUM"]) if "PNUM" in fields else None
        pno = int(fields["PNO"]) if "PNO" in fields else None
    except ValueError:
        raise FrameError("format", "Flag, PNUM and PNO must be integers") from None
    if not fields["CN"].isdigit():
        raise FrameError("format", f"CN {fields['CN'][:10]!r} is not a number")
    return Packet(fields.get("QN"), fields["ST"], fields["CN"], fields["PW"], fields["MN"], flag,
                  rest[:-2], pnum, pno, crc_ok)


@dataclass(slots=True)
class Deframer:
    """Bytes in, packets (or the errors of bad ones) out, with a bounded buffer.

    Resynchronises on the next ``##`` after garbage or a bad packet, so one broken packet
    costs only itself. ``lenient`` accepts packets whose CRC is wrong (marked ``crc_ok=False``)
    because field devices with non-conforming CRCs exist; strict is the default.
    """

    max_data: int = MAX_DATA
    lenient: bool = False
    buffer: bytearray = field(default_factory=bytearray)
    garbage: int = 0

    @property
    def pending(self) -> int:
        return len(self.buffer)

    def feed(self, data: bytes) -> list[Packet | FrameError]:
        buf = self.buffer
        buf += data
        out: list[Packet | FrameError] = []
        while buf:
            start = buf.find(HEADER)
            while 0 <= start and start + 2 < len(buf) and buf[start + 2] == 0x23:
                start += 1  # "###0101": the header is the last two of a run of '#'
            if start != 0:
                dropped = len(buf) if start < 0 else start
                if start < 0 and buf.endswith(b"#"):
                    dropped -= 1  # may be the first half of the next header
                if dropped:
                    del buf[:dropped]
                    self.garbage += dropped
                    out.append(FrameError("garbage", f"{dropped} bytes outside any packet"))
                if start < 0:
                    break
            if len(buf) < 6:
                break
            digits = bytes(buf[2:6])
            if not digits.isdigit():
                del buf[:1]
                out.append(FrameError("length", f"length field {digits!r} is not 4 decimal digits"))
                continue
            size = int(digits)
            if size > self.max_data:
                del buf[:1]
                out.append(FrameError("length", f"data segment of {size} characters exceeds {self.max_data}"))
                continue
            total = 6 + size + 6
            if len(buf) < total:
                break
            frame = bytes(buf[:total])
            if frame[-2:] != TRAILER:
                del buf[:1]  # the length is wrong: resynchronise on the next header
                out.append(FrameError("length", f"no CR LF after the {size} characters the length announces"))
                continue
            del buf[:total]
            data, crc_text = frame[6:6 + size], frame[6 + size:6 + size + 4]
            try:
                crc = int(crc_text, 16)
            except ValueError:
                out.append(FrameError("crc", f"CRC field {crc_text!r} is not hexadecimal"))
                continue
            crc_ok = crc == crc16(data)
            if not crc_ok and not self.lenient:
                out.append(FrameError("crc", f"CRC {crc_text.decode(errors='replace')} does not match "
                                             f"{crc16(data):04X}"))
                continue
            try:
                out.append(parse_segment(data, crc_ok))
            except FrameError as exc:
                out.append(exc)
        return out


# -- the CP field -------------------------------------------------------------------------


@dataclass(slots=True)
class CpData:
    """A parsed CP: its top-level keys (``DataTime``, ``QnRtn``, …) and per-item values
    under ``code-field`` keys (``a34004-Rtd``, ``a34004-Flag``), all as text."""

    values: dict[str, str] = field(default_factory=dict)

    @property
    def data_time(self) -> str | None:
        return self.values.get("DataTime")


def parse_cp(cp: str) -> CpData:
    """``DataTime=…;a34004-Rtd=31.2,a34004-Flag=N;…``: groups by ``;``, items by ``,`` (6.3.3)."""
    values: dict[str, str] = {}
    for group in cp.split(";"):
        for item in group.split(","):
            if not item:
                continue
            key, eq, value = item.partition("=")
            if not eq:
                raise FrameError("format", f"CP item {item[:20]!r} has no '='")
            values[key] = value
    return CpData(values)


def format_cp(data_time: str | None, groups: list[dict[str, str]]) -> str:
    parts = [] if data_time is None else [f"DataTime={data_time}"]
    parts += [",".join(f"{k}={v}" for k, v in group.items()) for group in groups]
    return ";".join(parts)


@functools.lru_cache(maxsize=4096)
def parse_time(text: str, utc_offset_hours: float) -> int:
    """``YYYYMMDDhhmmss[zzz]`` in the station's local time to epoch milliseconds (cached: the
    stations on a listener report the same few DataTimes each second)."""
    if not text.isdigit() or len(text) not in (14, 17):
        raise ValueError(f"time {text!r} is not YYYYMMDDhhmmss")
    tz = dt.timezone(dt.timedelta(hours=utc_offset_hours))
    stamp = dt.datetime(int(text[:4]), int(text[4:6]), int(text[6:8]), int(text[8:10]), int(text[10:12]),
                        int(text[12:14]), tzinfo=tz)
    return int(stamp.timestamp() * 1000) + (int(text[14:]) if len(text) == 17 else 0)


def format_time(epoch_ms: int, utc_offset_hours: float, millis: bool = False) -> str:
    tz = dt.timezone(dt.timedelta(hours=utc_offset_hours))
    stamp = dt.datetime.fromtimestamp(epoch_ms / 1000, tz)
    text = stamp.strftime("%Y%m%d%H%M%S")
    return text + f"{epoch_ms % 1000:03d}" if millis else text


def answer(request: Packet, cn: str, cp: str = "") -> Packet:
    """A system-interaction answer (ST 91, Flag 4: no answer wanted) echoing the request's QN."""
    return Packet(request.qn, "91", cn, request.pw, request.mn, VERSION_2017, cp)
