"""Every task the gateway starts is kept here and supervised.

A task that ends with an exception is logged with its traceback the moment it ends (by a
done-callback), counted, and remembered for ``/health`` — never lost in a
``gather(return_exceptions=True)`` or garbage-collected unseen. Stopping cancels the tasks
and waits for each; one that fails while stopping does not keep the others from stopping.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar

log = logging.getLogger("citytwin.tasks")

T = TypeVar("T")


class Tasks:
    def __init__(self, on_crash: Callable[[str, BaseException], None] | None = None) -> None:
        self._tasks: dict[asyncio.Task[Any], str] = {}
        self.crashes: list[tuple[str, str]] = []  # (task name, error) of tasks that died
        self._on_crash = on_crash

    def spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks[task] = name
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        name = self._tasks.pop(task, task.get_name())
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        log.error("task %s crashed: %r", name, exc, exc_info=exc)
        self.crashes.append((name, repr(exc)))
        del self.crashes[:-20]  # the most recent are enough for /health
        if self._on_crash is not None:
            self._on_crash(name, exc)

    def __len__(self) -> int:
        return len(self._tasks)

    async def cancel(self, tasks: Iterable[asyncio.Task[Any]] | None = None, wait: float = 10.0) -> None:
        """Cancel (all, or the given) tasks and wait until each has ended, ``wait`` s at most
        in all: a task that does not end after its cancellation is logged, not waited for."""
        chosen = list(self._tasks) if tasks is None else list(tasks)
        for task in chosen:
            task.cancel()
        if not chosen:
            return
        done, pending = await asyncio.wait(chosen, timeout=wait)
        for task in pending:
            log.error("task %s did not stop within %g s of its cancellation", self._tasks.get(task, task.get_name()), wait)
        for task in done:
            if not task.cancelled():
                task.exception()  # retrieved (and already logged by the done-callback)
