"""Remote configuration through a real mosquitto: only admins of "@gateway", validated like a
local file with its locked sections, applied through the reload path, answered on
config/reported, rolled back when devices stay offline, audited, kept for the next start, and
driven by ``citytwin hub config push|get|diff``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
import pytest
from conftest import Hub, Mosquitto
from harness import FakeDevice, FakeDriver, InProcessGateway
from hubcli_support import hub_cli
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from citytwin.drivers.errors import ConnectError
from citytwin.gateway.audit import read_records, verify
from citytwin.gateway.bootstrap import prepare_file
from citytwin.gateway.remoteconfig import LAST_GOOD, restore

GW = "ps-north-01"
LOCAL = """
gateway: {id: ps-north-01, data_dir: DATA_DIR}
hub: {url: "HUB_URL", reconnect_min: 0.1, reconnect_max: 0.5}
http: {enabled: false}
locked: [access]
remote_config: {rollback_after: 1.5}
access:
  grants:
    - {operators: [cfg-admin], role: admin, devices: ["@gateway"]}
    - {operators: [engineer], role: admin}
templates:
  station:
    model: pump_station
    driver: modbus-tcp
    connection: {port: 502}
    poll_period: 0.1
    reconnect_min: 0.1
    points:
      level: {table: input_register, address: 0, scale: 0.01}
devices:
  - {id: ps-1, template: station, connection: {host: a}}
