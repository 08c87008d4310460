"""A shared byte link to a bus of meters, for the polled serial protocols (DL/T 645, CJ/T 188).

Meters sit many to one RS-485 line, reached either through a serial port on this machine
(pyserial configures the port; asyncio reads its file descriptor) or through a serial device
server in transparent mode (a TCP connection whose bytes are the line's bytes). Either way
the line is a bus: only one request may be on the wire at a time, and an answer is only
meaningful to the request before it. So every driver naming the same line shares one
``Line`` (one open port or socket, one lock, one receive buffer), as Modbus RTU does.

A meter that does not answer costs its own timeout under the lock and nothing more: the line
stays open for the others, and the receive buffer is cleared before every request so that a
late answer cannot be taken for the next meter's. Lines are kept per event loop, so tests
that each run their own loop never share one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from citytwin.drivers.base import Driver, Health
from citytwin.drivers.errors import (
    ConnectError,
    ConnectionClosed,
    DecodeError,
    DeviceError,
    DriverError,
    RequestTimeout,
    TransportError,
)
from citytwin.drivers.fields import IntRange, Port, PositiveFloat

T = TypeVar("T")



@dataclass(frozen=True, slots=True)
class LineSpec:
    """Where a line is and how it is set up; ``key`` names it among the drivers sharing it."""

    serial: str | None = None
    host: str | None = None
    port: int | None = None
    baudrate: int = 2400
    parity: str = "E"
    stopbits: int = 1
    bytesize: int = 8
    connect_timeout: float = 3.0

    @property
    def key(self) -> str:
        return f"serial:{self.serial}" if self.serial else f"tcp:{self.host}:{self.port}"

    @property
    def settings(self) -> tuple[int, str, int, int]:
        return (self.baudrate, self.parity, self.stopbits, self.bytesize)

    @property
    def bits_per_byte(self) -> int:
        """Start bit, data bits, parity bit, stop bits: one character's time on the wire."""
        return 1 + self.bytesize + (self.parity != "N") + self.stopbits

    def describe(self) -> str:
        return self.serial if self.serial else f"{self.host}:{self.port} (serial server)"


@dataclass(eq=False)
class Line:
    """One open line: the lock a driver holds for a whole exchange, and the bytes received."""

    spec: LineSpec
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0
    failure: TransportError | None = None
    buffer: bytearray = field(default_factory=bytearray)
    _data: asyncio.Event = field(default_factory=asyncio.Event)
    _close: Callable[[], None] = lambda: None
    _write: Callable[[bytes], None] = lambda data: None
    bytes_sent: int = 0
    bytes_received: int = 0
    _owed: tuple[Callable[[bytearray], Any], float] | None = None  # a cancelled request's answer

    def received(self, data: bytes) -> None:
        self.buffer += data
        self.bytes_received += len(data)
        self._data.set()

    def failed(self, error: TransportError) -> None:
        if self.failure is None:
            self.failure = error
        self._data.set()

    def send(self, data: bytes) -> None:
        """Put ``data`` on the wire (the caller holds ``lock``)."""
        if self.failure is not None:
            raise type(self.failure)(str(self.failure))
        self.buffer.clear()  # whatever arrived so far answers nothing we will ask
        try:
            self._write(data)
        except OSError as exc:
            self.failed(ConnectionClosed(f"{self.spec.describe()}: {exc}"))
            raise ConnectionClosed(f"{self.spec.describe()}: {exc}") from None
        self.bytes_sent += len(data)

    async def exchange(self, request: bytes, scan: Callable[[bytearray], T | None], timeout: float) -> T:
        """Send ``request`` and wait up to ``timeout`` seconds for the answer ``scan`` finds.

        ``scan`` looks at the receive buffer: it removes the awaited answer (and any noise
        before it) and returns it decoded, returns None while more bytes are needed, or raises
        ``DecodeError`` for a broken frame after removing it.
        """
        await self.settle()
        self.send(request)
        return await self.receive(scan, timeout)

    async def settle(self) -> None:
        """Before a request (the caller holds ``lock``): let the answer a cancelled request
        still owes come, or its time run out.

        A task cancelled while its meter answers (the gateway stopping, a device removed, a
        command's time up) ends at once and gives up the lock, but the meter answers all the
        same: on a bus the next request would collide with that answer, and an answer arriving
        after the next request went out would be taken for its own (the same meter asked
        again, say). So the line stays the cancelled request's until its answer or its
        deadline, as if it had not been cancelled; only the task is gone.
        """
        owed, self._owed = self._owed, None
        if owed is None:
            return
        scan, deadline = owed
        with contextlib.suppress(DriverError):  # its answer broken, or its time up: both settle it
            await self.receive(scan, max(0.0, deadline - asyncio.get_running_loop().time()))

    async def receive(self, scan: Callable[[bytearray], T | None], timeout: float) -> T:
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            return await self._receive(scan, deadline, timeout)
        except asyncio.CancelledError:
            self._owed = (scan, deadline)
            raise

    async def _receive(self, scan: Callable[[bytearray], T | None], deadline: float, timeout: float) -> T:
        loop = asyncio.get_running_loop()
        while True:
            if self.failure is not None:
                raise type(self.failure)(str(self.failure))
            found = scan(self.buffer)
            if found is not None:
                return found
            self._data.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise RequestTimeout(f"no answer within {timeout:g} s on {self.spec.describe()}")
            try:
                async with asyncio.timeout(remaining):
                    await self._data.wait()
            except TimeoutError:
                pass

    def close(self) -> None:
        self.failed(ConnectionClosed(f"{self.spec.describe()} closed"))
        self._close()


