"""SL 651-2014 frames in both encodings, the CRC, a bounded deframer and multi-packet reassembly.

Written from the standard's text (SL 651-2014 clause 6.2, frame structure: table 6.2.1 for
HEX/BCD frames, 6.2.2 for ASCII frames; 6.2.3, control characters; the CRC of 6.2.1 note:
CRC-16 with polynomial 0xA001 reflected, register 0xFFFF, high byte first on the wire),
because no package on PyPI decodes it with length/CRC checks and SYN reassembly
(docs/protocols-china.md). Pure: the listener, the driver, the simulator and the tests share it.

HEX/BCD frame (lengths in bytes)::

    7E7E | centre 1 | station 5 | password 2 | function 1 | dir+length 2 | STX/SYN 1
         | [packets 3: total (12 bits) + sequence (12 bits), SYN only] | body | end 1 | CRC 2

Downlink frames (centre to station) put the station address before the centre address.
``dir+length``: the high 4 bits are 0000 up, 1000 down; the low 12 bits count the bytes
between the start character and the end character. ASCII frames start with SOH and carry
every field as hexadecimal text (centre 2, station 10, password 4, function 2, dir+length 4,
packets 6, CRC 4 characters); their body is text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

SOH_HEX = b"\x7e\x7e"
SOH_ASCII = 0x01
STX, SYN = 0x02, 0x16
ETX, ETB, ENQ, EOT, ACK, NAK, ESC = 0x03, 0x17, 0x05, 0x04, 0x06, 0x15, 0x1B
END_CHARS = {ETX, ETB, ENQ, EOT, ACK, NAK, ESC}
MAX_BODY = 0xFFF
HEX_OVERHEAD = 17  # 7E7E + 1 + 5 + 2 + 1 + 2 + start + end + CRC 2
ASCII_OVERHEAD = 29  # SOH + 2 + 10 + 4 + 2 + 4 + start + end + CRC 4

Encoding = Literal["hex", "ascii"]


def _table() -> tuple[int, ...]:
    table = []
    for value in range(256):
        for _ in range(8):
            value = (value >> 1) ^ 0xA001 if value & 1 else value >> 1
        table.append(value)
    return tuple(table)


_TABLE = _table()


def crc16(data: bytes) -> int:
    """CRC-16, polynomial 0xA001 (reflected 0x8005), register 0xFFFF, table-driven: the
    published frames of the standard's examples carry this value high byte first."""
    reg = 0xFFFF
    table = _TABLE
    for byte in data:
        reg = (reg >> 8) ^ table[(reg ^ byte) & 0xFF]
    return reg


