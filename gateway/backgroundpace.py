"""Background work paced to a share of the CPU budget (issue 13).

The gateway's periodic work besides polling, rendering and publishing the twins that changed
and persisting them, came all at once: 100 twins of 100 properties are ~25 ms of CPU, a whole
100 ms period's quota at a quarter core, so the kernel froze the process for the rest of the
period and a command arriving then waited up to 75 ms. The poll gate can hold back only polls.
This paces the rest: after each small piece of work the caller waits long enough that the
work's own CPU stays under ``share`` of the budget (``gateway/cpubudget.py``), and at least its
share of the spread it was asked to keep. Work that does not fit takes longer: a round of twin
publication then lasts longer than its interval, and the next round coalesces what changed
meanwhile (only the latest document of each twin is ever sent).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

SHARE = 0.2  # of the CPU budget, for background work; the poll gate keeps the total under 75 %


class Cores(Protocol):
    @property
    def cores(self) -> float | None: ...  # the budget in cores; None: not controlled


class BackgroundPace:
    def __init__(self, budget: Cores | None, share: float = SHARE,
                 clock: Callable[[], float] = time.thread_time) -> None:
        self.budget = budget
        self.share = share
        self._clock = clock
        self._started = clock()

    def start(self) -> None:
        """A piece of work begins now (its CPU is measured on this thread until ``pause``)."""
        self._started = self._clock()

    def spent(self) -> float:
        """CPU seconds this thread spent since ``start``."""
        return self._clock() - self._started

    def gap(self, spent: float) -> float:
        """Seconds to wait after ``spent`` seconds of CPU so that it is ``share`` of the budget."""
        cores = self.budget.cores if self.budget is not None else None
        if cores is None or cores <= 0:
            return 0.0
        return spent * (1.0 / (self.share * cores) - 1.0)

    async def pause(self, at_least: float = 0.0, spent: float | None = None) -> None:
        """Wait after the piece of work since ``start``: long enough for its CPU (``spent``, when
        the work awaited something meanwhile and the caller counted its CPU itself, say on a
        store's thread) to be ``share`` of the budget, and at least ``at_least`` seconds."""
        await asyncio.sleep(max(at_least, self.gap(self.spent() if spent is None else spent)))
