"""Modbus TCP driver on pymodbus 3.16's asyncio client.

pymodbus does the framing and PDU encoding; this module owns everything around it:
the link (one fresh client per ``connect()``, pymodbus's own reconnect disabled so the
gateway's device runner owns backoff), per-request timeouts, and the translation of every
pymodbus outcome into ``drivers.errors`` and reading qualities. Two pymodbus hooks make
failures fast instead of waiting out the timeout: ``trace_connect`` fails the request in
flight when the peer drops the link, and ``trace_packet`` screens each answer with
``frames.frame_problem`` before pymodbus parses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any, cast

from pymodbus.client import AsyncModbusTcpClient, ModbusBaseClient
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU

from citytwin.drivers.base import Driver, Health, Quality, Reading
from citytwin.drivers.errors import (
    BindingError,
    ConnectError,
    ConnectionClosed,
    DecodeError,
    DeviceError,
    DriverError,
    RequestTimeout,
    TransportError,
)
from citytwin.drivers.modbus.binding import ModbusLink, ModbusPoint, ModbusTcpConnection
from citytwin.drivers.modbus.codec import (
    BIT_TABLES,
    WRITABLE_TABLES,
    BadValue,
    Table,
    bit_mask,
    encode_bit,
    encode_registers,
    encode_string,
)
from citytwin.drivers.modbus.frames import frame_problem
from citytwin.drivers.modbus.plan import ReadBlock, SharedPlan, shared_plan

# Every exception code of the Modbus application protocol (V1.1b3, section 7), and 7,
# which older devices still send. Code 9 is not assigned.
EXCEPTION_NAMES: dict[int, str] = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge: accepted, but still processing; ask again later",
    6: "server device busy: try again later",
    7: "negative acknowledge: the device cannot perform the request",
    8: "memory parity error in the device's extended memory",
    10: "gateway path unavailable: the gateway has no path to the unit",
    11: "gateway target device failed to respond: the unit behind the gateway is silent",
}
_READ_FUNCTION = {"coil": 1, "discrete_input": 2, "holding_register": 3, "input_register": 4}

Call = Callable[[ModbusBaseClient], Awaitable[ModbusPDU]]


def exception_reason(code: int, what: str) -> str:
    """E.g. ``modbus exception 2 (illegal data address) reading input_register 0..9``."""
    name = EXCEPTION_NAMES.get(code, "not a standard exception code")
    return f"modbus exception {code} ({name}) {what}"


@dataclass(frozen=True, slots=True)
class _Write:
    """One point's write, checked and encoded before anything is sent."""

    what: str
    table: Table
    address: int
    words: tuple[int, ...] = ()
    state: bool = False
    """a coil's new state, or a bit's inside a register"""
    mask: int = 0
    """a bit inside a holding register: the register bits (as sent) that hold it"""
    mask_write: bool = False
    verify: bool = False


def _read_call(block: ReadBlock, unit: int) -> Call:
    # made per request, not kept in the plan: devices of any unit id share one plan
    start, count, table = block.start, block.count, block.table
    if table == "holding_register":
        return lambda c: c.read_holding_registers(start, count=count, device_id=unit)
    if table == "input_register":
        return lambda c: c.read_input_registers(start, count=count, device_id=unit)
    if table == "coil":
        return lambda c: c.read_coils(start, count=count, device_id=unit)
    return lambda c: c.read_discrete_inputs(start, count=count, device_id=unit)


def _answer_problem(block: ReadBlock, answer: ModbusPDU) -> str | None:
    function = _READ_FUNCTION[block.table]
    if answer.function_code != function:
        return f"function code {answer.function_code} in the answer, expected {function}"
    if block.table in BIT_TABLES:
        expected = (block.count + 7) // 8
        if len(answer.bits) != expected * 8:
            return f"{len(answer.bits) // 8} bytes of bits, expected {expected}"
    elif len(answer.registers) != block.count:
        return f"{len(answer.registers)} of {block.count} registers"
    return None


def _os_reason(exc: OSError) -> str:
    # asyncio's "Connect call failed ('h', p)" hides the errno's text
    if exc.errno and not isinstance(exc, socket.gaierror):
        return os.strerror(exc.errno)
    return str(exc)


