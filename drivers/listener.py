"""One shared TCP listener per endpoint for devices that call in (HJ 212, SL 651).

Stations connect out to the centre; many share one port. Each device's driver instance
claims its identity (HJ 212 ``MN``; SL 651 station address) on the listener of its
endpoint in ``connect()``; the first claim starts the server, the last release stops it
(reference-counted, module-level registry). Each accepted connection is identified by its
first valid frame and bound to the one driver that claimed that identity; an identity no
device claims is refused (logged once per identity), a wrong password refused and counted.

Every connection is bounded on its own, so one misbehaving station never affects another:
a frame must complete within ``frame_timeout`` of its first byte (slowloris), a connection
must identify itself within ``ident_timeout`` and then report within ``idle_timeout``, the
receive buffer holds at most one maximal frame, and a connection that sends more than
``max_garbage`` bytes or ``max_bad_frames`` bad frames since its last good one is cut.
Answers are written without waiting; a peer that does not read its answers (more than
``max_write_buffer`` bytes queued) is cut.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from citytwin.drivers.errors import ConnectError, ConnectionClosed

log = logging.getLogger("citytwin.drivers.listener")

_MAX_LOGGED_UNKNOWN = 10_000


class Deframer(Protocol):
    """Bytes in, frames (or FrameErrors, with a ``kind``) out; ``pending`` bytes buffered."""

    @property
    def pending(self) -> int: ...

    def feed(self, data: bytes) -> list[Any]: ...


@dataclass(frozen=True, slots=True)
class Wire:
    """What the listener needs of a protocol: its deframer, and who a frame says it is."""

    name: str
    deframer: Callable[[Limits], Deframer]
    identity: Callable[[Any], tuple[str, str]]  # frame -> (identity, presented password)
    is_error: Callable[[Any], bool]
    crc_ok: Callable[[Any], bool]


@dataclass(frozen=True, slots=True)
class Limits:
    frame_timeout: float = 10.0
    ident_timeout: float = 30.0
    idle_timeout: float = 600.0
    max_frame: int = 16 * 1024
    max_garbage: int = 64 * 1024
    max_bad_frames: int = 32
    max_connections: int = 10_000
    max_write_buffer: int = 256 * 1024


class Station(abc.ABC):
    """The listener's view of a device's driver."""

    @abc.abstractmethod
    def password_ok(self, presented: str) -> bool: ...

    @property
    @abc.abstractmethod
    def lenient_crc(self) -> bool: ...

    @abc.abstractmethod
    def attached(self, link: Link) -> None:
        """A connection identified as this station (it replaces any earlier one)."""

    @abc.abstractmethod
    def detached(self, link: Link, reason: str) -> None: ...

    @abc.abstractmethod
    def received(self, link: Link, frame: Any) -> None:
        """A valid frame from this station; called on the connection's task, must not block."""

    @abc.abstractmethod
    def refused(self, reason: str) -> None:
        """A connection claiming this identity was refused (wrong password)."""


