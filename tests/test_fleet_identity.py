"""Identity and location: uid (checked against the city's coding scheme), location and tags
are validated, published retained on ``{p}/{gw}/{dev}/meta`` through a real mosquitto, listed
by ``citytwin hub devices`` and cleared when a reload removes the device."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Hub, Mosquitto
from harness import FakeDevice, InProcessGateway
from hubcli_support import hub_cli

from citytwin.gateway.bootstrap import prepare
from citytwin.gateway.config import ConfigError
from citytwin.gateway.devicemeta import td_annotations

CONFIG = """
gateway: {id: ps-north-01, data_dir: DATA_DIR, uid_pattern: "PS-[0-9]{4}"}
hub: {url: "HUB_URL", reconnect_min: 0.1, reconnect_max: 0.5}
http: {enabled: false}
templates:
  station:
    model: pump_station
    driver: modbus-tcp
    connection: {port: 502}
    poll_period: 0.1
    groups: [pump-stations]
    points:
      level: {table: input_register, address: 0, scale: 0.01}
devices:
  - id: ps-1
    template: station
    connection: {host: 10.0.0.1}
    uid: PS-0001
    location: {latitude: 39.9672, longitude: 116.3009, altitude: 48.5, crs: cgcs2000, address: Wanquanhe Rd, floor: -1}
    tags: {basin: qinghe, pumps: 2}
  - id: ps-2
    template: station
    connection: {host: 10.0.0.2}
"""


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_uids_follow_the_pattern_and_are_unique_locations_are_checked() -> None:
    text = CONFIG.replace("HUB_URL", "mqtt://127.0.0.1:1").replace(
        "    connection: {host: 10.0.0.2}\n",
        "    connection: {host: 10.0.0.2}\n    uid: PS-0001\n"
        "  - {id: ps-3, template: station, connection: {host: h}, uid: ps-3,\n"
        "     location: {latitude: 39.9, longitude: 116.3, crs: ED50}}\n")
    with pytest.raises(ConfigError) as info:
        prepare(text, "gw.yaml", Path("."))
    assert [str(i) for i in info.value.issues] == [
        f"gw.yaml:{line_of(text, 'connection: {host: 10.0.0.2}') + 1}: devices[1].uid: uid 'PS-0001' is already device 'ps-1''s",
        f"gw.yaml:{line_of(text, 'uid: ps-3')}: devices[2].uid: 'ps-3' does not match gateway.uid_pattern 'PS-[0-9]{{4}}'",
        f"gw.yaml:{line_of(text, 'crs: ED50')}: devices[2].location.crs: Input should be 'WGS84' or 'CGCS2000'",
    ]


def test_a_plain_config_checks_uids_too() -> None:
    text = """
gateway: {id: g, uid_pattern: "[A-Z]+"}
devices:
  - {id: a, model: pump_station, driver: modbus-tcp, connection: {host: h}, uid: abc,
     points: {level: {table: input_register, address: 0}}}
"""
    with pytest.raises(ConfigError) as info:
        prepare(text, "gw.yaml", Path("."))
    assert [str(i) for i in info.value.issues] == ["gw.yaml:4: devices[0].uid: 'abc' does not match gateway.uid_pattern '[A-Z]+'"]


def test_thing_description_annotations_carry_identity_and_place() -> None:
    _, specs = prepare(CONFIG.replace("HUB_URL", "mqtt://127.0.0.1:1"), "gw.yaml", Path("."))
    assert td_annotations(specs["ps-1"].config) == {
        "schema:identifier": "PS-0001", "geo:lat": 39.9672, "geo:long": 116.3009, "geo:alt": 48.5,
        "citytwin:crs": "CGCS2000", "schema:address": "Wanquanhe Rd", "schema:floorLevel": "-1",
        "citytwin:tags": {"basin": "qinghe", "pumps": "2"}}
    assert td_annotations(specs["ps-2"].config) == {}


async def test_meta_is_retained_listed_by_the_hub_cli_and_cleared_on_removal(
    tmp_path: Path, mosquitto: Mosquitto, hub: Hub
) -> None:
    text = CONFIG.replace("HUB_URL", mosquitto.url)
    fakes = {"ps-1": FakeDevice({"level": 100}), "ps-2": FakeDevice({"level": 200})}
    async with InProcessGateway(text, tmp_path, fakes) as gw:
        meta = await hub.wait_for("ps-1/meta")
        assert {k: v for k, v in meta.items() if k != "ts"} == {
            "model": "citytwin.water.pump_station", "uid": "PS-0001", "template": "station", "groups": ["pump-stations"],
            "location": {"latitude": 39.9672, "longitude": 116.3009, "altitude": 48.5, "crs": "CGCS2000",
                         "address": "Wanquanhe Rd", "floor": "-1"},
            "tags": {"basin": "qinghe", "pumps": "2"}}
        assert set(await hub.wait_for("ps-2/meta")) == {"ts", "model", "template", "groups"}
        await hub.wait_for("ps-2/status", lambda s: s["state"] == "online")

        listed = await hub_cli("devices", "--broker", mosquitto.url, "--json")
        assert listed.code == 0, listed.err
        rows = {r["device"]: r for r in listed.json()}
        assert rows["ps-1"]["uid"] == "PS-0001" and rows["ps-1"]["location"]["crs"] == "CGCS2000"
        assert rows["ps-1"]["tags"] == {"basin": "qinghe", "pumps": "2"} and rows["ps-1"]["template"] == "station"
        assert rows["ps-2"]["uid"] is None
        table = await hub_cli("devices", "--broker", mosquitto.url)
        header, *lines = table.out.splitlines()
        assert header.split()[6:8] == ["UID", "LOCATION"]  # after LAST SEEN
        assert any("PS-0001" in line and "39.9672,116.3009 Wanquanhe Rd" in line for line in lines), table.out

        # a reload that removes ps-2 clears its retained meta (an empty retained message)
        path = tmp_path / "gw.yaml"
        path.write_text(text.replace("DATA_DIR", str(tmp_path)).split("  - id: ps-2")[0])
        gw.gw.config_path = path
        result = await gw.gw.reload()
        assert result["removed"] == ["ps-2"], result
        await hub.wait_for("ps-2/meta", lambda body: body is None)
        listed = await hub_cli("devices", "--broker", mosquitto.url, "--json")
        rows = {r["device"]: r for r in listed.json()}
        assert rows["ps-2"]["state"] == "offline" and rows["ps-2"]["template"] is None  # its meta is gone
        assert rows["ps-1"]["template"] == "station"
