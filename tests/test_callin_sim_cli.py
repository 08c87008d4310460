"""``citytwin sim hj212-station`` and ``hydro-station`` as real processes, fault modes on,
calling a listener driver: readings arrive, faults are counted, flags become qualities."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence

from conftest import eventually
from pydantic import SecretStr

from citytwin.drivers.base import Quality, Reading
from citytwin.drivers.hj212.binding import Hj212Connection, Hj212Point
from citytwin.drivers.hj212.driver import Hj212Driver
from citytwin.drivers.listener import active
from citytwin.drivers.sl651.binding import Sl651Connection, Sl651Point
from citytwin.drivers.sl651.driver import Sl651Driver


def sim(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "citytwin.gateway.cli", "sim", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def test_hj212_station_cli_with_faults() -> None:
    readings: list[Reading] = []
    driver = Hj212Driver(Hj212Connection(host="127.0.0.1", port=0, mn="39010000DUST0001", password=SecretStr("123456")),
                         {"pm2_5": Hj212Point(key="a34004-Rtd"), "noise": Hj212Point(key="LA-Rtd")})
    driver.set_push_sink(lambda batch: readings.extend(batch))
    await driver.connect()
    proc = sim("hj212-station", "--port", str(driver.bound_port), "--mn", "39010000DUST0001", "--kind", "dust",
               "--interval", "0.2", "--bad-crc", "--garbage", "--fragment", "--flag", "a34004=C", "--seed", "1")
    try:
        (listener,) = [x for x in active() if x.port == driver.bound_port]
        await eventually(lambda: listener.stats["bad_crc"] >= 1 and len([r for r in readings if r.point == "pm2_5"]) >= 2)
        assert listener.stats["bad_garbage"] >= 1
        assert {r.quality for r in readings if r.point == "pm2_5"} == {Quality.UNCERTAIN}
        assert all(20 <= r.value <= 140 for r in readings if r.point == "noise")
    finally:
        proc.terminate()
        proc.wait(10)
        await driver.close()


async def test_hydro_station_cli_ascii_multi_packet() -> None:
    readings: list[Reading] = []

    def push(batch: Sequence[Reading]) -> None:
        readings.extend(batch)

    driver = Sl651Driver(Sl651Connection(host="127.0.0.1", port=0, station="0012345678", password=SecretStr("1234")),
                         {"level": Sl651Point(element="Z"), "rain": Sl651Point(element="PJ")})
    driver.set_push_sink(push)
    await driver.connect()
    proc = sim("hydro-station", "--port", str(driver.bound_port), "--encoding", "ascii", "--interval", "0.2",
               "--multi-packet", "--retransmit-rate", "0.5", "--seed", "2")
    try:
        await eventually(lambda: len([r for r in readings if r.point == "level"]) >= 3)
        assert driver.health.extra["duplicates"] >= 1 or driver.health.extra["frames"] >= 6
        assert all(r.quality is Quality.GOOD for r in readings)
    finally:
        proc.terminate()
        proc.wait(10)
        await driver.close()
