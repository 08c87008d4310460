"""Modbus RTU on a serial line, on pymodbus 3.16's async serial client (pyserial).

Everything above the link is the TCP driver's (plans, decoding, writes, error mapping);
this module owns the line. A serial line is a bus: several devices (unit ids) share one
port and only one request may be on the wire at a time, so every driver naming the same
port shares one ``_Line``: one open port, one client and one lock that serializes their
requests. pymodbus frames requests, checks CRCs, discards a reply from another unit and
clears its receive buffer before each request (so garbage or a late reply on the line
cannot be taken for the next answer). A device that does not answer times out and goes
offline alone; the line stays open while another device uses it. A request cancelled once
it is on the wire (the gateway stopping, a command's time up) still ends its exchange
before the cancellation goes on, so its answer never meets the next request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field

from pymodbus.client import AsyncModbusSerialClient, ModbusBaseClient
from pymodbus.pdu import ModbusPDU

from citytwin.drivers.errors import ConnectionClosed, DriverError
from citytwin.drivers.modbus.binding import ModbusLink, ModbusPoint, ModbusRtuConnection
from citytwin.drivers.modbus.tcp import Call, ModbusTcpDriver


@dataclass(eq=False)
class _Line:
    port: str
    settings: tuple[int, str, int, int]
    client: AsyncModbusSerialClient
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


_LINES: dict[str, _Line] = {}


class ModbusRtuDriver(ModbusTcpDriver):
    """One device (one unit id) on a serial line shared with any other devices on it."""

    def __init__(self, connection: ModbusRtuConnection, points: Mapping[str, ModbusPoint]) -> None:
        super().__init__(connection, points)
        self._rtu = connection
        self._line: _Line | None = None

    @staticmethod
    def _describe(connection: ModbusLink) -> str:
        assert isinstance(connection, ModbusRtuConnection)
        return f"{connection.port} unit {connection.unit}"

    async def connect(self) -> None:
        self._discard_client(ConnectionClosed("reconnecting"))
        self._generation += 1
        generation = self._generation
        conn = self._rtu
        settings = (conn.baudrate, conn.parity, conn.stopbits, conn.bytesize)
        line = _LINES.get(conn.port)
        if line is not None and not line.client.connected:
            line = None  # the port failed under another device: open it afresh
        if line is None:
            client = AsyncModbusSerialClient(
                conn.port,
                baudrate=conn.baudrate,
                parity=conn.parity,
                stopbits=conn.stopbits,
                bytesize=conn.bytesize,
                name=conn.port,
                reconnect_delay=0,  # the gateway's device runner owns reconnects
                timeout=2 * max(conn.timeout, conn.connect_timeout) + 1,
                retries=0,
            )
            ctx = client.ctx
            try:
                async with asyncio.timeout(conn.connect_timeout):
                    # not client.connect(): it swallows the OSError, and with it the reason
                    ctx.transport, _ = await ctx.call_create()
            except TimeoutError:
                raise self._connect_failed(f"no answer within {conn.connect_timeout} s") from None
            except OSError as exc:
                raise self._connect_failed(str(exc)) from None
            line = _Line(conn.port, settings, client)
            old = _LINES.get(conn.port)
            if old is not None:
                old.client.close()
            _LINES[conn.port] = line
        elif line.settings != settings:
            raise self._connect_failed(
                f"the line is open at {line.settings} (baud, parity, stop bits, data bits); "
                f"this device asks for {settings}"
            )
        if generation != self._generation:
            raise self._connect_failed("the connection was closed while connecting")
        line.users += 1
        self._line = line
        self._lock = line.lock  # one request on the wire at a time, whoever sends it
        self._client = line.client
        self._connects += 1

    def _discard_client(self, error: DriverError) -> None:
        self._fail_in_flight(error)
        self._generation += 1
        self._client = None
        line, self._line = self._line, None
        if line is None:
            return
        line.users -= 1
        if line.users <= 0 or not line.client.connected:
            if _LINES.get(line.port) is line:
                del _LINES[line.port]
            line.client.close()

    async def _exchange(self, call: Call, client: ModbusBaseClient) -> ModbusPDU:
        """A serial line is a bus: once a request is on the wire its unit answers, and RTU has
        no transaction id, so the answer would be taken for the next request's (or logged by
        pymodbus as unasked for). Closing the line is no way out either: other devices share
        it. So a cancelled request waits out its exchange (its answer, at most the timeout)
        and only then lets the cancellation go on; the line stays in step."""
        exchange = asyncio.ensure_future(super()._exchange(call, client))
        try:
            return await asyncio.shield(exchange)
        except asyncio.CancelledError:
            if not exchange.done():
                await asyncio.wait([exchange])
            if not exchange.cancelled():
                exchange.exception()  # retrieved (asyncio would log it): the caller no longer wants it
            self._in_flight = False  # nothing is owed on the line any more
            raise

    def _on_packet(self, generation: int, sending: bool, data: bytes) -> bytes:
        return data  # RTU frames are checked by pymodbus (CRC, unit id)
