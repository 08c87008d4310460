"""What every listener driver shares: claiming its identity on the endpoint's listener,
the link state, link-sink reports, the latest readings and health.

A device that calls in is online while its station is connected and reporting: the driver
says so through the link sink (up when the station connects and identifies, down when it
hangs up or is cut) and delivers readings through the push sink. ``read()`` returns the
latest readings; the runner does not poll listener devices (``polled = False``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from pydantic import SecretStr

from citytwin.drivers.base import Driver, Health, Reading
from citytwin.drivers.errors import BindingError, ConnectError, ConnectionClosed
from citytwin.drivers.listener import Limits, Link, Listener, Station, Wire, acquire, release

log = logging.getLogger("citytwin.drivers.station")


async def load_password(secret: SecretStr | None, path: Path | None) -> str | None:
    """The configured password (never logged): inline, or the first line of a file."""
    if secret is not None:
        return secret.get_secret_value()
    if path is None:
        return None
    try:
        text = await asyncio.to_thread(path.read_text, encoding="utf-8")
    except OSError as exc:
        raise ConnectError(f"cannot read the password file {path}: {exc.strerror or exc}") from None
    return text.strip()


class StationDriver(Driver, Station):
    """Base of the HJ 212 and SL 651 drivers: one instance per configured station."""

    polled: ClassVar[bool] = False
    wire: ClassVar[Wire]

    def __init__(self, host: str, port: int, identity: str, limits: Limits, lenient: bool) -> None:
        self._host, self._port, self._identity = host, port, identity
        self._limits = limits
        self._lenient = lenient
        self._password: str | None = None
        self._listener: Listener | None = None
        self._link: Link | None = None
        self._latest: dict[str, Reading] = {}
        self._last_error: str | None = None
        self._counts: dict[str, int] = {"frames": 0, "duplicates": 0, "refused_password": 0, "connects": 0}
        self._requests = 0
        self._failures = 0

    async def _secret(self) -> str | None:
        return None

    # -- the driver interface -------------------------------------------------------

    async def connect(self) -> None:
        await self.close()
        self._password = await self._secret()
        listener = await acquire(self.wire, self._host, self._port, self._limits)
        try:
            listener.claim(self._identity, self)
        except ConnectError:
            await release(listener)
            raise
        self._listener = listener

    async def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.unclaim(self._identity, self)
            await release(listener)
        link, self._link = self._link, None
        if link is not None:
            link.close("the driver closed")
        self._fail_pending(ConnectionClosed("the driver closed"))

    async def read(self, points: Sequence[str] | None = None) -> list[Reading]:
        if points is None:
            return list(self._latest.values())
        if isinstance(points, str):
            raise BindingError("points must be a sequence of point names, not one string")
        return [self._latest[name] for name in points if name in self._latest]

    @property
    def bound_port(self) -> int | None:
        """The port actually listened on (the configured one, or the ephemeral one for port 0)."""
        return None if self._listener is None else self._listener.port

    @property
    def health(self) -> Health:
        listener = self._listener
        extra: dict[str, Any] = dict(self._counts)
        if listener is not None:
            extra["listener"] = {"endpoint": listener.endpoint, "connections": listener.connections,
                                 **dict(listener.stats)}
        if self._link is not None:
            extra["peer"] = self._link.peer
        return Health(self._link is not None, self._last_error, self._requests, self._failures, extra)

    # -- the listener's side ---------------------------------------------------------

    def password_ok(self, presented: str) -> bool:
        return self._password is None or presented == self._password

    @property
    def lenient_crc(self) -> bool:
        return self._lenient

    def refused(self, reason: str) -> None:
        self._counts["refused_password"] += 1
        self._last_error = reason

    def attached(self, link: Link) -> None:
        self._link = link
        self._counts["connects"] += 1
        log.info("%s: station connected from %s", self._identity, link.peer)
        if self._link_sink is not None:
            self._link_sink(True, None)

    def detached(self, link: Link, reason: str) -> None:
        if self._link is not link:
            return  # an older connection, already replaced
        self._link = None
        self._last_error = reason
        self._fail_pending(ConnectionClosed(f"station {self._identity} hung up: {reason}"))
        if self._link_sink is not None:
            self._link_sink(False, reason)

    def require_link(self) -> Link:
        if self._link is None or self._link.closed is not None:
            raise ConnectionClosed(f"station {self._identity} is not connected")
        return self._link

    def deliver(self, readings: list[Reading]) -> None:
        for reading in readings:
            self._latest[reading.point] = reading
        if readings and self._push_sink is not None:
            self._push_sink(readings)

    def _fail_pending(self, error: Exception) -> None:
        """Fail the commands awaiting an answer; drivers with commands override."""
