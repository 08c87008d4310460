"""Overload without collapse: admission of polls, and the word that the gateway is behind.

A box too slow for its load must degrade, not collapse (issue 13). Two pieces:

- ``PollGate`` admits polls. A poll waits until the queues downstream have room (the outbox's
  write queue and its live window, in bytes) and until fewer than ``max_polls_in_flight`` polls
  are in flight. Waiting here is cheap: no request is sent, no reading exists yet, so nothing
  goes stale while it waits, and a saturated event loop never holds more than that many
  answers at once. The runner counts a poll admitted a period or more late, and stretches its
  schedule (``gateway/runner.py``). Commands never pass through the gate.
- ``OverloadMonitor`` looks once a second at what the runners and queues say, and names the
  cause: ``/health`` and ``/status`` report ``degraded: overloaded: <cause>``, a gauge says
  it, and one log line is written when the state changes (not per poll). It leaves the state
  only after ``settle`` seconds without a cause, so a box at its limit does not flap.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Protocol

log = logging.getLogger("citytwin.overload")


class PollGate:
    def __init__(self, in_flight: int, room: Callable[[], Awaitable[None]] | None = None) -> None:
        self._slots = asyncio.Semaphore(in_flight)
        self._room = room
        self.in_flight_limit = in_flight
        self.in_flight = 0

    @asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        if self._room is not None:
            await self._room()  # a full queue slows polling; it never grows the heap
        async with self._slots:
            self.in_flight += 1
            try:
                yield
            finally:
                self.in_flight -= 1


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
