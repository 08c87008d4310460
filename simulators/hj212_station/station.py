"""An HJ 212-2017 data logger that calls the centre: an ambient air-quality station or a
construction-site dust and noise monitor.

It connects out to ``host:port``, reports real-time data (CN 2011, A bit set) every
``interval`` seconds and retransmits a packet the centre does not answer (9014) within
``answer_timeout`` (up to 3 times, as 6.5's timeout-and-retry asks), reconnecting with a
delay when the link drops. It answers the centre's commands: 1011/1012 (read/set the
clock), 1061/1062 (read/set the real-time interval), 2051/2061 (minute/hour history for
BeginTime..EndTime), each as 9011 (QnRtn), any data, then 9012 (ExeRtn).

Fault modes, for tests and demos: ``bad_crc`` sends every third packet with a wrong CRC,
``garbage`` writes noise between packets, ``fragment`` writes packets in several pieces,
``retransmit_rate`` sends a packet twice now and then, ``flags`` forces a data flag
(``{"a34004": "C"}``). Packets longer than 1024 characters are split (D bit, PNUM/PNO).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import random
import time
from dataclasses import dataclass, field

from citytwin.simulators.hj212_station import wire
from citytwin.simulators.lifecycle import Simulator

log = logging.getLogger(__name__)

MAX_SEGMENT_CP = 900  # keep each packet's data segment under the standard's 1024 characters

# pollutant code -> (base value, daily swing, noise, decimals); codes of HJ 212-2017 annex B
AIR = {
    "a34004": (35.0, 15.0, 4.0, 1),   # PM2.5, µg/m³
    "a34002": (60.0, 25.0, 6.0, 1),   # PM10, µg/m³
    "a21026": (8.0, 3.0, 1.0, 1),     # SO2, µg/m³
    "a21004": (30.0, 12.0, 3.0, 1),   # NO2, µg/m³
    "a05024": (80.0, 40.0, 5.0, 1),   # O3, µg/m³
    "a21005": (0.8, 0.3, 0.05, 2),    # CO, mg/m³
    "a01001": (18.0, 6.0, 0.3, 1),    # air temperature, °C
    "a01002": (60.0, 15.0, 2.0, 1),   # relative humidity, %
    "a01006": (101.3, 0.4, 0.05, 2),  # air pressure, kPa
    "a01007": (2.5, 1.5, 0.5, 1),     # wind speed, m/s
    "a01008": (180.0, 90.0, 20.0, 0), # wind direction, °
}
DUST = {
    "a34001": (120.0, 60.0, 15.0, 1), # TSP, µg/m³
    "a34002": (80.0, 40.0, 10.0, 1),  # PM10
    "a34004": (45.0, 20.0, 5.0, 1),   # PM2.5
    "LA": (62.0, 8.0, 3.0, 1),        # A-weighted sound level, dB(A) (the code loggers send)
    "a01001": (18.0, 6.0, 0.3, 1),
    "a01002": (60.0, 15.0, 2.0, 1),
    "a01007": (2.5, 1.5, 0.5, 1),
    "a01008": (180.0, 90.0, 20.0, 0),
}
KINDS = {"air": ("22", AIR), "dust": ("39", DUST)}


def _stamp(epoch: float, millis: bool = False) -> str:
    moment = dt.datetime.fromtimestamp(epoch, dt.timezone(dt.timedelta(hours=8)))
    text = moment.strftime("%Y%m%d%H%M%S")
    return text + f"{int(epoch * 1000) % 1000:03d}" if millis else text


def _epoch(text: str) -> float:
    moment = dt.datetime.strptime(text[:14], "%Y%m%d%H%M%S").replace(tzinfo=dt.timezone(dt.timedelta(hours=8)))
    return moment.timestamp()


@dataclass
class StationState:
    sent: int = 0
    answered: int = 0
    retransmitted: int = 0
    commands: int = 0
    connects: int = 0
    last_values: dict[str, float] = field(default_factory=dict)


class Hj212StationSimulator(Simulator):
    def __init__(
        self, host: str, port: int, mn: str = "010000A8900016F000169DC0", password: str = "123456",
        kind: str = "air", interval: float = 30.0, seed: int | None = None, *, pollutants: int | None = None,
        bad_crc: bool = False, garbage: bool = False, fragment: bool = False, retransmit_rate: float = 0.0,
        flags: dict[str, str] | None = None, answer_timeout: float = 5.0, reconnect_delay: float = 1.0,
    ) -> None:
        self.host, self.port, self.mn, self.password = host, port, mn, password
        self.st, codes = KINDS[kind]
        self.codes = dict(codes)
        if pollutants is not None:  # benchmarks: pad with further water-pollutant codes
            for i in range(len(self.codes), pollutants):
                self.codes[f"w{21000 + i:05d}"] = (10.0 + i, 2.0, 0.5, 2)
        self.interval = interval
        self.rng = random.Random(seed)
        self.bad_crc, self.garbage, self.fragment = bad_crc, garbage, fragment
        self.retransmit_rate = retransmit_rate
        self.flags = dict(flags or {})
        self.answer_timeout = answer_timeout
        self.reconnect_delay = reconnect_delay
        self.clock_offset = 0.0
        self.state = StationState()
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._answers: dict[str, asyncio.Event] = {}
        self._wake = asyncio.Event()
        self._last_qn = ""

    # -- values ---------------------------------------------------------------------

    def now(self) -> float:
        return time.time() + self.clock_offset

    def sample(self, epoch: float) -> dict[str, float]:
        day = (epoch % 86400) / 86400
        values = {}
        for code, (base, swing, noise, decimals) in self.codes.items():
            value = base + swing * math.sin(2 * math.pi * (day - 0.3)) + self.rng.gauss(0, noise)
            if code == "a01008":
                value %= 360
            values[code] = round(max(value, 0.0), decimals)
        self.state.last_values = values
        return values

    def _qn(self) -> str:
        qn = _stamp(self.now(), millis=True)
        while qn <= self._last_qn:
            qn = str(int(self._last_qn) + 1)
        self._last_qn = qn
        return qn

    # -- life -----------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"hj212-station:{self.mn}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._writer is not None:
            self._writer.close()

    async def _run(self) -> None:
        while True:
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                await asyncio.sleep(self.reconnect_delay)
                continue
            self._writer = writer
            self.state.connects += 1
            self.connected.set()
            receiver = asyncio.create_task(self._receive(reader))
            reporter = asyncio.create_task(self._report_loop())
            try:
                await asyncio.wait([receiver, reporter], return_when=asyncio.FIRST_COMPLETED)
            finally:
                receiver.cancel()
                reporter.cancel()
                await asyncio.gather(receiver, reporter, return_exceptions=True)
                self.connected.clear()
                writer.close()
                self._writer = None
            await asyncio.sleep(self.reconnect_delay)

    async def _report_loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            await self.report()
            next_at += self.interval
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), max(next_at - loop.time(), 0))
                next_at = loop.time()  # the interval changed: report on the new schedule
            except TimeoutError:
                pass

    def _write(self, data: bytes) -> None:
        writer = self._writer
        if writer is None:
            return
        if self.garbage:
            writer.write(bytes(self.rng.randrange(0, 256) for _ in range(self.rng.randrange(8, 64))).replace(b"#", b"."))
        if self.fragment and len(data) > 8:
            cut = self.rng.randrange(1, len(data) - 1)
            writer.write(data[:cut])
            writer.write(data[cut:])  # two writes; loopback TCP may still join them
        else:
            writer.write(data)

    def _send(self, cn: str, cp: str, qn: str | None = None, flag: int = 5, st: str | None = None) -> list[bytes]:
        """Encode (splitting long CPs with the D bit) and write; returns the packets written."""
        qn = qn or self._qn()
        parts = [cp]
        if len(cp) > MAX_SEGMENT_CP:
            parts, current = [], ""
            for group in cp.split(";"):
                if current and len(current) + len(group) + 1 > MAX_SEGMENT_CP:
                    parts.append(current)
                    current = group
                else:
                    current = f"{current};{group}" if current else group
            parts.append(current)
        packets = []
        for index, part in enumerate(parts, 1):
            split = len(parts) > 1
            seg = wire.segment(qn, st or self.st, cn, self.password, self.mn, flag | (2 if split else 0), part,
                               len(parts) if split else None, index if split else None)
            self.state.sent += 1
            bad = self.bad_crc and self.state.sent % 3 == 0
            data = wire.packet(seg, bad_crc=bad)
            self._write(data)
            packets.append(wire.packet(seg))
        return packets

    async def report(self) -> None:
        """One real-time packet (2011), retransmitted until answered (at most 3 more times)."""
        epoch = self.now()
        values = self.sample(epoch)
        groups = [f"DataTime={_stamp(epoch)}"]
        for code, value in values.items():
            groups.append(f"{code}-Rtd={value},{code}-Flag={self.flags.get(code, 'N')}")
        qn = self._qn()
        answered = self._answers[qn] = asyncio.Event()
        try:
            packets = self._send("2011", ";".join(groups), qn)
            if self.retransmit_rate and self.rng.random() < self.retransmit_rate:
                self.state.retransmitted += 1
                for data in packets:
                    self._write(data)
            for _ in range(3):
                try:
                    await asyncio.wait_for(answered.wait(), self.answer_timeout)
                    self.state.answered += 1
                    return
                except TimeoutError:
                    self.state.retransmitted += 1
                    for data in packets:  # the retransmission carries a correct CRC
                        self._write(data)
        finally:
            self._answers.pop(qn, None)

    # -- the centre's packets ---------------------------------------------------------

    async def _receive(self, reader: asyncio.StreamReader) -> None:
        parser = wire.Reader()
        while True:
            data = await reader.read(4096)
            if not data:
                return
            for fields in parser.feed(data):
                cn = fields.get("CN", "")
                if cn == "9014":
                    event = self._answers.get(fields.get("QN", ""))
                    if event is not None:
                        event.set()
                elif cn:
                    await self._command(fields)

    async def _command(self, fields: dict[str, str]) -> None:
        self.state.commands += 1
        qn, cn = fields.get("QN", ""), fields["CN"]
        params = wire.cp_values(fields.get("cp", ""))
        if fields.get("PW") != self.password:
            self._send("9011", "QnRtn=3", qn, flag=4, st="91")
            return
        known = {"1011", "1012", "1061", "1062", "2051", "2061"}
        if cn not in known:
            self._send("9011", "QnRtn=2", qn, flag=4, st="91")
            return
        self._send("9011", "QnRtn=1", qn, flag=4, st="91")
        result = 1
        if cn == "1011":
            self._send("1011", f"SystemTime={_stamp(self.now())}", qn, flag=4)
        elif cn == "1012":
            try:
                self.clock_offset = _epoch(params["SystemTime"]) - time.time()
            except (KeyError, ValueError):
                result = 3
        elif cn == "1061":
            self._send("1061", f"RtdInterval={self.interval:g}", qn, flag=4)
        elif cn == "1062":
            try:
                seconds = float(params["RtdInterval"])
                if not 0 < seconds <= 86400:
                    raise ValueError(seconds)
                self.interval = seconds
                self._wake.set()
            except (KeyError, ValueError):
                result = 3
        else:
            result = await self._history(cn, params, qn)
        self._send("9012", f"ExeRtn={result}", qn, flag=4, st="91")

    async def _history(self, cn: str, params: dict[str, str], qn: str) -> int:
        try:
            begin, end = _epoch(params["BeginTime"]), _epoch(params["EndTime"])
        except (KeyError, ValueError):
            return 3
        step = 60.0 if cn == "2051" else 3600.0
        first = math.ceil(begin / step) * step
        times = [first + i * step for i in range(int((end - first) // step) + 1)][:10]
        if not times:
            return 100
        for epoch in times:
            values = self.sample(epoch)
            groups = [f"DataTime={_stamp(epoch)}"] + [
                f"{code}-Avg={value},{code}-Min={value},{code}-Max={value},{code}-Flag=N"
                for code, value in values.items()
            ]
            self._send(cn, ";".join(groups), qn, flag=4)
        return 1


async def serve(host: str, port: int, count: int, mn: str, password: str, kind: str, interval: float,
                seed: int | None, **faults: object) -> None:
    """``count`` stations (MNs numbered from ``mn``) until cancelled."""
    stations = [
        Hj212StationSimulator(host, port, mn if count == 1 else f"{mn[:-4]}{i:04d}", password, kind, interval,
                              None if seed is None else seed + i, **faults)  # type: ignore[arg-type]
        for i in range(count)
    ]
    for station in stations:
        await station.start()
    log.info("%d HJ 212 %s station(s) calling %s:%d", count, kind, host, port)
    try:
        await asyncio.Event().wait()
    finally:
        for station in stations:
            await station.stop()
