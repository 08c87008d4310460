"""Street sensor models: pure, no I/O, deterministic for a seed and a step sequence.

Time is simulated seconds from midnight of day 0 (``start_hour`` moves the clock);
``speed`` in the server scales wall-clock steps so dynamics show within seconds.

- Air quality: traffic pollutants (NO2, CO, particulates) follow the morning and evening
  rush hours; ozone builds with sunlight and is titrated by NO2; temperature follows the
  sun, relative humidity moves against it; every channel carries slowly varying noise.
- Manhole: the water level in a combined sewer chamber follows dry-weather flow with a
  diurnal pattern, rises in rain storms, and the overflow alarm trips at the weir crest.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

DAY_S = 86_400.0
MAX_SUBSTEP_S = 1.0


def _rush(hour: float) -> float:
    """Traffic intensity, 0..1: peaks at 08:00 and 18:00, low at night."""
    morning = math.exp(-(((hour - 8.0) / 1.5) ** 2))
    evening = math.exp(-(((hour - 18.0) / 2.0) ** 2))
    return 0.15 + 0.85 * max(morning, evening)


def _sun(hour: float) -> float:
    """Solar elevation proxy, 0..1, between 06:00 and 20:00."""
    return max(0.0, math.sin(math.pi * (hour - 6.0) / 14.0)) if 6.0 <= hour <= 20.0 else 0.0


@dataclass
class _Noise:
    """Ornstein-Uhlenbeck noise: standard deviation ``sigma``, correlation time ``tau`` s."""

    sigma: float
    tau: float
    value: float = 0.0

    def step(self, rng: random.Random, dt: float) -> float:
        decay = math.exp(-dt / self.tau)
        self.value = self.value * decay + self.sigma * math.sqrt(1 - decay * decay) * rng.gauss(0, 1)
        return self.value


@dataclass
class AirQualityStation:
    """Roadside air-quality monitor: concentrations in µg/m³ (CO in mg/m³), °C and %RH."""

    seed: int | None = None
    start_hour: float = 7.0
    clock: float = 0.0
    pm25: float = 0.0
    pm10: float = 0.0
    no2: float = 0.0
    o3: float = 0.0
    co: float = 0.0
    temperature: float = 0.0
    humidity: float = 0.0
    interval: float = 5.0  # reporting interval, s (a config value, served and writable)
    pm_offset: float = 0.0  # sensor drift, µg/m³, removed by a zero calibration
    calibrations: int = 0
    _rng: random.Random = field(init=False, repr=False)
    _noise: dict[str, _Noise] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self.clock = self.start_hour * 3600.0
        self._noise = {
            "pm": _Noise(3.0, 300.0), "no2": _Noise(6.0, 200.0), "o3": _Noise(5.0, 600.0),
            "co": _Noise(0.08, 200.0), "temp": _Noise(0.4, 900.0), "rh": _Noise(2.0, 900.0),
        }
        self._update(0.0)

    @property
    def hour(self) -> float:
        return (self.clock % DAY_S) / 3600.0

    def step(self, dt: float) -> None:
        while dt > 0:
            h = min(dt, MAX_SUBSTEP_S)
            self.clock += h
            self.pm_offset += h * 0.0005  # slow optical drift until the next calibration
            self._update(h)
            dt -= h

    def _update(self, h: float) -> None:
        rng, noise, hour = self._rng, self._noise, self.hour
        traffic, sun = _rush(hour), _sun(hour)
        self.temperature = round(12.0 + 8.0 * math.sin(math.pi * (hour - 9.0) / 12.0)
                                 + noise["temp"].step(rng, h), 2)
        self.humidity = round(min(100.0, max(5.0, 80.0 - 2.5 * (self.temperature - 12.0)
                                             + noise["rh"].step(rng, h))), 1)
        self.no2 = round(max(0.0, 10.0 + 60.0 * traffic + noise["no2"].step(rng, h)), 1)
        self.co = round(max(0.05, 0.2 + 1.1 * traffic + noise["co"].step(rng, h)), 2)
        self.o3 = round(max(0.0, 20.0 + 90.0 * sun - 0.4 * self.no2 + noise["o3"].step(rng, h)), 1)
        # humid air grows particles; traffic resuspends coarse dust
        growth = 1.0 + max(0.0, self.humidity - 70.0) / 60.0
        pm = max(1.0, (6.0 + 22.0 * traffic) * growth + noise["pm"].step(rng, h))
        self.pm25 = round(pm + self.pm_offset, 1)
        self.pm10 = round(self.pm25 * 1.6 + 6.0 * traffic, 1)

    def calibrate(self) -> dict[str, float]:
        """A zero calibration against filtered air: removes the drift, says how much."""
        removed = round(self.pm_offset, 2)
        self.pm_offset = 0.0
        self.calibrations += 1
        self._update(0.0)
        return {"pm_offset_removed": removed, "calibrations": self.calibrations}


@dataclass
class ManholeSensor:
    """Radar level sensor in a combined-sewer chamber with an overflow weir."""

    seed: int | None = None
    start_hour: float = 7.0
    depth: float = 3.0  # chamber depth below the cover, m
    weir: float = 1.8  # overflow weir crest above the invert, m
    clock: float = 0.0
    level: float = 0.35  # water above the invert, m
    battery: float = 3.6  # V, lithium primary cell
    interval: float = 5.0
    overflow_level: float = 1.8  # alarm threshold, m (a config value)
    rain: float = 0.0  # current rain inflow, m³/s
    _storm_left: float = 0.0
    _storm_peak: float = 0.0
    _storm_length: float = 0.0
    _rng: random.Random = field(init=False, repr=False)
    _noise: _Noise = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self.clock = self.start_hour * 3600.0
        self._noise = _Noise(0.01, 60.0)

    @property
    def fill(self) -> float:
        """Share of the chamber below the cover that is full, %."""
        return round(100.0 * self.level / self.depth, 1)

    @property
    def overflow(self) -> bool:
        return self.level >= self.overflow_level

    def start_storm(self, peak: float = 1.2, duration: float = 600.0) -> None:
        """Rain inflow rising to ``peak`` m³/s and back over ``duration`` s."""
        self._storm_peak, self._storm_length, self._storm_left = peak, duration, duration

    def step(self, dt: float) -> None:
        while dt > 0:
            h = min(dt, MAX_SUBSTEP_S)
            self._substep(h)
            dt -= h

    def _substep(self, h: float) -> None:
        self.clock += h
        hour = (self.clock % DAY_S) / 3600.0
        if self._storm_left <= 0 and self._rng.random() < h / 7200.0:  # one storm in ~2 h
            self.start_storm(self._rng.uniform(0.4, 1.5), self._rng.uniform(300.0, 1200.0))
        if self._storm_left > 0:
            phase = 1.0 - self._storm_left / self._storm_length
            self.rain = self._storm_peak * math.sin(math.pi * phase) ** 2
            self._storm_left -= h
        else:
            self.rain = 0.0
        dry = 0.08 + 0.06 * _rush(hour)  # dry-weather flow follows water use
        inflow = dry + self.rain
        # pipe outflow rises with head; above the weir the overflow spills the excess
        outflow = 0.25 * math.sqrt(max(self.level, 0.0))
        if self.level > self.weir:
            outflow += 4.0 * (self.level - self.weir) ** 1.5
        area = 15.0  # m², chamber plus the pipe storage it sees
        self.level = min(self.depth, max(0.02, self.level + (inflow - outflow) * h / area))
        self.level = round(max(0.02, self.level + self._noise.step(self._rng, h) * 0.05), 3)
        self.battery = max(3.0, self.battery - h * 2e-7)
