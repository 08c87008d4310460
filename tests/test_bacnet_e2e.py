"""BACnet end to end: the bacnet-building simulator, the gateway as a subprocess, mosquitto.

Loopback BACnet/IP: the simulator and the gateway each bind their own UDP port on
127.0.0.1; the gateway finds the device by a Who-Is sent to its address.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import yaml
from conftest import LAB_ACCESS, ROOT, GatewayProcess, Hub, Mosquitto
from test_bacnet_jspeer import free_udp_port

from citytwin.simulators.bacnet_building.server import BuildingSimulator

pytestmark = pytest.mark.slow
EXAMPLE = ROOT / "deploy" / "examples" / "building.yaml"
AHU, ZONE = "ahu-1", "lighting-zone-1"


@pytest.fixture
async def building_hub(mosquitto: Mosquitto) -> AsyncIterator[Hub]:
    client = aiomqtt.Client("127.0.0.1", mosquitto.port, identifier=f"test-building-hub-{os.getpid()}",
                            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),))
    async with client:
        hub = Hub(client, "citytwin/v1/building-03")
        await client.subscribe("citytwin/v1/#", qos=1)
        task = asyncio.create_task(hub.listen())
        yield hub
        task.cancel()


async def command(hub: Hub, device: str, service: str, command_id: str, inputs: dict[str, Any]) -> Any:
    """The final reply (async services answer "accepted" first)."""
    await hub.invoke(device, service, {"id": command_id, "input": inputs})
    return await hub.wait_for(
        f"{device}/replies", lambda r: r.get("id") == command_id and r.get("status") != "accepted")


def write_config(path: Path, hub_url: str, device_port: int) -> Path:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["gateway"]["data_dir"] = str(path.parent / "data")
    doc["hub"].update({"url": hub_url, "reconnect_max": 1.0, "snapshot_interval": 5})
    local = f"127.0.0.1:{free_udp_port()}"
    for device in doc["devices"]:
        device["connection"].update({"address": f"127.0.0.1:{device_port}", "local_address": local, "timeout": 1.0})
        device.update({"poll_period": 0.5, "reconnect_max": 0.5, "reconnect_min": 0.1})
    doc["access"] = LAB_ACCESS
    doc.setdefault("http", {})["enabled"] = False
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


async def test_building_reaches_the_hub_and_commands_reach_the_building(
    tmp_path: Path, mosquitto: Mosquitto, building_hub: Hub
) -> None:
    sim = BuildingSimulator(port=free_udp_port(), zones=2, speed=10.0, seed=5)
    async with sim:
        proc = GatewayProcess(write_config(tmp_path / "gw.yaml", mosquitto.url, sim.port))
        proc.start()
        try:
            props = {"supply_air_temp", "return_air_temp", "filter_dp", "cooling_valve",
                     "supply_air_temp_setpoint", "fan_command", "fan_running"}
            twin = await building_hub.wait_for(f"{AHU}/twin", lambda t: set(t["reported"]) >= props)
            assert twin["reported"]["supply_air_temp_setpoint"] == 16.0
            await building_hub.wait_for(f"{AHU}/status", lambda s: s["state"] == "online")
            await building_hub.wait_for(f"{ZONE}/twin", lambda t: {"on", "level", "power"} <= set(t["reported"]))

            reply = await command(building_hub, AHU, "start_fan", "fan-1", {})
            assert reply["status"] == "succeeded", reply
            # the fan proves running in the simulator and the change arrives by COV
            await building_hub.wait_for(
                f"{AHU}/properties/report",
                lambda r: r["properties"].get("fan_running", {}).get("value") is True)

            reply = await command(building_hub, AHU, "set_supply_air_temp", "sp-1", {"setpoint": 14.0})
            assert reply["status"] == "succeeded", reply
            setpoint = sim.building.objects["ahu-supply-air-temp-setpoint"]
            assert float(setpoint.priorityArray[7].real) == 14.0
            await building_hub.wait_for(
                f"{AHU}/properties/report",
                lambda r: r["properties"].get("supply_air_temp_setpoint", {}).get("value") == 14.0)

            reply = await command(building_hub, AHU, "release_supply_air_temp", "rel-1", {})
            assert reply["status"] == "succeeded", reply
            assert setpoint.priorityArray[7].null is not None and float(setpoint.presentValue) == 16.0

            reply = await command(building_hub, ZONE, "switch", "on-1", {"on": True})
            assert reply["status"] == "succeeded", reply
            await building_hub.wait_for(
                f"{ZONE}/properties/report",
                lambda r: r["properties"].get("power", {}).get("value") == 320.0)

            # an out-of-service object refuses the command with the reason, nothing is written
            sim.building.set_flags("zone-1-level", out_of_service=True)
            reply = await command(building_hub, ZONE, "dim", "dim-1", {"level": 40})
            assert reply["status"] != "succeeded", reply
            assert "out of service" in str(reply), reply
            level = sim.building.objects["zone-1-level"]
            assert all(level.priorityArray[i].null is not None for i in range(16))
        finally:
            code = proc.stop()
        assert code == 0, proc.output()
