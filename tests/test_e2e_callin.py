"""End to end: an HJ 212 station calling in to ``citytwin run`` (a real subprocess) and on to
the hub through mosquitto: reports with quality from the station's data flags, and a command
(set the real-time upload interval, CN 1062) from the hub answered by the station."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml
from conftest import LAB_ACCESS, GatewayProcess, Hub, Mosquitto, free_port

from citytwin.simulators.hj212_station.station import Hj212StationSimulator

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "deploy" / "examples" / "air-station.yaml"
DEV = "air-station-1"
MN = "010000A8900016F000169DC0"


def air_config(tmp_path: Path, broker: Mosquitto, port: int) -> Path:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["gateway"].update(id="ps-north-01", data_dir=str(tmp_path / "data"))  # the hub fixture's id
    doc["hub"].update(url=broker.url, reconnect_max=1.0, snapshot_interval=5)
    doc["access"] = LAB_ACCESS
    doc.setdefault("http", {})["enabled"] = False
    doc["devices"] = doc["devices"][:1]
    device = doc["devices"][0]
    device["connection"].update(host="127.0.0.1", port=port)
    device.update(poll_period=1.0, reconnect_min=0.1, reconnect_max=0.5)
    path = tmp_path / "air.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


async def test_station_reports_and_answers_a_command(tmp_path: Path, mosquitto: Mosquitto, hub: Hub) -> None:
    port = free_port()
    gateway = GatewayProcess(air_config(tmp_path, mosquitto, port))
    gateway.start()
    sim = Hj212StationSimulator("127.0.0.1", port, MN, "123456", "air", 0.5, seed=11,
                                flags={"a34002": "C", "a21026": "D"}, reconnect_delay=0.1)
    try:
        async with sim:
            report = await hub.wait_for(
                f"{DEV}/properties/report", lambda r: {"pm2_5", "pm10", "so2"} <= set(r["properties"]))
            props = report["properties"]
            assert props["pm2_5"]["quality"] == "good" and props["pm2_5"]["value"] > 0
            assert props["so2"]["quality"] == "bad"
            assert props["so2"]["error"] == "HJ 212 data flag D: instrument fault"
            assert props["pm10"]["value"] > 0  # flag C: uncertain, see the test below
            reply = await hub.invoke(DEV, "set_upload_interval", {"id": "c-1", "input": {"seconds": 2}})
            assert reply["status"] == "succeeded", reply
            assert sim.interval == 2
            clock = await hub.invoke(DEV, "read_clock", {"id": "c-2", "input": {}})
            assert clock["status"] == "succeeded" and len(clock["output"]["time"]) == 14, clock
    finally:
        code = gateway.stop()
    await asyncio.sleep(0)
    assert code == 0, gateway.output()


async def test_calibration_flag_reaches_the_hub_as_uncertain(tmp_path: Path, mosquitto: Mosquitto, hub: Hub) -> None:
    port = free_port()
    gateway = GatewayProcess(air_config(tmp_path, mosquitto, port))
    gateway.start()
    sim = Hj212StationSimulator("127.0.0.1", port, MN, "123456", "air", 0.5, seed=12,
                                flags={"a34002": "C"}, reconnect_delay=0.1)
    try:
        async with sim:
            report = await hub.wait_for(f"{DEV}/properties/report", lambda r: "pm10" in r["properties"])
            assert report["properties"]["pm10"]["quality"] == "uncertain"
    finally:
        gateway.stop()


HYDRO = ROOT / "deploy" / "examples" / "hydro-station.yaml"


async def test_hydro_station_reports_and_answers_a_query(tmp_path: Path, mosquitto: Mosquitto, hub: Hub) -> None:
    from citytwin.simulators.hydro_station.station import HydroStationSimulator

    port = free_port()
    doc = yaml.safe_load(HYDRO.read_text())
    doc["gateway"].update(id="ps-north-01", data_dir=str(tmp_path / "data"))
    doc["hub"].update(url=mosquitto.url, reconnect_max=1.0, snapshot_interval=5)
    doc["access"] = LAB_ACCESS
    doc.setdefault("http", {})["enabled"] = False
    doc["devices"] = doc["devices"][1:]  # the ponding-point level station, address 0012345678
    doc["devices"][0]["connection"].update(host="127.0.0.1", port=port)
    doc["devices"][0].update(poll_period=1.0, reconnect_min=0.1, reconnect_max=0.5)
    config = tmp_path / "hydro.yaml"
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    gateway = GatewayProcess(config)
    gateway.start()
    sim = HydroStationSimulator("127.0.0.1", port, "0012345678", "1234", interval=0.5, seed=13, reconnect_delay=0.1)
    try:
        async with sim:
            report = await hub.wait_for("underpass-level-4/properties/report",
                                        lambda r: "water_level" in r["properties"])
            level = report["properties"]["water_level"]
            assert level["quality"] == "good" and 0.5 <= level["value"] <= 10
            reply = await hub.invoke("underpass-level-4", "set_clock", {"id": "h-1", "input": {}})
            assert reply["status"] == "succeeded" and len(reply["output"]["time"]) == 12, reply
    finally:
        code = gateway.stop()
    assert code == 0, gateway.output()