"""


class Fleet:
    """An in-process gateway whose devices are fake and keyed by host, so devices a remote
    config adds get a driver too."""

    def __init__(self, tmp_path: Path, mosquitto: Mosquitto) -> None:
        self.text = LOCAL.replace("HUB_URL", mosquitto.url).replace("DATA_DIR", str(tmp_path / "data"))
        self.port = mosquitto.port
        self.path = tmp_path / "gw.yaml"
        self.path.write_text(self.text)
        self.devices: dict[str, FakeDevice] = {h: FakeDevice({"level": 100 * (i + 1)}) for i, h in enumerate("abcdef")}
        self.gw = InProcessGateway(self.text, tmp_path, None)

    def driver(self, name: str, connection: Any, points: Any) -> FakeDriver:
        host = connection.host
        return FakeDriver(self.devices[host], host, points)


@pytest.fixture
async def fleet(tmp_path: Path, mosquitto: Mosquitto) -> Any:
    fleet = Fleet(tmp_path, mosquitto)
    gw = fleet.gw
    gw.config, gw.specs = prepare_file(fleet.path)
    gw.handlers = {}
    gw._make_driver = fleet.driver  # type: ignore[method-assign]
    async with gw:
        gw.gw.config_path = fleet.path
        gw.gw.remote.publish_state()  # now with the local file
        await gw.wait_for(lambda: gw.gw.hub.connected, what="the hub link")  # subscribed to config/desired
        yield fleet


async def push(fleet: Fleet, hub: Hub, body: dict[str, Any], operator: str | None = "cfg-admin", final: bool = True) -> Any:
    """Publish on config/desired as the hub would (MQTT 5, the operator as a user property)."""
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if operator:
        properties.UserProperty = [("operator", operator)]
    async with aiomqtt.Client("127.0.0.1", fleet.port, protocol=aiomqtt.ProtocolVersion.V5) as client:
        await client.publish(f"citytwin/v1/{GW}/config/desired", orjson.dumps(body), qos=1, properties=properties)
    return await hub.wait_for("config/reported", lambda r: r is not None and r.get("id") == body["id"] and (
        not final or r.get("status") != "applying"), timeout=20)


def with_device(text: str, line: str) -> str:
    return text + line + "\n"


async def test_a_pushed_config_adds_devices_without_restarting_others_and_is_kept(
    fleet: Fleet, hub: Hub, tmp_path: Path
) -> None:
    gw = fleet.gw
    runner = gw.gw.runners["ps-1"]
    text = with_device(fleet.text, "inventory: [more.csv]")
    answer = await push(fleet, hub, {"id": "c1", "version": 1, "config": text,
                              "inventory": {"more.csv": "id,template,host,uid\nps-2,station,b,PS-2\n"}})
    assert answer["status"] == "applied" and answer["added"] == ["ps-2"] and answer["changed"] == []
    assert answer["active"] == {"source": "hub", "version": 1, "operator": "cfg-admin", "ts": answer["active"]["ts"],
                                "digest": answer["digest"]}
    assert gw.gw.runners["ps-1"] is runner  # untouched
    assert gw.gw.runners["ps-2"].online
    # the active config is shown without its locked sections (access, gateway, locked)
    assert "access" not in answer["config"] and "gateway" not in answer["config"]
    assert answer["inventory"] == {"more.csv": "id,template,host,uid\nps-2,station,b,PS-2\n"}

    # only a new inventory: the config stays, the file is replaced
    answer = await push(fleet, hub, {"id": "c2", "version": 2, "inventory": {
        "more.csv": "id,template,host\nps-2,station,b\nps-3,station,c\n"}})
    assert answer["status"] == "applied" and answer["added"] == ["ps-3"] and answer["changed"] == ["ps-2"]
    await gw.wait_for(lambda: gw.gw.runners["ps-3"].online, what="ps-3 online")

    # the audit chain has both, intact
    audit = tmp_path / "data" / "audit.log"
    await gw.wait_for(lambda: audit.exists() and sum(
        1 for _, r, _ in read_records(audit) if r and r.get("kind") == "config") == 2, what="audit records")
    records = [r for _, r, _ in read_records(audit) if r and r.get("kind") == "config"]
    assert [(r["operator"], r["status"], r["output"]["version"]) for r in records] == [
        ("cfg-admin", "applied", 1), ("cfg-admin", "applied", 2)]
    assert verify(audit)[1] == []

    # the last good config is used at the next start, with the local file's locked sections
    assert (tmp_path / "data" / LAST_GOOD).exists()
    config, specs = prepare_file(fleet.path)
    config, specs, active = restore(fleet.path, config, specs)
    assert active is not None and active.version == 2 and sorted(specs) == ["ps-1", "ps-2", "ps-3"]
    assert config.access.grants[0].devices == ["@gateway"]

    # a local reload makes the local file win again
    result = await gw.gw.reload()
    assert result["removed"] == ["ps-2", "ps-3"]
    assert not (tmp_path / "data" / LAST_GOOD).exists()


@pytest.mark.parametrize(
    ("operator", "body", "code", "message"),
    [
        ("engineer", {"version": 1, "config": "x: 1"}, "unauthorized",
         "engineer may not configure the gateway (needs role admin on '@gateway'; deny by default)"),
        (None, {"version": 1, "config": "x: 1"}, "unauthorized",
         "an unidentified operator may not configure the gateway (needs role admin on '@gateway'; deny by default)"),
        ("cfg-admin", {"version": 0, "config": "x: 1"}, "malformed", "'version' must be a positive integer"),
        ("cfg-admin", {"version": 1}, "malformed",
         "needs 'config' (the file's text), 'inventory' (files by name), or both"),
    ],
)
async def test_refused_before_validation(fleet: Fleet, hub: Hub, operator: str | None, body: dict[str, Any],
                                         code: str, message: str) -> None:
    answer = await push(fleet, hub, {"id": "r1", **body}, operator)
    assert answer["status"] == "refused" and answer["error"] == {"code": code, "message": message}
    assert sorted(fleet.gw.gw.runners) == ["ps-1"]


async def test_an_invalid_or_locked_config_is_refused_with_every_error_placed(fleet: Fleet, hub: Hub) -> None:
    text = (with_device(fleet.text, "  - {id: ps-2, template: station, connection: {host: b, port: 0}}")
            .replace("role: admin}", "role: admin, devices: ['*', '@gateway']}"))
    answer = await push(fleet, hub, {"id": "r2", "version": 7, "config": text})
    assert answer["status"] == "refused" and answer["error"]["code"] == "invalid"
    lines = text.splitlines()
    assert answer["errors"] == [{"source": "hub config v7", "line": lines.index("access:") + 1,
                                 "path": "access", "message": "locked by the gateway's local config: a config from "
                                                              "the hub may not change it"}]
    text = with_device(fleet.text, "  - {id: ps-2, template: station, connection: {host: b, port: 0}}")
    answer = await push(fleet, hub, {"id": "r3", "version": 7, "config": text})
    assert answer["errors"] == [{"source": "hub config v7", "line": len(text.splitlines()),
                                 "path": "devices[1].connection.port", "message": "must be 1..65535"}]
    assert sorted(fleet.gw.gw.runners) == ["ps-1"]


async def test_devices_that_stay_offline_roll_the_config_back(fleet: Fleet, hub: Hub, tmp_path: Path) -> None:
    fleet.devices["f"].fail = ConnectError("connection refused")
    text = (with_device(fleet.text, "  - {id: ps-9, template: station, connection: {host: f}}")
            .replace("{host: a}", "{host: a, timeout: 2.0}"))
    started = asyncio.get_running_loop().time()
    applying = await push(fleet, hub, {"id": "rb", "version": 3, "config": text}, final=False)
    assert applying["status"] == "applying" and applying["added"] == ["ps-9"] and applying["changed"] == ["ps-1"]
    answer = await hub.wait_for("config/reported", lambda r: r and r.get("id") == "rb" and r["status"] != "applying")
    assert answer["status"] == "rolled_back" and asyncio.get_running_loop().time() - started >= 1.5
    assert answer["errors"] == [{"path": "devices.ps-9", "message": "not online within 1.5 s: ConnectError: connection refused"}]
    assert sorted(fleet.gw.gw.runners) == ["ps-1"]
    assert fleet.gw.gw.specs["ps-1"].config.connection.timeout != 2.0  # the previous config again
    assert answer["active"]["source"] == "local" and not (tmp_path / "data" / LAST_GOOD).exists()
    # the same push again (same id) is answered, not applied again
    hub.messages.clear()
    again = await push(fleet, hub, {"id": "rb", "version": 3, "config": text})
    assert again["status"] == "rolled_back" and again["ts"] == answer["ts"]


async def test_hub_config_cli_gets_pushes_and_diffs(fleet: Fleet, hub: Hub, mosquitto: Mosquitto, tmp_path: Path) -> None:
    broker = ["--broker", mosquitto.url, "--gateway", GW]
    got = await hub_cli("config", "get", *broker, "--json")
    assert got.code == 0, got.err
    assert got.json()["active"]["source"] == "local" and got.json()["config"]["devices"][0]["id"] == "ps-1"

    new = tmp_path / "new.yaml"
    new.write_text(with_device(fleet.text, "  - {id: ps-2, template: station, connection: {host: b}}"))
    diff = await hub_cli("config", "diff", str(new), *broker)
    assert diff.code == 3 and "+- connection:" in diff.out and "id: ps-2" in diff.out, diff.out

    refused = await hub_cli("config", "push", str(new), *broker, "--operator", "engineer")
    assert refused.code == 3 and "unauthorized" not in refused.out and "may not configure" in refused.out, refused.out
    pushed = await hub_cli("config", "push", str(new), *broker, "--operator", "cfg-admin")
    assert pushed.code == 0, pushed.out + pushed.err
    assert "v1: applied: added ps-2" in pushed.out
    same = await hub_cli("config", "diff", str(new), *broker)
    assert same.code == 0 and same.out == "", same.out
    text = await hub_cli("config", "get", *broker)
    assert text.out.startswith(f"{GW}: hub config v1") and "last push: v1 by cfg-admin: applied" in text.out

    # an inventory the config names is sent with it; --inventory-only sends just the inventory
    (tmp_path / "more.csv").write_text("id,template,host\nps-3,station,c\n")
    new.write_text(new.read_text() + "inventory: more.csv\n")
    pushed = await hub_cli("config", "push", str(new), *broker, "--operator", "cfg-admin")
    assert pushed.code == 0 and "v2: applied: added ps-3" in pushed.out, pushed.out + pushed.err
    (tmp_path / "more.csv").write_text("id,template,host\nps-3,station,c\nps-4,station,d\n")
    pushed = await hub_cli("config", "push", str(new), "--inventory-only", *broker, "--operator", "cfg-admin", "--json")
    assert pushed.code == 0, pushed.out + pushed.err
    assert (pushed.json()["version"], pushed.json()["added"]) == (3, ["ps-4"])
