"""One water meter: a daily demand curve, a totalizer, a draining battery, a valve, leaks.

Pure and deterministic for a given seed and sequence of steps, so tests can reason about
it: no I/O and no clock of its own (the caller passes elapsed seconds).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

MAX_FLOW = 6.0  # m³/h, a DN25 domestic meter's overload flow
LEAK_FLOW = 0.08  # m³/h, a running toilet: small, but never zero at night
BATTERY_DRAIN = 0.0005  # % per report (a ten-year battery at one report a minute is ~0.002)


@dataclass
class WaterMeter:
    """State of one meter; ``step`` advances it by ``dt`` seconds of simulated time."""

    meter_id: str
    seed: int | None = None
    base_demand: float = 0.6  # m³/h at the daily peak
    volume: float = 0.0  # m³, the totalizer
    battery: float = 100.0  # %
    valve_open: bool = True
    leaking: bool = False
    report_interval: int = 1  # seconds between telemetry messages
    clock: float = 8 * 3600.0  # simulated seconds since midnight
    flow: float = 0.0  # m³/h
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed if self.seed is not None else self.meter_id)

    @property
    def leak_alarm(self) -> bool:
        """Raised while water flows through an open valve with no demand (the night test)."""
        return self.valve_open and self.leaking

    def step(self, dt: float) -> None:
        self.clock = (self.clock + dt) % 86_400
        if not self.valve_open:
            self.flow = 0.0
            return
        hour = self.clock / 3600
        # two peaks (morning, evening), nearly nothing at night
        curve = 0.05 + 0.55 * math.exp(-((hour - 7.5) ** 2) / 2) + 0.4 * math.exp(-((hour - 19) ** 2) / 3)
        demand = self.base_demand * curve * (0.8 + 0.4 * self._rng.random())
        self.flow = min(MAX_FLOW, demand + (LEAK_FLOW if self.leaking else 0.0))
        self.volume += self.flow * dt / 3600

    def report(self) -> None:
        """Account for the energy one radio report costs."""
        self.battery = max(0.0, self.battery - BATTERY_DRAIN)
