"""Simulated CJ/T 188 meters: a water meter with a valve, and a heat meter.

Water flows while the valve is open (a household's draw, in bursts); the heat meter's flow
carries heat from the supply to the return temperature (ΔT × flow × 1.163 kWh per m³·K).
``data()`` is each meter's answer to the meter data read (DI 901FH) as CJ/T 188 lays it out.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from dataclasses import dataclass


def bcd(value: float, size: int, decimals: int) -> bytes:
    magnitude = round(abs(value) * 10**decimals) % 10 ** (2 * size)
    return bytes.fromhex(f"{magnitude:0{2 * size}d}")[::-1]


def clock(when: dt.datetime) -> bytes:
    return bytes.fromhex(when.strftime("%Y%m%d%H%M%S"))[::-1]


M3, M3_PER_H, KWH, KW = 0x2C, 0x35, 0x05, 0x17


@dataclass
class Meter188:
    address: str  # 14 digits as printed
    meter_type: int
    seed: int | None = None
    speed: float = 1.0
    silent: bool = False
    corrupt: bool = False
    """answers go out with a wrong checksum"""
    battery_low: bool = False
    valve_open: bool = True
    valve_stuck: bool = False
    """the valve does not move: commands are answered with status "abnormal" """
    has_valve: bool = False
    elapsed: float = 0.0
    volume: float = 0.0
    flow: float = 0.0

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self.volume = 100.0 + self._rng.uniform(0, 900)
        self.settlement_volume = self.volume
        self.flow = self._flow()

    @property
    def wire_address(self) -> bytes:
        return bytes.fromhex(self.address)[::-1]

    def status(self) -> bytes:
        valve = 0b11 if self.valve_stuck else (0b00 if self.valve_open else 0b01)
        return bytes([valve | (0b100 if self.battery_low else 0), 0x00])

    def step(self, dt_s: float) -> None:
        seconds = dt_s * self.speed
        self.elapsed += seconds
        self.flow = self._flow() if self.valve_open or not self.has_valve else 0.0
        self.volume += self.flow * seconds / 3600.0

    def _flow(self) -> float:
        return max(0.0, 0.8 + 0.6 * math.sin(self.elapsed / 90.0) + self._rng.gauss(0, 0.05))

    def data(self) -> bytes:
        now = dt.datetime.now().replace(microsecond=0)
        return (bcd(self.volume, 4, 2) + bytes([M3]) + bcd(self.settlement_volume, 4, 2) + bytes([M3])
                + clock(now) + self.status())


@dataclass
class HeatMeter188(Meter188):
    supply: float = 65.0
    ret: float = 45.0
    heat: float = 0.0
    power: float = 0.0
    hours: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.heat = 5000.0 + self._rng.uniform(0, 5000)
        self.settlement_heat = self.heat
        self.step(0.0)

    def _flow(self) -> float:
        return max(0.0, 1.2 + 0.3 * math.sin(self.elapsed / 600.0) + self._rng.gauss(0, 0.02))

    def step(self, dt_s: float) -> None:
        super().step(dt_s)
        seconds = dt_s * self.speed
        self.supply = 65.0 + 3.0 * math.sin(self.elapsed / 1800.0)
        self.ret = self.supply - 18.0 - 2.0 * math.sin(self.elapsed / 900.0)
        self.power = self.flow * (self.supply - self.ret) * 1.163  # kW
        self.heat += self.power * seconds / 3600.0
        self.hours += seconds / 3600.0

    def data(self) -> bytes:
        now = dt.datetime.now().replace(microsecond=0)
        return (bcd(self.settlement_heat, 4, 2) + bytes([KWH]) + bcd(self.heat, 4, 2) + bytes([KWH])
                + bcd(self.power, 4, 2) + bytes([KW]) + bcd(self.flow, 4, 4) + bytes([M3_PER_H])
                + bcd(self.volume, 4, 2) + bytes([M3]) + bcd(self.supply, 3, 2) + bcd(self.ret, 3, 2)
                + bcd(self.hours, 3, 0) + clock(now) + self.status())
