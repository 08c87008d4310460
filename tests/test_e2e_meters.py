"""End to end: water meters on MQTT through ``citytwin run`` (a real subprocess) to the hub."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import LAB_ACCESS, Gateways, Hub, Mosquitto

from citytwin.simulators.meters.server import MetersSimulator

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "deploy" / "examples" / "meters.yaml"
DEV = "meter-1"


def meters_config(tmp_path: Path, broker: Mosquitto) -> Path:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["gateway"].update(id="ps-north-01", data_dir=str(tmp_path / "data"))  # the hub fixture's id
    doc["hub"].update(url=broker.url, reconnect_max=1.0, snapshot_interval=5)
    device = doc["devices"][0]
    device["model"] = str(EXAMPLE.parent / device["model"])
    device["connection"]["url"] = broker.url  # the southbound broker: here the same one
    device.update(poll_period=0.5, reconnect_min=0.1, reconnect_max=0.5)
    doc["access"] = LAB_ACCESS
    path = tmp_path / "meters.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


async def test_meters_report_and_answer_a_valve_command(
    tmp_path: Path, mosquitto: Mosquitto, hub: Hub, gateways: Gateways
) -> None:
    async with MetersSimulator(mosquitto.url, count=2, seed=3, reconnect_delay=0.1) as sim:
        gateways(meters_config(tmp_path, mosquitto))
        report = await hub.wait_for(
            f"{DEV}/properties/report", lambda r: "flow_rate" in r["properties"]
        )
        flow = report["properties"]["flow_rate"]
        assert flow["quality"] == "good" and flow["value"] >= 0
        await hub.wait_for(
            f"{DEV}/twin",
            lambda t: {"valve_open", "battery", "volume"} <= set(t["reported"]),
        )
        reply = await hub.invoke(DEV, "set_valve", {"id": "v-1", "input": {"open": False}})
        assert reply["status"] == "succeeded", reply
        assert reply["output"] == {"valve_open": False}
        assert sim.meters["wm-0001"].valve_open is False
        assert sim.meters["wm-0002"].valve_open is True
        await hub.wait_for(
            f"{DEV}/properties/report",
            lambda r: r["properties"].get("valve_open", {}).get("value") is False,
        )
        # a property write travels as a command too
        await hub.client.publish(
            f"{hub.base}/{DEV}/properties/set",
            b'{"id": "s-1", "properties": {"report_interval": 2}}', qos=1,
        )
        done = await hub.wait_for(f"{DEV}/replies", lambda r: r.get("id") == "s-1")
        assert done["status"] == "succeeded", done
        assert sim.meters["wm-0001"].report_interval == 2