def _show(value: object) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(f"0x{word:04X}" for word in value) + "]"
    return repr(value)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _good_readings(names: tuple[str, ...], values: tuple[Any, ...], ts: int) -> list[Reading]:
    # tuple.__new__ skips the NamedTuple's Python-level __new__: twice as fast per point
    fields = zip(names, values, repeat(ts), repeat(Quality.GOOD), repeat(None))
    return cast(list[Reading], list(map(tuple.__new__, repeat(Reading), fields)))


class ModbusTcpDriver(Driver):
    """One Modbus TCP connection to one device (one unit id).

    ``read()`` runs a precomputed plan of coalesced requests (see ``plan.plan_reads``);
    readings come in plan order (by table, then address), one per point. A Modbus
    exception or a malformed answer makes that request's points BAD and keeps the link;
    a timeout or a broken link drops the link and raises a ``TransportError``, after which
    ``connect()`` may be called again. A request cancelled while its answer is owed drops
    the link too (the late answer has nobody to go to).

    Unit 0 is the broadcast address (connections allow it only with ``broadcast_writes``):
    writes are sent without waiting for an answer, nothing is read, and a point that needs
    an answer (read-back verification, read-modify-write of a bit) is refused here.

    Memory: a gateway may run thousands of these from one template, so a driver keeps the
    ``points`` mapping it is given (never copied, never changed: many drivers may be handed
    the same one), takes its compiled read plan from ``plan.shared_plan`` (one per distinct
    set of bindings, with no unit id or connection in it), and creates its write lock on the
    first ``write()``.
    """

    _framer = FramerType.SOCKET

    def __init__(self, connection: ModbusLink, points: Mapping[str, ModbusPoint]) -> None:
        self._conn = connection
        self._points = points  # read only: may be shared with other drivers
        self._broadcast = connection.unit == 0
        if self._broadcast:
            self._check_broadcast_points()
        self._peer = self._describe(connection)
        self._plan: SharedPlan = shared_plan(
            points, connection.max_gap, connection.max_registers, connection.max_bits
        )
        self._plan_all: tuple[ReadBlock, ...] = self._plan.blocks
        self._client: ModbusBaseClient | None = None
        self._generation = 0  # bumped whenever a client is discarded: silences its hooks
        self._lock = asyncio.Lock()  # one request at a time on the link
        # one write() at a time, so read-modify-write is atomic; made by the first write()
        self._write_lock: asyncio.Lock | None = None
        self._in_flight = False
        self._last_error: str | None = None
        self._requests = 0
        self._failures = 0
        self._timeouts = 0
        self._exceptions = 0
        self._decode_errors = 0
        self._connects = 0

    # -- link -------------------------------------------------------------------------

    @staticmethod
    def _describe(connection: ModbusLink) -> str:
        assert isinstance(connection, ModbusTcpConnection)
        return f"{connection.host}:{connection.port}"

    async def connect(self) -> None:
        self._discard_client(ConnectionClosed("reconnecting"))
        self._generation += 1
        generation = self._generation
        conn = self._conn
        assert isinstance(conn, ModbusTcpConnection)
        client = AsyncModbusTcpClient(
            conn.host,
            framer=self._framer,
            port=conn.port,
            name=self._peer,
            reconnect_delay=0,  # 0 disables pymodbus's own reconnect task
            # no wait of pymodbus's own: ours (``_exchange``) governs. Given a timeout, pymodbus
            # awaits the answer in asyncio.wait_for, which on Python 3.11 swallows a cancellation
            # that meets the answer in one loop turn: the device task then ran on for 10 s past
            # the gateway's shutdown, polling. With None it awaits the answer directly
            # (pymodbus 3.16, TransactionManager.execute).
            timeout=None,  # type: ignore[arg-type]
            retries=0,
            trace_packet=lambda sending, data: self._trace_packet(generation, sending, data),
            trace_connect=lambda connected: self._on_connect(generation, connected),
        )
        loop = asyncio.get_running_loop()
        try:
            # Not client.connect(): it swallows the OSError, and with it the reason.
            async with asyncio.timeout(conn.connect_timeout):
                transport, _ = await loop.create_connection(
                    lambda: client.ctx, conn.host, conn.port
                )
        except TimeoutError:
            raise self._connect_failed(f"no answer within {conn.connect_timeout} s") from None
        except OSError as exc:
            raise self._connect_failed(_os_reason(exc)) from None
        sock = transport.get_extra_info("socket")
        if sock is not None:  # asyncio sets it too; other loops may not
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if generation != self._generation:  # close() or a hook ran while we were connecting
            client.close()
            raise self._connect_failed("the connection was closed while connecting")
        self._client = client
        self._connects += 1

    async def close(self) -> None:
        self._discard_client(ConnectionClosed("the driver closed the connection"))

    def _connect_failed(self, reason: str) -> ConnectError:
        self._last_error = f"cannot connect to {self._peer}: {reason}"
        return ConnectError(self._last_error)

    def _discard_client(self, error: DriverError) -> None:
        self._fail_in_flight(error)
        self._generation += 1
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def _fail_in_flight(self, error: DriverError) -> None:
        # pymodbus only notices a lost link when its wait times out: fail it now
        if self._in_flight and self._client is not None:
            future = self._client.ctx.response_future
            if not future.done():
                future.set_exception(error)

    def _on_connect(self, generation: int, connected: bool) -> None:
        if not connected and generation == self._generation:
            self._last_error = f"connection to {self._peer} lost: the peer closed the connection"
            self._fail_in_flight(ConnectionClosed("the peer closed the connection"))

    def _trace_packet(self, generation: int, sending: bool, data: bytes) -> bytes:
        """pymodbus's hook for every packet, before it looks for a PDU in it."""
        client = self._client
        if not sending and client is not None and client.ctx.response_future.cancelled():
            # the answer to a request given up on: cancelling the task cancels pymodbus's future
            # at once, and an answer read in the same loop turn, before the task unwinds and
            # drops the link, has nobody to go to (pymodbus would log it as unasked for)
            return b""
        return self._on_packet(generation, sending, data)

    def _on_packet(self, generation: int, sending: bool, data: bytes) -> bytes:
        if sending or generation != self._generation:
            return data
        problem = frame_problem(data)
        if problem is None:
            return data
        if problem.desync:
            self._last_error = f"connection to {self._peer} dropped: {problem.reason}"
            self._discard_client(ConnectionClosed(problem.reason))
        else:
            self._fail_in_flight(DecodeError(problem.reason))
        return b""  # pymodbus keeps the bytes until its next request clears them

    @property
    def health(self) -> Health:
        client = self._client
        return Health(
            connected=client is not None and client.connected,
            last_error=self._last_error,
            requests=self._requests,
            failures=self._failures,
            extra={
                "requests_per_read": len(self._plan_all),
                "connects": self._connects,
                "timeouts": self._timeouts,
                "exceptions": self._exceptions,
                "decode_errors": self._decode_errors,
            },
        )

    # -- requests ---------------------------------------------------------------------

    async def _execute(self, call: Call, what: str) -> ModbusPDU:
        """Send one request; every failure leaves as a ``DriverError``."""
        async with self._lock:
            client = self._client
            if client is None or not client.connected:
                raise ConnectionClosed(f"not connected to {self._peer}")
            self._requests += 1
            self._in_flight = True
            try:
                answer = await self._exchange(call, client)
                if answer is None and self._conn.broadcast_pause:  # a broadcast: none comes
                    # quiet while the devices act on it (and any stray answer drains)
                    self._in_flight = False
                    await asyncio.sleep(self._conn.broadcast_pause)
                return answer
            except asyncio.CancelledError:
                # the caller gave up (the gateway stopping, a command's time up) while the device
                # still owes an answer: close the link, as after our own timeout, rather than
                # leave the answer to come unasked for (pymodbus logs it as an error) or to land
                # in the next request's wait (an ``_exchange`` that waits out the answer, as on a
                # serial bus, clears ``_in_flight`` and keeps the link)
                if self._in_flight:
                    self._discard_client(ConnectionClosed(f"the request was cancelled {what}"))
                raise
            except TimeoutError:
                self._timeouts += 1
                error: DriverError = RequestTimeout(
                    f"no answer from {self._peer} within {self._conn.timeout} s {what}"
                )
            except TransportError as exc:  # set by a hook or by close()
                error = ConnectionClosed(f"connection to {self._peer} lost {what}: {exc}")
            except DecodeError as exc:  # set by a hook
                error = DecodeError(f"malformed answer {what}: {exc}")
            except ConnectionException as exc:
                error = ConnectionClosed(f"connection to {self._peer} lost {what}: {exc}")
            except ModbusException as exc:
                error = DecodeError(f"bad answer {what}: {exc}")
            except OSError as exc:
                error = ConnectionClosed(f"connection to {self._peer} lost {what}: {exc}")
            except (ValueError, TypeError) as exc:  # pymodbus refused to encode
                error = BindingError(f"cannot encode the request {what}: {exc}")
            finally:
                self._in_flight = False
            self._failures += 1
            self._last_error = str(error)
            if isinstance(error, DecodeError):
                self._decode_errors += 1
            elif isinstance(error, TransportError):
                self._discard_client(error)
            raise error

    async def _exchange(self, call: Call, client: ModbusBaseClient) -> ModbusPDU:
        """One request and its answer, within the connection's timeout."""
        async with asyncio.timeout(self._conn.timeout):
            return await call(client)

    async def read(self, points: Sequence[str] | None = None) -> list[Reading]:
        plan = self._plan_all if points is None else self._subset_plan(points)
        if self._broadcast:  # nothing answers unit 0: refuse without sending anything
            reason = f"{self._peer}: unit 0 is the broadcast address; it cannot be read"
            return [bad for block in plan for bad in self._bad(block, reason)]
        readings: list[Reading] = []
        for block in plan:
            readings.extend(await self._read_block(block))
        return readings

    async def _read_block(self, block: ReadBlock) -> list[Reading]:
        what = f"reading {block.label}"
        try:
            answer = await self._execute(_read_call(block, self._conn.unit), what)
        except DecodeError as exc:
            return self._bad(block, str(exc))
        if answer.isError():
            self._exceptions += 1
            self._failures += 1
            self._last_error = exception_reason(answer.exception_code, what)
            return self._bad(block, self._last_error)
        problem = _answer_problem(block, answer)
        if problem is not None:
            self._decode_errors += 1
            self._failures += 1
            self._last_error = f"malformed answer {what}: {problem}"
            return self._bad(block, self._last_error)
        data = answer.bits if block.table in BIT_TABLES else answer.registers
        decoded = block.decode(data)
        if block.fallible:
            return self._checked_readings(block, decoded)
        return _good_readings(block.points, decoded, _now_ms())

    def _checked_readings(self, block: ReadBlock, decoded: tuple[Any, ...]) -> list[Reading]:
        ts = _now_ms()
        readings: list[Reading] = []
        for name, value in zip(block.points, decoded, strict=True):
            if isinstance(value, BadValue):
                self._decode_errors += 1
                self._last_error = f"cannot decode {name} ({block.label}): {value.reason}"
                readings.append(Reading(name, None, ts, Quality.BAD, self._last_error))
            else:
                readings.append(Reading(name, value, ts, Quality.GOOD))
        return readings

    @staticmethod
    def _bad(block: ReadBlock, reason: str) -> list[Reading]:
        ts = _now_ms()
        return [Reading(name, None, ts, Quality.BAD, reason) for name in block.points]

    async def write(self, values: Mapping[str, Any]) -> None:
        """Write raw values in order, one request each (coil: 5, one register: 6, else 16).

        Every value is checked before the first request is sent. A failure stops at the
        failing point: the points before it have been written. A bit inside a holding
        register is read, changed and written back (or sent as one mask write, function
        22, with ``write_mode: mask``); writes run one ``write()`` at a time, so concurrent
        writes of bits in one register cannot undo each other. With verification on, each
        point is read back right after its write and a difference raises ``DeviceError``.
        """
        writes = [self._prepare_write(name, value) for name, value in values.items()]
        if self._write_lock is None:
            self._write_lock = asyncio.Lock()
        async with self._write_lock:
            for write in writes:
                await self._perform(write)
                if write.verify:
                    await self._verify(write)

    async def _perform(self, w: _Write) -> None:
        address, unit, quiet = w.address, self._conn.unit, self._broadcast
        if w.table == "coil":
            state = w.state
            await self._request(
                lambda c: c.write_coil(address, state, device_id=unit, no_response_expected=quiet),
                w.what, 5,
            )  # fmt: skip
        elif w.mask and w.mask_write:
            and_mask, or_mask = ~w.mask & 0xFFFF, w.mask if w.state else 0
            await self._request(
                lambda c: c.mask_write_register(
                    address=address, and_mask=and_mask, or_mask=or_mask, device_id=unit,
                    no_response_expected=quiet,
                ),
                w.what, 22,
            )  # fmt: skip
        elif w.mask:
            (current,) = await self._read_registers(address, 1, f"reading before {w.what}")
            word = current | w.mask if w.state else current & ~w.mask
            await self._request(
                lambda c: c.write_register(address, word, device_id=unit), w.what, 6
            )
        elif len(w.words) == 1:
            word = w.words[0]
            await self._request(
                lambda c: c.write_register(address, word, device_id=unit, no_response_expected=quiet),
                w.what, 6,
            )  # fmt: skip
        else:
            words = list(w.words)
            await self._request(
                lambda c: c.write_registers(address, words, device_id=unit, no_response_expected=quiet),
                w.what, 16,
            )  # fmt: skip

    async def _verify(self, w: _Write) -> None:
        what = f"reading back after {w.what}"
        if w.table == "coil":
            address, unit = w.address, self._conn.unit
            answer = await self._request(
                lambda c: c.read_coils(address, count=1, device_id=unit), what, 1
            )
            held: object = bool(answer.bits[0]) if answer is not None and answer.bits else None
            expected: object = w.state
        elif w.mask:
            (word,) = await self._read_registers(w.address, 1, what)
            held, expected = bool(word & w.mask), w.state
        else:
            held = tuple(await self._read_registers(w.address, len(w.words), what))
            expected = w.words
        if held != expected:
            self._failures += 1
            self._last_error = f"{what}: the device holds {_show(held)}, not {_show(expected)}"
            raise DeviceError(self._last_error)

    async def _read_registers(self, address: int, count: int, what: str) -> list[int]:
        unit = self._conn.unit
        answer = await self._request(
            lambda c: c.read_holding_registers(address, count=count, device_id=unit), what, 3
        )
        registers = [] if answer is None else list(answer.registers)
        if len(registers) != count:
            self._decode_errors += 1
            self._failures += 1
            self._last_error = f"malformed answer {what}: {len(registers)} of {count} registers"
            raise DecodeError(self._last_error)
        return registers

    async def _request(self, call: Call, what: str, function: int) -> ModbusPDU | None:
        """One request whose error answer raises; None for a broadcast (nothing answers)."""
        answer: ModbusPDU | None = await self._execute(call, what)
        if answer is None:
            return None
        if answer.isError():
            self._exceptions += 1
            self._failures += 1
            self._last_error = exception_reason(answer.exception_code, what)
            raise DeviceError(self._last_error, answer.exception_code)
        if answer.function_code != function:
            self._decode_errors += 1
            self._failures += 1
            self._last_error = f"malformed answer {what}: function code {answer.function_code}"
            raise DecodeError(self._last_error)
        return answer

    def _prepare_write(self, name: str, value: Any) -> _Write:
        point = self._points.get(name)
        if point is None:
            raise BindingError(f"unknown point {name!r}")
        table, address = point.table, point.address
        if table not in WRITABLE_TABLES:
            raise BindingError(f"point {name!r} is a read-only {table}")
        verify = self._conn.verify if point.verify is None else point.verify
        where = f"{address}.{point.bit}" if point.bit is not None else str(address)
        what = f"writing {name} ({table} {where})"
        try:
            if table == "coil":
                return _Write(what, table, address, state=encode_bit(value), verify=verify)
            if point.bit is not None:
                return _Write(
                    what, table, address, state=encode_bit(value),
                    mask=bit_mask(point.bit, point.byte_order),
                    mask_write=point.write_mode == "mask", verify=verify,
                )  # fmt: skip
            if point.type == "string":
                assert point.length is not None  # the binding requires it
                words = encode_string(value, point.length, point.encoding, point.byte_order)
            else:
                words = encode_registers(point.type, point.word_order, value, point.byte_order)
        except BindingError as exc:
            raise BindingError(f"point {name!r}: {exc}") from None
        return _Write(what, table, address, tuple(words), verify=verify)

    def _check_broadcast_points(self) -> None:
        for name, point in self._points.items():
            if point.verify:
                raise BindingError(
                    f"point {name!r}: unit 0 is the broadcast address: nothing answers, "
                    "so nothing can be read back (verify)"
                )
            if point.bit is not None and point.table == "holding_register" and (
                point.write_mode != "mask"
            ):
                raise BindingError(
                    f"point {name!r}: unit 0 is the broadcast address: a bit cannot be "
                    "read, modified and written back; use write_mode: mask"
                )

    # -- plans ------------------------------------------------------------------------

    def _subset_plan(self, points: Sequence[str]) -> tuple[ReadBlock, ...]:
        if isinstance(points, str):
            raise BindingError("points must be a sequence of point names, not one string")
        return self._plan.subset(tuple(points), self._points)
