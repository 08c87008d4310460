"""The CJ/T 188 driver against our meters-188 simulator (water meters with valves and a heat
meter on one line) over a pty and over TCP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from citytwin.drivers.base import Quality
from citytwin.drivers.cjt188.binding import Cjt188Connection, Cjt188Point
from citytwin.drivers.cjt188.driver import Cjt188Driver
from citytwin.drivers.errors import BindingError, DeviceError, RequestTimeout
from citytwin.drivers.registry import create_driver
from citytwin.simulators.meters_188.server import Meters188Simulator, make_meters

pytestmark = pytest.mark.timeout(60)

WATER = ["accumulated_flow", "settlement_flow", "clock", "status", "valve_open", "valve_state", "battery_low"]
HEAT = ["heat", "heat_power", "flow_rate", "accumulated_flow", "supply_temperature", "return_temperature",
        "working_hours", "battery_low"]


def meter(kind: str, address: str, fields: list[str], **line: Any) -> Cjt188Driver:
    connection = Cjt188Connection.model_validate(
        {"meter_type": kind, "address": address, "parity": "N", "timeout": 0.5, **line}
    )
    driver = create_driver("cjt188", connection, {f: Cjt188Point(field=f) for f in fields})  # type: ignore[arg-type]
    assert isinstance(driver, Cjt188Driver)
    return driver


@pytest.fixture
async def sim() -> AsyncIterator[Meters188Simulator]:
    async with Meters188Simulator(make_meters(2, 1, seed=5), host="127.0.0.1", tick=0.05) as simulator:
        yield simulator


async def test_water_and_heat_meters_on_one_pty_line(sim: Meters188Simulator) -> None:
    assert sim.device is not None
    water = meter("cold_water", "00000000000001", WATER, serial=sim.device, valve=True)
    heat = meter("heat", "00000000001001", HEAT, serial=sim.device)
    async with water, heat:
        w, h = await asyncio.gather(water.read(), heat.read())
        wv = {r.point: r for r in w}
        hv = {r.point: r for r in h}
        assert all(r.quality is Quality.GOOD for r in (*w, *h)), (w, h)
        simulated = sim.meters["00000000000001"]
        assert wv["accumulated_flow"].value == pytest.approx(simulated.volume, abs=0.02)
        assert wv["valve_open"].value is True and wv["valve_state"].value == "open"
        assert wv["battery_low"].value is False
        assert wv["clock"].value[:4] == time.strftime("%Y")
        assert 40 < hv["supply_temperature"].value < 70
        assert hv["return_temperature"].value < hv["supply_temperature"].value
        assert hv["flow_rate"].value > 0 and hv["heat_power"].value > 0
        assert water.health.requests == 1  # one meter data read answers every field


async def test_valve_command_is_checked_against_the_answer(sim: Meters188Simulator) -> None:
    water = meter("cold_water", "00000000000002", ["valve_open", "battery_low"],
                  host="127.0.0.1", port=sim.tcp_port, valve=True)
    async with water:
        await water.write({"valve_open": False})
        assert sim.meters["00000000000002"].valve_open is False
        assert sim.meters["00000000000001"].valve_open is True
        (state, _) = await water.read()
        assert state.value is False
        sim.meters["00000000000002"].valve_stuck = True
        with pytest.raises(DeviceError, match="valve open asked, the meter answers abnormal"):
            await water.write({"valve_open": True})
        (state, _) = await water.read()
        assert state.quality is Quality.BAD and state.error is not None and "abnormal" in state.error
        sim.meters["00000000000002"].battery_low = True
        sim.meters["00000000000002"].valve_stuck = False
        (_, battery) = await water.read()
        assert battery.value is True


async def test_heat_meter_has_no_valve_and_no_such_fields(sim: Meters188Simulator) -> None:
    with pytest.raises(BindingError, match="a cold_water meter has no supply_temperature"):
        meter("cold_water", "00000000000001", ["supply_temperature"], serial="/dev/null")
    heat = meter("heat", "00000000001001", ["valve_open"], host="127.0.0.1", port=sim.tcp_port)
    async with heat:
        with pytest.raises(BindingError, match="has no valve"):
            await heat.write({"valve_open": True})


async def test_checksum_error_and_silent_meter(sim: Meters188Simulator) -> None:
    assert sim.device is not None
    sim.meters["00000000000001"].corrupt = True
    sim.meters["00000000000002"].silent = True
    broken = meter("cold_water", "00000000000001", ["accumulated_flow"], serial=sim.device)
    silent = meter("cold_water", "00000000000002", ["accumulated_flow"], serial=sim.device, timeout=0.3)
    heat = meter("heat", "00000000001001", ["heat"], serial=sim.device)
    async with broken, silent, heat:
        results = await asyncio.gather(broken.read(), silent.read(), heat.read(), return_exceptions=True)
        bad = results[0]
        assert not isinstance(bad, BaseException)
        assert bad[0].quality is Quality.BAD and bad[0].error is not None
        assert bad[0].error.startswith("checksum 0x") and "computed" in bad[0].error
        assert isinstance(results[1], RequestTimeout)
        good = results[2]
        assert not isinstance(good, BaseException) and good[0].quality is Quality.GOOD


async def test_big_endian_di_meters(sim: Meters188Simulator) -> None:
    sim.bus188.di_order = "big"
    water = meter("cold_water", "00000000000001", ["accumulated_flow"], host="127.0.0.1",
                  port=sim.tcp_port, di_order="big")
    async with water:
        (flow,) = await water.read()
        assert flow.quality is Quality.GOOD


async def test_exception_answer_is_a_device_error(sim: Meters188Simulator) -> None:
    # configured with a valve the meter does not have: the meter answers with D6 set
    heat = meter("heat", "00000000001001", ["valve_open", "heat"], host="127.0.0.1", port=sim.tcp_port, valve=True)
    async with heat:
        with pytest.raises(DeviceError, match=r"the meter answered with an exception \(status 0x0000"):
            await heat.write({"valve_open": False})
        assert heat.health.connected and heat.health.extra["device_errors"] == 1
        (_, energy) = await heat.read()
        assert energy.quality is Quality.GOOD


async def test_gas_meter_reads_like_a_water_meter() -> None:
    from citytwin.simulators.meters_188.meters import Meter188

    gas = Meter188("00000000002001", 0x30, seed=1)
    async with Meters188Simulator([gas], pty=False, host="127.0.0.1") as sim:
        driver = meter("gas", "00000000002001", ["accumulated_flow", "battery_low"], host="127.0.0.1",
                       port=sim.tcp_port)
        async with driver:
            (volume, battery) = await driver.read()
            assert volume.value == pytest.approx(gas.volume, abs=0.02) and battery.value is False
