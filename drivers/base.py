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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, NamedTuple


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


class Driver(abc.ABC):
    """One connection to one device; an async context manager."""

    @abc.abstractmethod
    async def connect(self) -> None:
        """Open the link. Raises ``ConnectError`` on failure."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the link; idempotent."""

    @abc.abstractmethod
    async def read(self, points: Sequence[str] | None = None) -> list[Reading]:
        """Read the named points (all bound points when None) in as few requests as possible.

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
