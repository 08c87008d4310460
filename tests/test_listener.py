"""The shared listener under faults: bad CRC, wrong length, truncated frames, unknown
identities, wrong passwords, 1,000 idle connections, and a garbage flood on one connection
while another station reports — the others unaffected."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest
from pydantic import SecretStr

from citytwin.drivers import listener as listeners
from citytwin.drivers.base import Reading
from citytwin.drivers.errors import ConnectError
from citytwin.drivers.hj212 import codec
from citytwin.drivers.hj212.binding import Hj212Connection, Hj212Point
from citytwin.drivers.hj212.driver import Hj212Driver
from citytwin.drivers.sl651.binding import Sl651Connection, Sl651Point
from citytwin.drivers.sl651.driver import Sl651Driver
from citytwin.simulators.hj212_station.station import Hj212StationSimulator

MN_A, MN_B = "STATIONA0001", "STATIONB0002"


async def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


class Collect:
    def __init__(self) -> None:
        self.readings: list[Reading] = []
        self.links: list[tuple[bool, str | None]] = []

    def push(self, readings: Sequence[Reading]) -> None:
        self.readings.extend(readings)

    def link(self, up: bool, reason: str | None) -> None:
        self.links.append((up, reason))


def driver(mn: str, port: int = 0, crc: str = "strict", **limits: float) -> tuple[Hj212Driver, Collect]:
    conn = Hj212Connection(host="127.0.0.1", port=port, mn=mn, password=SecretStr("123456"), crc=crc,  # type: ignore[arg-type]
                           **limits)
    d = Hj212Driver(conn, {"pm2_5": Hj212Point(key="a34004-Rtd")})
    sink = Collect()
    d.set_push_sink(sink.push)
    d.set_link_sink(sink.link)
    return d, sink


@pytest.fixture
async def two() -> AsyncIterator[tuple[Hj212Driver, Collect, Hj212Driver, Collect, int]]:
    a, sink_a = driver(MN_A, frame_timeout=1.0)
    await a.connect()
    port = a.bound_port or 0
    b, sink_b = driver(MN_B, port)
    await b.connect()
    try:
        yield a, sink_a, b, sink_b, port
    finally:
        await b.close()
        await a.close()


def packet(mn: str, pw: str = "123456", value: float = 12.5, qn: str = "20260101000000001") -> bytes:
    cp = f"DataTime=20260101000000;a34004-Rtd={value},a34004-Flag=N"
    return codec.encode(codec.Packet(qn, "22", "2011", pw, mn, 5, cp))


async def test_one_port_serves_many_and_is_released_by_the_last(two: tuple[Hj212Driver, Collect, Hj212Driver, Collect, int]) -> None:
    a, sink_a, b, sink_b, port = two
    (shared,) = [x for x in listeners.active() if x.port == port]
    assert shared.users == 2
    for mn in (MN_A, MN_B):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(packet(mn))
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n"), 5)
        assert b"CN=9014" in answer and b"QN=20260101000000001" in answer
        writer.close()
    await wait_for(lambda: bool(sink_a.readings and sink_b.readings))
    assert sink_a.readings[0].value == 12.5
    await b.close()
    assert shared.users == 1
    await a.close()
    assert port not in [x.port for x in listeners.active()]
    with pytest.raises(OSError):  # and the port is free again
        await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)


async def test_same_identity_claimed_twice_is_refused(two: tuple[Hj212Driver, Collect, Hj212Driver, Collect, int]) -> None:
    *_, port = two
    again, _ = driver(MN_A, port)
    with pytest.raises(ConnectError, match="claimed by another device"):
        await again.connect()


async def test_bad_crc_wrong_length_truncated_then_good(two: tuple[Hj212Driver, Collect, Hj212Driver, Collect, int]) -> None:
    _, sink_a, _, _, port = two
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    good = packet(MN_A)
    writer.write(good[:-6] + b"0000\r\n")  # bad CRC
    writer.write(b"##%04d" % (int(good[2:6]) - 1) + good[6:])  # wrong length
    writer.write(packet(MN_A, qn="20260101000000002"))
    answer = await asyncio.wait_for(reader.readuntil(b"\r\n"), 5)
    assert b"QN=20260101000000002" in answer  # only the good packet is answered
    (shared,) = [x for x in listeners.active() if x.port == port]
    assert shared.stats["bad_crc"] == 1 and shared.stats["bad_length"] >= 1
    assert [r.value for r in sink_a.readings] == [12.5]
    writer.write(packet(MN_A, qn="20260101000000003")[:30])  # truncated: the slowloris bound cuts it
    assert await asyncio.wait_for(reader.read(), 5) == b""
    assert shared.stats["frame_timeouts"] == 1
    await wait_for(lambda: sink_a.links[-1][0] is False)
    assert "longer than 1 s" in (sink_a.links[-1][1] or "")
    writer.close()


async def test_lenient_crc_is_per_device() -> None:
    lenient, sink = driver(MN_A, crc="lenient")
    await lenient.connect()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", lenient.bound_port or 0)
        writer.write(packet(MN_A)[:-6] + b"0000\r\n")
        assert b"CN=9014" in await asyncio.wait_for(reader.readuntil(b"\r\n"), 5)
        assert [r.value for r in sink.readings] == [12.5]
        writer.close()
    finally:
        await lenient.close()


async def test_unknown_identity_and_wrong_password_refused(two: tuple[Hj212Driver, Collect, Hj212Driver, Collect, int],
                                                           caplog: pytest.LogCaptureFixture) -> None:
    a, sink_a, _, _, port = two
    (shared,) = [x for x in listeners.active() if x.port == port]
    for _ in range(3):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(packet("NOBODY0000"))
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed without an answer
        writer.close()
    assert shared.stats["unknown_identity"] == 3
    assert sum("NOBODY0000" in r.getMessage() for r in caplog.records) == 1  # logged once
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(packet(MN_A, pw="999999"))
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    assert shared.stats["bad_password"] == 1
    assert a.health.extra["refused_password"] == 1
    assert "999999" not in caplog.text and "123456" not in caplog.text  # passwords are never logged
    assert sink_a.readings == [] and sink_a.links == []


async def test_thousand_idle_connections_do_not_stop_a_station(two: tuple[Hj212Driver, Collect, Hj212Driver, Collect, int]) -> None:
    _, sink_a, _, _, port = two
    idle = []
    for _ in range(1000):
        idle.append(await asyncio.open_connection("127.0.0.1", port))
    (shared,) = [x for x in listeners.active() if x.port == port]
    await wait_for(lambda: shared.connections >= 1000, 10)
    sim = Hj212StationSimulator("127.0.0.1", port, MN_A, "123456", "air", 0.1, seed=7)
    async with sim:
        await wait_for(lambda: sim.state.answered >= 3, 10)
    assert sink_a.readings
    for _, writer in idle:
        writer.close()
    await wait_for(lambda: shared.connections == 0, 10)


async def test_garbage_flood_is_cut_and_others_unaffected(two: tuple[Hj212Driver, Collect, Hj212Driver, Collect, int]) -> None:
    _, sink_a, b, sink_b, port = two
    sim = Hj212StationSimulator("127.0.0.1", port, MN_B, "123456", "air", 0.05, seed=8, garbage=True)
    async with sim:
        await wait_for(lambda: sim.state.answered >= 2)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(packet(MN_A))  # the flooder identifies itself first, then floods
        await asyncio.wait_for(reader.readuntil(b"\r\n"), 5)
        before = sim.state.answered
        chunk = b"\x55" * 65536
        with pytest.raises((ConnectionError, AssertionError)):
            for _ in range(64):  # 4 MiB of garbage
                writer.write(chunk)
                await writer.drain()
                if reader.at_eof():
                    raise AssertionError("cut")
        (shared,) = [x for x in listeners.active() if x.port == port]
        await wait_for(lambda: shared.stats["cut_for_garbage"] == 1)
        await wait_for(lambda: sim.state.answered >= before + 3)
        writer.close()
    assert sink_b.readings and b.health.extra["frames"] >= 3
    assert sink_a.links[-1][0] is False and "garbage" in (sink_a.links[-1][1] or "")


async def test_listener_protocols_do_not_share_a_port() -> None:
    a, _ = driver(MN_A)
    await a.connect()
    try:
        conn = Sl651Connection(host="127.0.0.1", port=a.bound_port or 0, station="0012345678", password=SecretStr("1234"))
        hydro = Sl651Driver(conn, {"level": Sl651Point(element="Z")})
        with pytest.raises(ConnectError, match="already serves hj212"):
            await hydro.connect()
    finally:
        await a.close()


async def test_password_file_and_idle_cut(tmp_path: Path) -> None:
    secret = tmp_path / "station.pw"
    secret.write_text("654321\n")
    conn = Hj212Connection(host="127.0.0.1", port=0, mn=MN_A, password_file=secret, idle_timeout=0.5)
    d = Hj212Driver(conn, {"pm2_5": Hj212Point(key="a34004-Rtd")})
    sink = Collect()
    d.set_link_sink(sink.link)
    d.set_push_sink(sink.push)
    await d.connect()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", d.bound_port or 0)
        writer.write(packet(MN_A, pw="654321"))
        assert b"CN=9014" in await asyncio.wait_for(reader.readuntil(b"\r\n"), 5)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # silent past idle_timeout: cut
        await wait_for(lambda: len(sink.links) == 2)
        assert sink.links[0] == (True, None) and "silent for 0.5 s" in (sink.links[1][1] or "")
        writer.close()
    finally:
        await d.close()
    missing = Hj212Driver(Hj212Connection(host="127.0.0.1", port=0, mn=MN_A, password_file=tmp_path / "nope"), {})
    with pytest.raises(ConnectError, match="cannot read the password file"):
        await missing.connect()
