"""DL/T 645-2007 meter driver: one meter on a shared serial line or behind a serial server.

The standard reads one data identifier per request, so ``read()`` sends one request per
distinct DI of the asked points (points naming members of one block DI share its request)
and takes the follow-up frames of a long answer under the same hold of the line's lock. An
exception answer (D6 set, error byte ERR) or an answer that cannot be decoded makes that DI's
points BAD with the reason and keeps the link; a timeout or a broken line raises a
``TransportError`` (this meter goes offline, the line stays open for the others).

Writes of data (control code 14H) need the meter's password and are not offered; the remote
control command (1CH: trip, close, alarm, hold) is a call that reads the password from the
secret file the connection names at the moment it is sent, and the broadcast time sync (08H)
is a call the connection must declare (``time_sync: true``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from citytwin.drivers.base import Invokable, Quality, Reading
from citytwin.drivers.dlt645.binding import CONTROL_CODES, Dlt645Call, Dlt645Connection, Dlt645Point
from citytwin.drivers.dlt645.codec import (
    BROADCAST,
    CONTROL,
    READ,
    READ_FOLLOW,
    TIME_SYNC,
    Frame,
    bcd_digits,
    decode_datetime,
    decode_number,
    encode_clock,
    encode_di,
    encode_frame,
    error_reason,
    follow_request,
    parse_address,
    read_request,
    scanner,
    show_address,
)
from citytwin.drivers.errors import (
    BindingError,
    DecodeError,
    DeviceError,
    DriverError,
    TransportError,
)
from citytwin.drivers.serialline import Line, LineDriver

MAX_FOLLOW_UPS = 32


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def decode_point(point: Dlt645Point, value: bytes) -> Any:
    """One point's value out of its DI's answer (without the DI)."""
    fmt = point.data_format
    what = f"DI {point.di}"
    if point.member is not None:
        start = point.member * fmt.size
        if len(value) < start + fmt.size:
            raise DecodeError(f"{what}: the block has {len(value) // fmt.size} members, member {point.member} asked")
        value = value[start:start + fmt.size]
    elif len(value) != fmt.size:
        raise DecodeError(f"{what}: {len(value)} data bytes, {fmt.size} expected ({fmt.name})")
    if fmt.kind == "number":
        return decode_number(value, fmt.decimals, fmt.signed, what)
    if fmt.kind == "demand":
        if point.part == "time":
            return decode_datetime(value[3:], fmt.fields, what)
        return decode_number(value[:3], fmt.decimals, fmt.signed, what)
    if fmt.kind == "clock":
        return decode_datetime(value, fmt.fields, what)
    if fmt.kind == "digits":
        return bcd_digits(value, what)
    return int.from_bytes(value, "little")  # a status word: bits, not BCD


def read_password(path: os.PathLike[str] | str) -> bytes:
    """PA P0 P1 P2 as sent, from the secret file (8 digits: level, then the 6-digit password).

    Errors name the file, never its content."""
    try:
        with open(path, encoding="ascii") as file:
            text = file.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise BindingError(f"cannot read the meter password file {os.fspath(path)}: {reason}") from None
    if len(text) != 8 or not all(c in "0123456789abcdefABCDEF" for c in text):
        raise BindingError(f"the meter password file {os.fspath(path)} must hold 8 hex digits (level and password)")
    return bytes([int(text[:2], 16)]) + bytes.fromhex(text[2:])[::-1]


class Dlt645Driver(LineDriver, Invokable):
    """One DL/T 645-2007 meter (one address) on a line shared with any other meters on it."""

    def __init__(self, connection: Dlt645Connection, points: Mapping[str, Dlt645Point]) -> None:
        spec = connection.line_spec()
        super().__init__(spec, f"meter {connection.address} on {spec.describe()}")
        self._conn = connection
        self._points = dict(points)
        self._address = parse_address(connection.address)
        self._scan = scanner(self._address)

    async def _ask(self, line: Line, request: bytes, function: int) -> Frame:
        frame = await self._exchange(line, request, self._scan, self._conn.timeout)
        if frame.function != function:
            raise DecodeError(f"answer with function 0x{frame.function:02X}, 0x{function:02X} expected")
        if frame.is_exception:
            err = frame.data[0] if frame.data else 0
            raise DeviceError(error_reason(err), code=err)
        return frame

    async def _read_di(self, line: Line, di: int) -> bytes:
        wanted = encode_di(di)
        wake = self._conn.wake_up
        async with line.lock:
            frame = await self._ask(line, read_request(self._address, di, wake), READ)
            if frame.data[:4] != wanted:
                raise DecodeError(f"answer for DI {frame.data[:4][::-1].hex()}, DI {di:08X} asked")
            value = frame.data[4:]
            seq = 0
            while frame.has_follow_up:
                seq += 1
                if seq > MAX_FOLLOW_UPS:
                    raise DecodeError(f"DI {di:08X}: more than {MAX_FOLLOW_UPS} follow-up frames")
                frame = await self._ask(line, follow_request(self._address, di, seq, wake), READ_FOLLOW)
                if frame.data[:4] != wanted or len(frame.data) < 5 or frame.data[-1] != seq:
                    raise DecodeError(f"DI {di:08X}: follow-up frame {seq} out of step: {frame.data.hex(' ')}")
                value += frame.data[4:-1]
        return value

    async def read(self, points: Sequence[str] | None = None) -> list[Reading]:
        names = list(self._points) if points is None else list(points)
        groups: dict[int, list[str]] = {}
        for name in names:
            point = self._points.get(name)
            if point is None:
                raise BindingError(f"{self._peer}: no point {name!r}")
            groups.setdefault(point.di_value, []).append(name)
        line = self._need_line()
        readings: list[Reading] = []
        for di, group in groups.items():
            try:
                value = await self._read_di(line, di)
            except (DeviceError, DecodeError) as exc:
                self._note(exc)
                reason = f"DI {di:08X}: {exc}" if isinstance(exc, DeviceError) else str(exc)
                ts = _now_ms()
                readings.extend(Reading(n, None, ts, Quality.BAD, reason) for n in group)
                continue
            except TransportError as exc:
                self._note(exc)
                raise
            ts = _now_ms()
            for name in group:
                try:
                    readings.append(Reading(name, decode_point(self._points[name], value), ts, Quality.GOOD))
                except DecodeError as exc:
                    self._note(exc)
                    readings.append(Reading(name, None, ts, Quality.BAD, str(exc)))
        return readings

    async def write(self, values: Mapping[str, Any]) -> None:
        if values:
            raise BindingError(
                "DL/T 645 data writes need the meter's programming password and are not offered; "
                "use a call (control command or time sync)"
            )

    # -- calls ----------------------------------------------------------------------------

    async def invoke(self, call: Any, inputs: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(call, Dlt645Call):
            raise BindingError(f"a DL/T 645 meter needs a Dlt645Call, not {type(call).__name__}")
        line = self._need_line()
        now = dt.datetime.now().replace(microsecond=0)  # meters keep local time
        if call.command == "time_sync":
            return await self._time_sync(line, now)
        if self._conn.password_file is None:
            raise BindingError(f"{self._peer}: a control command needs password_file in the connection")
        password = await asyncio.to_thread(read_password, self._conn.password_file)
        operator = bytes.fromhex(self._conn.operator)[::-1]
        until = now + dt.timedelta(minutes=call.valid_minutes)
        data = password + operator + bytes([CONTROL_CODES[call.command], 0]) + encode_clock(until)
        request = encode_frame(self._address, CONTROL, data, self._conn.wake_up)
        async with line.lock:
            try:
                await self._ask(line, request, CONTROL)
            except DriverError as exc:
                self._note(exc)
                raise
        return {"command": call.command, "valid_until": until.isoformat()}

    async def _time_sync(self, line: Line, now: dt.datetime) -> dict[str, Any]:
        if not self._conn.time_sync:
            raise BindingError(f"{self._peer}: time_sync is not declared (connection time_sync: true)")
        frame = encode_frame(BROADCAST, TIME_SYNC, encode_clock(now), self._conn.wake_up)
        async with line.lock:
            await line.settle()
            line.send(frame)
            # nobody answers a broadcast: keep the line quiet while it is on the wire
            await asyncio.sleep(len(frame) * self._spec.bits_per_byte / self._spec.baudrate + 0.05)
        return {"time": now.isoformat(), "address": show_address(BROADCAST)}
