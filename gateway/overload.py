"""Overload without collapse: admission of polls, and the word that the gateway is behind.

A box too slow for its load must degrade, not collapse (issue 13). Two pieces:

- ``PollGate`` admits polls. A poll waits until the queues downstream have room (the outbox's
  write queue and its live window, in bytes) and until fewer polls are in flight than the
  gate's current limit, and, once even one poll at a time is too much, no faster than its
  current rate. Waiting here is cheap: no request is sent, no reading exists yet, so nothing
  goes stale while it waits. Limit and rate adapt (additive or gentle increase, multiplicative
  decrease, as TCP's window does) to the event loop's lag, measured every 50 ms: a loop that
  wakes late is saturated, or, under a CPU quota, throttled by the kernel for the rest of its
  period, and then every command and every answer waits too. Keeping the lag under
  ``loop_lag_target`` leaves the box headroom for commands, whatever the offered load; what
  does not fit is shed as polls. The runner counts a poll admitted a period or more late and
  stretches its schedule (``gateway/runner.py``). Commands never pass through the gate.
  Lag is measured after the fact, though: under a CPU quota the kernel freezes the process for
  the rest of a 100 ms period once the quota is spent, and a command arriving then waits for
  it. So the gate also keeps the process's own CPU use under ``cpu_target`` (75 %) of its CPU
  budget (``gateway/cpubudget.py``: the cgroup's quota, or ``gateway.cpu_budget``), measured
  over the last 100 ms, and treats a period the kernel throttled as a hard "too much": it
  paces admissions, evenly spaced, to the rate that fits, before the kernel throttles; and
  raises that rate again while the use is below 90 % of the target (by a few per cent a
  window near it, up to 25 % far below). The gate can pace only polls: a burst of other work
  (twins published and persisted at once, a batch written by the outbox's thread) still
  spends the quota (docs/performance.md measures how much).
- ``OverloadMonitor`` looks once a second at what the runners and queues say, and names the
  cause: ``/health`` and ``/status`` report ``degraded: overloaded: <cause>``, a gauge says
  it, and one log line is written when the state changes (not per poll). It leaves the state
  only after ``settle`` seconds without a cause, so a box at its limit does not flap.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import logging
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Protocol

from citytwin.gateway.turns import Turns

log = logging.getLogger("citytwin.overload")


class Budget(Protocol):
    """What the gate needs of ``gateway/cpubudget.py``'s CpuBudget."""

    @property
    def cores(self) -> float | None: ...  # the budget; None: not controlled

    def sample(self) -> tuple[float, int]:
        """(cores used since the last sample, periods throttled since the last sample)."""
        ...


CPU_TARGET = 0.75  # of the budget: the rest is headroom for commands and bursts within a period
MIN_RATE = 1.0  # polls per second: shedding never stops polling altogether
# paced polls are released in small groups at most this often (a fifth of a CFS period): still
# batched downstream (one outbox commit, one hub publish batch for several), while no period
# gets more than its share
PACE_TICK = 0.02


