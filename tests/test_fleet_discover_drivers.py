"""Discovery makes templates beyond OPC UA: ``citytwin discover bacnet://… --template --model``
against the bacnet-building simulator (bacpypes3, with the optional properties BACnet objects
describe themselves with) and the @bacnet-js/client peer (without them), and ``discover
coap://…`` against the city-sensors simulator (aiocoap) and libcoap's coap-server; each
template passes ``citytwin config check`` and the device reports through it. Drivers that
cannot discover say why."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
import yaml
from bacpypes3.local.multistate import MultiStateValueObject
from coap_peers import LibcoapServer, coap_client
from conftest import free_port
from harness import InProcessGateway
from test_bacnet_jspeer import JsPeer, free_udp_port

from citytwin.drivers.coap.discover import parse_links
from citytwin.drivers.errors import DecodeError
from citytwin.gateway.bootstrap import prepare
from citytwin.simulators.bacnet_building.building import Building
from citytwin.simulators.bacnet_building.server import BuildingSimulator
from citytwin.simulators.city_sensors.server import CitySensorsSimulator
from citytwin.thingmodels.loader import load_model_json


async def cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "citytwin.gateway.cli", *args,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


def described_building() -> Building:
    """The simulator's building, its objects saying more about themselves than by default."""
    building = Building(zones=1, seed=1)
    objects = building.objects
    objects["ahu-filter-dp"].description = "Pressure drop across the supply filter"
    objects["ahu-supply-air-temp-setpoint"].minPresValue = 12.0
    objects["ahu-supply-air-temp-setpoint"].maxPresValue = 30.0
    objects["ahu-supply-fan-command"].inactiveText = "stop"
    objects["ahu-supply-fan-command"].activeText = "run"
    objects["ahu-mode"] = MultiStateValueObject(
        objectIdentifier=("multi-state-value", 1), objectName="ahu-mode", presentValue=2, numberOfStates=3,
        stateText=["off", "auto", "manual"], statusFlags=[0, 0, 0, 0], eventState="normal", outOfService=False,
        description="Operating mode")
    return building


