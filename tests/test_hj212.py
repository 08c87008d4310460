"""HJ 212-2017: the codec against the standard's published example, and the listener driver
against our station simulator (a second, separately written reading of the standard)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence

import pytest
from pydantic import SecretStr

from citytwin.drivers.base import Quality, Reading
from citytwin.drivers.errors import ConnectionClosed, DeviceError
from citytwin.drivers.hj212 import codec
from citytwin.drivers.hj212.binding import Hj212Call, Hj212Connection, Hj212Point
from citytwin.drivers.hj212.driver import Hj212Driver
from citytwin.simulators.hj212_station import wire
from citytwin.simulators.hj212_station.station import Hj212StationSimulator

# HJ 212-2017, 6.6 (the example of setting the real-time upload interval), as published
STANDARD_1062 = (b"##0101QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;"
                 b"Flag=5;CP=&&RtdInterval=30&&1C80\r\n")
MN = "88888880000001"


async def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def test_standard_example_decodes_and_reencodes_byte_for_byte() -> None:
    (packet,) = codec.Deframer().feed(STANDARD_1062)
    assert isinstance(packet, codec.Packet)
    assert (packet.qn, packet.st, packet.cn, packet.pw, packet.mn) == (
        "20160801085857223", "32", "1062", "100000", "010000A8900016F000169DC0")
    assert packet.flag == 5 and packet.wants_answer and not packet.split
    assert codec.parse_cp(packet.cp).values == {"RtdInterval": "30"}
    assert codec.encode(packet) == STANDARD_1062
    assert codec.crc16(STANDARD_1062[6:107]) == 0x1C80


def _crc_as_written(data: bytes) -> int:
    """Annex A's algorithm step by step, as the standard writes it."""
    reg = 0xFFFF
    for byte in data:
        reg = (reg >> 8) ^ byte
        for _ in range(8):
            carry = reg & 1
            reg >>= 1
            if carry:
                reg ^= 0xA001
    return reg


def test_table_crc_equals_the_standards_algorithm() -> None:
    rng = random.Random(5)
    samples = [b"", b"A", STANDARD_1062, bytes(range(256)) * 3]
    samples += [bytes(rng.randrange(256) for _ in range(size)) for size in range(1, 80)]
    samples += [bytes(rng.randrange(256) for _ in range(rng.randrange(80, 9999))) for _ in range(20)]
    for data in samples:
        assert codec.crc16(data) == _crc_as_written(data), len(data)


def test_simulator_writes_what_the_codec_reads() -> None:
    seg = wire.segment("20260101000000001", "22", "2011", "123456", MN, 5,
                       "DataTime=20260101000000;a34004-Rtd=31.2,a34004-Flag=N")
    data = wire.packet(seg)
    (packet,) = codec.Deframer().feed(data)
    assert isinstance(packet, codec.Packet)
    assert codec.encode(packet) == data
    assert wire.crc(STANDARD_1062[6:107]) == codec.crc16(STANDARD_1062[6:107])


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (STANDARD_1062.replace(b"1C80", b"1C81"), "crc"),
        (STANDARD_1062.replace(b"##0101", b"##0100"), "length"),
        (STANDARD_1062.replace(b"##0101", b"##01x1"), "length"),
        (b"##0011QN=1;ST=2;C%04X\r\n" % codec.crc16(b"QN=1;ST=2;C"), "format"),
    ],
)
def test_bad_packets_are_counted_not_parsed(data: bytes, kind: str) -> None:
    deframer = codec.Deframer()
    items = deframer.feed(data)
    kinds = [item.kind for item in items if isinstance(item, codec.FrameError)]
    assert kind in kinds
    assert not any(isinstance(item, codec.Packet) for item in items)
    # the stream resynchronises: a good packet after the bad one is read
    (good,) = [i for i in deframer.feed(STANDARD_1062) if isinstance(i, codec.Packet)]
    assert good.cn == "1062"


def test_truncated_packet_waits_and_garbage_is_skipped() -> None:
    deframer = codec.Deframer()
    first = deframer.feed(b"\x00\xffnoise#" + STANDARD_1062[:40])
    assert [getattr(i, "kind", None) for i in first] == ["garbage"]
    assert deframer.pending == 40
    items = deframer.feed(STANDARD_1062[40:])
    assert [type(i).__name__ for i in items] == ["Packet"]
    assert deframer.garbage == 8


def test_lenient_crc_accepts_and_marks() -> None:
    (packet,) = codec.Deframer(lenient=True).feed(STANDARD_1062.replace(b"1C80", b"0000"))
    assert isinstance(packet, codec.Packet) and not packet.crc_ok


def test_data_time_is_station_local_time() -> None:
    assert codec.parse_time("20160801085857", 8.0) == 1470013137000


# -- the listener driver against the simulator ------------------------------------------

POINTS = {
    "pm2_5": Hj212Point(key="a34004-Rtd"),
    "pm10": Hj212Point(key="a34002-Rtd"),
    "temperature": Hj212Point(key="a01001-Rtd"),
    "report_interval": Hj212Point(key="RtdInterval", set="1062"),
}