class Link:
    """One accepted connection, as the bound driver sees it."""

    def __init__(self, writer: asyncio.StreamWriter, peer: str, max_write_buffer: int) -> None:
        self._writer = writer
        self.peer = peer
        self.identity: str | None = None
        self.closed: str | None = None
        self._max_write_buffer = max_write_buffer

    def send(self, data: bytes) -> None:
        if self.closed is not None or self._writer.is_closing():
            raise ConnectionClosed(f"station at {self.peer} is gone: {self.closed or 'connection closed'}")
        self._writer.write(data)
        if self._writer.transport.get_write_buffer_size() > self._max_write_buffer:
            self.close("the station does not read its answers")
            raise ConnectionClosed(f"station at {self.peer} does not read: connection cut")

    async def drain(self, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                await self._writer.drain()
        except (TimeoutError, ConnectionError) as exc:
            self.close(f"sending failed: {exc or 'timeout'}")
            raise ConnectionClosed(f"sending to the station at {self.peer} failed") from None

    def close(self, reason: str) -> None:
        if self.closed is None:
            self.closed = reason
        self._writer.close()


@dataclass(eq=False)
class Listener:
    """The server of one endpoint; ``stats`` counts what happened on it, by kind."""

    wire: Wire
    host: str
    port: int
    limits: Limits
    users: int = 0
    claims: dict[str, Station] = field(default_factory=dict)
    bound: dict[str, Link] = field(default_factory=dict)
    stats: Counter[str] = field(default_factory=Counter)
    _server: asyncio.Server | None = None
    _links: set[Link] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _unknown_logged: set[str] = field(default_factory=set)

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def connections(self) -> int:
        return len(self._links)

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(
                self._accept, self.host, self.port, reuse_address=True, backlog=4096
            )
        except OSError as exc:
            raise ConnectError(f"cannot listen on {self.endpoint}: {exc.strerror or exc}") from None
        if self.port == 0:  # tests: an ephemeral port, reported back through ``bound_port``
            self.port = self._server.sockets[0].getsockname()[1]
        log.info("%s listener on %s", self.wire.name, self.endpoint)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for link in list(self._links):
            link.close("the listener stopped")
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        log.info("%s listener on %s stopped", self.wire.name, self.endpoint)

    def claim(self, identity: str, station: Station) -> None:
        holder = self.claims.get(identity)
        if holder is not None and holder is not station:
            raise ConnectError(f"{self.wire.name} identity {identity!r} on {self.endpoint} is claimed by another device")
        self.claims[identity] = station

    def unclaim(self, identity: str, station: Station) -> None:
        if self.claims.get(identity) is station:
            del self.claims[identity]
            link = self.bound.get(identity)
            if link is not None:
                link.close("the device was removed")

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        finally:
            self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else str(peername)
        if len(self._links) >= self.limits.max_connections:
            self.stats["refused_full"] += 1
            writer.close()
            return
        link = Link(writer, peer, self.limits.max_write_buffer)
        self._links.add(link)
        self.stats["connections"] += 1
        station: Station | None = None
        reason = "the station closed the connection"
        try:
            station, reason = await self._converse(reader, link)
        except ConnectionError as exc:
            reason = f"connection broken: {exc}"
        finally:
            self._links.discard(link)
            identity = link.identity
            if identity is not None and self.bound.get(identity) is link:
                del self.bound[identity]
            link.close(reason)
            if station is not None:
                station.detached(link, link.closed or reason)

    async def _converse(self, reader: asyncio.StreamReader, link: Link) -> tuple[Station | None, str]:
        limits = self.limits
        loop = asyncio.get_running_loop()
        deframer = self.wire.deframer(limits)
        station: Station | None = None
        opened = last_good = loop.time()
        partial_since: float | None = None
        bad = 0
        garbage_mark = 0
        while True:
            now = loop.time()
            deadline = last_good + limits.idle_timeout if station else opened + limits.ident_timeout
            if partial_since is not None:
                deadline = min(deadline, partial_since + limits.frame_timeout)
            try:
                async with asyncio.timeout(max(deadline - now, 0)):
                    data = await reader.read(65536)
            except TimeoutError:
                if partial_since is not None and loop.time() >= partial_since + limits.frame_timeout:
                    self.stats["frame_timeouts"] += 1
                    return station, f"a frame took longer than {limits.frame_timeout:g} s (cut)"
                self.stats["idle_timeouts"] += 1
                if station is None:
                    return station, f"no valid frame within {limits.ident_timeout:g} s (cut)"
                return station, f"silent for {limits.idle_timeout:g} s (cut)"
            if not data:
                return station, link.closed or "the station closed the connection"
            frames = deframer.feed(data)
            now = loop.time()
            if deframer.pending > limits.max_frame:
                self.stats["overflow"] += 1
                return station, f"a frame exceeds {limits.max_frame} bytes (cut)"
            completed = False
            for item in frames:
                if self.wire.is_error(item):
                    kind = getattr(item, "kind", "format")
                    self.stats[f"bad_{kind}"] += 1
                    bad += 1
                    if kind != "garbage" and station is not None:
                        log.debug("%s %s: %s", self.wire.name, link.identity, item)
                    continue
                identity, password = self.wire.identity(item)
                if station is None:
                    claimant = self.claims.get(identity)
                    if claimant is None:
                        self.stats["unknown_identity"] += 1
                        if identity not in self._unknown_logged and len(self._unknown_logged) < _MAX_LOGGED_UNKNOWN:
                            self._unknown_logged.add(identity)
                            log.warning("%s listener %s: refused %s from %s: no device claims it",
                                        self.wire.name, self.endpoint, identity, link.peer)
                        return None, f"unknown identity {identity}"
                    if not self._accept_crc(claimant, item):
                        bad += 1
                        continue
                    if not claimant.password_ok(password):
                        self.stats["bad_password"] += 1
                        claimant.refused(f"wrong password from {link.peer}")
                        log.warning("%s listener %s: refused %s from %s: wrong password",
                                    self.wire.name, self.endpoint, identity, link.peer)
                        return None, "wrong password"
                    station = claimant
                    link.identity = identity
                    previous = self.bound.get(identity)
                    if previous is not None:
                        previous.close("replaced by a new connection of the same station")
                    self.bound[identity] = link
                    station.attached(link)
                elif identity != link.identity:
                    self.stats["identity_mismatch"] += 1
                    bad += 1
                    continue
                elif not self._accept_crc(station, item):
                    bad += 1
                    continue
                elif not station.password_ok(password):
                    self.stats["bad_password"] += 1
                    station.refused(f"wrong password from {link.peer}")
                    return station, "wrong password"
                self.stats["frames"] += 1
                bad, garbage_mark, last_good, completed = 0, getattr(deframer, "garbage", 0), now, True
                try:
                    station.received(link, item)
                except Exception:  # a driver bug must not take the connection (or others) down
                    self.stats["driver_errors"] += 1
                    log.exception("%s %s: error handling a frame", self.wire.name, identity)
                if link.closed is not None:
                    return station, link.closed
            if deframer.pending == 0:
                partial_since = None
            elif partial_since is None or completed:
                partial_since = now
            garbage = getattr(deframer, "garbage", 0) - garbage_mark
            if bad > limits.max_bad_frames or garbage > limits.max_garbage:
                self.stats["cut_for_garbage"] += 1
                return station, f"{bad} bad frames and {garbage} bytes of garbage since the last good frame (cut)"

    def _accept_crc(self, station: Station, item: Any) -> bool:
        if self.wire.crc_ok(item):
            return True
        if station.lenient_crc:
            self.stats["crc_accepted_leniently"] += 1
            return True
        self.stats["bad_crc"] += 1
        return False


_LISTENERS: dict[tuple[str, int], Listener] = {}
_LOCKS: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}


