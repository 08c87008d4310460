"""Issue 19's loose ends for remote configuration, through a real mosquitto and the real gateway:
with ``remote_config.enabled: false`` no config is shared on config/reported (the retained one
from an earlier run is replaced, the hub's last good config is not used), and locked sections
are named, not shown, and not counted as differences by ``citytwin hub config diff``."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
from conftest import Hub, Mosquitto
from harness import FakeDevice, FakeDriver, InProcessGateway
from hubcli_support import hub_cli
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from citytwin.gateway.audit import read_records
from citytwin.gateway.bootstrap import prepare_file
from citytwin.gateway.remoteconfig import LAST_GOOD, restore

GW = "ps-north-01"
TOPIC = f"citytwin/v1/{GW}/config/reported"
LOCAL = """
gateway: {id: ps-north-01, data_dir: DATA_DIR}
hub: {url: "HUB_URL", reconnect_min: 0.1, reconnect_max: 0.5, username: gw, password: hub-s3cret}
http: {enabled: false}
locked: [access, outbox]
remote_config: {rollback_after: 1.5}
outbox: {max_bytes: 10000000}
access:
  grants:
    - {operators: [cfg-admin], role: admin, devices: ["@gateway"]}
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
DISABLED = "remote_config: {enabled: false}"


def local(tmp_path: Path, mosquitto: Mosquitto, remote: str | None = None) -> str:
    text = LOCAL.replace("HUB_URL", mosquitto.url).replace("DATA_DIR", str(tmp_path / "data"))
    return text.replace("remote_config: {rollback_after: 1.5}", remote) if remote else text


def fake_driver(name: str, connection: Any, points: Any) -> FakeDriver:
    return FakeDriver(FakeDevice({"level": 100}), connection.host, points)


@contextlib.asynccontextmanager
async def running(tmp_path: Path, text: str) -> AsyncIterator[InProcessGateway]:
    """The gateway as ``citytwin run`` starts it: the file, then the hub's last good config."""
    path = tmp_path / "gw.yaml"
    path.write_text(text)
    gw = InProcessGateway(text, tmp_path, None)
    config, specs = prepare_file(path)
    gw.config, gw.specs, active = restore(path, config, specs)
    gw.handlers = {}
    gw._make_driver = fake_driver  # type: ignore[method-assign]
    async with gw:
        gw.gw.config_path = path
        gw.gw.remote.active = active
        gw.gw.remote.publish_state()  # now with the file (the harness starts without its path)
        await gw.wait_for(lambda: gw.gw.hub.connected, what="the hub link")
        yield gw


async def retained(port: int) -> Any:
    """What a hub that connects now gets on config/reported (None: nothing retained)."""
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"late-hub-{os.getpid()}") as client:
        await client.subscribe(TOPIC, qos=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                async for message in client.messages:
                    assert message.retain and isinstance(message.payload, bytes)
                    return orjson.loads(message.payload) if message.payload else None
    return None


async def push(port: int, hub: Hub, body: dict[str, Any]) -> Any:
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.UserProperty = [("operator", "cfg-admin")]
    async with aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5) as client:
        await client.publish(f"citytwin/v1/{GW}/config/desired", orjson.dumps(body), qos=1, properties=properties)
    return await hub.wait_for("config/reported", lambda r: r is not None and r.get("id") == body["id"] and (
        r.get("status") != "applying"), timeout=20)


