"""SL 651-2014: the codec against published example frames, both encodings, SYN reassembly,
and the listener driver against our hydro station simulator (a second reading of the standard)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence

import pytest
from pydantic import SecretStr

from citytwin.drivers.base import Quality, Reading
from citytwin.drivers.sl651 import body as bodies
from citytwin.drivers.sl651 import frames
from citytwin.drivers.sl651.binding import Sl651Call, Sl651Connection, Sl651Point
from citytwin.drivers.sl651.driver import Sl651Driver
from citytwin.simulators.hydro_station import wire
from citytwin.simulators.hydro_station.station import HydroStationSimulator

# published example frames (docs/protocols-china.md names the source): a test report (30)
# and its acknowledgement, a timed report (32) and its acknowledgement, a link keep-alive (2F)
TEST_30 = bytes.fromhex("7E7E010012345678123430002B020003591011154947F1F1001234567848F0F05910111549"
                        "20190000052619000005392300000127381211150320FA")
ACK_30 = bytes.fromhex("7E7E00123456780112343080080200035910111549471B75D4")
TIMED_32 = bytes.fromhex("7E7E05001122334403E832002B020034170718110016F1F1001122334448F0F01707181100"
                         "201900004026190000403923000104903812109903A421")
ACK_32 = bytes.fromhex("7E7E00112233440503E83280080200341707181100161BE5D4")
KEEPALIVE = bytes.fromhex("7E7E01001234567812342F0008020003591011155111036BCA")
STATION = "0012345678"


async def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def test_published_test_report() -> None:
    (frame,) = frames.Deframer().feed(TEST_30)
    assert isinstance(frame, frames.Frame)
    assert (frame.centre, frame.station, frame.password, frame.function) == (1, STATION, "1234", 0x30)
    report = bodies.parse(frame.body, "hex")
    assert (report.serial, report.sent, report.station, report.category, report.observed) == (
        3, "591011154947", STATION, "H", "5910111549")
    assert report.values == {"PJ": 0.5, "PT": 0.5, "Z": 0.127, "VT": 11.15}
    assert frames.encode(frame) == TEST_30 and bodies.build(report, "hex") == frame.body


def test_published_timed_report_and_acknowledgements() -> None:
    (frame,) = frames.Deframer().feed(TIMED_32)
    assert isinstance(frame, frames.Frame)
    assert bodies.parse(frame.body, "hex").values == {"PJ": 4.0, "PT": 4.0, "Z": 10.49, "VT": 10.99}
    for ack, station, centre, password, function in ((ACK_30, STATION, 1, "1234", 0x30),
                                                       (ACK_32, "0011223344", 5, "03E8", 0x32)):
        (down,) = frames.Deframer(uplink=False).feed(ack)
        assert isinstance(down, frames.Frame)
        assert (down.station, down.centre, down.password, down.function, down.end) == (
            station, centre, password, function, frames.ESC)
        rebuilt = frames.Frame("hex", centre, station, password, function, False, down.body, frames.ESC)
        assert frames.encode(rebuilt) == ack
    (alive,) = frames.Deframer().feed(KEEPALIVE)
    assert isinstance(alive, frames.Frame) and alive.function == 0x2F


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (TEST_30[:-1] + b"\x00", "crc"),
        (TEST_30[:11] + b"\x00\x2c" + TEST_30[13:], "length"),
        (TEST_30[:11] + b"\x80\x2b" + TEST_30[13:], "format"),  # a downlink frame sent up
    ],
)
def test_bad_frames(data: bytes, kind: str) -> None:
    deframer = frames.Deframer()
    items = deframer.feed(data) + deframer.feed(TIMED_32)
    assert kind in [i.kind for i in items if isinstance(i, frames.FrameError)]
    assert [i.function for i in items if isinstance(i, frames.Frame)] == [0x32]


def test_truncated_frame_waits() -> None:
    deframer = frames.Deframer()
    assert deframer.feed(TEST_30[:30]) == []
    assert deframer.pending == 30
    (frame,) = deframer.feed(TEST_30[30:])
    assert isinstance(frame, frames.Frame)


@pytest.mark.parametrize("encoding", ["hex", "ascii"])
def test_simulator_frames_read_back(encoding: str) -> None:
    values = {"PJ": 1.5, "PT": 321.0, "Z": 2.345, "VT": 12.6}
    body = wire.report_body(encoding, 7, "260101120000", STATION, "H", "2601011200", values)
    make = wire.frame_hex if encoding == "hex" else wire.frame_ascii
    data = make(1, STATION, "1234", 0x32, body)
    (frame,) = frames.Deframer().feed(data)
    assert isinstance(frame, frames.Frame) and frame.encoding == encoding
    assert frames.encode(frame) == data
    report = bodies.parse(frame.body, encoding)
    assert report.values == values and report.station == STATION and report.observed == "2601011200"
    assert bodies.build(report, encoding) == body


def test_multi_packet_reassembly_in_any_order_with_duplicates() -> None:
    body = wire.report_body("hex", 9, "260101120000", STATION, "P", "2601011200", {"PJ": 2.5, "PT": 10.0})
    parts = [wire.frame_hex(1, STATION, "1234", 0x32, body[:10], wire.ETB, (3, 1)),
             wire.frame_hex(1, STATION, "1234", 0x32, body[10:20], wire.ETB, (3, 2)),
             wire.frame_hex(1, STATION, "1234", 0x32, body[20:], wire.ETX, (3, 3))]
    deframer, joiner = frames.Deframer(), frames.Reassembler()
    results = [joiner.add(f) for data in (parts[2], parts[0], parts[0], parts[1])
               for f in deframer.feed(data) if isinstance(f, frames.Frame)]
    assert results[:3] == [None, None, None]
    whole = results[3]
    assert isinstance(whole, frames.Frame) and whole.body == body


def test_bcd_negative_and_missing() -> None:
    assert bodies.bcd_value(bytes.fromhex("FF001234"), 3) == -1.234
    assert bodies.bcd_value(bytes.fromhex("FFFFFF"), 1) is None
    assert bodies.bcd_bytes(-1.234, 0x23) == bytes.fromhex("FF001234")


# -- the listener driver against the simulator ------------------------------------------

POINTS = {
    "rainfall": Sl651Point(element="PJ"),
    "rainfall_total": Sl651Point(element="PT"),
    "water_level": Sl651Point(element="Z"),
    "battery_voltage": Sl651Point(element="VT"),
}


class Sinks:
    def __init__(self) -> None:
        self.readings: list[Reading] = []
        self.links: list[tuple[bool, str | None]] = []

    def push(self, readings: Sequence[Reading]) -> None:
        self.readings.extend(readings)

    def link(self, up: bool, reason: str | None) -> None:
        self.links.append((up, reason))


@pytest.fixture(params=["hex", "ascii"])
async def hydro(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Sl651Driver, Sinks]]:
    conn = Sl651Connection(host="127.0.0.1", port=0, station=STATION, password=SecretStr("1234"), timeout=3.0,
                           encoding=request.param)  # the encoding of our queries
    driver = Sl651Driver(conn, POINTS)
    sinks = Sinks()
    driver.set_push_sink(sinks.push)
    driver.set_link_sink(sinks.link)
    await driver.connect()
    try:
        yield driver, sinks
    finally:
        await driver.close()


@pytest.mark.parametrize("encoding", ["hex", "ascii"])
async def test_reports_acknowledged_and_read(hydro: tuple[Sl651Driver, Sinks], encoding: str) -> None:
    driver, sinks = hydro
    sim = HydroStationSimulator("127.0.0.1", driver.bound_port or 0, STATION, "1234", interval=0.2, seed=5,
                                encoding=encoding, fragment=True, multi_packet=encoding == "hex")
    async with sim:
        await wait_for(lambda: sim.state.acknowledged >= 2)
        level = [r for r in sinks.readings if r.point == "water_level"][-1]
        assert level.quality is Quality.GOOD and 0.5 <= level.value <= 10
        assert sinks.links[0] == (True, None)
        answer = await driver.invoke(Sl651Call(function="37", output={"level": "Z"}), {})
        assert answer["level"] == sim.state.last_values["Z"]
        series = await driver.invoke(Sl651Call(function="38", element="Z", output={"levels": "Z"}),
                                     {"begin": "26010100", "end": "26010123"})
        assert series["levels"] and all(isinstance(v, float) for v in series["levels"])
        clock = await driver.invoke(Sl651Call(function="4A", output={"time": "#time"}), {})
        assert len(clock["time"]) == 12
    await wait_for(lambda: sinks.links[-1][0] is False)
