"""DL/T 645-2007 data identifiers (DI3 DI2 DI1 DI0) and their formats (Appendix A).

Each DI's value has a fixed BCD layout (``XXXXXX.XX`` kWh for energy, ``XXX.X`` V for voltage,
``XXX.XXX`` A signed for current …); the decoder turns it into a number in the unit given here.
A DI with FFH in one byte is a block: the values of that byte's range in one answer (a
tariff block ``0001FF00``: total, tariff 1, tariff 2 …), each in the format of its members.
Identifiers missing from the table can still be read with an explicit ``format`` binding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["number", "clock", "demand", "digits", "word"]


@dataclass(frozen=True, slots=True)
class DataFormat:
    """How one DI's value is laid out: ``size`` bytes; numbers have ``decimals`` and a sign bit
    (bit 7 of the top byte) when ``signed``; clocks name their BCD fields in ``fields``."""

    kind: Kind
    size: int
    name: str
    unit: str = ""
    decimals: int = 0
    signed: bool = False
    fields: str = ""


def number(pattern: str, name: str, unit: str, signed: bool = False) -> DataFormat:
    """``XX.XXXX`` style: the digits give the size, the point the decimals."""
    digits = pattern.replace(".", "")
    decimals = len(pattern) - pattern.index(".") - 1 if "." in pattern else 0
    return DataFormat("number", len(digits) // 2, name, unit, decimals, signed)


_ENERGY_KINDS: dict[int, tuple[str, str, bool]] = {
    0x00: ("combined active energy", "kWh", True),
    0x01: ("forward active energy", "kWh", False),
    0x02: ("reverse active energy", "kWh", False),
    0x03: ("combined reactive energy 1", "kvarh", True),
    0x04: ("combined reactive energy 2", "kvarh", True),
    0x05: ("quadrant I reactive energy", "kvarh", False),
    0x06: ("quadrant II reactive energy", "kvarh", False),
    0x07: ("quadrant III reactive energy", "kvarh", False),
    0x08: ("quadrant IV reactive energy", "kvarh", False),
    0x09: ("forward apparent energy", "kVAh", False),
    0x0A: ("reverse apparent energy", "kVAh", False),
}
_PHASE_ENERGY: dict[int, str] = {
    0x15: "phase A forward active energy", 0x16: "phase A reverse active energy",
    0x29: "phase B forward active energy", 0x2A: "phase B reverse active energy",
    0x3D: "phase C forward active energy", 0x3E: "phase C reverse active energy",
}
_DEMAND_KINDS: dict[int, tuple[str, str]] = {
    0x01: ("forward active maximum demand", "kW"),
    0x02: ("reverse active maximum demand", "kW"),
    0x03: ("combined reactive 1 maximum demand", "kvar"),
    0x04: ("combined reactive 2 maximum demand", "kvar"),
}
_PHASE_NAMES = {0x00: "total", 0x01: "phase A", 0x02: "phase B", 0x03: "phase C"}
_VARIABLES: dict[int, tuple[str, str, str, bool, int]] = {
    # DI2 -> pattern, name, unit, signed, first member of the block (01: A, B, C; 00: total, A, B, C)
    0x01: ("XXX.X", "voltage", "V", False, 0x01),
    0x02: ("XXX.XXX", "current", "A", True, 0x01),
    0x03: ("XX.XXXX", "active power", "kW", True, 0x00),
    0x04: ("XX.XXXX", "reactive power", "kvar", True, 0x00),
    0x05: ("XX.XXXX", "apparent power", "kVA", True, 0x00),
    0x06: ("X.XXX", "power factor", "", True, 0x00),
    0x07: ("XXX.X", "phase angle", "°", False, 0x01),
    0x08: ("XX.XX", "voltage waveform distortion", "%", False, 0x01),
    0x09: ("XX.XX", "current waveform distortion", "%", False, 0x01),
}
_SPECIAL: dict[int, DataFormat] = {
    0x02800001: number("XXX.XXX", "neutral current", "A", signed=True),
    0x02800002: number("XX.XX", "grid frequency", "Hz"),
    0x02800003: number("XX.XXXX", "one-minute average active power", "kW", signed=True),
    0x02800004: number("XX.XXXX", "current active demand", "kW", signed=True),
    0x02800005: number("XX.XXXX", "current reactive demand", "kvar", signed=True),
    0x02800006: number("XX.XXXX", "current apparent demand", "kVA", signed=True),
    0x02800007: number("XXX.X", "meter temperature", "°C", signed=True),
    0x02800008: number("XX.XX", "clock battery voltage", "V"),
    0x02800009: number("XX.XX", "meter-reading battery voltage", "V"),
    0x0280000A: number("XXXXXXXX", "internal battery working time", "min"),
    0x04000101: DataFormat("clock", 4, "date and week day", fields="YYMMDDWW"),
    0x04000102: DataFormat("clock", 3, "time", fields="hhmmss"),
    0x04000401: DataFormat("digits", 6, "communication address"),
    0x04000402: DataFormat("digits", 6, "meter number"),
    **{0x04000500 + n: DataFormat("word", 2, f"meter running status word {n}") for n in range(1, 8)},
}


def data_format(di: int) -> DataFormat | None:
    """The format of one value of ``di`` (for a block DI: of each member), or None if unknown."""
    if di in _SPECIAL:
        return _SPECIAL[di]
    di3, di2, di1, di0 = di.to_bytes(4, "big")
    if di3 == 0x00 and di0 <= 0x0C:  # energy; DI0: 00 now, 01..0C the last settlement days
        if di2 in _ENERGY_KINDS and (di1 <= 0x3F or di1 == 0xFF):
            name, unit, signed = _ENERGY_KINDS[di2]
            return number("XXXXXX.XX", name, unit, signed)
        if di2 in _PHASE_ENERGY and di1 == 0x00:
            return number("XXXXXX.XX", _PHASE_ENERGY[di2], "kWh")
    if di3 == 0x01 and di0 <= 0x0C and di2 in _DEMAND_KINDS and (di1 <= 0x3F or di1 == 0xFF):
        name, unit = _DEMAND_KINDS[di2]
        return DataFormat("demand", 8, name, unit, decimals=4, fields="YYMMDDhhmm")
    if di3 == 0x02 and di2 in _VARIABLES and di0 == 0x00:
        pattern, name, unit, signed, first = _VARIABLES[di2]
        if di1 == 0xFF or first <= di1 <= 0x03:
            member = "block" if di1 == 0xFF else _PHASE_NAMES[di1]
            return number(pattern, f"{member} {name}", unit, signed)
    return None


def block_members(di: int) -> int | None:
    """How many values a block DI answers with at most (None: not a block)."""
    di3, di2, di1, _ = di.to_bytes(4, "big")
    if di1 != 0xFF:
        return None
    if di3 == 0x02:
        return 4 if _VARIABLES.get(di2, ("", "", "", False, 1))[4] == 0x00 else 3
    return 64  # total and up to 63 tariffs: the meter answers with as many as it has
