"""What every simulator shares: start/stop, used as an async context manager.

Tests, the demo and ``citytwin sim`` all drive simulators the same way, so the context
manager lives here once instead of in every simulator.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable
from types import TracebackType
from typing import Self

MAX_TICK_S = 1.0  # a stalled loop must not turn into one huge physics jump


class Simulator(abc.ABC):
    @abc.abstractmethod
    async def start(self) -> None:
        """Begin serving; raises OSError when the address cannot be used."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop serving and release the address; idempotent."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()


async def tick_forever(step: Callable[[float], None], tick: float) -> None:
    """Call ``step`` with the wall time elapsed (capped), every ``tick`` seconds, until cancelled."""
    loop = asyncio.get_running_loop()
    last = loop.time()
    while True:
        await asyncio.sleep(tick)
        now = loop.time()
        step(min(now - last, MAX_TICK_S))  # wall time, not the nominal tick
        last = now
