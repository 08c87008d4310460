"""A lock with two classes of waiters: commands go before polls.

A device has one link and one request on it at a time (the runner's lock). Under load the
next poll is usually already waiting for that lock when a command arrives; with a plain
``asyncio.Lock`` (FIFO) the command would wait behind it, and behind every poll queued before
it. Here a waiting command is granted the lock before any waiting poll, so a command waits
at most for the one request in flight: command handling and its device I/O take priority
over telemetry (issue 13). Within one class, waiters are served in arrival order.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager


class PriorityLock:
    def __init__(self) -> None:
        self._held = False
        # lists, not deques: rarely more than a waiter or two, and an empty deque costs ~600 B
        # per device where an empty list costs 56
        self._urgent: list[asyncio.Future[None]] = []
        self._normal: list[asyncio.Future[None]] = []

    @property
    def locked(self) -> bool:
        return self._held

    @property
    def urgent_waiting(self) -> int:
        """Commands waiting for the link: a poll about to start should let them go first."""
        return sum(1 for f in self._urgent if not f.done())

    async def acquire(self, urgent: bool = False) -> None:
        if not self._held and not self._urgent and (urgent or not self._normal):
            self._held = True
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._urgent if urgent else self._normal
        queue.append(future)
        try:
            await future
        except BaseException:
            if future.done() and not future.cancelled():
                self.release()  # granted while being cancelled: pass it on
            elif future in queue:  # release() may have skipped (and dropped) it already
                queue.remove(future)
            raise

    def release(self) -> None:
        self._held = False
        for queue in (self._urgent, self._normal):
            while queue:
                future = queue.pop(0)
                if not future.done():
                    self._held = True
                    future.set_result(None)
                    return

    @asynccontextmanager
    async def hold(self, urgent: bool = False) -> AsyncIterator[None]:
        await self.acquire(urgent)
        try:
            yield
        finally:
            self.release()

    # the runner's two doors
    def command(self) -> AbstractAsyncContextManager[None]:
        return self.hold(urgent=True)

    def poll(self) -> AbstractAsyncContextManager[None]:
        return self.hold(urgent=False)