def _lock() -> asyncio.Lock:
    """One lock per event loop (tests run one loop per test; a lock cannot cross loops)."""
    loop = asyncio.get_running_loop()
    lock = _LOCKS.get(loop)
    if lock is None:
        for old in [k for k in _LOCKS if k.is_closed()]:
            del _LOCKS[old]
        lock = _LOCKS[loop] = asyncio.Lock()
    return lock


async def acquire(wire: Wire, host: str, port: int, limits: Limits) -> Listener:
    """The listener of ``host:port``, started by the first user; the first user's limits hold."""
    async with _lock():
        listener = _LISTENERS.get((host, port))
        if listener is not None and listener.wire.name != wire.name:
            raise ConnectError(f"{host}:{port} already serves {listener.wire.name}, not {wire.name}")
        if listener is None:
            listener = Listener(wire, host, port, limits)
            await listener.start()
            _LISTENERS[(host, port)] = listener
            if port == 0:
                _LISTENERS[(host, listener.port)] = listener
        listener.users += 1
        return listener


async def release(listener: Listener) -> None:
    """One user fewer; the last one stops the server."""
    async with _lock():
        listener.users -= 1
        if listener.users > 0:
            return
        for key in [k for k, v in _LISTENERS.items() if v is listener]:
            del _LISTENERS[key]
    with contextlib.suppress(Exception):
        await listener.stop()


def active() -> list[Listener]:
    """The running listeners (status pages, tests)."""
    return list({id(v): v for v in _LISTENERS.values()}.values())
