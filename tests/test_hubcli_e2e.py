"""``citytwin hub`` against a real mosquitto and a running gateway with the pump-station simulator."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
import pytest
import yaml
from conftest import GatewayProcess, Gateways, Hub, Mosquitto, eventually, free_port, write_config
from hubcli_support import hub_cli, start_hub_cli

from citytwin.simulators.pump_station.server import PumpStationSimulator

GW = "ps-north-01"
DEV = "pump-station-1"
pytestmark = pytest.mark.slow


def broker(mosquitto: Mosquitto) -> list[str]:
    return ["--broker", mosquitto.url]


async def test_devices_lists_the_gateway_and_its_device_online(gateway: GatewayProcess, mosquitto: Mosquitto) -> None:
    result = await hub_cli("devices", *broker(mosquitto), "--json")
    assert result.code == 0, result.err
    rows = {(r["gateway"], r["device"]): r for r in result.json()}
    assert set(rows) == {(GW, None), (GW, DEV)}
    assert rows[(GW, None)]["state"] == "online"
    device = rows[(GW, DEV)]
    assert device["state"] == "online" and device["reason"] is None
    assert isinstance(device["last_seen"], int) and device["last_seen"] >= device["since"]

    text = await hub_cli("devices", *broker(mosquitto))
    assert text.code == 0, text.err
    header, *lines = text.out.splitlines()
    assert header.split()[:3] == ["GATEWAY", "DEVICE", "STATE"]
    assert any(line.split()[:3] == [GW, DEV, "online"] for line in lines), text.out


async def test_devices_marks_devices_of_a_dead_gateway_unknown(gateway: GatewayProcess, mosquitto: Mosquitto) -> None:
    assert gateway.stop(signal.SIGKILL) == -signal.SIGKILL  # the will says offline; the device stays retained online
    result = await hub_cli("devices", *broker(mosquitto), "--json")
    rows = {(r["gateway"], r["device"]): r for r in result.json()}
    assert rows[(GW, None)]["state"] == "offline"
    assert rows[(GW, DEV)]["state"] == "unknown" and "offline" in rows[(GW, DEV)]["reason"]


async def test_twin_shows_the_retained_document(gateway: GatewayProcess, mosquitto: Mosquitto) -> None:
    result = await hub_cli("twin", DEV, *broker(mosquitto), "--json")
    assert result.code == 0, result.err
    twin = result.json()
    assert twin["state"] == "online" and isinstance(twin["version"], int)
    assert isinstance(twin["reported"]["level"], float)
    text = await hub_cli("twin", f"{GW}/{DEV}", *broker(mosquitto))
    assert text.code == 0, text.err
    assert text.out.startswith(f"{GW}/{DEV}: online")
    assert any(line.split()[0] == "level" for line in text.out.splitlines()[2:]), text.out


async def test_invoke_succeeds_writes_the_device_and_exits_0(
    gateway: GatewayProcess, mosquitto: Mosquitto, sim: PumpStationSimulator
) -> None:
    before = sim.station.write_count
    result = await hub_cli("invoke", DEV, "start_pump", "pump=1", *broker(mosquitto), "--json")
    assert result.code == 0, result.out + result.err
    reply = result.json()
    assert reply["status"] == "succeeded" and reply["id"].startswith("cli-")
    assert sim.station.pump(1).run_cmd is True
    assert sim.station.write_count == before + 1
    text = await hub_cli("invoke", f"{GW}/{DEV}", "set_frequency", "pump=1", "hz=47.5", *broker(mosquitto))
    assert text.code == 0, text.out + text.err
    assert text.out.startswith("succeeded")
    assert sim.station.pump(1).setpoint == 47.5


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["set_frequency", "pump=1", "hz=70"], "invalid_input"),
        (["start_pump", "pump=1", "force=true"], "invalid_input"),
        (["open_floodgates"], "unknown_service"),
    ],
)
async def test_invoke_rejected_exits_3_and_writes_nothing(
    gateway: GatewayProcess, mosquitto: Mosquitto, sim: PumpStationSimulator, args: list[str], code: str
) -> None:
    before = sim.station.write_count
    result = await hub_cli("invoke", DEV, *args, *broker(mosquitto), "--json")
    assert result.code == 3, result.out + result.err
    reply = result.json()
    assert reply["status"] == "rejected" and reply["error"]["code"] == code
    assert sim.station.write_count == before
    text = await hub_cli("invoke", DEV, *args, *broker(mosquitto))
    assert text.code == 3 and text.out.startswith(f"rejected: {code}: ")


async def test_set_writes_a_property_and_a_read_only_one_is_rejected(
    gateway: GatewayProcess, mosquitto: Mosquitto, sim: PumpStationSimulator
) -> None:
    result = await hub_cli("set", DEV, "pump2_frequency_setpoint=33.5", *broker(mosquitto))
    assert result.code == 0, result.out + result.err
    assert sim.station.pump(2).setpoint == 33.5
    before = sim.station.write_count
    result = await hub_cli("set", DEV, "level=1", *broker(mosquitto), "--json")
    assert result.code == 3, result.out + result.err
    assert "read-only" in result.json()["error"]["message"]
    assert sim.station.write_count == before


async def test_desired_patch_reaches_the_twin(gateway: GatewayProcess, mosquitto: Mosquitto) -> None:
    result = await hub_cli("desired", DEV, "--patch", '{"pump1_frequency_setpoint": 48.0}', *broker(mosquitto), "--json")
    assert result.code == 0, result.out + result.err
    version = result.json()["output"]["version"]
    assert isinstance(version, int)

    async def desired_in_twin() -> dict | None:
        twin = (await hub_cli("twin", DEV, *broker(mosquitto), "--json")).json()
        return twin if twin["version"] >= version else None

    twin = await eventually(desired_in_twin, timeout=20, step=0.3)
    assert twin["desired"]["pump1_frequency_setpoint"] == 48.0


async def test_no_reply_exits_5(mosquitto: Mosquitto) -> None:
    result = await hub_cli("invoke", "nogw/nodev", "start_pump", "pump=1", "--timeout", "1s",
                           *broker(mosquitto), "--json")
    assert result.code == 5, result.out + result.err
    body = result.json()
    assert body["status"] == "no_reply" and body["error"]["code"] == "no_reply"


async def test_usage_and_broker_errors(mosquitto: Mosquitto) -> None:
    unknown = await hub_cli("invoke", "nodev", "start_pump", "--wait", "1s", *broker(mosquitto))
    assert unknown.code == 2 and "no gateway" in unknown.err
    bad = await hub_cli("invoke", "gw/dev", "start_pump", "pump", *broker(mosquitto))
    assert bad.code == 2 and "KEY=VALUE" in bad.err
    no_password_flag = await hub_cli("devices", "--password", "x", *broker(mosquitto))
    assert no_password_flag.code == 2
    down = await hub_cli("devices", "--broker", f"mqtt://127.0.0.1:{free_port()}")
    assert down.code == 1 and "cannot connect" in down.err and "Traceback" not in down.err


async def test_commands_carry_the_operator_response_topic_and_options(mosquitto: Mosquitto) -> None:
    """What the CLI publishes, seen by a spy on the command topic (no gateway answers)."""
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, protocol=aiomqtt.ProtocolVersion.V5) as spy:
        await spy.subscribe("citytwin/v1/gw-x/+/services/+/invoke", qos=1)
        before = time.time_ns() // 1_000_000
        result = await hub_cli("invoke", "gw-x/dev-y", "start_pump", "pump=2", "name=abc", 'quoted="7"',
                               "flag=false", "--operator", "alice", "--dry-run", "--expires", "30s",
                               "--timeout", "1s", *broker(mosquitto))
        assert result.code == 5
        after = time.time_ns() // 1_000_000
        async with asyncio.timeout(5):
            message = await anext(aiter(spy.messages))
    assert str(message.topic) == "citytwin/v1/gw-x/dev-y/services/start_pump/invoke"
    assert isinstance(message.payload, bytes)
    body = orjson.loads(message.payload)
    assert body["input"] == {"pump": 2, "name": "abc", "quoted": "7", "flag": False}
    assert body["dry_run"] is True
    assert before + 30_000 <= body["expires_at"] <= after + 30_000
    assert "operator" not in body  # MQTT 5: the operator travels as a user property
    props = message.properties
    assert props is not None
    assert ("operator", "alice") in props.UserProperty
    assert props.ResponseTopic.startswith("citytwin/v1/_operators/") and props.ResponseTopic.endswith("/replies")
    assert props.CorrelationData == body["id"].encode()


async def test_mqtt311_invoke_matches_the_reply_by_id(
    tmp_path: Path, mosquitto: Mosquitto, sim: PumpStationSimulator, hub: Hub, gateways: Gateways
) -> None:
    config = write_config(tmp_path / "gw.yaml", mosquitto.url, sim.port)
    granted(config, ["payload"], {"operators": ["bob"], "role": "operator"})
    config.write_text(config.read_text().replace("protocol: '5'", "protocol: 3.1.1"))
    gateways(config)
    await hub.wait_for(f"{DEV}/status", lambda s: s["state"] == "online")
    result = await hub_cli("invoke", DEV, "start_pump", "pump=2", "--protocol", "3.1.1",
                           "--operator", "bob", "--operator-in-payload", *broker(mosquitto), "--json")
    assert result.code == 0, result.out + result.err
    assert result.json()["status"] == "succeeded"
    assert sim.station.pump(2).run_cmd is True
    sent = [b for b in hub.on(f"{DEV}/services/start_pump/invoke")]
    assert sent and sent[-1]["operator"] == "bob"
    # without the operator in the payload a 3.1.1 command names nobody: refused
    result = await hub_cli("invoke", DEV, "stop_pump", "pump=2", "--protocol", "3.1.1",
                           "--operator", "bob", *broker(mosquitto), "--json")
    assert result.code == 3 and result.json()["error"]["code"] == "unauthorized", result.out


def granted(config: Path, identity: list[str], *grants: dict[str, Any]) -> None:
    """Deny by default: only these grants, no role for commands that name nobody."""
    doc = yaml.safe_load(config.read_text())
    doc["access"] = {"identity": identity, "anonymous": "none", "grants": list(grants)}
    config.write_text(yaml.safe_dump(doc, sort_keys=False))


async def test_the_operator_travels_as_a_user_property_and_is_authorized(
    tmp_path: Path, mosquitto: Mosquitto, sim: PumpStationSimulator, hub: Hub, gateways: Gateways
) -> None:
    config = write_config(tmp_path / "gw.yaml", mosquitto.url, sim.port)
    granted(config, ["user_property"], {"operators": ["alice"], "role": "operator"})
    gateways(config)
    await hub.wait_for(f"{DEV}/status", lambda s: s["state"] == "online")
    ok = await hub_cli("invoke", DEV, "start_pump", "pump=1", "--operator", "alice", *broker(mosquitto), "--json")
    assert ok.code == 0, ok.out + ok.err
    assert sim.station.pump(1).run_cmd is True
    before = sim.station.write_count
    for who in (["--operator", "mallory"], []):
        denied = await hub_cli("invoke", DEV, "stop_pump", "pump=1", *who, *broker(mosquitto), "--json")
        assert denied.code == 3 and denied.json()["error"]["code"] == "unauthorized", denied.out
    # the payload is not trusted for identity here
    spoof = await hub_cli("invoke", DEV, "stop_pump", "pump=1", "--operator", "alice", "--protocol", "3.1.1",
                          "--operator-in-payload", *broker(mosquitto), "--json")
    assert spoof.code == 3 and spoof.json()["error"]["code"] == "unauthorized", spoof.out
    # an operator may not change desired state (admin only)
    desired = await hub_cli("desired", DEV, "--patch", '{"pump1_frequency_setpoint": 40}', "--operator", "alice",
                            *broker(mosquitto), "--json")
    assert desired.code == 3 and desired.json()["error"]["code"] == "unauthorized", desired.out
    assert sim.station.write_count == before and sim.station.pump(1).run_cmd is True


async def test_watch_shows_reports_status_and_events(
    gateway: GatewayProcess, mosquitto: Mosquitto, sim: PumpStationSimulator, hub: Hub
) -> None:
    watch = await start_hub_cli("watch", DEV, "--duration", "3s", *broker(mosquitto), "--json")
    events = await start_hub_cli("events", "--duration", "3s", *broker(mosquitto), "--json")
    # both listen once watch printed the retained status and events a marker event from
    # another gateway (sent until it shows: there is no retained event to wait for)
    await eventually(lambda: watch.out)

    async def events_listen() -> bool:
        await hub.client.publish("citytwin/v1/marker-gw/events/ready", b"{}", qos=1)
        return bool(events.out)

    await eventually(events_listen, step=0.2)
    sim.station.inject_fault(2)
    result, only_events = await watch.result(), await events.result()
    assert result.code == 0, result.err
    lines = result.lines()
    kinds = {line["kind"] for line in lines}
    assert {"status", "report", "event"} <= kinds, kinds
    assert all(line["device"] == DEV for line in lines)
    assert any(line["kind"] == "status" and line["retained"] and line["payload"]["state"] == "online" for line in lines)
    fault = next(line for line in lines if line["kind"] == "event")
    assert fault["name"] == "pump_fault" and fault["payload"]["output"]["pump"] == 2
    assert only_events.code == 0, only_events.err
    assert {e["gateway"] for e in only_events.lines()} == {GW, "marker-gw"}
    assert [e["name"] for e in only_events.lines() if e["gateway"] == GW] == ["pump_fault"]

    text = await hub_cli("watch", f"{GW}/{DEV}", "--count", "2", *broker(mosquitto))
    assert text.code == 0, text.err
    assert len(text.out.splitlines()) == 2 and all(f" {GW}" in line for line in text.out.splitlines())
