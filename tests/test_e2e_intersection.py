"""The intersection end to end: simulator (OPC UA) -> gateway subprocess -> mosquitto -> hub."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from conftest import LAB_ACCESS, ROOT, Gateways, Hub, Mosquitto, eventually, free_port

from citytwin.simulators.intersection.server import IntersectionSimulator

DEV = "intersection-1"
EXAMPLE = ROOT / "deploy" / "examples" / "intersection.yaml"
pytestmark = pytest.mark.slow


@pytest.fixture
async def sim() -> AsyncIterator[IntersectionSimulator]:
    simulator = IntersectionSimulator(port=free_port(), tick=0.05, speed=10.0, seed=5)
    async with simulator:
        yield simulator


def write_config(path: Path, hub_url: str, sim: IntersectionSimulator) -> Path:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["gateway"]["data_dir"] = str(path.parent / "data")
    doc["hub"].update({"url": hub_url, "reconnect_max": 1.0, "snapshot_interval": 5})
    # a lab setting, as conftest.write_config: commands naming no operator get the admin role
    doc["access"] = LAB_ACCESS
    doc.setdefault("http", {})["enabled"] = False
    dev = doc["devices"][0]
    dev["model"] = str(EXAMPLE.parent / dev["model"])
    dev["connection"].update({"url": sim.url, "pki_dir": str(path.parent / "pki"), "publishing_interval": 100})
    dev.update({"poll_period": 0.5, "reconnect_min": 0.1, "reconnect_max": 0.5})
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


async def test_properties_reported_and_set_plan_invoked_from_the_hub(
    tmp_path: Path, mosquitto: Mosquitto, hub: Hub, sim: IntersectionSimulator, gateways: Gateways
) -> None:
    hub.base = "citytwin/v1/ix-main-01"
    gateways(write_config(tmp_path / "gw.yaml", mosquitto.url, sim))
    await hub.wait_for(f"{DEV}/status", lambda s: s["state"] == "online")
    # subscribed and polled properties both reach the hub, with good quality
    seen: dict[str, object] = {}

    def collect(report: dict[str, dict[str, object]]) -> bool:
        for name, entry in report["properties"].items():
            assert entry["quality"] == "good", (name, entry)
            seen[name] = entry["value"]
        return {"phase", "plan", "signal_ns", "count_north", "occupancy_north", "green_extension"} <= set(seen)

    await hub.wait_for(f"{DEV}/properties/report", collect)
    assert seen["plan"] == 1 and seen["phase"] in (1, 2)
    reply = await hub.invoke(DEV, "set_plan", {"id": "plan-1", "input": {"plan": 2}})
    assert reply["status"] == "succeeded", reply
    assert reply["output"] == {"active_plan": 2}
    assert sim.calls[-1] == ("SetPlan", (2,))
    await hub.wait_for(f"{DEV}/properties/report",
                       lambda r: r["properties"].get("pending_plan", {}).get("value") == 2
                       or r["properties"].get("plan", {}).get("value") == 2)
    # a property write goes out as the binding's Int32
    await hub.client.publish(f"{hub.base}/{DEV}/properties/set",
                             b'{"id": "ext-1", "properties": {"green_extension": 6}}', qos=1)
    reply = await hub.wait_for(f"{DEV}/replies", lambda r: r["id"] == "ext-1")
    assert reply["status"] == "succeeded", reply
    await eventually(lambda: sim.controller.green_extension == 6)
    rejected = await hub.invoke(DEV, "set_plan", {"id": "plan-9", "input": {"plan": 9}})
    assert rejected["status"] == "rejected"
