"""The DL/T 645 driver against our meters-645 simulator: several meters on one line over a
pty (the driver opens it as a serial port) and over TCP (a transparent serial server)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from citytwin.drivers.base import Quality
from citytwin.drivers.dlt645.binding import Dlt645Call, Dlt645Connection, Dlt645Point
from citytwin.drivers.dlt645.driver import Dlt645Driver
from citytwin.drivers.errors import (
    BindingError,
    ConnectError,
    ConnectionClosed,
    DeviceError,
    RequestTimeout,
)
from citytwin.drivers.registry import create_driver
from citytwin.simulators.meters_645.server import Meters645Simulator, make_meters

pytestmark = pytest.mark.timeout(60)

POINTS: dict[str, dict[str, Any]] = {
    "energy": {"di": "00010000"},
    "tariff_peak": {"di": "0001FF00", "member": 2},
    "voltage_a": {"di": "02010100"},
    "current_b": {"di": "02020200"},
    "power": {"di": "02030000"},
    "pf": {"di": "02060000"},
    "frequency": {"di": "02800002"},
    "demand": {"di": "01010000"},
    "demand_time": {"di": "01010000", "part": "time"},
    "date": {"di": "04000101"},
    "address": {"di": "04000401"},
}


def meter(address: str, points: dict[str, dict[str, Any]] | None = None, **line: Any) -> Dlt645Driver:
    connection = Dlt645Connection.model_validate({"address": address, "parity": "N", "timeout": 0.5, **line})
    bound = {n: Dlt645Point.model_validate(p) for n, p in (points or POINTS).items()}
    driver = create_driver("dlt645", connection, bound)
    assert isinstance(driver, Dlt645Driver)
    return driver


@pytest.fixture
async def sim() -> AsyncIterator[Meters645Simulator]:
    async with Meters645Simulator(make_meters(3, seed=7), host="127.0.0.1", tick=0.05) as simulator:
        yield simulator


async def test_three_meters_on_one_pty_line(sim: Meters645Simulator) -> None:
    assert sim.device is not None
    drivers = [meter(f"{i:012d}", serial=sim.device) for i in (1, 2, 3)]
    for driver in drivers:
        await driver.connect()
    try:
        results = await asyncio.gather(*(d.read() for d in drivers))
        for i, readings in enumerate(results, start=1):
            values = {r.point: r for r in readings}
            assert all(r.quality is Quality.GOOD for r in readings), readings
            simulated = sim.meters[f"{i:012d}"]
            assert values["energy"].value == pytest.approx(simulated.energy[0], abs=0.05)
            assert values["tariff_peak"].value == pytest.approx(simulated.energy[2], abs=0.05)
            assert 215 < values["voltage_a"].value < 225
            assert values["frequency"].value == pytest.approx(50.0, abs=0.05)
            assert values["pf"].value == pytest.approx(0.94)
            assert values["address"].value == f"{i:012d}"
            assert isinstance(values["demand_time"].value, str) and values["demand_time"].value[:2] == "20"
            assert values["date"].value == time.strftime("%Y-%m-%d")
        # one line, one port: every meter's driver holds the same one
        lines = {d.health.extra["line"] for d in drivers}
        assert lines == {f"serial:{sim.device}"}
        # energy accumulates with load
        first = results[0][0].value
        async def grown() -> bool:
            (reading,) = await drivers[0].read(["energy"])
            return bool(reading.value > first)
        deadline = time.monotonic() + 10
        while not await grown():
            assert time.monotonic() < deadline, "energy did not grow"
            sim.meters["000000000001"].step(30.0)  # 30 s of load at once
    finally:
        for driver in drivers:
            await driver.close()


async def test_over_tcp_to_a_serial_server_and_follow_up_frames(sim: Meters645Simulator) -> None:
    sim.bus645.max_data = 12  # a tariff block (20 bytes) now needs follow-up frames
    a = meter("000000000002", host="127.0.0.1", port=sim.tcp_port)
    b = meter("000000000003", host="127.0.0.1", port=sim.tcp_port)
    async with a, b:
        values = {r.point: r for r in await a.read(["energy", "tariff_peak"])}
        assert values["tariff_peak"].quality is Quality.GOOD, values
        assert values["tariff_peak"].value == pytest.approx(sim.meters["000000000002"].energy[2], abs=0.05)
        (other,) = await b.read(["voltage_a"])
        assert other.quality is Quality.GOOD
        assert a.health.extra["line"] == b.health.extra["line"] == f"tcp:127.0.0.1:{sim.tcp_port}"


async def test_exception_answer_is_bad_quality_and_the_link_stays(sim: Meters645Simulator) -> None:
    points = {"unknown": {"di": "02800010", "format": "XX.XX"}, "voltage": {"di": "02010100"}}
    assert sim.device is not None
    async with meter("000000000001", points, serial=sim.device) as driver:
        values = {r.point: r for r in await driver.read()}
        assert values["unknown"].quality is Quality.BAD
        assert values["unknown"].error == "DI 02800010: meter error 0x02 (no such data requested)"
        assert values["voltage"].quality is Quality.GOOD
        assert driver.health.connected and driver.health.extra["device_errors"] == 1


async def test_checksum_error_is_bad_quality_with_the_reason(sim: Meters645Simulator) -> None:
    sim.meters["000000000001"].corrupt.add(0x02010100)
    assert sim.device is not None
    async with meter("000000000001", {"v": {"di": "02010100"}, "f": {"di": "02800002"}}, serial=sim.device) as d:
        values = {r.point: r for r in await d.read()}
        assert values["v"].quality is Quality.BAD
        assert values["v"].error is not None and values["v"].error.startswith("checksum 0x")
        assert "computed" in values["v"].error
        assert values["f"].quality is Quality.GOOD  # the line is in step for the next request


async def test_silent_meter_costs_its_timeout_only(sim: Meters645Simulator) -> None:
    sim.meters["000000000002"].silent = True
    assert sim.device is not None
    good = [meter(f"{i:012d}", {"v": {"di": "02010100"}}, serial=sim.device) for i in (1, 3)]
    silent = meter("000000000002", {"v": {"di": "02010100"}}, serial=sim.device, timeout=0.3)
    for driver in (*good, silent):
        await driver.connect()
    try:
        started = time.monotonic()
        results = await asyncio.gather(silent.read(), *(d.read() for d in good), return_exceptions=True)
        elapsed = time.monotonic() - started
        assert isinstance(results[0], RequestTimeout)
        assert "meter 000000000002" in str(results[0]) and "within 0.3 s" in str(results[0])
        for readings in results[1:]:
            assert not isinstance(readings, BaseException) and readings[0].quality is Quality.GOOD
        assert elapsed < 0.3 + 1.0  # the others waited for one timeout, not more
        await silent.connect()  # the runner reconnects: the line is still open and shared
        assert silent.health.connected
        for driver in good:
            assert (await driver.read())[0].quality is Quality.GOOD
    finally:
        for driver in (*good, silent):
            await driver.close()


async def test_control_command_password_from_the_secret_file(sim: Meters645Simulator, tmp_path: Path) -> None:
    secret = tmp_path / "meter.pw"
    secret.write_text("02123456\n")
    assert sim.device is not None
    driver = meter("000000000003", {"v": {"di": "02010100"}}, serial=sim.device, password_file=str(secret))
    async with driver:
        result = await driver.invoke(Dlt645Call(command="trip"), {})
        assert result["command"] == "trip"
        assert sim.meters["000000000003"].relay_closed is False
        await driver.invoke(Dlt645Call(command="close"), {})
        assert sim.meters["000000000003"].relay_closed is True
        secret.write_text("02999999")
        with pytest.raises(DeviceError, match=r"password wrong") as caught:
            await driver.invoke(Dlt645Call(command="trip"), {})
        assert "999999" not in str(caught.value)
        assert sim.meters["000000000003"].relay_closed is True
        secret.unlink()
        with pytest.raises(BindingError, match=r"cannot read the meter password file .*meter\.pw"):
            await driver.invoke(Dlt645Call(command="trip"), {})


async def test_time_sync_only_when_declared(sim: Meters645Simulator) -> None:
    assert sim.device is not None
    for m in sim.meters.values():
        m.clock_offset = 3600.0
    async with meter("000000000001", {"v": {"di": "02010100"}}, serial=sim.device) as plain:
        with pytest.raises(BindingError, match="time_sync is not declared"):
            await plain.invoke(Dlt645Call(command="time_sync"), {})
    async with meter("000000000001", {"v": {"di": "02010100"}}, serial=sim.device, time_sync=True) as syncing:
        await syncing.invoke(Dlt645Call(command="time_sync"), {})
    assert all(abs(m.clock_offset) < 2.0 for m in sim.meters.values())  # a broadcast: every meter


async def test_a_line_that_is_not_there(tmp_path: Path) -> None:
    with pytest.raises(ConnectError, match="cannot open"):
        async with meter("000000000001", serial=str(tmp_path / "ttyNONE")):
            pass


async def test_serial_server_restart_drops_the_line_and_reconnect_reopens_it() -> None:
    first = Meters645Simulator(make_meters(2, seed=3), pty=False, host="127.0.0.1")
    await first.start()
    port = first.tcp_port
    a = meter("000000000001", {"v": {"di": "02010100"}}, host="127.0.0.1", port=port, timeout=2.0)
    b = meter("000000000002", {"v": {"di": "02010100"}}, host="127.0.0.1", port=port, timeout=2.0)
    async with a, b:
        assert (await a.read())[0].quality is Quality.GOOD
        await first.stop()  # the serial server restarts: its TCP client is dropped
        started = time.monotonic()
        with pytest.raises(ConnectionClosed):
            await b.read()
        assert time.monotonic() - started < 1.0  # at once, not after the timeout
        assert not a.health.connected
        async with Meters645Simulator(make_meters(2, seed=3), pty=False, host="127.0.0.1", port=port):
            await a.connect()
            await b.connect()
            assert (await a.read())[0].quality is Quality.GOOD
            assert (await b.read())[0].quality is Quality.GOOD
            assert a.health.extra["line"] == b.health.extra["line"]
