"""Discovery makes templates: ``citytwin discover opcua://… --template --model`` against a real
asyncua server with DataAccess properties (EURange, EngineeringUnits, Description) and the
intersection simulator; the model and template load as they are and the device polls."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from asyncua import Server, ua
from conftest import free_port
from harness import InProcessGateway

from citytwin.gateway.bootstrap import prepare
from citytwin.simulators.intersection.server import IntersectionSimulator
from citytwin.thingmodels.loader import load_model_json


@pytest.fixture
async def gauge() -> AsyncIterator[str]:
    """A river gauge: an AnalogItem with range, unit and description, a writable threshold."""
    server = Server()
    await server.init()
    url = f"opc.tcp://127.0.0.1:{free_port()}/gauge"
    server.set_endpoint(url)
    idx = await server.register_namespace("urn:test:gauge")
    station = await server.nodes.objects.add_object(idx, "Gauge")
    level = await station.add_variable(idx, "WaterLevel", 1.5, ua.VariantType.Double)
    await level.write_attribute(ua.AttributeIds.Description, ua.DataValue(ua.Variant(
        ua.LocalizedText("Water level above the gauge datum"), ua.VariantType.LocalizedText)))
    await level.add_property(ua.NodeId("Gauge.WaterLevel.EURange", idx), ua.QualifiedName("EURange", 0),
                             ua.Range(Low=0.0, High=6.0))
    await level.add_property(ua.NodeId("Gauge.WaterLevel.EngineeringUnits", idx),
                             ua.QualifiedName("EngineeringUnits", 0), ua.EUInformation(DisplayName=ua.LocalizedText("m")))
    threshold = await station.add_variable(idx, "AlarmThreshold", 4, ua.VariantType.UInt16)
    await threshold.set_writable()
    await station.add_variable(idx, "Online", True, ua.VariantType.Boolean)
    async with server:
        yield url


async def cli(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "citytwin.gateway.cli", *args,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


async def test_discover_writes_a_model_and_a_template_that_run(gauge: str, tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    code, out = await cli("discover", gauge.replace("opc.tcp://", "opcua://"), "--name", "gauge",
                          "--template", str(tmp_path / "gauge.yaml"), "--model", str(tmp_path / "models" / "gauge.json"))
    assert code == 0, out
    model = json.loads((tmp_path / "models" / "gauge.json").read_text())
    load_model_json(json.dumps(model))
    props = {p["identifier"]: p for p in model["properties"]}
    assert props["water_level"] == {
        "identifier": "water_level", "name": "water_level", "desc": "Water level above the gauge datum",
        "accessMode": "r", "required": False,
        "dataType": {"type": "double", "specs": {"min": "0", "max": "6", "unit": "m"}}}
    assert props["alarm_threshold"]["accessMode"] == "rw"
    assert props["alarm_threshold"]["dataType"] == {"type": "int", "specs": {"min": "0", "max": "65535", "step": "1"}}
    assert props["online"]["dataType"]["type"] == "bool"

    template = yaml.safe_load((tmp_path / "gauge.yaml").read_text())["templates"]["gauge"]
    assert template["model"] == "models/gauge.json" and template["driver"] == "opcua"
    config = ("gateway: {id: g, data_dir: DATA_DIR}\nhub: {url: 'mqtt://127.0.0.1:1'}\nhttp: {enabled: false}\n"
              + (tmp_path / "gauge.yaml").read_text()
              + "devices:\n  - {id: gauge-1, template: gauge, poll_period: 0.2,"
                f" connection: {{pki_dir: {tmp_path / 'pki'}, subscribe: false}}}}\n")
    async with InProcessGateway(config, tmp_path, None) as gw:
        twin = gw.gw.twins["gauge-1"]
        await gw.wait_for(lambda: "water_level" in twin.reported, what="the discovered device reporting")
        assert twin.reported["water_level"] == 1.5 and twin.reported["online"] is True


async def test_discover_the_intersection_simulator_into_a_template(tmp_path: Path) -> None:
    async with IntersectionSimulator(port=free_port()) as sim:
        code, out = await cli("discover", sim.url, "--template", str(tmp_path / "t.yaml"),
                              "--model", str(tmp_path / "m.json"), "--product-key", "vendor.intersection")
    assert code == 0, out
    model = load_model_json((tmp_path / "m.json").read_text())
    assert model.product_key == "vendor.intersection" and "set_plan" in model.services
    text = (tmp_path / "t.yaml").read_text()
    name = next(iter(yaml.safe_load(text)["templates"]))
    _, specs = prepare("gateway: {id: g}\n" + text + f"devices:\n  - {{id: x, template: {name}}}\n", "gw.yaml", tmp_path)
    assert set(specs["x"].points) == set(model.properties) and set(specs["x"].services) == set(model.services)
