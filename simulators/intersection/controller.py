"""A four-arm intersection's signal controller and its vehicle detectors, as plain state.

No I/O and no clock of its own: ``step(dt)`` advances it by ``dt`` seconds, so the server
ticks it in real time and tests tick it by hand. Two phases per plan (north-south green,
then east-west green), each green followed by yellow and an all-red clearance. Detectors
count vehicles only while their approach is green, at a per-approach flow rate.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field

APPROACHES = ("north", "south", "east", "west")


class Mode(enum.IntEnum):
    AUTO = 0  # cycle the current plan
    FLASH = 1  # every signal flashes yellow
    MANUAL = 2  # hold the current phase until advance()


class Signal(enum.IntEnum):
    RED = 0
    YELLOW = 1
    GREEN = 2
    FLASHING_YELLOW = 3


class Stage(enum.IntEnum):
    GREEN = 0
    YELLOW = 1
    ALL_RED = 2


@dataclass(frozen=True, slots=True)
class Phase:
    name: str
    greens: frozenset[str]
    green_s: float
    yellow_s: float = 3.0
    all_red_s: float = 2.0


def _plan(ns_green: float, ew_green: float) -> tuple[Phase, ...]:
    return (
        Phase("north-south", frozenset({"north", "south"}), ns_green),
        Phase("east-west", frozenset({"east", "west"}), ew_green),
    )


PLANS: dict[int, tuple[Phase, ...]] = {
    1: _plan(30.0, 25.0),  # day
    2: _plan(45.0, 20.0),  # morning peak towards the centre
    3: _plan(15.0, 15.0),  # night
}
FLOW_PER_S: dict[str, float] = {"north": 0.5, "south": 0.45, "east": 0.3, "west": 0.35}
"""vehicles per second crossing each approach's detector while it is green"""

FAULT_LAMP = 1
FAULT_CONFLICT = 2  # conflicting greens detected: the controller falls back to flash
FAULT_DETECTOR = 3


class ControllerError(ValueError):
    """A request the controller refuses in its current state (advance outside manual mode)."""


class OutOfRange(ControllerError):
    """A request naming a plan or mode the controller does not have."""


@dataclass
class Detector:
    count: int = 0
    occupancy: float = 0.0  # percent of the last second the loop was occupied
    _fraction: float = 0.0


@dataclass
class Controller:
    plan: int = 1
    mode: Mode = Mode.AUTO
    phase: int = 0  # index into the plan
    stage: Stage = Stage.GREEN
    elapsed: float = 0.0  # seconds in the current stage
    green_extension: int = 0  # seconds added to every green
    cycles: int = 0
    fault_code: int = 0
    detectors: dict[str, Detector] = field(default_factory=lambda: {a: Detector() for a in APPROACHES})
    seed: int | None = None
    pending_plan: int | None = None  # a new plan takes effect at the end of the cycle
    faults: list[int] = field(default_factory=list)  # raised and not yet reported by the server

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    # -- requests ---------------------------------------------------------------------

    def set_plan(self, plan: int) -> int:
        """Takes effect at the end of the current cycle (at once when flashing or idle)."""
        if plan not in PLANS:
            raise OutOfRange(f"no plan {plan}; plans are {sorted(PLANS)}")
        if self.mode is Mode.FLASH or (self.phase == 0 and self.stage is Stage.GREEN and self.elapsed == 0):
            self.plan, self.pending_plan = plan, None
        else:
            self.pending_plan = plan
        return plan

    def set_mode(self, mode: int) -> Mode:
        try:
            new = Mode(mode)
        except ValueError:
            raise OutOfRange(f"no mode {mode}; modes are 0 auto, 1 flash, 2 manual") from None
        if new is not Mode.FLASH and self.fault_code == FAULT_CONFLICT:
            raise ControllerError("a conflict fault holds the controller in flash; clear faults first")
        if self.mode is Mode.FLASH and new is not Mode.FLASH:  # leave flash through all-red
            self.phase, self.stage, self.elapsed = 0, Stage.ALL_RED, 0.0
        self.mode = new
        return new

    def advance(self) -> None:
        if self.mode is not Mode.MANUAL:
            raise ControllerError("advance needs manual mode")
        if self.stage is Stage.GREEN:
            self.stage, self.elapsed = Stage.YELLOW, 0.0

    def inject_fault(self, code: int) -> None:
        self.fault_code = code
        self.faults.append(code)
        if code == FAULT_CONFLICT:
            self.mode = Mode.FLASH

    def clear_faults(self) -> None:
        self.fault_code = 0

    # -- time -------------------------------------------------------------------------

    @property
    def current(self) -> Phase:
        return PLANS[self.plan][self.phase]

    def stage_length(self) -> float:
        phase = self.current
        if self.stage is Stage.GREEN:
            return phase.green_s + self.green_extension
        return phase.yellow_s if self.stage is Stage.YELLOW else phase.all_red_s

    @property
    def remaining(self) -> float:
        if self.mode is Mode.FLASH or (self.mode is Mode.MANUAL and self.stage is Stage.GREEN):
            return 0.0
        return max(0.0, self.stage_length() - self.elapsed)

    def signal(self, approach: str) -> Signal:
        if self.mode is Mode.FLASH:
            return Signal.FLASHING_YELLOW
        if approach not in self.current.greens or self.stage is Stage.ALL_RED:
            return Signal.RED
        return Signal.GREEN if self.stage is Stage.GREEN else Signal.YELLOW

    def step(self, dt: float) -> None:
        if dt <= 0:
            return
        self._count(dt)
        if self.mode is Mode.FLASH:
            return
        self.elapsed += dt
        while self.elapsed >= self.stage_length():
            if self.mode is Mode.MANUAL and self.stage is Stage.GREEN:
                self.elapsed = min(self.elapsed, self.stage_length())
                return
            self.elapsed -= self.stage_length()
            self._next_stage()

    def _next_stage(self) -> None:
        if self.stage is Stage.GREEN:
            self.stage = Stage.YELLOW
        elif self.stage is Stage.YELLOW:
            self.stage = Stage.ALL_RED
        else:
            self.stage = Stage.GREEN
            self.phase += 1
            if self.phase >= len(PLANS[self.plan]):
                self.phase = 0
                self.cycles += 1
                if self.pending_plan is not None:
                    self.plan, self.pending_plan = self.pending_plan, None

    def _count(self, dt: float) -> None:
        for approach, detector in self.detectors.items():
            green = self.signal(approach) is Signal.GREEN
            if not green:
                detector.occupancy = 0.0
                continue
            expected = FLOW_PER_S[approach] * dt * self._rng.uniform(0.6, 1.4)
            detector._fraction += expected
            arrived = int(detector._fraction)
            detector._fraction -= arrived
            detector.count += arrived
            detector.occupancy = min(100.0, round(FLOW_PER_S[approach] * 30 * self._rng.uniform(0.8, 1.2), 1))
