"""CJ/T 188-2018 meter driver: one water, heat or gas meter on a shared line or serial server.

``read()`` is one meter data request (control 01H, DI 901FH) whatever the points asked: the
answer holds every quantity and the status bytes. An exception answer (D6 set) makes every
asked point BAD with the status it carries; a broken answer makes them BAD with the reason;
a timeout or a broken line raises a ``TransportError`` and leaves the line to the others.

Writing ``valve_open`` sends the valve control command (control 04H, DI A017H, 55H open or
99H close) and checks the answer: the same DI and sequence number, and status bits that show
the valve in the state asked for; a meter that answers "abnormal" or the other state fails
the write with a ``DeviceError``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from citytwin.drivers.base import Quality, Reading
from citytwin.drivers.cjt188.binding import Cjt188Connection, Cjt188Point
from citytwin.drivers.cjt188.codec import (
    DI_READ,
    DI_VALVE,
    READ_DATA,
    VALVE_CLOSE,
    VALVE_OPEN,
    WRITE_DATA,
    Frame,
    decode_field,
    encode_frame,
    fields_of,
    parse_address,
    scanner,
    status_reason,
    valve_state,
)
from citytwin.drivers.errors import (
    BindingError,
    DecodeError,
    DeviceError,
    DriverError,
    TransportError,
)
from citytwin.drivers.serialline import Line, LineDriver


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Cjt188Driver(LineDriver):
    """One CJ/T 188 meter (type and address) on a line shared with any other meters on it."""

    def __init__(self, connection: Cjt188Connection, points: Mapping[str, Cjt188Point]) -> None:
        spec = connection.line_spec()
        super().__init__(spec, f"{connection.meter_type} meter {connection.address} on {spec.describe()}")
        self._conn = connection
        self._type = connection.type_code
        self._address = parse_address(connection.address)
        self._scan = scanner(self._type, self._address, connection.di_order)
        known = fields_of(self._type)
        for name, point in points.items():
            if point.field not in known:
                raise BindingError(f"point {name!r}: a {connection.meter_type} meter has no {point.field}")
            if point.meter_type is not None and point.meter_type != connection.meter_type:
                raise BindingError(f"point {name!r}: meter_type {point.meter_type} but the meter is {connection.meter_type}")
        self._points = dict(points)
        self._ser = 0

    def _next_ser(self) -> int:
        self._ser = (self._ser + 1) & 0xFF
        return self._ser

    async def _ask(self, line: Line, control: int, di: int, data: bytes = b"") -> Frame:
        ser = self._next_ser()
        request = encode_frame(self._type, self._address, control, di, ser, data,
                               self._conn.di_order, self._conn.wake_up)
        async with line.lock:
            frame = await self._exchange(line, request, self._scan, self._conn.timeout)
        if frame.function != control:
            raise DecodeError(f"answer with function 0x{frame.function:02X}, 0x{control:02X} expected")
        if frame.is_exception:
            raise DeviceError(status_reason(frame.data), code=int.from_bytes(frame.data[-2:], "little"))
        if frame.di != di or frame.ser != ser:
            raise DecodeError(f"answer for DI {frame.di:04X} SER {frame.ser}, DI {di:04X} SER {ser} asked")
        return frame

    async def read(self, points: Sequence[str] | None = None) -> list[Reading]:
        names = list(self._points) if points is None else list(points)
        for name in names:
            if name not in self._points:
                raise BindingError(f"{self._peer}: no point {name!r}")
        line = self._need_line()
        try:
            frame = await self._ask(line, READ_DATA, DI_READ)
        except (DeviceError, DecodeError) as exc:
            self._note(exc)
            ts = _now_ms()
            return [Reading(n, None, ts, Quality.BAD, str(exc)) for n in names]
        except TransportError as exc:
            self._note(exc)
            raise
        ts = _now_ms()
        readings: list[Reading] = []
        for name in names:
            try:
                value = decode_field(self._type, self._points[name].field, frame.data)
            except DecodeError as exc:
                self._note(exc)
                readings.append(Reading(name, None, ts, Quality.BAD, str(exc)))
            else:
                readings.append(Reading(name, value, ts, Quality.GOOD))
        return readings

    async def write(self, values: Mapping[str, Any]) -> None:
        for name, value in values.items():
            point = self._points.get(name)
            if point is None:
                raise BindingError(f"{self._peer}: no point {name!r}")
            if point.field != "valve_open":
                raise BindingError(f"point {name!r}: only valve_open can be written")
            if not self._conn.valve:
                raise BindingError(f"{self._peer}: the meter has no valve (connection valve: true)")
            await self._valve(bool(value))

    async def _valve(self, open_: bool) -> None:
        line = self._need_line()
        command = VALVE_OPEN if open_ else VALVE_CLOSE
        try:
            frame = await self._ask(line, WRITE_DATA, DI_VALVE, bytes([command]))
            if len(frame.data) < 2:
                raise DecodeError(f"valve answer without status bytes: {frame.data.hex(' ')}")
            state = valve_state(int.from_bytes(frame.data[:2], "little"))
            wanted = "open" if open_ else "closed"
            if state != wanted:
                raise DeviceError(f"valve {wanted} asked, the meter answers {state}")
        except DriverError as exc:
            self._note(exc)
            raise
