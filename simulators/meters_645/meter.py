"""One simulated three-phase DL/T 645-2007 meter: a load that wanders, energy that accumulates.

The load follows a slow daily-like swing plus noise; energy integrates the active power (at
``speed`` simulated seconds per real second) into the total and the tariff of the hour. Values
are given as the meter would encode them: BCD, lowest byte first, sign in bit 7 of the top byte.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from dataclasses import dataclass, field


def bcd(value: float, size: int, decimals: int, signed: bool = False) -> bytes:
    magnitude = round(abs(value) * 10**decimals) % 10 ** (2 * size)
    data = bytes.fromhex(f"{magnitude:0{2 * size}d}")[::-1]
    if signed and value < 0:
        data = data[:-1] + bytes([data[-1] | 0x80])
    return data


def bcd_clock(when: dt.datetime, fields: str) -> bytes:
    values = {"YY": when.year % 100, "MM": when.month, "DD": when.day, "WW": when.isoweekday() % 7,
              "hh": when.hour, "mm": when.minute, "ss": when.second}
    return bytes.fromhex("".join(f"{values[fields[i:i + 2]]:02d}" for i in range(0, len(fields), 2)))[::-1]


def tariff_of(hour: int) -> int:
    """1 sharp, 2 peak, 3 flat, 4 valley: a typical Chinese time-of-use day."""
    if 10 <= hour < 12 or 19 <= hour < 21:
        return 1
    if 8 <= hour < 10 or 12 <= hour < 19:
        return 2
    if 21 <= hour < 23 or 7 <= hour < 8:
        return 3
    return 4


@dataclass
class Meter645:
    address: str  # 12 digits as printed
    base_kw: float = 20.0
    seed: int | None = None
    speed: float = 1.0
    password: str = "02123456"  # level 02, password 123456
    silent: bool = False
    """never answers (a dead meter on the line)"""
    corrupt: set[int] = field(default_factory=set)
    """DIs whose answers go out with a wrong checksum"""
    energy: list[float] = field(default_factory=lambda: [0.0] * 5)  # total, tariffs 1..4, kWh
    reverse_energy: float = 0.0
    power_kw: float = 0.0
    relay_closed: bool = True
    alarm: bool = False
    hold: bool = False
    clock_offset: float = 0.0  # seconds the meter's clock is ahead of this machine's
    max_demand: tuple[float, dt.datetime] = (0.0, dt.datetime(2026, 1, 1))
    elapsed: float = 0.0

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self.energy = [1000.0 + self._rng.uniform(0, 5000), 0.0, 0.0, 0.0, 0.0]
        share = self.energy[0] / 4
        self.energy[1:] = [share] * 4
        self.power_kw = self.base_kw

    @property
    def wire_address(self) -> bytes:
        return bytes.fromhex(self.address)[::-1]

    def now(self) -> dt.datetime:
        return dt.datetime.now().replace(microsecond=0) + dt.timedelta(seconds=round(self.clock_offset))

    def step(self, dt_s: float) -> None:
        seconds = dt_s * self.speed
        self.elapsed += seconds
        swing = 0.5 + 0.5 * math.sin(2 * math.pi * self.elapsed / 3600.0)
        load = self.base_kw * (0.6 + 0.6 * swing) + self._rng.gauss(0, self.base_kw * 0.02)
        self.power_kw = max(0.0, load) if self.relay_closed else 0.0
        kwh = self.power_kw * seconds / 3600.0
        self.energy[0] += kwh
        self.energy[tariff_of(self.now().hour)] += kwh
        if self.power_kw > self.max_demand[0]:
            self.max_demand = (self.power_kw, self.now())

    def phase(self, index: int) -> tuple[float, float, float]:
        """Voltage (V), current (A), power factor of phase ``index`` (0..2)."""
        voltage = 220.0 + 2.0 * math.sin(self.elapsed / 60.0 + index) + 0.3 * index
        pf = 0.95 - 0.02 * index
        current = self.power_kw * 1000 / 3 / (voltage * pf) if self.power_kw else 0.0
        return voltage, current, pf

    def value(self, di: int) -> bytes | None:
        """The DI's data as encoded on the wire (before the 33H offset), None if unknown."""
        di3, di2, di1, di0 = di.to_bytes(4, "big")
        if di3 == 0x00 and di0 == 0x00:
            if di2 in (0x00, 0x01) and di1 <= 0x04:
                return bcd(self.energy[di1], 4, 2)
            if di2 in (0x00, 0x01) and di1 == 0xFF:
                return b"".join(bcd(e, 4, 2) for e in self.energy)
            if di2 == 0x02 and di1 == 0x00:
                return bcd(self.reverse_energy, 4, 2)
            if di2 in (0x15, 0x29, 0x3D) and di1 == 0x00:
                return bcd(self.energy[0] / 3, 4, 2)
        if di == 0x01010000:
            value, when = self.max_demand
            return bcd(value, 3, 4) + bcd_clock(when, "YYMMDDhhmm")
        phases = [self.phase(i) for i in range(3)]
        simple: dict[int, bytes] = {
            0x02800002: bcd(50.0 + 0.02 * math.sin(self.elapsed / 7.0), 2, 2),
            0x02800004: bcd(self.power_kw, 3, 4, signed=True),
            0x02800007: bcd(31.5, 2, 1, signed=True),
            0x04000101: bcd_clock(self.now(), "YYMMDDWW"),
            0x04000102: bcd_clock(self.now(), "hhmmss"),
            0x04000401: self.wire_address,
            0x04000503: bytes([0x00 if self.relay_closed else 0x40, 0x00]),
        }
        if di in simple:
            return simple[di]
        if di3 != 0x02 or di0 != 0x00:
            return None
        members = {0x01: [bcd(p[0], 2, 1) for p in phases],
                   0x02: [bcd(p[1], 3, 3, signed=True) for p in phases],
                   0x03: [bcd(self.power_kw / 3, 3, 4, signed=True) for _ in phases],
                   0x06: [bcd(p[2], 2, 3, signed=True) for p in phases]}.get(di2)
        if members is None:
            return None
        if di2 in (0x03, 0x06):  # total first, then phases A, B, C
            total = bcd(self.power_kw, 3, 4, signed=True) if di2 == 0x03 else bcd(0.94, 2, 3, signed=True)
            members = [total, *members]
            first = 0
        else:
            first = 1
        if di1 == 0xFF:
            return b"".join(members)
        if first <= di1 < first + len(members):
            return members[di1 - first]
        return None