_LINES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Line]] = weakref.WeakKeyDictionary()
_OPENING: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


async def acquire(spec: LineSpec) -> Line:
    """The open line ``spec`` names, opened now when no driver holds it; one more user."""
    loop = asyncio.get_running_loop()
    lines = _LINES.setdefault(loop, {})
    async with _OPENING.setdefault(loop, asyncio.Lock()):
        line = lines.get(spec.key)
        if line is not None and line.failure is not None:
            line.close()
            line = None  # it failed under another meter: open it afresh
        if line is None:
            line = Line(spec)
            if spec.serial:
                _open_serial(line, loop)
            else:
                await _open_tcp(line)
            lines[spec.key] = line
        elif spec.serial and line.spec.settings != spec.settings:
            raise ConnectError(
                f"{spec.describe()} is open at {line.spec.settings} (baud, parity, stop bits, "
                f"data bits); this meter asks for {spec.settings}"
            )
        line.users += 1
        return line


def release(line: Line) -> None:
    """One user less; the last one closes the line."""
    line.users -= 1
    if line.users > 0 and line.failure is None:
        return
    for lines in _LINES.values():  # a failed line is closed at once: its port is reopened anew
        if lines.get(line.spec.key) is line:
            del lines[line.spec.key]
    line.close()


def _open_serial(line: Line, loop: asyncio.AbstractEventLoop) -> None:
    import serial  # pyserial: sets baud rate, parity and raw mode; asyncio does the I/O

    spec = line.spec
    try:
        port: Any = serial.Serial(
            spec.serial, baudrate=spec.baudrate, bytesize=spec.bytesize, parity=spec.parity,
            stopbits=spec.stopbits, timeout=0, exclusive=True,
        )
    except (OSError, ValueError) as exc:  # SerialException is an OSError
        raise ConnectError(f"cannot open {spec.serial}: {exc}") from None
    port.reset_input_buffer()  # bytes from before we opened it answer nothing we will ask
    fd: int = port.fileno()
    os.set_blocking(fd, False)

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            loop.remove_reader(fd)
            line.failed(ConnectionClosed(f"{spec.serial}: {exc}"))
            return
        if data:
            line.received(data)

    def write(data: bytes) -> None:
        view = memoryview(data)
        while view:  # frames are short: the kernel's buffer takes them at once
            try:
                view = view[os.write(fd, view):]
            except BlockingIOError:
                port.flush()

    def close() -> None:
        loop.remove_reader(fd)
        port.close()

    loop.add_reader(fd, readable)
    line._write, line._close = write, close


class _TcpReceiver(asyncio.Protocol):
    def __init__(self, line: Line) -> None:
        self.line = line

    def data_received(self, data: bytes) -> None:
        self.line.received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        reason = str(exc) if exc else "the serial server closed the connection"
        self.line.failed(ConnectionClosed(f"{self.line.spec.describe()}: {reason}"))


