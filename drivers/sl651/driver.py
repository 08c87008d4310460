"""SL 651-2014 remote stations calling in: reports to readings, acknowledgements, queries.

Reports (30 test, 31 evenly-timed, 32 timed, 33 added/alarm, 34 hourly) become readings of
the bound elements, time-stamped with the observation time (F0F0) and acknowledged with a
downlink frame of the same function code carrying the report's serial number and our time,
end character ESC (keep the link: clause 6.2.3). Link keep-alives (2F) only keep the
station online. Multi-packet messages (SYN) are joined first and acknowledged once whole.
Queries (37, 38, 4A, 51) go out with end character ENQ and are answered by the station
with the same function code.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from citytwin.drivers.base import Invokable, Quality, Reading
from citytwin.drivers.errors import BindingError, DecodeError, DeviceError, RequestTimeout
from citytwin.drivers.listener import Limits, Link, Wire
from citytwin.drivers.sl651 import body as bodies
from citytwin.drivers.sl651 import frames
from citytwin.drivers.sl651.binding import Sl651Call, Sl651Connection, Sl651Point
from citytwin.drivers.station import StationDriver, load_password

_ANSWERED = {bodies.QUERY_REALTIME, bodies.QUERY_PERIOD, bodies.SET_CLOCK, bodies.QUERY_CLOCK}
_RECENT = 64


def _identity(frame: frames.Frame) -> tuple[str, str]:
    return frame.station, frame.password


WIRE = Wire(
    "sl651",
    lambda limits: frames.Deframer(uplink=True, lenient=True),  # CRC policy: per station
    _identity,
    lambda item: isinstance(item, frames.FrameError),
    lambda item: bool(item.crc_ok),
)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class _Pending:
    function: int
    future: asyncio.Future[bodies.Report]


class Sl651Driver(StationDriver, Invokable):
    wire = WIRE

    def __init__(self, connection: Sl651Connection, points: Mapping[str, Sl651Point]) -> None:
        limits = Limits(frame_timeout=connection.frame_timeout, idle_timeout=connection.idle_timeout,
                        max_frame=frames.ASCII_OVERHEAD + frames.MAX_BODY)
        super().__init__(connection.host, connection.port, connection.station, limits, connection.crc == "lenient")
        self._conn = connection
        self._points = dict(points)
        self._reassembler = frames.Reassembler()
        self._recent: OrderedDict[tuple[int, int, str], None] = OrderedDict()
        self._pending: _Pending | None = None
        self._serial = 0

    async def _secret(self) -> str | None:
        secret = await load_password(self._conn.password, self._conn.password_file)
        return None if secret is None else secret.upper()

    # -- incoming --------------------------------------------------------------------

    def received(self, link: Link, frame: Any) -> None:
        first: frames.Frame = frame
        self._counts["frames"] += 1
        whole = self._reassembler.add(first)
        if isinstance(whole, frames.FrameError):
            self._last_error = str(whole)
            return
        if whole is None:
            return  # more packets to come
        function = whole.function
        pending = self._pending
        if pending is not None and function == pending.function and not pending.future.done():
            try:
                pending.future.set_result(bodies.parse(whole.body, whole.encoding, function == bodies.QUERY_PERIOD))
            except frames.FrameError as exc:
                pending.future.set_exception(DecodeError(f"answer to {function:02X}: {exc}"))
            return
        if function == bodies.KEEPALIVE or function not in bodies.REPORTS:
            return
        try:
            report = bodies.parse(whole.body, whole.encoding)
        except frames.FrameError as exc:
            self._last_error = f"report {function:02X}: {exc}"
            return
        self._acknowledge(link, whole, report)
        key = (function, report.serial, report.sent)
        if key in self._recent:
            self._counts["duplicates"] += 1
            return
        self._recent[key] = None
        if len(self._recent) > _RECENT:
            self._recent.popitem(last=False)
        self.deliver(self._readings(function, report))

    def _acknowledge(self, link: Link, frame: frames.Frame, report: bodies.Report) -> None:
        now = bodies.from_epoch_ms(_now_ms(), self._conn.utc_offset)
        ack = frames.Frame(frame.encoding, self._conn.centre, self._identity, self._password or frame.password,
                           frame.function, False, bodies.header(report.serial, now, frame.encoding), frames.ESC)
        link.send(frames.encode(ack))

    def _readings(self, function: int, report: bodies.Report) -> list[Reading]:
        ts, problem = _now_ms(), None
        stamp = report.observed or report.sent
        try:
            ts = bodies.to_epoch_ms(stamp, self._conn.utc_offset)
        except ValueError as exc:
            problem = f"bad observation time {stamp!r}: {exc}"
        code = f"{function:02X}"
        readings: list[Reading] = []
        for name, point in self._points.items():
            if point.functions is not None and code not in point.functions:
                continue
            if point.element not in report.values:
                continue
            value = report.values[point.element]
            if value is None:
                readings.append(Reading(name, None, ts, Quality.BAD, f"{point.element}: no value (all FF)"))
            elif isinstance(value, list):
                readings.append(Reading(name, None, ts, Quality.BAD, f"{point.element} is a series"))
            elif problem is not None:
                readings.append(Reading(name, value, ts, Quality.UNCERTAIN, problem))
            else:
                readings.append(Reading(name, value, ts, Quality.GOOD))
        return readings

    # -- queries ---------------------------------------------------------------------

    def _fail_pending(self, error: Exception) -> None:
        if self._pending is not None and not self._pending.future.done():
            self._pending.future.set_exception(error)

    async def query(self, function: int, body: bytes, timeout: float | None = None) -> bodies.Report:
        """Send one downlink query and await the station's answer of the same function code."""
        link = self.require_link()
        timeout = timeout or self._conn.timeout
        frame = frames.Frame(self._conn.encoding, self._conn.centre, self._identity, self._password or "0000",
                             function, False, body, frames.ENQ)
        pending = _Pending(function, asyncio.get_running_loop().create_future())
        self._pending = pending
        self._requests += 1
        try:
            link.send(frames.encode(frame))
            async with asyncio.timeout(timeout):
                return await pending.future
        except TimeoutError:
            self._failures += 1
            self._last_error = f"query {function:02X}: no answer within {timeout:g} s"
            raise RequestTimeout(self._last_error) from None
        except Exception as exc:
            self._failures += 1
            self._last_error = f"query {function:02X}: {exc}"
            raise
        finally:
            self._pending = None

    def _next_serial(self) -> int:
        self._serial = self._serial % 0xFFFF + 1
        return self._serial

    async def write(self, values: Mapping[str, Any]) -> None:
        raise BindingError("SL 651 elements are read-only; use a service with a query call")

    async def invoke(self, call: Any, inputs: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(call, Sl651Call):
            raise BindingError(f"an sl651 call binding is needed, not {type(call).__name__}")
        function = int(call.function, 16)
        encoding = self._conn.encoding
        now = bodies.from_epoch_ms(_now_ms(), self._conn.utc_offset)
        serial = self._next_serial()
        if function == bodies.QUERY_PERIOD:
            assert call.element is not None
            begin, end, step = (self._input(t, inputs) for t in (call.begin, call.end, call.step))
            try:
                body = bodies.period_query(serial, now, begin, end, step, call.element, encoding)
            except ValueError as exc:
                raise BindingError(str(exc)) from None
        else:
            body = bodies.header(serial, now, encoding)
        report = await self.query(function, body, call.timeout)
        if function in (bodies.QUERY_REALTIME, bodies.QUERY_PERIOD) and report.values:
            if function == bodies.QUERY_REALTIME:
                self.deliver(self._readings(function, report))
        outputs: dict[str, Any] = {}
        for name, element in call.output.items():
            if element == "#time":
                outputs[name] = report.sent
            elif element in report.values:
                outputs[name] = report.values[element]
            else:
                raise DeviceError(f"the answer to {call.function} has no element {element!r}")
        return outputs

    @staticmethod
    def _input(template: str, inputs: Mapping[str, Any]) -> str:
        if template.startswith("$"):
            if template[1:] not in inputs:
                raise BindingError(f"the call needs input {template[1:]!r}")
            return str(inputs[template[1:]])
        return template
