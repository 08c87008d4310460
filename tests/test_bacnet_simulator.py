"""The BACnet driver against our own simulator (bacpypes3 device objects) on loopback:
reads, COV, writes at a priority, relinquish, status-flags, out-of-service, a restart."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_bacnet_jspeer import free_udp_port, last, wait_for

from citytwin.drivers.bacnet.binding import BacnetCall, BacnetConnection, BacnetPoint
from citytwin.drivers.bacnet.driver import BacnetDriver
from citytwin.drivers.base import Quality, Reading
from citytwin.drivers.errors import ConnectError, DeviceError
from citytwin.drivers.registry import binding_models, create_driver
from citytwin.simulators.bacnet_building.building import Building
from citytwin.simulators.bacnet_building.server import BuildingSimulator
from citytwin.thingmodels.loader import parse_model

ROOT = Path(__file__).resolve().parent.parent

POINTS = {
    "supply_air_temp": BacnetPoint(object="analog-input,1"),
    "setpoint": BacnetPoint(object="analog-value,1", writable=True, priority=8),
    "fan": BacnetPoint(object="binary-output,1", writable=True, priority=8),
    "fan_running": BacnetPoint(object="binary-input,1", mode="poll"),
    "filter_dp": BacnetPoint(object="analog-input,3", mode="poll"),
    "zone1_level": BacnetPoint(object="analog-output,101", writable=True, priority=10),
}


@pytest.fixture
async def sim() -> AsyncIterator[BuildingSimulator]:
    simulator = BuildingSimulator(port=free_udp_port(), zones=2, speed=0.0, seed=1)
    async with simulator:
        yield simulator


def make_driver(sim: BuildingSimulator, **conn: Any) -> tuple[BacnetDriver, list[Reading]]:
    connection = BacnetConnection(
        address=f"127.0.0.1:{sim.port}", device_id=1001,
        local_address=f"127.0.0.1:{free_udp_port()}", timeout=1.0, **conn,
    )
    drv = BacnetDriver(connection, POINTS)
    pushed: list[Reading] = []
    drv.set_push_sink(pushed.extend)
    return drv, pushed


async def test_cov_read_write_relinquish(sim: BuildingSimulator) -> None:
    drv, pushed = make_driver(sim)
    async with drv:
        await wait_for(lambda: last(pushed, "setpoint") is not None)
        assert last(pushed, "setpoint").value == 16.0  # type: ignore[union-attr]
        sim.building.objects["ahu-supply-air-temp"].presentValue = 18.5
        await wait_for(lambda: last(pushed, "supply_air_temp").value == 18.5)  # type: ignore[union-attr]
        polled = {r.point: r.value for r in await drv.read()}
        assert polled == {"fan_running": False, "filter_dp": 120.0}
        await drv.write({"setpoint": 14.0, "fan": True, "zone1_level": 55})
        setpoint = sim.building.objects["ahu-supply-air-temp-setpoint"]
        assert float(setpoint.priorityArray[7].real) == 14.0 and float(setpoint.presentValue) == 14.0
        assert int(sim.building.objects["ahu-supply-fan-command"].priorityArray[7].enumerated) == 1
        assert float(sim.building.objects["zone-1-level"].priorityArray[9].real) == 55.0
        await wait_for(lambda: last(pushed, "fan").value is True)  # type: ignore[union-attr]
        await drv.invoke(BacnetCall(relinquish="setpoint"), {})
        assert setpoint.priorityArray[7].null is not None
        await wait_for(lambda: last(pushed, "setpoint").value == 16.0)  # type: ignore[union-attr]
        # the physics: the fan status follows the command once the simulator runs
        sim.building.step(1.0)
        sim.building.step(3.0)
        assert {r.point: r.value for r in await drv.read(["fan_running"])} == {"fan_running": True}
        assert drv.health.extra["subscribed"] == 4 and drv.health.extra["notifications"] >= 5


async def test_status_flags_and_out_of_service(sim: BuildingSimulator) -> None:
    drv, pushed = make_driver(sim)
    async with drv:
        await wait_for(lambda: last(pushed, "setpoint") is not None)
        sim.building.set_flags("ahu-supply-air-temp", fault=True)
        await wait_for(lambda: last(pushed, "supply_air_temp").quality is Quality.BAD)  # type: ignore[union-attr]
        assert "fault" in (last(pushed, "supply_air_temp").error or "")  # type: ignore[union-attr]
        sim.building.set_flags("ahu-filter-dp", in_alarm=True)  # polled: flags read with the value
        filter_dp = {r.point: r for r in await drv.read()}["filter_dp"]
        assert filter_dp.quality is Quality.GOOD and "in-alarm" in (filter_dp.error or "")
        sim.building.set_flags("ahu-filter-dp", fault=True)
        filter_dp = {r.point: r for r in await drv.read()}["filter_dp"]
        assert filter_dp.quality is Quality.BAD and filter_dp.value is None
        sim.building.set_flags("ahu-supply-air-temp-setpoint", out_of_service=True)
        await wait_for(lambda: last(pushed, "setpoint").quality is Quality.UNCERTAIN)  # type: ignore[union-attr]
        with pytest.raises(DeviceError, match=r"setpoint \(analog-value,1\) is out of service"):
            await drv.write({"setpoint": 12.0})
        with pytest.raises(DeviceError, match="out of service"):
            await drv.invoke(BacnetCall(write="setpoint"), {"value": 12.0})
        setpoint = sim.building.objects["ahu-supply-air-temp-setpoint"]
        assert all(setpoint.priorityArray[i].null is not None for i in range(16))
        sim.building.set_flags("ahu-supply-air-temp-setpoint")
        await drv.write({"setpoint": 12.0})
        assert float(setpoint.presentValue) == 12.0


async def test_restarted_device_gets_its_cov_subscriptions_back(sim: BuildingSimulator) -> None:
    drv, pushed = make_driver(sim, cov_lifetime=10)  # renewed every 5 s
    async with drv:
        await wait_for(lambda: last(pushed, "supply_air_temp") is not None)
        await sim.stop()  # the device restarts: its subscriptions are gone with it
        restarted = BuildingSimulator(port=sim.port, speed=0.0, building=sim.building)
        async with restarted:
            renewals = drv.health.extra["cov_renewals"]
            sim.building.objects["ahu-supply-air-temp"].presentValue = 25.0
            # nobody is subscribed on the restarted device yet: only a renewal brings it back
            await wait_for(lambda: drv.health.extra["cov_renewals"] > renewals, timeout=8.0)
            # a renewal sent while the restarted device was still coming up counts too; the next
            # one (5 s later) brings the value: wait for two renewal periods, not one
            await wait_for(lambda: last(pushed, "supply_air_temp").value == 25.0, timeout=12.0)  # type: ignore[union-attr]
            sim.building.objects["ahu-supply-air-temp"].presentValue = 26.0
            await wait_for(lambda: last(pushed, "supply_air_temp").value == 26.0)  # type: ignore[union-attr]


async def test_device_gone_fails_reads_and_connect(sim: BuildingSimulator) -> None:
    drv, _ = make_driver(sim)
    async with drv:
        await sim.stop()
        with pytest.raises(Exception) as info:
            await drv.read()
        assert type(info.value).__name__ in ("RequestTimeout", "ConnectionClosed")
        await drv.close()
        with pytest.raises(ConnectError, match="no I-Am"):
            await drv.connect()


async def test_two_devices_share_one_local_endpoint(sim: BuildingSimulator) -> None:
    local = f"127.0.0.1:{free_udp_port()}"
    conn = BacnetConnection(address=f"127.0.0.1:{sim.port}", local_address=local, timeout=1.0)
    a = BacnetDriver(conn, {"t": BacnetPoint(object="analog-input,1")})
    b = BacnetDriver(conn, {"t": BacnetPoint(object="analog-input,1")})
    seen_a: list[Reading] = []
    seen_b: list[Reading] = []
    a.set_push_sink(seen_a.extend)
    b.set_push_sink(seen_b.extend)
    async with a, b:
        sim.building.objects["ahu-supply-air-temp"].presentValue = 30.0
        await wait_for(lambda: last(seen_a, "t") is not None and last(seen_a, "t").value == 30.0)  # type: ignore[union-attr]
        await wait_for(lambda: last(seen_b, "t") is not None and last(seen_b, "t").value == 30.0)  # type: ignore[union-attr]
    other = BacnetConnection(address=f"127.0.0.1:{sim.port}", local_address=local, local_device_id=5)
    async with a:
        with pytest.raises(Exception, match="must name the same local_device_id"):
            await BacnetDriver(other, {}).connect()


def test_bindings_and_registry() -> None:
    models = binding_models("bacnet")
    point = models.point(object="analog-output:3", writable=True, priority=16)
    assert point.object == "analog-output,3" and models.writable(point) and models.float32(point)
    assert models.integer_raw(models.point(object="multi-state-value,1"))
    for bad, message in (
        ({"object": "analog-input,1", "priority": 8}, "commandable"),
        ({"object": "analog-value,1", "priority": 17}, "1..16"),
        ({"object": "analogue-input,1"}, "unknown object type"),
        ({"object": "analog-input,4194303"}, "instance"),
    ):
        with pytest.raises(ValueError, match=message):
            models.point(**bad)
    with pytest.raises(ValueError, match="exactly one"):
        models.call(relinquish="a", write="b")
    with pytest.raises(ValueError, match="share UDP port 47808 on one host"):
        models.connection(address="127.0.0.1")  # the default local_address is 0.0.0.0:47808
    drv = create_driver("bacnet", models.connection(address="10.0.0.5"), {"p": point})
    assert isinstance(drv, BacnetDriver)


def test_example_config_checks() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "citytwin.gateway.cli", "config", "check",
         str(ROOT / "deploy" / "examples" / "building.yaml")],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 device(s)" in proc.stdout


async def test_building_physics() -> None:
    building = Building(zones=1, seed=3)
    building.objects["ahu-supply-fan-command"].presentValue = "active"
    building.objects["zone-1-lights"].presentValue = "active"
    for _ in range(600):
        building.step(1.0)
    assert int(building.value("ahu-supply-fan-status")) == 1
    assert abs(float(building.value("ahu-supply-air-temp")) - 16.0) < 1.0
    assert float(building.value("zone-1-power")) == 320.0  # 80 % of 400 W
    building.set_flags("zone-1-power", out_of_service=True)
    building.objects["zone-1-lights"].presentValue = "inactive"
    building.step(1.0)
    assert float(building.value("zone-1-power")) == 320.0  # out of service: the plant no longer writes it


async def test_discover_cli_against_the_simulator(sim: BuildingSimulator) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "citytwin.gateway.cli", "discover", f"bacnet://127.0.0.1:{sim.port}",
        "--timeout", "3", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()

    binding, model = list(yaml.safe_load_all(out.decode()))
    assert binding["connection"] == {"address": f"127.0.0.1:{sim.port}", "device_id": 1001,
                                     "local_address": f"127.0.0.1:{sim.port + 1}"}
    # the printed binding validates as it is
    binding_models("bacnet").connection(**binding["connection"])
    points = binding["points"]
    assert points["ahu_supply_air_temp_setpoint"] == {"object": "analog-value,1", "writable": True, "priority": 8}
    assert points["zone_2_lights"] == {"object": "binary-output,102", "writable": True, "priority": 8}
    assert points["ahu_filter_dp"] == {"object": "analog-input,3"}
    units = {p["identifier"]: p["dataType"]["specs"].get("unit") for p in model["properties"]}
    assert units["ahu_filter_dp"] == "Pa" and units["zone_1_power"] == "W"
    # the printed model loads as a thing model

    assert "ahu_supply_air_temp" in parse_model(model).properties


async def test_discover_cli_without_a_device() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "citytwin.gateway.cli", "discover", f"bacnet://127.0.0.1:{free_udp_port()}",
        "--timeout", "0.5", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1 and b"no I-Am" in err and b"Traceback" not in err
