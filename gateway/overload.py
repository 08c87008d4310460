"""Overload without collapse: admission of polls, and the word that the gateway is behind.

A box too slow for its load must degrade, not collapse (issue 13). Two pieces:

- ``PollGate`` admits polls. A poll waits until the queues downstream have room (the outbox's
  write queue and its live window, in bytes) and until fewer polls are in flight than the
  gate's current limit. Waiting here is cheap: no request is sent, no reading exists yet, so
  nothing goes stale while it waits. The limit adapts (additive increase, multiplicative
  decrease, as TCP's window does) to the event loop's lag, measured every 50 ms: a loop that
  wakes late is saturated, or, under a CPU quota, throttled by the kernel for the rest of its
  period, and then every command and every answer waits too. Keeping the lag under
  ``loop_lag_target`` leaves the box headroom for commands, whatever the offered load; what
  does not fit is shed as polls. The runner counts a poll admitted a period or more late and
  stretches its schedule (``gateway/runner.py``). Commands never pass through the gate.
- ``OverloadMonitor`` looks once a second at what the runners and queues say, and names the
  cause: ``/health`` and ``/status`` report ``degraded: overloaded: <cause>``, a gauge says
  it, and one log line is written when the state changes (not per poll). It leaves the state
  only after ``settle`` seconds without a cause, so a box at its limit does not flap.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Protocol

log = logging.getLogger("citytwin.overload")


class PollGate:
    def __init__(self, in_flight: int, room: Callable[[], Awaitable[None]] | None = None,
                 lag_target: float = 0.01) -> None:
        self._room = room
        self.in_flight_limit = in_flight  # the configured ceiling
        self.limit = in_flight  # the current limit, adapted to the loop's lag
        self.lag_target = lag_target
        self.loop_lag = 0.0  # the last measured lag of the event loop, seconds
        self.in_flight = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        if self._room is not None:
            await self._room()  # a full queue slows polling; it never grows the heap
        while self.in_flight >= self.limit or self._waiters:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
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
            yield
        finally:
            self.in_flight -= 1
            self._wake()

    def _wake(self) -> None:
        room = self.limit - self.in_flight
        while room > 0 and self._waiters:
            future = self._waiters.popleft()
            if not future.done():
                future.set_result(None)
                room -= 1

    async def govern(self, every: float = 0.05) -> None:
        """Adapt the limit to the event loop's lag, forever (a gateway task)."""
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(every)
            self.loop_lag = lag = max(0.0, loop.time() - before - every)
            if lag > self.lag_target:
                self.limit = max(1, self.limit // 2)
            elif lag < self.lag_target / 2 and self.limit < self.in_flight_limit:
                self.limit += 1
                self._wake()


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
