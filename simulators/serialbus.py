"""A simulated RS-485 line of meters, served on a pseudo-terminal and over TCP.

The meters' protocol lives in a ``Bus``: bytes in, answer frames out. This module only carries
bytes: a pty (the driver opens its other end as a serial port, as it would /dev/ttyUSB0) and a
TCP port that behaves as a serial device server in transparent mode. Both reach the same
meters, so one simulation can be watched over both transports.

A pty moves bytes at memory speed. To simulate a real line, ``baud`` holds every answer until
the request and the answer would have crossed the wire at that speed (``bits_per_byte``
each: 10 for 8N1, 11 for 8E1), plus the meter's ``turnaround``.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import os
import termios
import tty

from citytwin.simulators.lifecycle import Simulator, tick_forever


class Bus(abc.ABC):
    """The meters on one line: what they answer to the bytes the master sends."""

    @abc.abstractmethod
    def feed(self, buffer: bytearray) -> list[tuple[int, bytes]]:
        """Consume whole requests from ``buffer``; for each, (its size on the wire, the answer
        frame, b"" for none). Leave an incomplete request in the buffer."""

    @abc.abstractmethod
    def step(self, dt: float) -> None:
        """Advance the meters' physics by ``dt`` wall seconds."""


class _Endpoint:
    """One way into the line (the pty, or one TCP client) with its own receive buffer."""

    def __init__(self, line: SerialLineSimulator, write: object) -> None:
        self.line = line
        self.buffer = bytearray()
        self.write = write
        self.busy_until = 0.0

    def received(self, data: bytes) -> None:
        self.buffer += data
        loop = asyncio.get_running_loop()
        for request_size, answer in self.line.bus.feed(self.buffer):
            if not answer:
                continue
            delay = self.line.turnaround
            if self.line.baud:
                wire = (request_size + len(answer)) * self.line.bits_per_byte / self.line.baud
                start = max(loop.time(), self.busy_until)
                self.busy_until = start + wire + self.line.turnaround
                delay = self.busy_until - loop.time()
            if delay > 0:
                loop.call_later(delay, self._send, answer)
            else:
                self._send(answer)

    def _send(self, data: bytes) -> None:
        self.write(data)  # type: ignore[operator]


class _TcpClient(asyncio.Protocol):
    def __init__(self, line: SerialLineSimulator) -> None:
        self.line = line
        self.endpoint: _Endpoint | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.endpoint = _Endpoint(self.line, transport.write)
        self.line.clients.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.line.clients = {c for c in self.line.clients if not c.is_closing()}

    def data_received(self, data: bytes) -> None:
        assert self.endpoint is not None
        self.endpoint.received(data)


class SerialLineSimulator(Simulator):
    """Serve ``bus`` on a new pty (``pty=True``: its path is ``device``, and ``link`` names a
    symlink to it) and/or on TCP ``host:port`` (port 0: any free port, see ``tcp_port``)."""

    def __init__(
        self,
        bus: Bus,
        pty: bool = True,
        link: str | None = None,
        host: str | None = None,
        port: int = 0,
        baud: int | None = None,
        bits_per_byte: int = 10,
        turnaround: float = 0.0,
        tick: float = 0.2,
    ) -> None:
        self.bus = bus
        self.pty, self.link, self.host, self.port = pty, link, host, port
        self.baud, self.bits_per_byte, self.turnaround = baud, bits_per_byte, turnaround
        self.tick = tick
        self.device: str | None = None
        self.tcp_port: int | None = None
        self._fds: tuple[int, int] | None = None
        self._server: asyncio.Server | None = None
        self._physics: asyncio.Task[None] | None = None
        self.clients: set[asyncio.Transport] = set()

    async def start(self) -> None:
        if self._physics is not None:
            raise RuntimeError("simulator already started")
        loop = asyncio.get_running_loop()
        if self.pty:
            master, slave = os.openpty()
            tty.setraw(slave, termios.TCSANOW)  # no echo, no line editing: a plain wire
            os.set_blocking(master, False)
            # the slave stays open here too: without it the master reads EIO between drivers
            self._fds = (master, slave)
            self.device = os.ttyname(slave)
            if self.link:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.link)
                os.symlink(self.device, self.link)
            endpoint = _Endpoint(self, lambda data: self._pty_write(master, data))
            loop.add_reader(master, self._pty_readable, master, endpoint)
        if self.host is not None:
            self._server = await loop.create_server(lambda: _TcpClient(self), self.host, self.port)
            self.tcp_port = self._server.sockets[0].getsockname()[1]
        self._physics = asyncio.create_task(tick_forever(self.bus.step, self.tick), name="meter-line-physics")

    @staticmethod
    def _pty_readable(master: int, endpoint: _Endpoint) -> None:
        try:
            data = os.read(master, 4096)
        except (BlockingIOError, OSError):
            return
        endpoint.received(data)

    @staticmethod
    def _pty_write(master: int, data: bytes) -> None:
        with contextlib.suppress(BlockingIOError, OSError):  # nobody reads: the wire drops it
            os.write(master, data)

    async def stop(self) -> None:
        physics, self._physics = self._physics, None
        if physics is not None:
            physics.cancel()
            await asyncio.wait([physics])
        fds, self._fds = self._fds, None
        if fds is not None:
            asyncio.get_running_loop().remove_reader(fds[0])
            for fd in fds:
                os.close(fd)
            if self.link:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.link)
        server, self._server = self._server, None
        if server is not None:
            server.close()
            for client in self.clients:
                client.close()  # a serial server restarting drops its TCP client
            self.clients.clear()
            await server.wait_closed()
