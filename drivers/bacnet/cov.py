"""COV subscriptions of one device: subscribe, renew before the lifetime ends, fall back.

Each bound object whose present value is delivered by COV gets one SubscribeCOV, all
under the driver's one subscriber process identifier. A subscription is renewed at half
its lifetime, so a device that restarted (and forgot its subscriptions) is subscribed
again within that half, and a renewal that is lost once still lands before the lifetime
ends. An object whose subscription the device refuses (no COV for that object type, no
room for more subscriptions) or that did not answer is polled by ``read()`` and tried
again after ``cov_retry`` seconds; ``polled`` says which objects are in that state.

Notifications arrive through the shared application; the driver turns them into readings.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from bacpypes3.apdu import SubscribeCOVRequest
from bacpypes3.pdu import Address

from citytwin.drivers.bacnet.binding import BacnetConnection
from citytwin.drivers.bacnet.requests import Requester
from citytwin.drivers.errors import DeviceError, TransportError

log = logging.getLogger("citytwin.drivers.bacnet")

_IN_FLIGHT = 16  # concurrent SubscribeCOV requests to one device


@dataclass(slots=True)
class _State:
    active: bool = False
    due: float = 0.0  # monotonic time of the next (re)subscription
    reason: str | None = None  # why the object is polled instead


class Subscriptions:
    """The COV subscriptions of one driver to one device."""

    def __init__(
        self,
        conn: BacnetConnection,
        peer: Address,
        objects: Iterable[Any],
        process_id: int,
        send: Requester,
        request: Callable[[Any], Any],
    ) -> None:
        self._conn = conn
        self._peer = peer
        self._process_id = process_id
        self._send = send
        self._request = request
        self.states: dict[Any, _State] = {obj: _State() for obj in objects}
        self.renewals = 0
        self.refusals = 0
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    @property
    def renew_after(self) -> float:
        return self._conn.cov_lifetime / 2

    def active(self, obj: Any) -> bool:
        state = self.states.get(obj)
        return state is not None and state.active

    def polled(self) -> list[Any]:
        """Objects whose present value ``read()`` must fetch: not (or no longer) subscribed."""
        return [obj for obj, state in self.states.items() if not state.active]

    def reasons(self, limit: int = 20) -> dict[str, str]:
        """Why objects are polled instead, for health: the first ``limit`` of them."""
        out: dict[str, str] = {}
        for obj, state in self.states.items():
            if state.reason:
                if len(out) == limit:
                    out["…"] = f"{sum(1 for s in self.states.values() if s.reason) - limit} more"
                    break
                out[str(obj)] = state.reason
        return out

    async def start(self) -> None:
        """Subscribes every object once, then keeps renewing in the background."""
        await self._run_due(list(self.states))
        self._task = asyncio.create_task(self._renew_forever(), name=f"bacnet-cov:{self._peer}")

    async def stop(self) -> None:
        """Stops renewing. Nothing is cancelled on the device: a subscription left there ends
        with its lifetime, and cancelling a thousand of them would hold up a reconnect."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for state in self.states.values():
            state.active = False

    async def _gather(self, action: Callable[[Any], Any], objects: list[Any]) -> None:
        gate = asyncio.Semaphore(_IN_FLIGHT)

        async def one(obj: Any) -> None:
            async with gate:
                await action(obj)

        await asyncio.gather(*(one(obj) for obj in objects))

    async def _renew_forever(self) -> None:
        while True:
            now = time.monotonic()
            due = [obj for obj, s in self.states.items() if s.due <= now]
            if due:
                await self._run_due(due)
                continue
            wait = min(s.due for s in self.states.values()) - now
            self._wake.clear()
            try:
                async with asyncio.timeout(max(wait, 0.05)):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _run_due(self, objects: list[Any]) -> None:
        """(Re)subscribes ``objects``; one log line for the round, not one per object."""
        renewing = sum(self.states[obj].active for obj in objects)
        lost = {obj for obj in objects if self.states[obj].active or self.states[obj].reason is None}
        back = {obj for obj in objects if self.states[obj].reason is not None}
        await self._gather(self._subscribe, objects)
        self.renewals += renewing
        failed = [obj for obj in objects if not self.states[obj].active]
        newly = [obj for obj in failed if obj in lost]
        if newly:
            log.warning("%s: COV of %d object(s) not available, polled instead (%s: %s)", self._peer,
                        len(newly), newly[0], self.states[newly[0]].reason)
        regained = [obj for obj in back if self.states[obj].active]
        if regained:
            log.info("%s: COV of %d object(s) subscribed again", self._peer, len(regained))

    async def _subscribe(self, obj: Any) -> None:
        state = self.states[obj]
        conn = self._conn
        request = SubscribeCOVRequest(
            subscriberProcessIdentifier=self._process_id,
            monitoredObjectIdentifier=obj,
            issueConfirmedNotifications=conn.cov_confirmed,
            lifetime=conn.cov_lifetime,
            destination=self._peer,
        )
        try:
            await self._send(self._request(request), f"subscribing to COV of {obj}")
        except (DeviceError, TransportError) as exc:
            state.active = False
            state.reason = str(exc)
            state.due = time.monotonic() + conn.cov_retry
            self.refusals += 1
            return
        state.active, state.reason = True, None
        state.due = time.monotonic() + self.renew_after
