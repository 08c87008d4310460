"""The simulator's own HJ 212-2017 packet writer and reader.

Simulators import nothing from ``drivers`` (one-way imports), so this is a second, small
reading of the standard (6.3 packet, annex A CRC) written apart from the driver's codec:
tests that pass between the two are two readings of the standard that agree.
"""

from __future__ import annotations


def crc(data: bytes) -> int:
    value = 0xFFFF
    for byte in data:
        value = (value >> 8) ^ byte
        for _ in range(8):
            value = (value >> 1) ^ 0xA001 if value & 1 else value >> 1
    return value


def packet(segment: str, bad_crc: bool = False) -> bytes:
    data = segment.encode()
    check = crc(data) ^ (0x5A5A if bad_crc else 0)
    return b"##" + f"{len(data):04d}".encode() + data + f"{check:04X}".encode() + b"\r\n"


def segment(qn: str, st: str, cn: str, pw: str, mn: str, flag: int, cp: str,
            pnum: int | None = None, pno: int | None = None) -> str:
    split = f"PNUM={pnum};PNO={pno};" if pnum is not None else ""
    return f"QN={qn};ST={st};CN={cn};PW={pw};MN={mn};Flag={flag};{split}CP=&&{cp}&&"


class Reader:
    """Packets from the centre (answers, commands) as field dicts, CP parsed into ``cp``."""

    def __init__(self) -> None:
        self.buffer = b""

    def feed(self, data: bytes) -> list[dict[str, str]]:
        self.buffer += data
        out: list[dict[str, str]] = []
        while True:
            start = self.buffer.find(b"##")
            if start < 0:
                self.buffer = self.buffer[-1:]
                return out
            self.buffer = self.buffer[start:]
            if len(self.buffer) < 6 or not self.buffer[2:6].isdigit():
                if len(self.buffer) >= 6:
                    self.buffer = self.buffer[2:]
                    continue
                return out
            size = int(self.buffer[2:6])
            if len(self.buffer) < size + 12:
                return out
            data, check = self.buffer[6:6 + size], self.buffer[6 + size:10 + size]
            self.buffer = self.buffer[size + 12:]
            if check.decode(errors="replace").upper() != f"{crc(data):04X}":
                continue
            fields: dict[str, str] = {}
            head, _, rest = data.decode(errors="replace").partition("CP=&&")
            for item in head.split(";"):
                key, _, value = item.partition("=")
                if key:
                    fields[key] = value
            fields["cp"] = rest[:-2] if rest.endswith("&&") else rest
            out.append(fields)


def cp_values(cp: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for group in cp.split(";"):
        for item in group.split(","):
            key, sep, value = item.partition("=")
            if sep:
                values[key] = value
    return values
