"""The one driver interface every protocol implements.

A driver instance is one connection to one device. It speaks its protocol and nothing
else: it receives its point bindings as plain data at construction, reads them in as few
requests as it can, writes raw values, and reports faults as ``drivers.errors`` types.
Scheduling, scaling, range checks, on-change filtering, online/offline and retries of
whole polls belong to the gateway, never to a driver (as in EdgeX's ``ProtocolDriver``).
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, NamedTuple


class Quality(enum.StrEnum):
    GOOD = "good"
    UNCERTAIN = "uncertain"
    BAD = "bad"


class Reading(NamedTuple):
    """One point's raw value as read; ``error`` says why when quality is not good."""

    point: str
    value: Any
    ts: int  # source timestamp, epoch milliseconds
    quality: Quality
    error: str | None = None


@dataclass(slots=True)
class Health:
    """What the driver knows about its link, for status pages and metrics."""

    connected: bool = False
    last_error: str | None = None
    requests: int = 0
    failures: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


PushSink = Callable[[Sequence[Reading]], None]
"""Where a driver delivers readings it receives unasked (subscriptions, observe, southbound MQTT)."""

LinkSink = Callable[[bool, "str | None"], None]
"""Where a driver says its link came up (True) or went down (False, with the reason) between
calls: a listener's device connecting or hanging up, a subscription lost. Polled drivers
need not call it; their ``read`` raising is the signal."""


class Driver(abc.ABC):
    """One connection to one device; an async context manager.

    Polled protocols implement ``read``; protocols that push (OPC UA subscriptions, CoAP
    observe, device MQTT) deliver readings through the sink the gateway hands over with
    ``set_push_sink`` — the same path, transforms and checks as polled readings. Devices
    that call in (listener drivers: HJ 212, SL 651) set ``polled = False``: the gateway's
    runner then never calls ``read`` on a schedule, and the device is online while it
    reports. Optional capabilities sit apart from this core: ``Invokable`` (callable
    operations). Every call is made by the device's runner, one at a time.
    """

    polled: ClassVar[bool] = True
    read_vouches_for_push: ClassVar[bool] = True
    """Whether a ``read`` that succeeds vouches for the points the driver pushes (see ``read``).

    True where the link is the device's own and would end with the subscription (OPC UA
    monitored items, CoAP observe). False where the link is a broker's and says nothing about
    the device (device MQTT: the broker stays up while a device has gone quiet): the gateway
    then counts a pushed value as confirmed only when it arrived, so it goes stale with the
    device's silence instead of looking fresh on every poll."""
    _push_sink: PushSink | None = None
    _link_sink: LinkSink | None = None

    def set_push_sink(self, sink: PushSink | None) -> None:
        """Called by the gateway before ``connect``; push drivers send readings to it."""
        self._push_sink = sink

    def set_link_sink(self, sink: LinkSink | None) -> None:
        """Called by the gateway before ``connect``; drivers report link changes between calls."""
        self._link_sink = sink

    @abc.abstractmethod
    async def connect(self) -> None:
        """Open the link. Raises ``ConnectError`` on failure."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the link; idempotent."""

    @abc.abstractmethod
    async def read(self, points: Sequence[str] | None = None) -> list[Reading]:
        """Read the named points (all polled points when None) in as few requests as possible.

        A driver may leave out of ``read(None)`` the points it receives by subscription (OPC UA
        monitored items, CoAP observe, device MQTT): their values arrive through the push sink.
        When ``read_vouches_for_push`` is true, a read that succeeds vouches that those
        subscriptions are alive (the gateway counts their values as confirmed then, for the age
        interlocks check); when false, only the readings a read returns are confirmed by it.

        Raises ``TransportError`` when the device cannot be reached at all. A request the
        device answers with an error, or an answer that cannot be decoded, yields readings
        of quality BAD with the reason in ``error`` for the points it covered.
        """

    @abc.abstractmethod
    async def write(self, values: Mapping[str, Any]) -> None:
        """Write raw values to the named points, in order. Raises a ``DriverError`` on failure."""

    @property
    @abc.abstractmethod
    def health(self) -> Health:
        """The link's current health."""

    async def __aenter__(self) -> Driver:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class Invokable(abc.ABC):
    """Capability: the device has callable operations (OPC UA methods, CoAP POST, MQTT
    request/reply). Services of drivers without it are bound to writes."""

    @abc.abstractmethod
    async def invoke(self, call: Any, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Run one device operation described by ``call`` (the driver's own call binding).

        Returns the operation's outputs; raises a ``DriverError`` on failure.
        """