class PollGate:
    def __init__(self, in_flight: int, room: Callable[[], Awaitable[None]] | None = None,
                 lag_target: float = 0.01, budget: Budget | None = None, cpu_target: float = CPU_TARGET) -> None:
        self._room = room
        self.in_flight_limit = in_flight  # the configured ceiling
        self.limit = in_flight  # the current limit, adapted to the loop's lag
        self.lag_target = lag_target
        self.loop_lag = 0.0  # the event loop's lag, seconds (smoothed)
        self.rate: float | None = None  # admissions per second allowed; None: no rate limit
        self.budget = budget
        self.cpu_target = cpu_target
        self.cpu_use = 0.0  # CPU used / budget over the last two windows (~one CFS period)
        self.cpu_rate: float | None = None  # the admissions per second that fit the CPU budget
        self._lag_rate: float | None = None  # the admissions per second the loop's lag allows
        self.in_flight = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._admitted = 0  # admissions since the last measurement
        self._admit_rate = 0.0  # admissions per second (smoothed)
        self._window: tuple[float, float] | None = None  # the previous window's (CPU cores, admissions/s)
        # pacing: admissions 1/rate apart on average, released by one timer in groups of a
        # tick's worth; re-armed whenever the rate changes (a slot reserved at an old, low
        # rate would hold polls back long after the rate rose again)
        self._paced: collections.deque[asyncio.Future[None]] = collections.deque()
        self._last_paced = -1e9  # loop time of the last paced admission
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._released_at = -1e9  # loop time of the last release by the timer
        self.turns = Turns()  # admitted polls' results take turns on the event loop

    @asynccontextmanager
    async def admit(self, first: bool = False) -> AsyncIterator[None]:
        """Admit one poll. ``first``: a device's first poll goes ahead of those waiting (a device
        that has never reported would otherwise wait behind every other device's next poll,
        and on a box that keeps one poll in ten, 1,000 devices took 44 s to report once)."""
        if self._room is not None:
            await self._room()  # a full queue slows polling; it never grows the heap
        while self.in_flight >= self.limit or self._waiters:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            if first:
                self._waiters.appendleft(future)
            else:
                self._waiters.append(future)
            try:
                await future
            except BaseException:
                if future in self._waiters:
                    self._waiters.remove(future)
                elif future.done() and not future.cancelled():
                    self._wake()  # woken while being cancelled: wake the next one instead
                raise
            if self.in_flight < self.limit:
                break
        self.in_flight += 1
        try:
            if self.rate is not None or self._paced:
                await self._pace(first)  # at most ``limit`` wait here
            self._admitted += 1
            yield
        finally:
            self.in_flight -= 1
            self._wake()

    async def _pace(self, first: bool = False) -> None:
        loop = asyncio.get_running_loop()
        rate = self.rate
        if not self._paced:
            if rate is None:
                return
            now = loop.time()
            credit = max(self._last_paced, now - self._burst(rate) / rate)
            if now >= credit + 1.0 / rate:
                self._last_paced = credit + 1.0 / rate
                return
        future: asyncio.Future[None] = loop.create_future()
        if first:
            self._paced.appendleft(future)
        else:
            self._paced.append(future)
        self._arm()
        try:
            await future
        except BaseException:
            if future in self._paced:
                self._paced.remove(future)
                self._arm()
            raise

    @staticmethod
    def _burst(rate: float) -> float:
        """Admissions released together at most: one tick's worth (at least one)."""
        return max(1.0, rate * PACE_TICK)

    def _arm(self) -> None:
        """(Re-)arm the pacing timer for the next release at the current rate."""
        if not self._paced:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return
        loop = asyncio.get_running_loop()
        if self.rate is None:
            at = loop.time()
        else:
            at = max(self._last_paced + 1.0 / self.rate, self._released_at + PACE_TICK)
        if self._timer is not None:
            if abs(self._timer_at - at) < 1e-4:
                return
            self._timer.cancel()
        self._timer, self._timer_at = loop.call_at(at, self._release), at

    def _release(self) -> None:
        """Release what the rate allows since the last release (a tick's worth at most)."""
        self._timer = None
        now = asyncio.get_running_loop().time()
        self._released_at = now
        rate = self.rate
        if rate is not None:
            # a timer that fired late does not owe a burst: at most one tick of catch-up
            self._last_paced = max(self._last_paced, now - self._burst(rate) / rate)
        while self._paced and (rate is None or now >= self._last_paced + 1.0 / rate - 1e-9):
            future = self._paced.popleft()
            if not future.done():
                future.set_result(None)
                if rate is not None:
                    self._last_paced += 1.0 / rate
        self._arm()

    def _wake(self) -> None:
        room = self.limit - self.in_flight
        while room > 0 and self._waiters:
            future = self._waiters.popleft()
            if not future.done():
                future.set_result(None)
                room -= 1

    async def govern(self, every: float = 0.05) -> None:
        """Adapt limit and rate to the loop's lag and the CPU used, forever (a gateway task).

        ``CITYTWIN_GATE_TRACE=1`` in the environment writes one line per window to stderr (CPU
        ms used, polls admitted, lag, throttled periods, the rates, and the garbage collections
        in the window with their durations): what a benchmark run needs to see where a burst
        came from. Off by default: 20 lines a second."""
        loop = asyncio.get_running_loop()
        trace = _Trace() if os.environ.get("CITYTWIN_GATE_TRACE") else None
        if self.budget is not None:
            self.budget.sample()  # start the first window now
        while True:
            before = loop.time()
            await asyncio.sleep(every)
            elapsed = loop.time() - before
            cores, throttled = self.budget.sample() if self.budget is not None else (None, 0)
            admitted = self._admitted
            self.adjust(max(0.0, elapsed - every), admitted / elapsed, cores, throttled)
            self._admitted = 0
            if trace is not None:
                trace.line(elapsed, cores, admitted, elapsed - every, throttled, self)

    def adjust(self, lag: float, admitted_per_s: float, cpu_cores: float | None = None, throttled: int = 0) -> None:
        """One step of the control loop: the lag just measured, the admissions per second since
        the last step, and the CPU cores used meanwhile with the periods the kernel throttled."""
        self.loop_lag = lag = 0.7 * self.loop_lag + 0.3 * lag
        self._admit_rate = 0.8 * self._admit_rate + 0.2 * admitted_per_s
        if lag > self.lag_target:
            if self.limit > 1:
                self.limit = max(1, self.limit // 2)
            else:  # one poll at a time is still too much: pace them
                current = self._admit_rate if self._lag_rate is None else min(self._lag_rate, self._admit_rate)
                self._lag_rate = max(MIN_RATE, 0.8 * current)
        elif lag < 0.8 * self.lag_target:
            if self._lag_rate is not None:
                self._lag_rate *= 1.1
                if self._lag_rate > 4 * max(self._admit_rate, 1.0):
                    self._lag_rate = None  # no longer what holds polls back
            elif self.limit < self.in_flight_limit:
                self.limit += 1
                self._wake()
        self._keep_under_budget(admitted_per_s, cpu_cores, throttled)
        rates = [r for r in (self._lag_rate, self.cpu_rate) if r is not None]
        rate = min(rates) if rates else None
        if rate != self.rate:
            self.rate = rate
            if self._paced:
                self._arm()

    def _keep_under_budget(self, admitted_per_s: float, cpu_cores: float | None, throttled: int) -> None:
        """Pace admissions so that the CPU used stays under ``cpu_target`` of the budget.

        The use is averaged over this window and the previous one (two 50 ms windows: about one
        CFS period); above the target the rate becomes what the admissions of those windows
        would have been at the target (proportional, at most a 20 % cut a step); a throttled
        period cuts by 20 % whatever the average says (a burst inside a period is as bad).
        A cut starts from the current rate, not from the admissions of the last windows: a burst
        of other work (twins, a flush) that kept polls from being admitted must not collapse the
        rate to nothing."""
        cores = self.budget.cores if self.budget is not None else None
        if cores is None or cpu_cores is None:
            self.cpu_use, self.cpu_rate, self._window = 0.0, None, None
            return
        previous = self._window or (cpu_cores, admitted_per_s)
        self._window = (cpu_cores, admitted_per_s)
        self.cpu_use = use = (previous[0] + cpu_cores) / 2 / cores
        admitted = (previous[1] + admitted_per_s) / 2
        target = self.cpu_target
        if use > target or throttled:
            admitting = max(self._admit_rate, admitted, MIN_RATE)
            base = admitting if self.cpu_rate is None else min(self.cpu_rate, 2 * admitting)
            factor = max(0.8, target / use) if use > target else 1.0
            if throttled:
                factor = min(factor, 0.8)
            self.cpu_rate = max(MIN_RATE, base * factor)
        elif use < 0.9 * target and self.cpu_rate is not None:
            # grow back: slowly near the target, faster the more room there is (at most 25 % a step)
            self.cpu_rate *= min(1.25, 1.0 + 0.5 * (target / max(use, 0.01) - 1.0))
            if self.cpu_rate > 4 * max(self._admit_rate, MIN_RATE):
                self.cpu_rate = None  # no longer what holds polls back

    def congestion(self) -> str | None:
        """Why the gate holds polls back now for CPU, or None (the overload monitor asks)."""
        cores = self.budget.cores if self.budget is not None else None
        if self.cpu_rate is None or cores is None or (self._lag_rate is not None and self._lag_rate < self.cpu_rate):
            return None
        return (f"CPU budget: {self.cpu_use:.0%} of {cores:g} core used, polls paced to {self.cpu_rate:.0f}/s "
                f"to stay under {self.cpu_target:.0%} of it (headroom for commands)")


class _Trace:
    """Per-window lines for ``CITYTWIN_GATE_TRACE`` (see ``PollGate.govern``)."""

    def __init__(self) -> None:
        self.collections: list[str] = []
        self._started: float | None = None
        self._t0 = time.monotonic()
        self._thread_cpu: dict[int, float] = {}
        gc.callbacks.append(self._gc)

    def _gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started is not None:
            self.collections.append(f"gen{info['generation']}:{(time.perf_counter() - self._started) * 1000:.1f}ms")
            self._started = None

    def line(self, elapsed: float, cores: float | None, admitted: int, lag: float, throttled: int,
             gate: PollGate) -> None:
        cpu_ms = (cores or 0.0) * elapsed * 1000
        rate = "-" if gate.rate is None else f"{gate.rate:.0f}"
        cpu_rate = "-" if gate.cpu_rate is None else f"{gate.cpu_rate:.0f}"
        print(f"gate-trace t={time.monotonic() - self._t0:.3f} cpu_ms={cpu_ms:.1f} use={gate.cpu_use:.2f} "
              f"admitted={admitted} lag_ms={lag * 1000:.1f} throttled={throttled} limit={gate.limit} "
              f"rate={rate} cpu_rate={cpu_rate} gc={','.join(self.collections) or '-'} "
              f"threads={self._threads()}", file=sys.stderr, flush=True)
        self.collections.clear()

    def _threads(self) -> str:
        """CPU ms per thread in the window (its own CPU clock), those above 0.5 ms."""
        out = []
        for thread in threading.enumerate():
            ident = thread.ident
            if ident is None:
                continue
            try:
                cpu = time.clock_gettime(time.pthread_getcpuclockid(ident))
            except (OSError, AttributeError):
                continue
            spent = cpu - self._thread_cpu.get(ident, cpu)
            self._thread_cpu[ident] = cpu
            if spent >= 0.0005:
                out.append(f"{thread.name}:{spent * 1000:.1f}")
        return ",".join(out) or "-"


class RunnerState(Protocol):
    late: int

    @property
    def behind(self) -> float: ...


class QueueState(Protocol):
    def congestion(self) -> str | None:
        """Why this queue slows polling now, or None."""
        ...


class OverloadMonitor:
    def __init__(self, runners: Mapping[str, RunnerState], queues: list[QueueState], settle: float = 5.0) -> None:
        self.runners = runners
        self.queues = queues
        self.settle = settle
        self.cause: str | None = None  # set while overloaded
        self.since: float | None = None  # time.time() when it began
        self.episodes = 0
        self._late: dict[str, int] = {}
        self._last_check = time.monotonic()
        self._clear_since: float | None = None

    @property
    def degraded(self) -> str | None:
        return f"overloaded: {self.cause}" if self.cause is not None else None

    def causes(self) -> list[str]:
        now = time.monotonic()
        window = max(now - self._last_check, 1e-3)
        self._last_check = now
        late = devices = 0
        max_lag = 0.0
        seen: dict[str, int] = {}
        for device, runner in self.runners.items():
            seen[device] = runner.late
            delta = runner.late - self._late.get(device, runner.late)
            if delta > 0:
                late += delta
                devices += 1
                max_lag = max(max_lag, runner.behind)
        self._late = seen
        found = []
        if late:
            found.append(f"{late} poll(s) on {devices} device(s) started a period or more late in the last "
                         f"{window:.0f} s (lag up to {max_lag:.1f} s): polls are stretched and the skipped ones counted")
        for queue in self.queues:
            why = queue.congestion()
            if why is not None:
                found.append(why)
        return found

    def check(self) -> None:
        found = self.causes()
        now = time.monotonic()
        if found:
            self._clear_since = None
            cause = "; ".join(found)
            if self.cause is None:
                self.episodes += 1
                self.since = time.time()
                log.warning("degraded: overloaded: %s", cause)
            self.cause = cause
        elif self.cause is not None:
            if self._clear_since is None:
                self._clear_since = now
            elif now - self._clear_since >= self.settle:
                log.info("no longer overloaded (after %.0f s)", time.time() - (self.since or time.time()))
                self.cause = self.since = self._clear_since = None

    async def run(self, every: float = 1.0) -> None:
        while True:
            await asyncio.sleep(every)
            self.check()
