"""HJ 212-2017 stations calling in: uploads to readings, answers, and commands back.

Uploads (2011 real-time, 2051/2061/2031 minute/hour/day, 2021/3020 state) become readings
of the bound ``code-field`` points, time-stamped with the packet's DataTime and qualified
by the ``code-Flag`` data flag (6.6.4: N good; M, S, C, T uncertain; F, D, B bad, the flag
named as the reason). Packets with the A bit are answered with a data answer (9014) that
echoes their QN; a retransmitted packet (same QN) is answered again but not delivered
twice. Split packets (D bit, PNUM/PNO) are joined before they are read.

A command (6.6.1) goes out with a fresh QN and the A bit; the station answers 9011
(QnRtn, ready or refused), sends any data under the same QN (1011 clock, 1061 interval,
history packets), and ends with 9012 (ExeRtn), which completes or fails the call.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from citytwin.drivers.base import Invokable, Quality, Reading
from citytwin.drivers.errors import BindingError, DeviceError, RequestTimeout
from citytwin.drivers.hj212 import codec
from citytwin.drivers.hj212.binding import Hj212Call, Hj212Connection, Hj212Point
from citytwin.drivers.listener import Limits, Link, Wire
from citytwin.drivers.station import StationDriver, load_password

_UNCERTAIN_FLAGS = {"M", "S", "C", "T"}
_ANSWERS = {"9011", "9012", "9013", "9014"}
_RECENT_QNS = 64


def _identity(packet: codec.Packet) -> tuple[str, str]:
    return packet.mn, packet.pw


WIRE = Wire(
    "hj212",
    lambda limits: codec.Deframer(max_data=limits.max_frame - 12, lenient=True),  # CRC policy: per station
    _identity,
    lambda item: isinstance(item, codec.FrameError),
    lambda item: bool(item.crc_ok),
)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class _Pending:
    qn: str
    future: asyncio.Future[dict[str, str]]
    ready: bool = False
    records: int = 0
    data: dict[str, str] = field(default_factory=dict)


class Hj212Driver(StationDriver, Invokable):
    wire = WIRE

    def __init__(self, connection: Hj212Connection, points: Mapping[str, Hj212Point]) -> None:
        limits = Limits(frame_timeout=connection.frame_timeout, idle_timeout=connection.idle_timeout,
                        max_frame=connection.max_frame + 12)
        super().__init__(connection.host, connection.port, connection.mn, limits, connection.crc == "lenient")
        self._conn = connection
        self._points = dict(points)
        # per point: (CP key, point name, its flag key, the CNs that feed it or None for any, text?)
        self._routes = tuple(
            (point.key, name, f"{point.key.split('-', 1)[0]}-Flag",
             None if point.cn is None else frozenset(point.cn), point.text)
            for name, point in self._points.items()
        )
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._splits: dict[str, dict[int, str]] = {}
        self._pending: dict[str, _Pending] = {}
        self._last_qn = ""

    async def _secret(self) -> str | None:
        return await load_password(self._conn.password, self._conn.password_file)

    # -- incoming --------------------------------------------------------------------

    def received(self, link: Link, frame: Any) -> None:
        packet: codec.Packet = frame
        self._counts["frames"] += 1
        if packet.split and packet.pnum and packet.pno:
            joined = self._join(packet)
            if packet.wants_answer:
                self._answer(link, packet)
            if joined is None:
                return
            packet = joined
        pending = self._pending.get(packet.qn or "")
        if pending is not None:
            self._on_command_packet(link, pending, packet)
            return
        if packet.cn in _ANSWERS:
            return  # an answer to nothing we are waiting for (late, or a 9014 echo)
        if packet.wants_answer and not packet.split:
            self._answer(link, packet)
        qn = packet.qn
        if qn is not None:
            if qn in self._recent:
                self._counts["duplicates"] += 1
                return
            self._recent[qn] = None
            if len(self._recent) > _RECENT_QNS:
                self._recent.popitem(last=False)
        self.deliver(self._readings(packet))

    def _join(self, packet: codec.Packet) -> codec.Packet | None:
        assert packet.pnum is not None and packet.pno is not None
        key = f"{packet.qn}:{packet.cn}"
        parts = self._splits.setdefault(key, {})
        parts[packet.pno] = packet.cp
        if len(self._splits) > 16:  # abandoned messages: keep the newest few
            del self._splits[next(iter(self._splits))]
        if len(parts) < packet.pnum:
            return None
        del self._splits[key]
        cp = ";".join(parts[i] for i in sorted(parts))
        return codec.Packet(packet.qn, packet.st, packet.cn, packet.pw, packet.mn,
                            packet.flag & ~codec.FLAG_D, cp, None, None, packet.crc_ok)

    def _answer(self, link: Link, packet: codec.Packet) -> None:
        answer = codec.answer(packet, "9014")
        answer.pw = self._password or packet.pw
        link.send(codec.encode(answer))

    def _readings(self, packet: codec.Packet) -> list[Reading]:
        received = _now_ms()
        try:
            cp = codec.parse_cp(packet.cp)
        except codec.FrameError as exc:
            self._last_error = f"CN {packet.cn}: {exc}"
            return []
        ts, time_problem = received, None
        if cp.data_time is not None:
            try:
                ts = codec.parse_time(cp.data_time, self._conn.utc_offset)
            except ValueError as exc:
                time_problem = str(exc)
        readings: list[Reading] = []
        values = cp.values
        cn = packet.cn
        good = Quality.GOOD
        for key, name, flag_key, cns, text in self._routes:
            raw = values.get(key)
            if raw is None or (cns is not None and cn not in cns):
                continue
            flag = values.get(flag_key)
            if not text and time_problem is None and (flag is None or flag == "N"):
                try:  # the common case inline: a number flagged N
                    readings.append(Reading(name, float(raw), ts, good))
                    continue
                except ValueError:
                    pass
            readings.append(self._reading(name, key, raw, flag, text, ts, time_problem))
        return readings

    @staticmethod
    def _reading(name: str, key: str, raw: str, flag: str | None, text: bool, ts: int,
                 time_problem: str | None) -> Reading:
        value: Any = raw
        if not text:
            try:
                value = float(raw)
            except ValueError:
                return Reading(name, None, ts, Quality.BAD, f"{key}={raw[:20]!r} is not a number")
        if flag is None or flag == "N":
            if time_problem is not None:
                return Reading(name, value, ts, Quality.UNCERTAIN, f"bad DataTime: {time_problem}")
            return Reading(name, value, ts, Quality.GOOD)
        meaning = codec.DATA_FLAGS.get(flag, "unknown flag")
        quality = Quality.UNCERTAIN if flag in _UNCERTAIN_FLAGS else Quality.BAD
        return Reading(name, value, ts, quality, f"HJ 212 data flag {flag}: {meaning}")

    def _on_command_packet(self, link: Link, pending: _Pending, packet: codec.Packet) -> None:
        future = pending.future
        if packet.wants_answer and packet.cn not in _ANSWERS:
            self._answer(link, packet)
        try:
            values = codec.parse_cp(packet.cp).values
        except codec.FrameError as exc:
            if not future.done():
                future.set_exception(DeviceError(f"undecodable answer to QN {pending.qn}: {exc}"))
            return
        if future.done():
            return
        if packet.cn == "9011":
            rtn = int(values.get("QnRtn", "100") or 100) if values.get("QnRtn", "").isdigit() else 100
            if rtn != codec.QN_READY:
                future.set_exception(DeviceError(
                    f"the station refused the request: QnRtn={rtn} ({codec.QN_RESULTS.get(rtn, 'unknown')})", rtn))
            pending.ready = True
        elif packet.cn == "9012":
            raw = values.get("ExeRtn", "")
            rtn = int(raw) if raw.isdigit() else 2
            if rtn in (codec.EXE_SUCCESS, codec.EXE_NO_DATA):
                future.set_result(pending.data)
            else:
                future.set_exception(DeviceError(
                    f"the station failed the command: ExeRtn={rtn} ({codec.EXE_RESULTS.get(rtn, 'unknown')})", rtn))
        elif packet.cn not in _ANSWERS:
            pending.records += 1
            pending.data.update(values)

    # -- commands --------------------------------------------------------------------

    def _fail_pending(self, error: Exception) -> None:
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(error)

    def _new_qn(self) -> str:
        qn = codec.format_time(_now_ms(), self._conn.utc_offset, millis=True)
        while qn <= self._last_qn:  # QN identifies one exchange: never reuse one
            qn = str(int(self._last_qn) + 1)
        self._last_qn = qn
        return qn

    async def command(self, cn: str, params: Mapping[str, Any], timeout: float | None = None) -> tuple[dict[str, str], int]:
        """Send one command and await its execution result; returns the answer's data and
        the number of data packets that came with it."""
        link = self.require_link()
        timeout = timeout or self._conn.timeout
        qn = self._new_qn()
        cp = ";".join(f"{k}={v}" for k, v in params.items())
        packet = codec.Packet(qn, self._conn.st, cn, self._password or "", self._identity,
                              codec.VERSION_2017 | codec.FLAG_A, cp)
        pending = _Pending(qn, asyncio.get_running_loop().create_future())
        self._pending[qn] = pending
        self._requests += 1
        try:
            link.send(codec.encode(packet))
            async with asyncio.timeout(timeout):
                data = await pending.future
        except TimeoutError:
            self._failures += 1
            stage = "an execution result" if pending.ready else "an answer"
            self._last_error = f"CN {cn}: no {stage} within {timeout:g} s"
            raise RequestTimeout(self._last_error) from None
        except Exception as exc:
            self._failures += 1
            self._last_error = f"CN {cn}: {exc}"
            raise
        finally:
            self._pending.pop(qn, None)
        return data, pending.records

    async def write(self, values: Mapping[str, Any]) -> None:
        for name in values:
            point = self._points.get(name)
            if point is None:
                raise BindingError(f"unknown point {name!r}")
            if point.set is None:
                raise BindingError(f"point {name!r} has no 'set' command: it is read-only")
        for name, value in values.items():
            point = self._points[name]
            assert point.set is not None
            text = f"{value:g}" if isinstance(value, float) else str(value)
            await self.command(point.set, {point.key: text})

    async def invoke(self, call: Any, inputs: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(call, Hj212Call):
            raise BindingError(f"an hj212 call binding is needed, not {type(call).__name__}")
        params: dict[str, str] = {}
        for key, template in call.cp.items():
            if template.startswith("$"):
                if template[1:] not in inputs:
                    raise BindingError(f"the call needs input {template[1:]!r}")
                value = inputs[template[1:]]
                params[key] = f"{value:g}" if isinstance(value, float) else str(value)
            else:
                params[key] = template
        data, records = await self.command(call.cn, params, call.timeout)
        outputs: dict[str, Any] = {}
        for name, key in call.output.items():
            if key == "#records":
                outputs[name] = records
            elif key in data:
                outputs[name] = data[key]
            else:
                raise DeviceError(f"the station's answer to CN {call.cn} has no {key!r}")
        return outputs
