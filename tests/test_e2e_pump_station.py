"""The foundation path end to end: real mosquitto, the simulator, the gateway as a subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
from pathlib import Path

import aiomqtt
import orjson
import pytest
from conftest import (
    GatewayProcess,
    Gateways,
    Hub,
    Mosquitto,
    eventually,
    later_write_done,
    write_config,
)
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from citytwin.simulators.pump_station.server import PumpStationSimulator

DEV = "pump-station-1"
pytestmark = pytest.mark.slow


def f32(value: float) -> float:
    return struct.unpack(">f", struct.pack(">f", value))[0]


def sig7(value: float) -> float:
    return float(f"{f32(value):.7g}")


async def test_telemetry_carries_the_values_the_simulator_holds(tmp_path: Path, mosquitto: Mosquitto, hub: Hub) -> None:
    # a frozen station (no physics ticks), so every served register is known exactly
    frozen = PumpStationSimulator(port=0, seed=1, tick=3600, initial_level=3.21)
    async with frozen:
        station = frozen.station
        station.pumps[1].run_hours = 1234.56
        proc = GatewayProcess(write_config(tmp_path / "gw.yaml", mosquitto.url, frozen.port))
        proc.start()
        try:
            report = await hub.wait_for(f"{DEV}/properties/report", lambda r: "level" in r["properties"])
            props = report["properties"]
            assert all(p["quality"] == "good" for p in props.values()), props
            assert props["level"]["value"] == sig7(3.21)
            assert props["inflow"]["value"] == sig7(station.inflow)
            assert props["outflow"]["value"] == 0.0
            assert props["pump1_frequency_setpoint"]["value"] == 45.0
            assert props["pump2_run_hours"]["value"] == 1234.56
            assert props["pump1_running"]["value"] is False
            assert props["pump1_fault"]["value"] is False
            assert props["high_level_float"]["value"] is False
            assert len(props) == 17
            assert isinstance(report["seq"], int) and report["ts"] > 0
            status = await hub.wait_for(f"{DEV}/status", lambda s: s["state"] == "online")
            assert status["ts"] > 0
            gw_status = await hub.wait_for("status", lambda s: s["state"] == "online")
            assert gw_status["ts"] > 0
            twin = await hub.wait_for(f"{DEV}/twin", lambda t: "level" in t["reported"])
            assert twin["reported"]["level"] == sig7(3.21)
            assert twin["metadata"]["reported"]["level"]["quality"] == "good"
            assert twin["state"] == "online"
        finally:
            assert proc.stop() == 0, proc.output()
        # a clean stop leaves the device and gateway retained as offline
        await hub.wait_for(f"{DEV}/status", lambda s: s["state"] == "offline")
        await hub.wait_for("status", lambda s: s["state"] == "offline")


async def test_report_seq_increases_and_only_changes_are_sent(gateway: GatewayProcess, hub: Hub) -> None:
    await hub.wait_for(f"{DEV}/properties/report", lambda r: len(r["properties"]) == 17)
    # watch a few polls' worth of reports (the level moves every poll)
    first = len(hub.on(f"{DEV}/properties/report"))
    await hub.wait_for(f"{DEV}/properties/report", lambda r: len(hub.on(f"{DEV}/properties/report")) >= first + 4)
    reports = hub.on(f"{DEV}/properties/report")
    seqs = [r["seq"] for r in reports]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    later = reports[1:]
    assert later, "no reports after the first snapshot"
    # the setpoints never change: after the first full report they are not repeated
    assert not any("pump1_frequency_setpoint" in r["properties"] for r in later if len(r["properties"]) < 17)


async def test_twin_survives_a_restart_and_its_version_continues(
    tmp_path: Path, gateway: GatewayProcess, hub: Hub
) -> None:
    first = await hub.wait_for(f"{DEV}/twin", lambda t: t["version"] >= 3 and "level" in t["reported"])
    assert gateway.stop() == 0, gateway.output()
    last = max(t["version"] for t in hub.on(f"{DEV}/twin"))
    assert last >= first["version"]
    assert (tmp_path / "data" / "twins.db").exists()
    gateway.start()
    twin = await hub.wait_for(f"{DEV}/twin", lambda t: t["state"] == "online" and t["version"] > last)
    assert "level" in twin["reported"]  # reported state came back from disk


async def test_start_pump_sets_the_coil_and_succeeds(gateway: GatewayProcess, hub: Hub, sim: PumpStationSimulator) -> None:
    before = sim.station.write_count
    reply = await hub.invoke(DEV, "start_pump", {"id": "c-1", "input": {"pump": 1}})
    assert reply["status"] == "succeeded", reply
    assert reply["id"] == "c-1" and reply["ts"] > 0
    assert sim.station.pump(1).run_cmd is True
    assert sim.station.write_count == before + 1
    # the twin reports the running pump soon after
    await hub.wait_for(f"{DEV}/properties/report", lambda r: r["properties"].get("pump1_running", {}).get("value") is True)
    reply = await hub.invoke(DEV, "set_frequency", {"id": "c-2", "input": {"pump": 1, "hz": 47.5}})
    assert reply["status"] == "succeeded", reply
    assert sim.station.pump(1).setpoint == 47.5


@pytest.mark.parametrize(
    ("service", "payload", "code"),
    [
        ("set_frequency", {"id": "r-1", "input": {"pump": 1, "hz": 70}}, "invalid_input"),
        ("set_frequency", {"id": "r-2", "input": {"pump": 3, "hz": 40}}, "invalid_input"),
        ("set_frequency", {"id": "r-3", "input": {"pump": 1}}, "invalid_input"),
        ("start_pump", {"id": "r-4", "input": {"pump": 1, "force": True}}, "invalid_input"),
        ("open_floodgates", {"id": "r-5", "input": {}}, "unknown_service"),
        ("start_pump", {"id": "", "input": {"pump": 1}}, "malformed"),
    ],
)
async def test_invalid_commands_are_rejected_and_nothing_is_written(
    gateway: GatewayProcess, hub: Hub, sim: PumpStationSimulator, service: str, payload: dict, code: str
) -> None:
    before = sim.station.write_count
    await hub.client.publish(f"{hub.base}/{DEV}/services/{service}/invoke", orjson.dumps(payload), qos=1)
    reply = await hub.wait_for(f"{DEV}/replies", lambda r: r["status"] == "rejected")
    assert reply["error"]["code"] == code, reply
    assert reply["error"]["message"]
    await later_write_done(hub, sim)  # a write the rejected command made would come before this one
    assert sim.station.write_count == before + 1
    assert sim.station.pump(1).run_cmd is False


async def test_malformed_json_and_unknown_device_are_rejected(gateway: GatewayProcess, hub: Hub) -> None:
    await hub.client.publish(f"{hub.base}/{DEV}/services/start_pump/invoke", b"{not json", qos=1)
    reply = await hub.wait_for(f"{DEV}/replies", lambda r: r["status"] == "rejected")
    assert reply["error"]["code"] == "malformed" and reply["id"] is None
    await hub.client.publish(f"{hub.base}/nope/services/start_pump/invoke", orjson.dumps({"id": "x", "input": {}}), qos=1)
    reply = await hub.wait_for("nope/replies", lambda r: True)
    assert reply["error"]["code"] == "unknown_device"


async def test_property_set_writes_a_writable_property_and_refuses_a_read_only_one(
    gateway: GatewayProcess, hub: Hub, sim: PumpStationSimulator
) -> None:
    await hub.client.publish(f"{hub.base}/{DEV}/properties/set",
                             orjson.dumps({"id": "p-1", "properties": {"pump2_frequency_setpoint": 33.5}}), qos=1)
    reply = await hub.wait_for(f"{DEV}/replies", lambda r: r["id"] == "p-1")
    assert reply["status"] == "succeeded", reply
    assert sim.station.pump(2).setpoint == 33.5
    before = sim.station.write_count
    await hub.client.publish(f"{hub.base}/{DEV}/properties/set",
                             orjson.dumps({"id": "p-2", "properties": {"level": 1.0}}), qos=1)
    reply = await hub.wait_for(f"{DEV}/replies", lambda r: r["id"] == "p-2")
    assert reply["status"] == "rejected" and "read-only" in reply["error"]["message"]
    assert sim.station.write_count == before


async def test_mqtt5_reply_goes_to_the_response_topic_with_correlation_data(
    gateway: GatewayProcess, hub: Hub, mosquitto: Mosquitto
) -> None:
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, protocol=aiomqtt.ProtocolVersion.V5,
                              socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)) as operator:
        await operator.subscribe("operators/alice/replies", qos=1)
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = "operators/alice/replies"
        props.CorrelationData = b"corr-42"
        await operator.publish(f"{hub.base}/{DEV}/services/stop_pump/invoke",
                               orjson.dumps({"id": "m5-1", "input": {"pump": 2}}), qos=1, properties=props)
        async with asyncio.timeout(10):
            async for message in operator.messages:
                assert isinstance(message.payload, bytes)
                body = orjson.loads(message.payload)
                assert body["id"] == "m5-1" and body["status"] == "succeeded"
                assert message.properties is not None
                assert message.properties.CorrelationData == b"corr-42"
                break
    assert not hub.on(f"{DEV}/replies")


async def test_event_fires_on_pump_fault(gateway: GatewayProcess, hub: Hub, sim: PumpStationSimulator) -> None:
    sim.station.inject_fault(2)
    event = await hub.wait_for(f"{DEV}/events/pump_fault", lambda e: True)
    assert event["type"] == "error" and event["output"]["pump"] == 2
    assert isinstance(event["seq"], int)


async def test_device_goes_offline_when_the_plc_stops_and_back_online(
    gateway: GatewayProcess, hub: Hub, sim: PumpStationSimulator
) -> None:
    hub.messages.clear()  # forget the offline status every start publishes first
    await sim.stop()
    loop = asyncio.get_running_loop()
    stopped = loop.time()
    status = await hub.wait_for(f"{DEV}/status", lambda s: s["state"] == "offline", timeout=5)
    # offline after allowed_failures (3) failed attempts, with the reconnect backoff between them
    assert loop.time() - stopped <= 4.0
    assert status["reason"]
    # the other parts keep running: a command to the offline device fails without a write
    reply = await hub.invoke(DEV, "start_pump", {"id": "off-1", "input": {"pump": 1}})
    assert reply["status"] == "failed" and reply["error"]["code"] == "device_offline"
    hub.messages.clear()
    await sim.start()
    await hub.wait_for(f"{DEV}/status", lambda s: s["state"] == "online", timeout=10)


async def test_hub_link_in_mqtt_311_mode(
    tmp_path: Path, mosquitto: Mosquitto, hub: Hub, sim: PumpStationSimulator, gateways: Gateways
) -> None:
    config = write_config(tmp_path / "gw.yaml", mosquitto.url, sim.port)
    config.write_text(config.read_text().replace("protocol: '5'", "protocol: 3.1.1"))
    assert "3.1.1" in config.read_text()
    gateways(config)
    await hub.wait_for(f"{DEV}/properties/report", lambda r: "level" in r["properties"])
    reply = await hub.invoke(DEV, "start_pump", {"id": "v3-1", "input": {"pump": 2}})
    assert reply["status"] == "succeeded"
    assert sim.station.pump(2).run_cmd is True


def test_malformed_config_stops_the_start_with_file_and_line(tmp_path: Path) -> None:
    config = write_config(tmp_path / "bad.yaml", "mqtt://127.0.0.1:1", 1)
    text = config.read_text().replace("address: 6\n", "address: 70000\n")
    config.write_text(text)
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "address: 70000" in row)
    result = subprocess.run([sys.executable, "-m", "citytwin.gateway.cli", "run", "-c", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"{config}:{line}: devices[0].points.outlet_pressure.address: must be 0..65535" in result.stderr
    assert "Traceback" not in result.stderr


def test_demo_runs_the_whole_story_and_exits_zero() -> None:
    result = subprocess.run([sys.executable, "-m", "citytwin.gateway.cli", "demo", "--duration", "20"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "start_pump" in result.stdout and "succeeded" in result.stdout
    for protocol in ("Modbus TCP", "OPC UA", "CoAP", "MQTT"):
        assert protocol in result.stdout
    for service in ("set_plan", "calibrate", "set_valve"):
        assert f"invoke {service}" in result.stdout
    assert "from 5 of 5 devices" in result.stdout
    assert "demo  OK" in result.stdout


def stored_twin(data_dir: Path) -> dict | None:
    """The device's twin as the gateway last flushed it to its store (WAL: readable meanwhile)."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{data_dir / 'twins.db'}?mode=ro", uri=True)) as db:
            row = db.execute("SELECT doc FROM twins WHERE device = ?", (DEV,)).fetchone()
    except sqlite3.OperationalError:  # not created yet
        return None
    return orjson.loads(row[0]) if row else None