class Sinks:
    def __init__(self) -> None:
        self.readings: list[Reading] = []
        self.links: list[tuple[bool, str | None]] = []

    def push(self, readings: Sequence[Reading]) -> None:
        self.readings.extend(readings)

    def link(self, up: bool, reason: str | None) -> None:
        self.links.append((up, reason))

    def latest(self, point: str) -> Reading:
        return [r for r in self.readings if r.point == point][-1]


def make_driver(password: str = "123456", crc: str = "strict", mn: str = MN, port: int = 0) -> tuple[Hj212Driver, Sinks]:
    conn = Hj212Connection(host="127.0.0.1", port=port, mn=mn, password=SecretStr(password), crc=crc,  # type: ignore[arg-type]
                           timeout=3.0)
    driver = Hj212Driver(conn, POINTS)
    sinks = Sinks()
    driver.set_push_sink(sinks.push)
    driver.set_link_sink(sinks.link)
    return driver, sinks


@pytest.fixture
async def station_driver() -> AsyncIterator[tuple[Hj212Driver, Sinks]]:
    driver, sinks = make_driver()
    await driver.connect()
    try:
        yield driver, sinks
    finally:
        await driver.close()


async def test_reports_arrive_with_quality_from_flags(station_driver: tuple[Hj212Driver, Sinks]) -> None:
    driver, sinks = station_driver
    assert driver.bound_port
    sim = Hj212StationSimulator("127.0.0.1", driver.bound_port, MN, "123456", "air", 0.2, seed=1,
                                flags={"a34002": "C", "a01001": "D"}, fragment=True)
    async with sim:
        await wait_for(lambda: sim.state.answered >= 2)
        assert sinks.links[0] == (True, None)
        pm25 = sinks.latest("pm2_5")
        assert pm25.quality is Quality.GOOD and isinstance(pm25.value, float)
        assert abs(pm25.ts - time.time() * 1000) < 5000  # DataTime, Beijing time, to epoch ms
        assert sinks.latest("pm10").quality is Quality.UNCERTAIN
        assert "flag C" in (sinks.latest("pm10").error or "")
        assert sinks.latest("temperature").quality is Quality.BAD
        values = {r.point: r.value for r in await driver.read()}
        assert values["pm2_5"] == sim.state.last_values["a34004"] or sinks.readings
    await wait_for(lambda: sinks.links[-1][0] is False)


async def test_commands_clock_interval_history(station_driver: tuple[Hj212Driver, Sinks]) -> None:
    driver, _ = station_driver
    sim = Hj212StationSimulator("127.0.0.1", driver.bound_port or 0, MN, "123456", "air", 60.0, seed=2)
    async with sim:
        await wait_for(lambda: sim.state.answered >= 1)
        clock = await driver.invoke(Hj212Call(cn="1011", output={"time": "SystemTime"}), {})
        assert len(clock["time"]) == 14
        await driver.write({"report_interval": 0.3})
        assert sim.interval == 0.3
        await wait_for(lambda: sim.state.answered >= 3)
        history = await driver.invoke(
            Hj212Call(cn="2061", cp={"BeginTime": "$begin", "EndTime": "$end"}, output={"records": "#records"}),
            {"begin": "20260101000000", "end": "20260101035959"})
        assert history == {"records": 4}
        with pytest.raises(DeviceError, match="QnRtn=2"):
            await driver.invoke(Hj212Call(cn="3019"), {})
    await wait_for(lambda: not driver.health.connected)
    with pytest.raises(ConnectionClosed):
        await driver.write({"report_interval": 30})


async def test_retransmissions_are_answered_but_delivered_once(station_driver: tuple[Hj212Driver, Sinks]) -> None:
    driver, sinks = station_driver
    sim = Hj212StationSimulator("127.0.0.1", driver.bound_port or 0, MN, "123456", "air", 0.1, seed=3,
                                retransmit_rate=1.0)
    async with sim:
        await wait_for(lambda: sim.state.answered >= 3)
    assert driver.health.extra["duplicates"] >= 2
    times = [r.ts for r in sinks.readings if r.point == "pm2_5"]
    assert len(times) == len(set(times)) or len(times) <= sim.state.answered + 1


async def test_long_packets_are_split_and_joined(station_driver: tuple[Hj212Driver, Sinks]) -> None:
    driver, sinks = station_driver
    sim = Hj212StationSimulator("127.0.0.1", driver.bound_port or 0, MN, "123456", "air", 60.0, seed=4, pollutants=60)
    async with sim:
        await wait_for(lambda: sim.state.answered >= 1)
        await wait_for(lambda: any(r.point == "pm2_5" for r in sinks.readings))
    assert sim.state.sent >= 2  # the 60-pollutant packet went as several (D bit) packets


def test_a_length_beyond_the_limit_is_refused_at_once() -> None:
    deframer = codec.Deframer(max_data=1024)
    items = deframer.feed(b"##2000QN=" + STANDARD_1062)
    assert [getattr(i, "kind", None) for i in items][:1] == ["length"]
    assert [i.cn for i in items if isinstance(i, codec.Packet)] == ["1062"]  # no waiting for 2000 characters
