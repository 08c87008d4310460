"""In-process watchers of property values and events, for HTTP observers (long-poll).

The data path publishes every report and event here as it hands them to the outbox; a
watcher waits for the next value of one property or the next occurrence of one event. With
nobody watching, publishing costs one dictionary lookup per message.
"""

from __future__ import annotations

import asyncio
from typing import Any

Key = tuple[str, str, str]  # (device, "property" | "event", name)


class Watchers:
    def __init__(self) -> None:
        self._waiting: dict[Key, list[asyncio.Future[Any]]] = {}
        self._devices: dict[str, int] = {}  # device -> number of keys waited on

    def published(self, device: str, kind: str, payload: dict[str, Any]) -> None:
        """A report (``kind`` "report") or an event (``event:<id>``) of one device."""
        if device not in self._devices:
            return
        if kind == "report":
            for name, entry in payload["properties"].items():
                if entry.get("quality") != "bad":
                    self._wake((device, "property", name), entry["value"])
        else:
            self._wake((device, "event", kind.removeprefix("event:")), payload)

    def _wake(self, key: Key, value: Any) -> None:
        waiters = self._waiting.pop(key, None)
        if waiters is None:
            return
        self._forget(key[0])
        for future in waiters:
            if not future.done():
                future.set_result(value)

    async def next(self, device: str, kind: str, name: str, timeout: float) -> Any:
        """The next value (or event payload) published; raises TimeoutError after ``timeout``."""
        key = (device, kind, name)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        waiters = self._waiting.get(key)
        if waiters is None:
            waiters = self._waiting[key] = []
            self._devices[device] = self._devices.get(device, 0) + 1
        waiters.append(future)
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            if not future.done():
                future.cancel()
            current = self._waiting.get(key)
            if current is not None and future in current:
                current.remove(future)
                if not current:
                    del self._waiting[key]
                    self._forget(device)

    def _forget(self, device: str) -> None:
        left = self._devices.get(device, 0) - 1
        if left <= 0:
            self._devices.pop(device, None)
        else:
            self._devices[device] = left