async def test_versions_and_seq_never_repeat_after_kill_9(tmp_path: Path, gateway: GatewayProcess, hub: Hub) -> None:
    await hub.wait_for(f"{DEV}/twin", lambda t: t["version"] >= 2 and "level" in t["reported"])
    await eventually(lambda: stored_twin(tmp_path / "data"))  # at least one flush reached the disk
    seen_version = max(t["version"] for t in hub.on(f"{DEV}/twin"))
    seen_seq = max(r["seq"] for r in hub.on(f"{DEV}/properties/report"))
    assert gateway.stop(signal.SIGKILL) == -signal.SIGKILL
    gateway.start()
    twin = await hub.wait_for(f"{DEV}/twin", lambda t: t["state"] == "online" and t["version"] > seen_version)
    report = await hub.wait_for(f"{DEV}/properties/report", lambda r: r["seq"] > seen_seq)
    assert "level" in twin["reported"]
    assert report["seq"] > seen_seq
    # the gateway's last will told the hub it had gone
    assert any(s["state"] == "offline" for s in hub.on("status"))


async def test_hub_link_survives_a_broker_restart(gateway: GatewayProcess, mosquitto: Mosquitto, sim: PumpStationSimulator) -> None:
    async def connect_hub() -> tuple[aiomqtt.Client, Hub, asyncio.Task[None]]:
        client = aiomqtt.Client("127.0.0.1", mosquitto.port)
        await client.__aenter__()
        hub = Hub(client, "citytwin/v1/ps-north-01")
        await client.subscribe("citytwin/v1/#", qos=1)
        return client, hub, asyncio.create_task(hub.listen())

    client, hub, task = await connect_hub()
    await hub.wait_for(f"{DEV}/status", lambda s: s["state"] == "online")
    task.cancel()
    await client.__aexit__(None, None, None)
    mosquitto.stop()
    await eventually(lambda: "hub link down" in gateway.output())
    writes_before = sim.station.write_count
    mosquitto.start()
    client, hub, task = await connect_hub()
    try:
        # the gateway reconnects by itself, republishes its state and takes commands again
        await hub.wait_for("status", lambda s: s["state"] == "online", timeout=10)
        await hub.wait_for(f"{DEV}/properties/report", lambda r: True, timeout=10)
        reply = await hub.invoke(DEV, "start_pump", {"id": "after-restart", "input": {"pump": 1}})
        assert reply["status"] == "succeeded"
        assert sim.station.write_count == writes_before + 1
    finally:
        task.cancel()
        await client.__aexit__(None, None, None)
    assert "hub link" in gateway.output()
