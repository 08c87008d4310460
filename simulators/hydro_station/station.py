"""An SL 651-2014 remote station that calls the centre: a tipping-bucket rain gauge with a
river (or ponding-point) water-level sensor.

It connects out to ``host:port``, sends a timed report (32) every ``interval`` seconds with
current and accumulated rainfall (PJ, PT), water level (Z) and supply voltage (VT), an added
report (33) when a storm starts, a link keep-alive (2F) between reports, and retransmits a
report the centre does not acknowledge within ``answer_timeout`` (up to 3 times). It answers
queries: 37 (real-time data), 38 (a period's series of one element), 4A (set the clock),
51 (read the clock). Rain comes in storms; the level follows the rain with a lag.

Fault modes: ``bad_crc`` (every third frame), ``garbage`` (noise between frames),
``fragment`` (frames in pieces), ``multi_packet`` (reports as two SYN packets, M3),
``retransmit_rate`` (a report twice now and then); ``encoding`` hex or ascii.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import time
from dataclasses import dataclass, field

from citytwin.simulators.hydro_station import wire
from citytwin.simulators.lifecycle import Simulator

log = logging.getLogger(__name__)
_TZ = dt.timezone(dt.timedelta(hours=8))


def _stamp(epoch: float, fmt: str = "%y%m%d%H%M%S") -> str:
    return dt.datetime.fromtimestamp(epoch, _TZ).strftime(fmt)


def _epoch(text: str) -> float:
    return dt.datetime.strptime(text, "%y%m%d%H%M%S").replace(tzinfo=_TZ).timestamp()


@dataclass
class HydroState:
    sent: int = 0
    acknowledged: int = 0
    retransmitted: int = 0
    queries: int = 0
    connects: int = 0
    last_values: dict[str, float] = field(default_factory=dict)


class HydroStationSimulator(Simulator):
    def __init__(
        self, host: str, port: int, station: str = "0012345678", password: str = "1234", centre: int = 1,
        interval: float = 300.0, seed: int | None = None, *, encoding: str = "hex", category: str = "H",
        bad_crc: bool = False, garbage: bool = False, fragment: bool = False, multi_packet: bool = False,
        retransmit_rate: float = 0.0, answer_timeout: float = 5.0, reconnect_delay: float = 1.0,
    ) -> None:
        self.host, self.port, self.station, self.password, self.centre = host, port, station, password, centre
        self.interval, self.encoding, self.category = interval, encoding, category
        self.rng = random.Random(seed)
        self.bad_crc, self.garbage, self.fragment, self.multi_packet = bad_crc, garbage, fragment, multi_packet
        self.retransmit_rate = retransmit_rate
        self.answer_timeout, self.reconnect_delay = answer_timeout, reconnect_delay
        self.clock_offset = 0.0
        self.state = HydroState()
        self.connected = asyncio.Event()
        self.accumulated = 120.0  # mm since the gauge was reset
        self.level = 2.35  # m
        self.voltage = 12.6
        self.storm = 0.0  # remaining storm minutes
        self._serial = 0
        self._frames = 0
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._acks: dict[int, asyncio.Event] = {}
        self._history: list[tuple[float, dict[str, float]]] = []

    def now(self) -> float:
        return time.time() + self.clock_offset

    def step(self) -> tuple[dict[str, float], bool]:
        """Advance one report interval: rain in storms, a level that follows, a battery."""
        started = False
        if self.storm <= 0 and self.rng.random() < 0.05:
            self.storm, started = self.rng.uniform(30, 180), True
        rain = round(self.rng.uniform(0.5, 6.0) * 2) / 2 if self.storm > 0 else 0.0  # 0.5 mm buckets
        self.storm -= self.interval / 60
        self.accumulated = round(self.accumulated + rain, 1)
        self.level = round(max(0.5, self.level + 0.02 * rain - 0.002 + self.rng.gauss(0, 0.001)), 3)
        self.voltage = round(min(13.8, max(11.0, self.voltage + self.rng.gauss(0, 0.02))), 2)
        values = {"PJ": rain, "PT": self.accumulated, "Z": self.level, "VT": self.voltage}
        self.state.last_values = values
        self._history = (self._history + [(self.now(), values)])[-500:]
        return values, started

    def _next_serial(self) -> int:
        self._serial = self._serial % 0xFFFF + 1
        return self._serial

    def _frame(self, function: int, body: bytes, end: int = wire.ETX, packets: tuple[int, int] | None = None) -> bytes:
        self._frames += 1
        bad = self.bad_crc and self._frames % 3 == 0
        make = wire.frame_hex if self.encoding == "hex" else wire.frame_ascii
        return make(self.centre, self.station, self.password, function, body, end, packets, bad)

    def _clean(self, function: int, body: bytes, end: int = wire.ETX, packets: tuple[int, int] | None = None) -> bytes:
        make = wire.frame_hex if self.encoding == "hex" else wire.frame_ascii
        return make(self.centre, self.station, self.password, function, body, end, packets)

    def _write(self, data: bytes) -> None:
        writer = self._writer
        if writer is None:
            return
        if self.garbage:
            writer.write(bytes(self.rng.choice(b"\x00\x11\x22\x33\x44\x55\x66\x77\x88\x99\xaa\xff")
                               for _ in range(self.rng.randrange(8, 64))))
        if self.fragment and len(data) > 8:
            cut = self.rng.randrange(1, len(data) - 1)
            writer.write(data[:cut])
            writer.write(data[cut:])
        else:
            writer.write(data)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"hydro-station:{self.station}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

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
        while True:
            values, storm_started = self.step()
            await self.report(0x33 if storm_started else 0x32, values)
            await asyncio.sleep(self.interval / 2)
            serial = self._next_serial()
            self._write(self._frame(0x2F, serial.to_bytes(2, "big") + bytes.fromhex(_stamp(self.now()))
                                    if self.encoding == "hex" else f"{serial:04X} {_stamp(self.now())}".encode(),
                                    wire.ETX))
            await asyncio.sleep(self.interval / 2)

    def _body(self, serial: int, values: dict[str, float]) -> bytes:
        now = self.now()
        return wire.report_body(self.encoding, serial, _stamp(now), self.station, self.category,
                                _stamp(now, "%y%m%d%H%M"), values)

    async def report(self, function: int, values: dict[str, float]) -> None:
        serial = self._next_serial()
        body = self._body(serial, values)
        if self.multi_packet:
            cut = len(body) // 2
            frames = [self._frame(function, body[:cut], wire.ETB, (2, 1)), self._frame(function, body[cut:], wire.ETX, (2, 2))]
            clean = [self._clean(function, body[:cut], wire.ETB, (2, 1)), self._clean(function, body[cut:], wire.ETX, (2, 2))]
        else:
            frames, clean = [self._frame(function, body)], [self._clean(function, body)]
        acked = self._acks[serial] = asyncio.Event()
        self.state.sent += 1
        try:
            for data in frames:
                self._write(data)
            if self.retransmit_rate and self.rng.random() < self.retransmit_rate:
                self.state.retransmitted += 1
                for data in clean:
                    self._write(data)
            for _ in range(3):
                try:
                    await asyncio.wait_for(acked.wait(), self.answer_timeout)
                    self.state.acknowledged += 1
                    return
                except TimeoutError:
                    self.state.retransmitted += 1
                    for data in clean:
                        self._write(data)
        finally:
            self._acks.pop(serial, None)

    async def _receive(self, reader: asyncio.StreamReader) -> None:
        parser = wire.Reader()
        while True:
            data = await reader.read(4096)
            if not data:
                return
            for function, body, encoding, end in parser.feed(data):
                serial = int.from_bytes(body[:2], "big") if encoding == "hex" else int(body[:4], 16)
                if end == wire.ENQ:
                    self._answer(function, body, encoding, serial)
                else:
                    event = self._acks.get(serial)
                    if event is not None:
                        event.set()

    def _answer(self, function: int, body: bytes, encoding: str, serial: int) -> None:
        self.state.queries += 1
        if function == 0x37:
            values = self.state.last_values or self.step()[0]
            self._write(self._clean(0x37, self._body(serial, values)))
        elif function == 0x4A:
            sent = body[2:8].hex() if encoding == "hex" else body.decode().split()[1]
            self.clock_offset = _epoch(sent) - time.time()
            self._write(self._clean(0x4A, self._header(serial) + self._address()))
        elif function == 0x51:
            self._write(self._clean(0x51, self._header(serial) + self._address()))
        elif function == 0x38:
            self._write(self._clean(0x38, self._series(serial, body, encoding)))

    def _header(self, serial: int) -> bytes:
        sent = _stamp(self.now())
        return serial.to_bytes(2, "big") + bytes.fromhex(sent) if self.encoding == "hex" else f"{serial:04X} {sent}".encode()

    def _address(self) -> bytes:
        if self.encoding == "hex":
            return b"\xf1\xf1" + bytes.fromhex(self.station) + self.category.encode()
        return f" ST {self.station} {self.category}".encode()

    def _series(self, serial: int, body: bytes, encoding: str) -> bytes:
        """The answer to 38: the element's values in the period, oldest first (our own history)."""
        if encoding == "hex":
            code = body[21]
            name = wire.BY_CODE.get(code, ("Z", 0x23))[0]
            begin = body[8:12].hex()
        else:
            tokens = body.decode().split()
            name, begin = tokens[5], tokens[2]
        code, definition = wire.ELEMENTS[name]
        values = [v[name] for _, v in self._history][-12:]
        if self.encoding == "hex":
            out = self._header(serial) + self._address() + b"\xf0\xf0" + bytes.fromhex(begin + "00")
            out += bytes([0x04, 0x18]) + bytes.fromhex("000005") + bytes([code, definition])
            return out + b"".join(wire.bcd(v, definition) for v in values)
        text = " ".join(f"{v:.{definition & 7}f}" for v in values)
        return self._header(serial) + self._address() + f" TT {begin}00 DR000005 {name} {text}".encode()


async def serve(host: str, port: int, count: int, station: str, password: str, interval: float,
                seed: int | None, **options: object) -> None:
    """``count`` stations (addresses counting up from ``station``) until cancelled."""
    stations = [
        HydroStationSimulator(host, port, f"{int(station, 16) + i:010X}", password, 1, interval,
                              None if seed is None else seed + i, **options)  # type: ignore[arg-type]
        for i in range(count)
    ]
    for sim in stations:
        await sim.start()
    log.info("%d SL 651 station(s) calling %s:%d", count, host, port)
    try:
        await asyncio.Event().wait()
    finally:
        for sim in stations:
            await sim.stop()