async def test_bacnet_discover_writes_a_model_and_a_template_that_check_and_run(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    async with BuildingSimulator(port=free_udp_port(), building=described_building(), speed=0.0) as sim:
        code, out, err = await cli("discover", f"bacnet://127.0.0.1:{sim.port}", "--timeout", "3", "--name", "ahu",
                                   "--template", str(tmp_path / "ahu.yaml"),
                                   "--model", str(tmp_path / "models" / "ahu.json"))
        assert code == 0, err
        assert "properties" in out and "template 'ahu'" in out
        model = json.loads((tmp_path / "models" / "ahu.json").read_text())
        load_model_json(json.dumps(model))
        props = {p["identifier"]: p for p in model["properties"]}
        assert props["ahu_filter_dp"] == {
            "identifier": "ahu_filter_dp", "name": "ahu-filter-dp", "desc": "Pressure drop across the supply filter",
            "accessMode": "r", "required": False, "dataType": {"type": "float", "specs": {"unit": "Pa"}}}
        assert props["ahu_supply_air_temp_setpoint"]["accessMode"] == "rw"
        assert props["ahu_supply_air_temp_setpoint"]["dataType"] == {
            "type": "float", "specs": {"min": "12", "max": "30", "unit": "°C"}}
        assert props["ahu_supply_fan_command"]["dataType"] == {"type": "bool", "specs": {"0": "stop", "1": "run"}}
        assert props["ahu_supply_fan_status"]["dataType"] == {"type": "bool", "specs": {"0": "inactive", "1": "active"}}
        assert props["ahu_supply_fan_status"]["accessMode"] == "r"
        assert props["ahu_mode"]["dataType"] == {"type": "enum", "specs": {"1": "off", "2": "auto", "3": "manual"}}
        assert props["ahu_mode"]["desc"] == "Operating mode"

        template = yaml.safe_load((tmp_path / "ahu.yaml").read_text())["templates"]["ahu"]
        assert template["model"] == "models/ahu.json" and template["driver"] == "bacnet"
        assert template["connection"]["device_id"] == 1001
        assert template["points"]["ahu_supply_air_temp_setpoint"] == {
            "object": "analog-value,1", "writable": True, "priority": 8}
        assert set(template["points"]) == set(props)

        # put into a config with a device using it, it passes `citytwin config check` ...
        config = tmp_path / "gw.yaml"
        config.write_text("gateway: {id: g, data_dir: DATA_DIR}\nhub: {url: 'mqtt://127.0.0.1:1'}\n"
                          "http: {enabled: false}\n" + (tmp_path / "ahu.yaml").read_text()
                          + "devices:\n  - {id: ahu-1, template: ahu, poll_period: 0.2, connection: "
                            f"{{local_address: '127.0.0.1:{free_udp_port()}', timeout: 1.0}}}}\n")
        code, out, err = await cli("config", "check", str(config))
        assert code == 0, err
        assert "1 device(s)" in out and "template ahu: 1 device(s)" in out
        # ... and the device reports through it, the enum and the bools as the model says
        async with InProcessGateway(config.read_text(), tmp_path, None) as gw:
            twin = gw.gw.twins["ahu-1"]
            await gw.wait_for(lambda: {"ahu_filter_dp", "ahu_mode", "ahu_supply_fan_command"} <= set(twin.reported),
                              what="the discovered device reporting")
            assert twin.reported["ahu_mode"] == 2 and twin.reported["ahu_supply_fan_command"] is False
            assert twin.reported["ahu_filter_dp"] == 120.0


@pytest.fixture
def js_peer() -> object:
    p = JsPeer(free_udp_port())
    yield p
    p.stop()


async def test_bacnet_discover_of_a_foreign_device_without_optional_properties(js_peer: JsPeer, tmp_path: Path) -> None:
    code, _, err = await cli("discover", f"bacnet://127.0.0.1:{js_peer.port}", "--timeout", "3",
                               "--template", str(tmp_path / "t.yaml"), "--model", str(tmp_path / "m.json"),
                               "--product-key", "vendor.zone")
    assert code == 0, err
    model = load_model_json((tmp_path / "m.json").read_text())
    assert model.product_key == "vendor.zone"
    props = {p["identifier"]: p for p in json.loads((tmp_path / "m.json").read_text())["properties"]}
    assert props["zone_temp"]["dataType"] == {"type": "float", "specs": {"unit": "°C"}}
    assert props["zone_co2"]["dataType"] == {"type": "float", "specs": {"unit": "ppm"}}
    assert props["zone_temp_setpoint"]["accessMode"] == "rw"
    assert props["zone_lights"]["dataType"] == {"type": "bool", "specs": {"0": "inactive", "1": "active"}}
    # a multi-state object that does not say its states: a number from 1, for a person to name
    assert props["zone_mode"]["dataType"] == {"type": "int", "specs": {"min": "1", "step": "1"}}
    assert all("desc" not in p for p in props.values())
    text = (tmp_path / "t.yaml").read_text()
    name = next(iter(yaml.safe_load(text)["templates"]))
    _, specs = prepare("gateway: {id: g}\n" + text + f"devices:\n  - {{id: x, template: {name}}}\n", "gw.yaml", tmp_path)
    assert set(specs["x"].points) == set(model.properties)


@pytest.mark.parametrize(("url", "why"), [
    ("modbus://127.0.0.1:502", "no request that lists a device's registers"),
    ("modbus-rtu://dev/ttyUSB0", "no request that lists a device's registers"),
    ("mqtt://127.0.0.1:1883", "a broker does not know which topics"),
    ("dlt645://127.0.0.1:9000", "has no request that lists them"),
])
async def test_a_driver_that_cannot_discover_says_why(url: str, why: str, tmp_path: Path) -> None:
    code, out, err = await cli("discover", url, "--template", str(tmp_path / "t.yaml"))
    assert code == 2 and why in err and "Traceback" not in err, err
    assert out == "" and not (tmp_path / "t.yaml").exists()


async def test_coap_discover_writes_a_model_and_a_template_that_check_and_run(tmp_path: Path) -> None:
    async with CitySensorsSimulator(port=free_port(udp=True), tick=0.05, seed=3, interval=0.2) as sim:
        code, out, err = await cli("discover", f"coap://127.0.0.1:{sim.port}", "--timeout", "3", "--name", "sensors",
                                   "--template", str(tmp_path / "sensors.yaml"), "--model", str(tmp_path / "s.json"))
        assert code == 0, err
        assert "left out" not in out, out
        model = json.loads((tmp_path / "s.json").read_text())
        load_model_json(json.dumps(model))
        props = {p["identifier"]: p for p in model["properties"]}
        assert props["aq_pm_pm25"]["dataType"] == {"type": "double", "specs": {}}
        assert props["mh_level_overflow"]["dataType"]["type"] == "bool"
        assert all(p["accessMode"] == "r" for p in props.values())  # the links say nothing of writes
        assert {s["identifier"] for s in model["services"]} == {"aq_calibrate", "mh_selftest"}

        template = yaml.safe_load((tmp_path / "sensors.yaml").read_text())["templates"]["sensors"]
        assert template["driver"] == "coap" and template["connection"] == {"host": "127.0.0.1", "port": sim.port}
        assert template["points"]["mh_level_level"] == {"path": "/mh/level", "pointer": "/level", "observe": True}
        assert template["points"]["mh_battery_voltage"] == {"path": "/mh/battery", "pointer": "/voltage"}
        assert template["services"]["mh_selftest"] == {"call": {"path": "/mh/selftest", "method": "POST"}}

        config = tmp_path / "gw.yaml"
        config.write_text("gateway: {id: g, data_dir: DATA_DIR}\nhub: {url: 'mqtt://127.0.0.1:1'}\n"
                          "http: {enabled: false}\naccess: {anonymous: admin}\n"
                          + (tmp_path / "sensors.yaml").read_text()
                          + "devices:\n  - {id: street-1, template: sensors, poll_period: 0.5}\n")
        code, out, err = await cli("config", "check", str(config))
        assert code == 0 and "template sensors: 1 device(s)" in out, err
        async with InProcessGateway(config.read_text(), tmp_path, None) as gw:
            twin = gw.gw.twins["street-1"]
            await gw.wait_for(lambda: {"aq_pm_pm25", "mh_level_overflow", "mh_battery_voltage"} <= set(twin.reported),
                              what="the discovered device reporting")
            assert isinstance(twin.reported["mh_level_overflow"], bool)
            reply = await gw.command("street-1", "invoke", "mh_selftest", {"id": "t1", "input": {}}, operator=None)
            assert reply["status"] == "succeeded" and reply["output"]["passed"] is True, reply


async def test_coap_discover_of_libcoap_says_what_it_left_out(tmp_path: Path) -> None:
    server = LibcoapServer()
    server.start()
    try:  # libcoap's example resources are text; PUT makes a JSON one (coap-server -d)
        coap_client("-B", "2", "-m", "put", "-t", "50", "-e", '{"temperature": 21.5, "door": {"open": false}, '
                    '"label": "north"}', server.url("/station"))
        code, out, err = await cli("discover", f"coap://127.0.0.1:{server.port}", "--timeout", "1",
                                   "--template", str(tmp_path / "t.yaml"), "--model", str(tmp_path / "m.json"))
    finally:
        server.stop()
    assert code == 0, err
    props = {p["identifier"]: p for p in json.loads((tmp_path / "m.json").read_text())["properties"]}
    assert {k: p["dataType"]["type"] for k, p in props.items()} == {
        "station_temperature": "double", "station_door_open": "bool"}
    # what a CoAP point cannot bind (text) and what did not answer (/async answers late) is
    # said, with libcoap's link titles parsed past their quoted attributes, never dropped silently
    assert "left out: /time: text, which a CoAP point cannot bind" in out, out
    assert "left out: /station#/label: text" in out and "left out: /async: not read" in out, out
    text = (tmp_path / "t.yaml").read_text()
    points = yaml.safe_load(text)["templates"]["127.0.0.1"]["points"]
    assert points["station_door_open"]["pointer"] == "/door/open" and points["station_door_open"]["path"] == "/station"
    _, specs = prepare("gateway: {id: g}\n" + text + "devices:\n  - {id: x, template: 127.0.0.1}\n", "gw.yaml",
                       tmp_path)
    assert set(specs["x"].points) == set(props)


def test_link_format_as_rfc_6690_writes_it() -> None:
    # RFC 6690 section 5's examples, and a quoted title holding the separators
    text = ('</sensors/temp>;rt="temperature-c";if="sensor",\n</sensors/light>;rt="light-lux";if="sensor",'
            '</t>;title="a, b; c";obs;ct=50')
    assert parse_links(text) == [
        ("/sensors/temp", {"rt": "temperature-c", "if": "sensor"}),
        ("/sensors/light", {"rt": "light-lux", "if": "sensor"}),
        ("/t", {"title": "a, b; c", "obs": "", "ct": "50"}),
    ]
    with pytest.raises(DecodeError, match="malformed link format"):
        parse_links("</a>;x,garbage")