async def _open_tcp(line: Line) -> None:
    spec = line.spec
    assert spec.host is not None and spec.port is not None  # LineConnection checks both
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(spec.connect_timeout):
            transport, _ = await loop.create_connection(lambda: _TcpReceiver(line), spec.host, spec.port)
    except TimeoutError:
        raise ConnectError(f"{spec.describe()}: no connection within {spec.connect_timeout:g} s") from None
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ConnectError(f"{spec.describe()}: {reason}") from None
    line._write = transport.write
    line._close = transport.close


class LineConnection(BaseModel):
    """The line part of a meter's connection: a serial port, or a serial server's TCP port.

    Meters naming the same ``serial`` port (or the same ``host`` and ``port``) share one line;
    on a serial port they must agree on its settings.
    """

    model_config = ConfigDict(extra="forbid")

    serial: Annotated[str | None, Field(min_length=1)] = None
    """the serial device, e.g. /dev/ttyUSB0 (or host and port of a transparent serial server)"""
    host: Annotated[str | None, Field(min_length=1)] = None
    port: Port | None = None
    baudrate: Annotated[int, IntRange(50, 115200)] = 2400
    parity: Literal["N", "E", "O"] = "E"
    """both standards' default is 8E1"""
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    timeout: PositiveFloat = 1.0
    """seconds to wait for the meter's answer to one request"""
    connect_timeout: PositiveFloat = 3.0
    wake_up: Annotated[int, IntRange(0, 4)] = 4
    """FEH bytes sent before each frame to wake the meter's receiver"""

    @model_validator(mode="after")
    def _one_line(self) -> Self:
        if (self.serial is None) == (self.host is None):
            raise PydanticCustomError(
                "meter_line", "give either serial (a serial device) or host and port (a serial server)"
            )
        if self.host is not None and self.port is None:
            raise PydanticCustomError("meter_line", "a serial server needs its TCP port")
        if self.serial is not None and self.port is not None:
            raise PydanticCustomError("meter_line", "port is the serial server's TCP port: not with serial")
        return self

    def line_spec(self) -> LineSpec:
        return LineSpec(
            self.serial, self.host, self.port, self.baudrate, self.parity, self.stopbits,
            self.bytesize, self.connect_timeout,
        )


class LineDriver(Driver):
    """What a polled meter driver on a shared line does alike: hold the line, count, report."""

    def __init__(self, spec: LineSpec, peer: str) -> None:
        self._spec = spec
        self._peer = peer
        self._line: Line | None = None
        self._requests = 0
        self._failures = 0
        self._device_errors = 0
        self._decode_errors = 0
        self._last_error: str | None = None

    async def connect(self) -> None:
        if self._line is not None and self._line.failure is None:
            return  # the line is up: a meter that timed out is simply asked again
        self._drop_line()
        self._line = await acquire(self._spec)

    async def close(self) -> None:
        self._drop_line()

    def _drop_line(self) -> None:
        line, self._line = self._line, None
        if line is not None:
            release(line)

    def _need_line(self) -> Line:
        if self._line is None:
            raise ConnectionClosed(f"{self._peer}: not connected")
        return self._line

    async def _exchange(self, line: Line, request: bytes, scan: Callable[[bytearray], T | None], timeout: float) -> T:
        """One request and its answer (the caller holds ``line.lock``); errors name the meter."""
        self._requests += 1
        try:
            return await line.exchange(request, scan, timeout)
        except TransportError as exc:
            raise type(exc)(f"{self._peer}: {exc}") from None

    def _note(self, exc: DriverError) -> None:
        self._failures += 1
        self._last_error = str(exc)
        if isinstance(exc, DeviceError):
            self._device_errors += 1
        elif isinstance(exc, DecodeError):
            self._decode_errors += 1

    @property
    def health(self) -> Health:
        line = self._line
        return Health(
            connected=line is not None and line.failure is None,
            last_error=self._last_error,
            requests=self._requests,
            failures=self._failures,
            extra={
                "line": self._spec.key,
                "device_errors": self._device_errors,
                "decode_errors": self._decode_errors,
                "line_bytes_sent": line.bytes_sent if line else 0,
                "line_bytes_received": line.bytes_received if line else 0,
            },
        )
