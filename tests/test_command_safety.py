"""Nothing run twice, late, unauthorized or against an interlock; everything audited.

Real mosquitto, the pump-station simulator, the gateway as a subprocess with the example's
deny-by-default access rules; operators identify with the MQTT 5 user property.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
import pytest
import yaml
from conftest import GatewayProcess, Gateways, Hub, Mosquitto, eventually, write_config
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from citytwin.simulators.pump_station.server import PumpStationSimulator

DEV = "pump-station-1"
BASE = "citytwin/v1/ps-north-01"
pytestmark = pytest.mark.slow


class Operator:
    """A hub operator with an MQTT 5 session, its own reply topic and a name."""

    def __init__(self, client: aiomqtt.Client, name: str | None) -> None:
        self.client = client
        self.name = name
        self.replies: dict[str, list[dict[str, Any]]] = {}
        self.topic = f"ops/{name or 'nobody'}/{id(self)}/replies"
        self._changed = asyncio.Event()

    async def listen(self) -> None:
        async for message in self.client.messages:
            assert isinstance(message.payload, bytes)
            body = orjson.loads(message.payload)
            self.replies.setdefault(body.get("id"), []).append(body)
            self._changed.set()

    async def send(self, suffix: str, payload: dict[str, Any], wait_for: int = 1) -> dict[str, Any]:
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = self.topic
        if self.name:
            props.UserProperty = [("operator", self.name)]
        command_id = payload["id"]
        before = len(self.replies.get(command_id, []))
        await self.client.publish(f"{BASE}/{DEV}/{suffix}", orjson.dumps(payload), qos=1, properties=props)
        async with asyncio.timeout(15):
            while len(self.replies.get(command_id, [])) < before + wait_for:
                self._changed.clear()
                await self._changed.wait()
        return self.replies[command_id][-1]

    async def invoke(self, service: str, inputs: dict[str, Any], command_id: str, **extra: Any) -> dict[str, Any]:
        return await self.send(f"services/{service}/invoke", {"id": command_id, "input": inputs, **extra})


def strict_config(tmp_path: Path, mosquitto: Mosquitto, sim: PumpStationSimulator) -> Path:
    path = write_config(tmp_path / "gw.yaml", mosquitto.url, sim.port)
    doc = yaml.safe_load(path.read_text())
    example = yaml.safe_load((Path(__file__).parent.parent / "deploy/examples/pump-station.yaml").read_text())
    doc["access"] = example["access"]  # deny by default, grants for control-room and duty-engineer
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


async def wait_online(mosquitto: Mosquitto) -> None:
    status = aiomqtt.Client("127.0.0.1", mosquitto.port)
    async with status:
        await status.subscribe(f"{BASE}/{DEV}/status", qos=1)
        async with asyncio.timeout(15):
            async for message in status.messages:
                assert isinstance(message.payload, bytes)
                if orjson.loads(message.payload)["state"] == "online":
                    return


@pytest.fixture
def gateway_config(tmp_path: Path, mosquitto: Mosquitto, sim: PumpStationSimulator) -> Path:
    return strict_config(tmp_path, mosquitto, sim)


@pytest.fixture
async def operators(mosquitto: Mosquitto) -> dict[str, Operator]:
    out: dict[str, Operator] = {}
    tasks = []
    clients = []
    for name in ("control-room", "duty-engineer", "mallory", None):
        client = aiomqtt.Client("127.0.0.1", mosquitto.port, protocol=aiomqtt.ProtocolVersion.V5,
                                socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),))
        await client.__aenter__()
        clients.append(client)
        op = Operator(client, name)
        await client.subscribe(op.topic, qos=1)
        tasks.append(asyncio.create_task(op.listen()))
        out[name or "anonymous"] = op
    yield out
    for task in tasks:
        task.cancel()
    for client in clients:
        await client.__aexit__(None, None, None)


async def test_a_repeated_id_returns_the_first_reply_and_never_writes_twice(
    gateway: GatewayProcess, operators: dict[str, Operator], sim: PumpStationSimulator, mosquitto: Mosquitto
) -> None:
    ops = operators["control-room"]
    before = sim.station.write_count
    first = await ops.invoke("start_pump", {"pump": 1}, "dup-1")
    assert first["status"] == "succeeded" and "duplicate" not in first
    second = await ops.invoke("start_pump", {"pump": 1}, "dup-1")
    assert second["status"] == "succeeded" and second["duplicate"] is True
    assert sim.station.write_count == before + 1
    # also after a restart of the gateway
    assert gateway.stop() == 0
    gateway.start()
    await wait_online(mosquitto)  # the clean stop left "offline" retained: this is the new run
    third = await ops.invoke("start_pump", {"pump": 1}, "dup-1")
    assert third["duplicate"] is True and third["status"] == "succeeded"
    assert sim.station.write_count == before + 1


async def test_expired_commands_are_rejected_and_not_executed(
    gateway: GatewayProcess, operators: dict[str, Operator], sim: PumpStationSimulator
) -> None:
    before = sim.station.write_count
    past = int(time.time() * 1000) - 1000
    reply = await operators["control-room"].invoke("start_pump", {"pump": 1}, "late-1", expires_at=past)
    assert reply["status"] == "rejected" and reply["error"]["code"] == "expired"
    future = int(time.time() * 1000) + 30_000
    reply = await operators["control-room"].invoke("start_pump", {"pump": 2}, "soon-1", expires_at=future)
    assert reply["status"] == "succeeded"
    assert sim.station.write_count == before + 1 and sim.station.pump(1).run_cmd is False


async def test_deny_by_default(gateway: GatewayProcess, operators: dict[str, Operator], sim: PumpStationSimulator) -> None:
    before = sim.station.write_count
    for who in ("mallory", "anonymous"):
        reply = await operators[who].invoke("start_pump", {"pump": 1}, f"auth-{who}")
        assert reply["status"] == "rejected" and reply["error"]["code"] == "unauthorized", reply
    # an operator may invoke but not change desired state; the admin may
    reply = await operators["control-room"].send("twin/desired", {"id": "d-op", "desired": {"note": "x"}})
    assert reply["error"]["code"] == "unauthorized"
    reply = await operators["duty-engineer"].send("twin/desired", {"id": "d-admin", "desired": {"note": "x"}})
    assert reply["status"] == "succeeded"
    assert sim.station.write_count == before


async def test_interlocks_stop_commands_before_any_write(
    gateway: GatewayProcess, operators: dict[str, Operator], sim: PumpStationSimulator, hub: Hub
) -> None:
    sim.station.inject_fault(1)
    await hub.wait_for(f"{DEV}/twin", lambda t: t["reported"].get("pump1_fault") is True)
    before = sim.station.write_count
    reply = await operators["control-room"].invoke("start_pump", {"pump": 1}, "il-1")
    assert reply["status"] == "rejected" and reply["error"]["code"] == "interlock"
    assert "interlock 1 (require pump1_fault == false)" in reply["error"]["message"]
    assert "latched fault" in reply["error"]["message"]
    assert sim.station.write_count == before
    # the same service on the healthy pump passes
    reply = await operators["control-room"].invoke("start_pump", {"pump": 2}, "il-2")
    assert reply["status"] == "succeeded"


async def test_start_rate_limit_per_pump(
    tmp_path: Path, mosquitto: Mosquitto, sim: PumpStationSimulator, operators: dict[str, Operator],
    gateways: Gateways,
) -> None:
    path = strict_config(tmp_path, mosquitto, sim)
    doc = yaml.safe_load(path.read_text())
    for rule in doc["devices"][0]["interlocks"]:
        if "max_per_hour" in rule:
            rule["max_per_hour"] = 2
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    gateways(path)
    ops = operators["control-room"]
    await wait_online(mosquitto)
    results = [(await ops.invoke("start_pump", {"pump": 1}, f"rate-{i}"))["status"] for i in range(3)]
    assert results == ["succeeded", "succeeded", "rejected"]
    reply = ops.replies["rate-2"][-1]
    assert "at most 2 per hour per pump" in reply["error"]["message"]
    assert (await ops.invoke("start_pump", {"pump": 2}, "rate-other"))["status"] == "succeeded"


async def test_dry_run_checks_everything_and_writes_nothing(
    gateway: GatewayProcess, operators: dict[str, Operator], sim: PumpStationSimulator
) -> None:
    before = sim.station.write_count
    reply = await operators["control-room"].invoke("set_frequency", {"pump": 1, "hz": 40}, "dry-1", dry_run=True)
    assert reply["status"] == "succeeded"
    assert reply["output"] == {"dry_run": True, "writes": {"pump1_frequency_setpoint": 40.0}}
    reply = await operators["mallory"].invoke("set_frequency", {"pump": 1, "hz": 40}, "dry-2", dry_run=True)
    assert reply["error"]["code"] == "unauthorized"
    assert sim.station.write_count == before and sim.station.pump(1).setpoint == 45.0


async def test_twin_get_and_desired_versions(
    gateway: GatewayProcess, operators: dict[str, Operator], sim: PumpStationSimulator
) -> None:
    admin = operators["duty-engineer"]
    twin = (await admin.send("twin/get", {"id": "g-1"}))["output"]
    assert "level" in twin["reported"] or twin["version"] >= 1
    stale = twin["version"] - 1
    reply = await admin.send("twin/desired", {"id": "v-1", "desired": {"pump2_frequency_setpoint": 41.5},
                                              "version": stale})
    assert reply["status"] == "rejected" and reply["error"]["code"] == "version_conflict"
    assert reply["output"]["version"] >= twin["version"]
    assert sim.station.pump(2).setpoint == 45.0
    current = (await admin.send("twin/get", {"id": "g-2"}))["output"]["version"]
    reply = await admin.send("twin/desired", {"id": "v-2", "desired": {"pump2_frequency_setpoint": 41.5},
                                              "version": current})
    assert reply["status"] == "succeeded", reply
    assert reply["output"]["applied"] == ["pump2_frequency_setpoint"]
    assert sim.station.pump(2).setpoint == 41.5
    twin = (await admin.send("twin/get", {"id": "g-3"}))["output"]
    assert twin["desired"] == {"pump2_frequency_setpoint": 41.5}  # not silently cleared
    reply = await admin.send("twin/desired", {"id": "v-3", "desired": {"pump2_frequency_setpoint": 99}})
    assert reply["status"] == "rejected" and reply["error"]["code"] == "invalid_input"
    deep: dict[str, Any] = {"x": 1}
    for _ in range(10):
        deep = {"d": deep}
    reply = await admin.send("twin/desired", {"id": "v-4", "desired": deep})
    assert reply["error"]["code"] == "too_large"


async def test_a_command_interrupted_by_a_crash_is_reported_unknown_and_never_rerun(
    tmp_path: Path, mosquitto: Mosquitto, sim: PumpStationSimulator, operators: dict[str, Operator],
    gateways: Gateways,
) -> None:
    proc = gateways(strict_config(tmp_path, mosquitto, sim))
    ops = operators["control-room"]
    await wait_online(mosquitto)
    assert (await ops.invoke("stop_pump", {"pump": 1}, "warm-up"))["status"] == "succeeded"
    assert proc.stop(signal.SIGKILL) == -signal.SIGKILL
    # leave the store exactly as a crash during a start_pump would: recorded, not finished
    db = sqlite3.connect(tmp_path / "data" / "commands.db")
    db.execute(
        "INSERT INTO commands (id, device, kind, target, inputs, state, reply_to, correlation, received) "
        "VALUES ('crash-1', ?, 'invoke', 'start_pump', ?, 'executing', ?, NULL, ?)",
        (DEV, orjson.dumps({"pump": 1}), ops.topic, int(time.time() * 1000)),
    )
    db.commit()
    db.close()
    before = sim.station.write_count
    proc.start()
    await eventually(lambda: "crash-1" in ops.replies)
    assert ops.replies["crash-1"][0]["status"] == "unknown"
    again = await ops.invoke("start_pump", {"pump": 1}, "crash-1")
    assert again["status"] == "unknown" and again["duplicate"] is True
    assert sim.station.write_count == before and sim.station.pump(1).run_cmd is False


async def test_the_audit_chain_records_everything_and_detects_an_edit(
    tmp_path: Path, gateway: GatewayProcess, operators: dict[str, Operator]
) -> None:
    await operators["control-room"].invoke("start_pump", {"pump": 1}, "a-1")
    await operators["mallory"].invoke("start_pump", {"pump": 1}, "a-2")
    await operators["control-room"].invoke("set_frequency", {"pump": 1, "hz": 90}, "a-3")
    assert gateway.stop() == 0
    log = tmp_path / "data" / "audit.log"
    cli = [sys.executable, "-m", "citytwin.gateway.cli", "audit"]
    ok = subprocess.run([*cli, "verify", "--file", str(log)], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    records = [orjson.loads(line) for line in log.read_bytes().splitlines()]
    by_id = {r["id"]: r for r in records}
    assert by_id["a-1"]["status"] == "succeeded" and by_id["a-1"]["operator"] == "control-room"
    assert by_id["a-2"]["status"] == "rejected" and by_id["a-2"]["error"]["code"] == "unauthorized"
    assert by_id["a-3"]["error"]["code"] == "invalid_input"
    shown = subprocess.run([*cli, "show", "--file", str(log)], capture_output=True, text=True, timeout=60)
    assert "a-2" in shown.stdout and "mallory" in shown.stdout
    # someone quietly turns the unauthorized attempt into a success
    lines = log.read_bytes().splitlines()
    index = next(i for i, line in enumerate(lines) if b'"a-2"' in line)
    lines[index] = lines[index].replace(b'"rejected"', b'"succeeded"')
    log.write_bytes(b"\n".join(lines) + b"\n")
    bad = subprocess.run([*cli, "verify", "--file", str(log)], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1
    assert f"{log}:{index + 1}: record edited" in bad.stdout
    # and removing a record breaks the chain at the next one
    del lines[index]
    log.write_bytes(b"\n".join(lines) + b"\n")
    gone = subprocess.run([*cli, "verify", "--file", str(log)], capture_output=True, text=True, timeout=60)
    assert gone.returncode == 1 and "chain broken" in gone.stdout


async def test_an_async_service_is_accepted_at_once_then_answered_when_done(
    tmp_path: Path, mosquitto: Mosquitto, sim: PumpStationSimulator, operators: dict[str, Operator],
    gateways: Gateways,
) -> None:
    from citytwin.thingmodels.library import library_document

    model = library_document("pump_station")
    for service in model["services"]:
        if service["identifier"] == "start_pump":
            service["callType"] = "async"
    (tmp_path / "pump_station_async.json").write_text(orjson.dumps(model).decode())
    path = strict_config(tmp_path, mosquitto, sim)
    doc = yaml.safe_load(path.read_text())
    doc["devices"][0]["model"] = "pump_station_async.json"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    gateways(path)
    await wait_online(mosquitto)
    ops = operators["control-room"]
    await ops.send("services/start_pump/invoke", {"id": "async-1", "input": {"pump": 1}}, wait_for=2)
    statuses = [r["status"] for r in ops.replies["async-1"]]
    assert statuses == ["accepted", "succeeded"]
    assert sim.station.pump(1).run_cmd is True


async def test_a_revoked_grant_takes_effect_on_reload(
    gateway: GatewayProcess, operators: dict[str, Operator], sim: PumpStationSimulator
) -> None:
    ops = operators["control-room"]
    assert (await ops.invoke("stop_pump", {"pump": 1}, "rev-1"))["status"] == "succeeded"
    doc = yaml.safe_load(gateway.config.read_text())
    doc["access"]["grants"] = [g for g in doc["access"]["grants"] if "control-room" not in g["operators"]]
    gateway.config.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert gateway.proc is not None
    gateway.proc.send_signal(signal.SIGHUP)
    await eventually(lambda: "access rules updated" in gateway.output())
    before = sim.station.write_count
    reply = await ops.invoke("start_pump", {"pump": 1}, "rev-2")
    assert reply["status"] == "rejected" and reply["error"]["code"] == "unauthorized"
    assert sim.station.write_count == before


async def test_a_device_back_online_converges_on_its_desired_state(
    gateway: GatewayProcess, operators: dict[str, Operator], sim: PumpStationSimulator, hub: Hub
) -> None:
    admin = operators["duty-engineer"]
    hub.messages.clear()  # forget the statuses so far
    await sim.stop()
    await hub.wait_for(f"{DEV}/status", lambda s: s["state"] == "offline")
    reply = await admin.send("twin/desired", {"id": "conv-1", "desired": {"pump1_frequency_setpoint": 38.5}})
    assert reply["status"] == "failed" and reply["error"]["code"] == "device_offline"
    assert reply["output"]["version"] > 0  # the desired state itself was accepted
    assert sim.station.pump(1).setpoint == 45.0
    await sim.start()
    await eventually(lambda: sim.station.pump(1).setpoint == 38.5)
    twin = (await admin.send("twin/get", {"id": "conv-2"}))["output"]
    assert twin["desired"] == {"pump1_frequency_setpoint": 38.5}

    async def converged() -> bool:
        twin = (await admin.send("twin/get", {"id": f"conv-3-{time.monotonic()}"}))["output"]
        return bool(twin["delta"] == {})

    await eventually(converged, step=0.3)