async def test_disabled_remote_config_shares_no_config_and_replaces_the_stale_one(
    tmp_path: Path, mosquitto: Mosquitto, hub: Hub
) -> None:
    text = local(tmp_path, mosquitto)
    async with running(tmp_path, text):
        pushed = text + "  - {id: ps-2, template: station, connection: {host: b}}\n"
        answer = await push(mosquitto.port, hub, {"id": "c1", "version": 1, "config": pushed})
        assert answer["status"] == "applied" and answer["enabled"] is True and answer["config"]["devices"]
    assert (tmp_path / "data" / LAST_GOOD).exists()
    stale = await retained(mosquitto.port)
    assert stale["config"]["devices"][1]["id"] == "ps-2"  # what a restart must not leave on the broker

    hub.messages.clear()
    async with running(tmp_path, local(tmp_path, mosquitto, DISABLED)) as gw:
        # the local file turned it off: the hub's config is not used (nor kept to come back later)
        assert sorted(gw.gw.runners) == ["ps-1"] and not (tmp_path / "data" / LAST_GOOD).exists()
        await hub.wait_for("config/reported", lambda r: r is not None and r.get("enabled") is False)
        assert await retained(mosquitto.port) == {"enabled": False, "active": {"source": "local", "version": None}}

        # a push is refused at once (not left to time out), audited, and still shows no config
        answer = await push(mosquitto.port, hub, {"id": "c2", "version": 2, "config": pushed})
        assert answer["status"] == "refused" and answer["error"]["code"] == "disabled"
        assert "config" not in answer and "inventory" not in answer and "locked" not in answer
        assert sorted(gw.gw.runners) == ["ps-1"]
        audit = tmp_path / "data" / "audit.log"
        await gw.wait_for(lambda: any(r and r.get("id") == "c2" and r["status"] == "refused"
                                      for _, r, _ in read_records(audit)), what="the refusal audited")

        broker = ["--broker", mosquitto.url, "--gateway", GW]
        got = await hub_cli("config", "get", *broker)
        assert got.code == 3 and "remote configuration is disabled" in got.out, got.out + got.err
        assert "last push: v2 by cfg-admin: refused" in got.out and "devices" not in got.out
        assert (await hub_cli("config", "get", *broker, "--json")).json()["enabled"] is False
        diff = await hub_cli("config", "diff", str(tmp_path / "gw.yaml"), *broker)
        assert diff.code == 2 and "remote configuration disabled" in diff.err, diff.err
        refused = await hub_cli("config", "push", str(tmp_path / "gw.yaml"), *broker, "--operator", "cfg-admin",
                                "--timeout", "10s")
        assert refused.code == 3 and "v3: refused: this gateway does not take configs" in refused.out, refused.out


async def test_a_local_reload_switching_remote_config_off_withdraws_the_config(
    tmp_path: Path, mosquitto: Mosquitto, hub: Hub
) -> None:
    async with running(tmp_path, local(tmp_path, mosquitto)) as gw:
        await hub.wait_for("config/reported", lambda r: r is not None and r.get("config"))
        (tmp_path / "gw.yaml").write_text(local(tmp_path, mosquitto, DISABLED))
        assert (await gw.gw.reload())["result"] == "applied"
        await hub.wait_for("config/reported", lambda r: r is not None and r.get("enabled") is False)
        assert "config" not in hub.on("config/reported")[-1]
        (tmp_path / "gw.yaml").write_text(local(tmp_path, mosquitto))
        assert (await gw.gw.reload())["result"] == "applied"
        shown = await hub.wait_for("config/reported", lambda r: r is not None and r.get("enabled") is True)
        assert shown["config"]["devices"][0]["id"] == "ps-1"


async def test_locked_sections_are_named_not_shown_and_not_diffed(
    tmp_path: Path, mosquitto: Mosquitto, hub: Hub
) -> None:
    text = local(tmp_path, mosquitto)
    async with running(tmp_path, text):
        await hub.wait_for("config/reported", lambda r: r is not None and r.get("config"))
        broker = ["--broker", mosquitto.url, "--gateway", GW]
        got = await hub_cli("config", "get", *broker, "--json")
        assert got.code == 0, got.err
        doc = got.json()
        assert doc["locked"] == ["access", "gateway", "locked", "outbox"]
        assert not set(doc["locked"]) & set(doc["config"])  # named, contents withheld
        assert doc["config"]["hub"]["password"] == "********" and "hub-s3cret" not in got.out

        listing = await hub_cli("config", "get", *broker)
        assert listing.code == 0, listing.err
        for name in doc["locked"]:
            assert f"# {name}: locked" in listing.out
        assert "grants" not in listing.out and "max_bytes" not in listing.out

        # an operator's copy without the locked sections, or with other contents in them, is no
        # different as far as a push can tell: the locked sections are not compared
        copy = tmp_path / "copy.yaml"
        copy.write_text(text.replace("locked: [access, outbox]\n", "").replace(
            "outbox: {max_bytes: 10000000}", "outbox: {max_bytes: 20000000}").replace("cfg-admin", "someone"))
        same = await hub_cli("config", "diff", str(copy), *broker)
        assert same.code == 0 and same.out == "", same.out
        assert "not compared (locked on ps-north-01): access, gateway, outbox" in same.err

        copy.write_text(copy.read_text().replace("poll_period: 0.1", "poll_period: 0.2"))
        changed = await hub_cli("config", "diff", str(copy), *broker)
        assert changed.code == 3 and "+    poll_period: 0.2" in changed.out, changed.out
        assert "outbox" not in changed.out and "grants" not in changed.out
