"""CoAP end to end: the city-sensors simulator, the gateway as a subprocess, real mosquitto."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import LAB_ACCESS, ROOT, Gateways, Hub, Mosquitto, free_port

from citytwin.simulators.city_sensors.server import CitySensorsSimulator

pytestmark = pytest.mark.slow
EXAMPLE = ROOT / "deploy" / "examples" / "city-sensors.yaml"
AQ, MH = "air-quality-1", "manhole-12"


def write_config(path: Path, hub_url: str, port: int) -> Path:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["gateway"]["data_dir"] = str(path.parent / "data")
    doc["hub"].update({"url": hub_url, "reconnect_max": 1.0, "snapshot_interval": 5})
    for device in doc["devices"]:
        device["model"] = str(EXAMPLE.parent / device["model"])
        device["connection"].update({"port": port, "observe_max_silence": 2.0, "timeout": 1.0})
        device.update({"poll_period": 0.5, "reconnect_max": 0.5, "reconnect_min": 0.1})
    doc["access"] = LAB_ACCESS
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


async def test_sensor_properties_reach_the_hub_and_services_reach_the_sensors(
    tmp_path: Path, mosquitto: Mosquitto, hub: Hub, gateways: Gateways
) -> None:
    street_hub = hub
    street_hub.base = "citytwin/v1/street-07"
    async with CitySensorsSimulator(port=free_port(udp=True), tick=0.05, seed=4, interval=0.2) as sim:
        gateways(write_config(tmp_path / "gw.yaml", mosquitto.url, sim.port))
        sensed = {"pm25", "pm10", "no2", "o3", "co", "temperature", "humidity", "report_interval"}
        twin = await street_hub.wait_for(f"{AQ}/twin", lambda t: set(t["reported"]) >= sensed)
        qualities = {k: m["quality"] for k, m in twin["metadata"]["reported"].items()}
        assert set(qualities.values()) == {"good"}, qualities
        assert twin["reported"]["report_interval"] == 0.2
        first = await street_hub.wait_for(f"{AQ}/properties/report", lambda r: "pm25" in r["properties"])
        mh = await street_hub.wait_for(f"{MH}/properties/report", lambda r: "level" in r["properties"])
        assert mh["properties"]["level"]["quality"] == "good"
        await street_hub.wait_for(f"{MH}/status", lambda s: s["state"] == "online")

        # the observed values keep coming (notifications, not only polls)
        await street_hub.wait_for(
            f"{AQ}/properties/report",
            lambda r: r["seq"] > first["seq"] and "pm25" in r["properties"],
        )

        sim.station.pm_offset = 0.5
        reply = await street_hub.invoke(AQ, "calibrate", {"id": "cal-1", "input": {}})
        assert reply["status"] == "succeeded", reply
        assert reply["output"]["calibrations"] == 1
        assert sim.station.calibrations == 1

        reply = await street_hub.invoke(AQ, "set_report_interval", {"id": "int-1", "input": {"seconds": 0.3}})
        assert reply["status"] == "succeeded", reply
        assert sim.station.interval == 0.3
        await street_hub.wait_for(
            f"{AQ}/properties/report",
            lambda r: r["properties"].get("report_interval", {}).get("value") == 0.3,
        )

        reply = await street_hub.invoke(MH, "self_test", {"id": "st-1", "input": {}})
        assert reply["status"] == "succeeded", reply
        assert reply["output"] == {"passed": True, "battery": round(sim.manhole.battery, 3)}