class FrameError(Exception):
    """A frame that cannot be accepted; ``kind`` is what the listener counts it under."""

    def __init__(self, kind: Literal["garbage", "length", "crc", "format", "overflow"], message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(slots=True)
class Frame:
    """One frame; ``station`` is 10 hex digits, ``password`` 4; ``body`` excludes packet info."""

    encoding: Encoding
    centre: int
    station: str
    password: str
    function: int
    uplink: bool
    body: bytes
    end: int = ETX
    total: int | None = None  # SYN frames: the message's packet count and this packet's number
    seq: int | None = None
    crc_ok: bool = True

    @property
    def start(self) -> int:
        return STX if self.total is None else SYN


def encode(frame: Frame, *, bad_crc: bool = False) -> bytes:
    """The frame on the wire; ``bad_crc`` (simulator fault mode) flips the CRC's low bit."""
    multi = frame.total is not None and frame.seq is not None
    if frame.encoding == "hex":
        raw_addresses = (bytes([frame.centre]) + bytes.fromhex(frame.station)) if frame.uplink else (
            bytes.fromhex(frame.station) + bytes([frame.centre]))
        info = ((frame.total or 0) << 12 | (frame.seq or 0)).to_bytes(3, "big") if multi else b""
        size = len(info) + len(frame.body)
        if size > MAX_BODY:
            raise ValueError(f"body of {size} bytes exceeds {MAX_BODY}")
        head = (SOH_HEX + raw_addresses + bytes.fromhex(frame.password) + bytes([frame.function])
                + ((0 if frame.uplink else 0x8000) | size).to_bytes(2, "big"))
        data = head + bytes([frame.start]) + info + frame.body + bytes([frame.end])
        crc = crc16(data) ^ (1 if bad_crc else 0)
        return data + crc.to_bytes(2, "big")
    centre = f"{frame.centre:02X}"
    addresses = centre + frame.station.upper() if frame.uplink else frame.station.upper() + centre
    text_info = f"{frame.total:03X}{frame.seq:03X}".encode() if multi else b""
    size = len(text_info) + len(frame.body)
    if size > MAX_BODY:
        raise ValueError(f"body of {size} characters exceeds {MAX_BODY}")
    header = f"{addresses}{frame.password.upper()}{frame.function:02X}{(0 if frame.uplink else 0x8000) | size:04X}"
    data = bytes([SOH_ASCII]) + header.encode() + bytes([frame.start]) + text_info + frame.body + bytes([frame.end])
    crc = crc16(data) ^ (1 if bad_crc else 0)
    return data + f"{crc:04X}".encode()


def _hex_text(raw: bytes) -> str:
    text = raw.decode("ascii")
    int(text, 16)  # ValueError unless hexadecimal
    return text.upper()


@dataclass(slots=True)
class Deframer:
    """Bytes in, frames (or the errors of bad ones) out, either encoding, bounded buffer.

    ``uplink`` is the direction this side receives (the centre receives uplink frames).
    Resynchronises on the next start sequence after garbage or a bad frame. ``lenient``
    accepts frames with a wrong CRC (``crc_ok=False``) for field devices known to send them.
    """

    uplink: bool = True
    lenient: bool = False
    buffer: bytearray = field(default_factory=bytearray)
    garbage: int = 0

    @property
    def pending(self) -> int:
        return len(self.buffer)

    def _next_start(self, buf: bytearray) -> int:
        hex_at = buf.find(SOH_HEX)
        ascii_at = buf.find(SOH_ASCII)
        found = [i for i in (hex_at, ascii_at) if i >= 0]
        return min(found) if found else -1

    def feed(self, data: bytes) -> list[Frame | FrameError]:
        buf = self.buffer
        buf += data
        out: list[Frame | FrameError] = []
        while buf:
            start = self._next_start(buf)
            if start != 0:
                dropped = len(buf) if start < 0 else start
                if start < 0 and buf.endswith(b"\x7e"):
                    dropped -= 1
                if dropped:
                    del buf[:dropped]
                    self.garbage += dropped
                    out.append(FrameError("garbage", f"{dropped} bytes outside any frame"))
                if start < 0:
                    break
            result = self._hex(buf) if buf[:2] == SOH_HEX else self._ascii(buf)
            if result is None:
                break
            out.append(result)
        return out

    def _skip(self, buf: bytearray, kind: Literal["length", "format"], message: str) -> FrameError:
        del buf[:1]
        return FrameError(kind, message)

    def _finish(self, buf: bytearray, total: int, crc_ok: bool, crc_text: str) -> FrameError | None:
        del buf[:total]
        if not crc_ok and not self.lenient:
            return FrameError("crc", f"CRC {crc_text} does not match")
        return None

    def _hex(self, buf: bytearray) -> Frame | FrameError | None:
        if len(buf) < 14:
            return None
        word = int.from_bytes(buf[11:13], "big")
        direction, size = word >> 12, word & 0xFFF
        if direction not in (0, 8) or (direction == 0) != self.uplink:
            return self._skip(buf, "format", f"direction nibble {direction:X} is not the expected "
                                             f"{'up (0)' if self.uplink else 'down (8)'}")
        total = HEX_OVERHEAD + size
        if len(buf) < total:
            return None
        start, end = buf[13], buf[total - 3]
        if start not in (STX, SYN) or end not in END_CHARS:
            return self._skip(buf, "length", f"no start/end character where the length {size} puts them")
        frame = bytes(buf[:total])
        crc_ok = crc16(frame[:-2]) == int.from_bytes(frame[-2:], "big")
        error = self._finish(buf, total, crc_ok, frame[-2:].hex().upper())
        if error is not None:
            return error
        if self.uplink:
            centre, station = frame[2], frame[3:8].hex().upper()
        else:
            station, centre = frame[2:7].hex().upper(), frame[7]
        content = frame[14:total - 3]
        packets: tuple[int | None, int | None] = (None, None)
        if start == SYN:
            if len(content) < 3:
                return FrameError("format", "SYN frame without its packet count and number")
            info = int.from_bytes(content[:3], "big")
            packets, content = (info >> 12, info & 0xFFF), content[3:]
        return Frame("hex", centre, station, frame[8:10].hex().upper(), frame[10], direction == 0,
                     content, end, packets[0], packets[1], crc_ok)

    def _ascii(self, buf: bytearray) -> Frame | FrameError | None:
        if len(buf) < 24:
            return None
        try:
            word = int(buf[19:23].decode("ascii"), 16)
        except (UnicodeDecodeError, ValueError):
            return self._skip(buf, "format", "ASCII frame header is not hexadecimal text")
        direction, size = word >> 12, word & 0xFFF
        if direction not in (0, 8) or (direction == 0) != self.uplink:
            return self._skip(buf, "format", f"direction nibble {direction:X} is not the expected one")
        total = ASCII_OVERHEAD + size
        if len(buf) < total:
            return None
        start, end = buf[23], buf[total - 5]
        if start not in (STX, SYN) or end not in END_CHARS:
            return self._skip(buf, "length", f"no start/end character where the length {size} puts them")
        frame = bytes(buf[:total])
        try:
            crc_ok = crc16(frame[:-4]) == int(frame[-4:].decode("ascii"), 16)
        except (UnicodeDecodeError, ValueError):
            crc_ok = False
        error = self._finish(buf, total, crc_ok, frame[-4:].decode("ascii", "replace"))
        if error is not None:
            return error
        try:
            if self.uplink:
                centre, station = int(frame[1:3], 16), _hex_text(frame[3:13])
            else:
                station, centre = _hex_text(frame[1:11]), int(frame[11:13], 16)
            password, function = _hex_text(frame[13:17]), int(frame[17:19], 16)
            content = frame[24:total - 5]
            packets: tuple[int | None, int | None] = (None, None)
            if start == SYN:
                packets, content = (int(content[:3], 16), int(content[3:6], 16)), content[6:]
        except (UnicodeDecodeError, ValueError):
            return FrameError("format", "ASCII frame fields are not hexadecimal text")
        return Frame("ascii", centre, station, password, function, direction == 0, content, end,
                     packets[0], packets[1], crc_ok)


@dataclass(slots=True)
class Reassembler:
    """Joins the packets of a multi-packet (SYN) message (6.2.3, M3): packets may arrive in
    any order and twice; the message is complete when every number 1..total has arrived.
    At most ``max_bytes`` are held per message; an over-long message is dropped."""

    max_bytes: int = 256 * 1024
    parts: dict[tuple[str, int, int], dict[int, bytes]] = field(default_factory=dict)

    def add(self, frame: Frame) -> Frame | FrameError | None:
        if frame.total is None or frame.seq is None:
            return frame
        if not 1 <= frame.seq <= frame.total:
            return FrameError("format", f"packet {frame.seq} of {frame.total}")
        key = (frame.station, frame.function, frame.total)
        parts = self.parts.setdefault(key, {})
        parts[frame.seq] = frame.body
        if sum(map(len, parts.values())) > self.max_bytes:
            del self.parts[key]
            return FrameError("overflow", f"multi-packet message exceeds {self.max_bytes} bytes")
        if len(parts) < frame.total:
            return None
        del self.parts[key]
        body = b"".join(parts[i] for i in range(1, frame.total + 1))
        return Frame(frame.encoding, frame.centre, frame.station, frame.password, frame.function,
                     frame.uplink, body, frame.end, None, None, frame.crc_ok)

    def missing(self, frame: Frame) -> list[int]:
        if frame.total is None:
            return []
        parts = self.parts.get((frame.station, frame.function, frame.total), {})
        return [i for i in range(1, frame.total + 1) if i not in parts]
