"""Wet-well pump station model: pure, no I/O, deterministic for a seed and a step sequence.

Time is simulated seconds; ``speed`` scales wall-clock steps so a server can run the
station faster than real time and tests and demos see levels move within seconds.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

WELL_AREA_M2 = 20.0
WELL_DEPTH_M = 6.0
BASE_INFLOW_M3H = 150.0
DIURNAL_AMPLITUDE = 0.4  # fraction of the base inflow
INFLOW_NOISE_M3H = 10.0  # standard deviation of the slowly varying noise
INFLOW_NOISE_TAU_S = 20.0
STORM_PEAK_M3H = (150.0, 400.0)  # extra inflow on top of the base at a storm's peak
STORM_DURATION_S = (60.0, 240.0)

RATED_FLOW_M3H = 300.0
RATED_FREQUENCY_HZ = 50.0
RAMP_HZ_PER_S = 5.0
DEFAULT_SETPOINT_HZ = 45.0
SETPOINT_MIN_HZ = 25.0
SETPOINT_MAX_HZ = 50.0
HEAD_FLOW_LOSS = 0.15  # fraction of flow lost when lifting from an empty well

LOW_LEVEL_CUTOFF_M = 0.3  # pumps stop below this (dry-run protection) ...
LOW_LEVEL_RESUME_M = 0.4  # ... and may run again from this level (hysteresis)
HIGH_LEVEL_FLOAT_M = 4.5
FLOAT_BACKUP_M = 5.0  # hard-wired float starts pump 1 here, releases below HIGH_LEVEL_FLOAT_M

STATIC_HEAD_KPA = 80.0
FRICTION_KPA_PER_M3H2 = 140.0 / 600.0**2  # about 220 kPa with both pumps at full flow
PRESSURE_NOISE_KPA = 0.5
IDLE_CURRENT_A = 5.0
LOAD_CURRENT_A = 40.0

MAX_SUBSTEP_S = 0.25  # keeps ramps, switches and storms smooth whatever the caller's dt


@dataclass
class Pump:
    """One VFD-driven pump: commands in, measured state out."""

    run_cmd: bool = False
    setpoint: float = DEFAULT_SETPOINT_HZ
    fault: bool = False
    running: bool = False
    frequency: float = 0.0
    flow: float = 0.0
    current: float = 0.0
    run_hours: float = 0.0


class PumpStation:
    """Two pumps emptying a wet well that fills from a varying sewer inflow."""

    def __init__(
        self,
        *,
        seed: int | None = None,
        initial_level: float = 2.0,
        speed: float = 1.0,
        diurnal_period: float = 600.0,
        storm_interval: float | None = 1800.0,
    ) -> None:
        if not 0.0 <= initial_level <= WELL_DEPTH_M:
            raise ValueError(f"initial_level must be within 0..{WELL_DEPTH_M} m")
        if speed <= 0.0 or diurnal_period <= 0.0:
            raise ValueError("speed and diurnal_period must be positive")
        self.speed = speed
        self.diurnal_period = diurnal_period
        self.storm_interval = storm_interval  # mean simulated s between storms; None: none
        self.pumps = (Pump(), Pump())
        self.level = initial_level
        self.sim_time = 0.0
        self.inflow = BASE_INFLOW_M3H
        self.outflow = 0.0
        self.outlet_pressure = 0.0
        self.write_count = 0  # accepted Modbus writes; lives here so every view sees one count
        self.low_level_cutoff = initial_level < LOW_LEVEL_CUTOFF_M
        self.float_backup = initial_level >= FLOAT_BACKUP_M
        self._rng = random.Random(seed)
        self._noise = 0.0
        self._storm_elapsed = 0.0
        self._storm_duration = 0.0
        self._storm_peak = 0.0

    @property
    def high_level_float(self) -> bool:
        return self.level >= HIGH_LEVEL_FLOAT_M

    def pump(self, number: int) -> Pump:
        """Pumps are numbered 1 and 2, as on the station's panel and in the register map."""
        if number not in (1, 2):
            raise ValueError(f"no pump {number}; pumps are 1 and 2")
        return self.pumps[number - 1]

    def set_run(self, number: int, run: bool) -> None:
        self.pump(number).run_cmd = run

    def set_setpoint(self, number: int, hz: float) -> None:
        if not SETPOINT_MIN_HZ <= hz <= SETPOINT_MAX_HZ:  # also refuses NaN
            raise ValueError(f"setpoint must be within {SETPOINT_MIN_HZ}..{SETPOINT_MAX_HZ} Hz")
        self.pump(number).setpoint = hz

    def inject_fault(self, number: int) -> None:
        """Latch a drive fault; the pump stops at the next step and stays stopped until reset."""
        self.pump(number).fault = True

    def reset_fault(self, number: int) -> None:
        """Clear the latch; a pump whose run command is still on restarts."""
        self.pump(number).fault = False

    def start_storm(self, peak: float = 350.0, duration: float = 120.0) -> None:
        """Begin a storm burst now (demos and tests); random storms use the same shape."""
        if peak < 0.0 or duration <= 0.0:
            raise ValueError("storm peak must not be negative and duration must be positive")
        self._storm_elapsed = 0.0
        self._storm_duration = duration
        self._storm_peak = peak

    def step(self, dt: float) -> None:
        """Advance by ``dt`` wall seconds, i.e. ``dt * speed`` simulated seconds."""
        if dt < 0.0:
            raise ValueError("dt must not be negative")
        remaining = dt * self.speed
        while remaining > 1e-9:
            h = min(remaining, MAX_SUBSTEP_S)
            self._substep(h)
            remaining -= h

    def _substep(self, h: float) -> None:
        self.sim_time += h
        self.inflow = self._next_inflow(h)
        self._update_level_switches()
        head_factor = 1.0 - HEAD_FLOW_LOSS * (WELL_DEPTH_M - self.level) / WELL_DEPTH_M
        for index, pump in enumerate(self.pumps):
            backup = index == 0 and self.float_backup
            pump.running = (pump.run_cmd or backup) and not pump.fault and not self.low_level_cutoff
            target = 0.0
            if pump.running:
                target = RATED_FREQUENCY_HZ if backup else pump.setpoint
            pump.frequency = _approach(pump.frequency, target, RAMP_HZ_PER_S * h)
            ratio = pump.frequency / RATED_FREQUENCY_HZ
            pump.flow = RATED_FLOW_M3H * ratio * head_factor  # affinity law: flow ~ speed
            pump.current = IDLE_CURRENT_A + LOAD_CURRENT_A * ratio**3 if pump.running else 0.0
            if pump.running:
                pump.run_hours += h / 3600.0
        self.outflow = sum(pump.flow for pump in self.pumps)
        net_m3 = (self.inflow - self.outflow) / 3600.0 * h
        self.level = min(max(self.level + net_m3 / WELL_AREA_M2, 0.0), WELL_DEPTH_M)
        self.outlet_pressure = self._pressure()

    def _update_level_switches(self) -> None:
        if self.level < LOW_LEVEL_CUTOFF_M:
            self.low_level_cutoff = True
        elif self.level >= LOW_LEVEL_RESUME_M:
            self.low_level_cutoff = False
        if self.level >= FLOAT_BACKUP_M:
            self.float_backup = True
        elif self.level < HIGH_LEVEL_FLOAT_M:
            self.float_backup = False

    def _next_inflow(self, h: float) -> float:
        phase = 2.0 * math.pi * self.sim_time / self.diurnal_period
        diurnal = BASE_INFLOW_M3H * (1.0 + DIURNAL_AMPLITUDE * math.sin(phase))
        # Ornstein-Uhlenbeck noise: wanders smoothly instead of jumping every step.
        k = min(h / INFLOW_NOISE_TAU_S, 1.0)
        self._noise += -self._noise * k + INFLOW_NOISE_M3H * math.sqrt(2.0 * k) * self._rng.gauss()
        return max(diurnal + self._noise + self._storm(h), 0.0)

    def _storm(self, h: float) -> float:
        idle = self._storm_elapsed >= self._storm_duration
        if idle and self.storm_interval and self._rng.random() < h / self.storm_interval:
            peak = self._rng.uniform(*STORM_PEAK_M3H)
            self.start_storm(peak, self._rng.uniform(*STORM_DURATION_S))
        if self._storm_elapsed >= self._storm_duration:
            return 0.0
        self._storm_elapsed += h
        progress = min(self._storm_elapsed / self._storm_duration, 1.0)
        return self._storm_peak * math.sin(math.pi * progress)

    def _pressure(self) -> float:
        if not any(pump.running for pump in self.pumps):
            return 0.0
        friction = FRICTION_KPA_PER_M3H2 * self.outflow**2
        noise = self._rng.gauss(0.0, PRESSURE_NOISE_KPA)
        return max(STATIC_HEAD_KPA + friction + noise, 0.0)


def _approach(value: float, target: float, max_change: float) -> float:
    if value < target:
        return min(value + max_change, target)
    return max(value - max_change, target)
