"""The simulator's own SL 651-2014 frame writer and reader (HEX/BCD and ASCII).

Simulators import nothing from ``drivers`` (one-way imports), so this is a second, small
reading of the standard (6.2 frames, the CRC, annex C elements) apart from the driver's
codec; tests passing between the two are two readings that agree.
"""

from __future__ import annotations

STX, SYN, ETX, ETB, ENQ, ESC = 0x02, 0x16, 0x03, 0x17, 0x05, 0x1B

# ASCII identifier -> (HEX identifier, data definition: byte count << 3 | decimals)
ELEMENTS = {"PJ": (0x20, 0x19), "PT": (0x26, 0x19), "P1": (0x1A, 0x19), "PD": (0x1F, 0x19),
            "Z": (0x39, 0x23), "VT": (0x38, 0x12), "Q": (0x27, 0x2B)}
BY_CODE = {code: (name, definition) for name, (code, definition) in ELEMENTS.items()}


def crc(data: bytes) -> int:
    value = 0xFFFF
    for byte in data:
        value ^= byte
        for _ in range(8):
            value = (value >> 1) ^ 0xA001 if value & 1 else value >> 1
    return value


def bcd(value: float, definition: int) -> bytes:
    size, decimals = definition >> 3, definition & 7
    return bytes.fromhex(f"{round(value * 10**decimals):0{2 * size}d}")


def frame_hex(centre: int, station: str, password: str, function: int, body: bytes, end: int = ETX,
              packets: tuple[int, int] | None = None, bad_crc: bool = False) -> bytes:
    info = b"" if packets is None else (packets[0] << 12 | packets[1]).to_bytes(3, "big")
    data = (b"\x7e\x7e" + bytes([centre]) + bytes.fromhex(station) + bytes.fromhex(password) + bytes([function])
            + (len(info) + len(body)).to_bytes(2, "big") + bytes([STX if packets is None else SYN]) + info + body
            + bytes([end]))
    return data + (crc(data) ^ (0x5A5A if bad_crc else 0)).to_bytes(2, "big")


def frame_ascii(centre: int, station: str, password: str, function: int, body: bytes, end: int = ETX,
                packets: tuple[int, int] | None = None, bad_crc: bool = False) -> bytes:
    info = b"" if packets is None else f"{packets[0]:03X}{packets[1]:03X}".encode()
    head = f"{centre:02X}{station}{password}{function:02X}{len(info) + len(body):04X}".encode()
    data = b"\x01" + head + bytes([STX if packets is None else SYN]) + info + body + bytes([end])
    return data + f"{crc(data) ^ (0x5A5A if bad_crc else 0):04X}".encode()


def report_body(encoding: str, serial: int, sent: str, station: str, category: str, observed: str,
                values: dict[str, float]) -> bytes:
    if encoding == "hex":
        out = serial.to_bytes(2, "big") + bytes.fromhex(sent)
        out += b"\xf1\xf1" + bytes.fromhex(station) + category.encode() + b"\xf0\xf0" + bytes.fromhex(observed)
        for name, value in values.items():
            code, definition = ELEMENTS[name]
            out += bytes([code, definition]) + bcd(value, definition)
        return out
    parts = [f"{serial:04X}", sent, "ST", station, category, "TT", observed]
    for name, value in values.items():
        parts += [name, f"{value:.{ELEMENTS[name][1] & 7}f}"]
    return " ".join(parts).encode()


class Reader:
    """Downlink frames from the centre: (function, body, encoding, end character)."""

    def __init__(self) -> None:
        self.buffer = b""

    def feed(self, data: bytes) -> list[tuple[int, bytes, str, int]]:
        self.buffer += data
        out: list[tuple[int, bytes, str, int]] = []
        while self.buffer:
            if self.buffer[:2] == b"\x7e\x7e":
                if len(self.buffer) < 14:
                    break
                size = int.from_bytes(self.buffer[11:13], "big") & 0xFFF
                total = 17 + size
                if len(self.buffer) < total:
                    break
                frame, self.buffer = self.buffer[:total], self.buffer[total:]
                if crc(frame[:-2]) == int.from_bytes(frame[-2:], "big"):
                    out.append((frame[10], frame[14:total - 3], "hex", frame[total - 3]))
            elif self.buffer[0] == 0x01:
                if len(self.buffer) < 24:
                    break
                size = int(self.buffer[19:23], 16) & 0xFFF
                total = 29 + size
                if len(self.buffer) < total:
                    break
                frame, self.buffer = self.buffer[:total], self.buffer[total:]
                if f"{crc(frame[:-4]):04X}".encode() == frame[-4:]:
                    out.append((int(frame[17:19], 16), frame[24:total - 5], "ascii", frame[total - 5]))
            else:
                self.buffer = self.buffer[1:]
        return out
