"""node-wot (Eclipse Thingweb, from npm) consumes the gateway's Things: a foreign WoT consumer.

Over HTTP it fetches the TDs from the directory and reads, reads all, observes, writes and
invokes on the pump station (Modbus, our simulator) and subscribes to an event; a denied
operator gets the TD's error and nothing is written. Over MQTT (the hub broker, mosquitto) a
second consumer reads and observes through the TD's MQTT forms. node-wot validates every
value against the TD's data schemas, so these pass only if the TD describes the wire.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from conftest import EXAMPLE, Mosquitto, free_port
from harness import InProcessGateway

from citytwin.simulators.pump_station.server import PumpStationSimulator

NODE_DIR = Path(__file__).resolve().parent / "node-wot"
pytestmark = pytest.mark.slow


class Consumer:
    """consume.js as a subprocess, one JSON step per line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.seen: list[dict[str, Any]] = []
        self._reader = asyncio.create_task(self._read())
        self._ids = 0

    @classmethod
    async def start(cls, mode: str, directory: str, user: str, password: str) -> Consumer:
        node = shutil.which("node")
        if node is None or not (NODE_DIR / "node_modules" / "@node-wot" / "core").is_dir():
            pytest.fail("node-wot is not installed: run the README's test command (scripts/test.sh)")
        proc = await asyncio.create_subprocess_exec(
            node, str(NODE_DIR / "consume.js"), mode, directory, user, password,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            cwd=NODE_DIR)
        consumer = cls(proc)
        ready = await consumer.wait(lambda d: "ready" in d or "fatal" in d, 60)
        assert "ready" in ready, ready
        return consumer

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line = raw.decode().strip()
            if line.startswith("{"):
                doc = orjson.loads(line)
                self.seen.append(doc)
                await self.lines.put(doc)

    async def wait(self, match: Any, timeout: float = 30) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                doc = await self.lines.get()
                if match(doc):
                    return doc

    async def step(self, op: str, thing: str = "ps", **fields: Any) -> dict[str, Any]:
        self._ids += 1
        step_id = f"s{self._ids}"
        assert self.proc.stdin is not None
        self.proc.stdin.write(orjson.dumps({"id": step_id, "op": op, "thing": thing, **fields}) + b"\n")
        await self.proc.stdin.drain()
        done = await self.wait(lambda d: d.get("id") == step_id and "ok" in d)
        done["step"] = step_id
        return done

    async def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            async with asyncio.timeout(10):
                await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        self._reader.cancel()


def config(tmp_path: Path, broker: Mosquitto, sim_port: int) -> str:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["gateway"]["data_dir"] = "DATA_DIR"
    doc["hub"].update({"url": broker.url, "reconnect_max": 1.0, "property_topics": True})
    doc["http"] = {"port": 0, "auth": "basic", "longpoll_timeout": 10,
                   "users": {"control-room": {"secret": "s3cret"}, "visitor": {"secret": "look"}}}
    doc["access"]["grants"].append({"operators": ["visitor"], "role": "viewer"})
    device = doc["devices"][0]
    device["connection"]["port"] = sim_port
    device.update({"poll_period": 0.2, "reconnect_max": 0.5})
    return yaml.safe_dump(doc, sort_keys=False)


@pytest.fixture
async def street(tmp_path: Path) -> AsyncIterator[tuple[InProcessGateway, PumpStationSimulator, Mosquitto]]:
    broker = Mosquitto(tmp_path)
    broker.start()
    sim = PumpStationSimulator(port=free_port(), seed=7, tick=0.05)
    await sim.start()
    try:
        async with InProcessGateway(config(tmp_path, broker, sim.port), tmp_path, None) as gw:
            await gw.wait_for(lambda: gw.gw.runners["pump-station-1"].online and gw.gw.hub.connected,
                              timeout=20, what="device online and hub connected")
            yield gw, sim, broker
    finally:
        await sim.stop()
        broker.stop()


async def test_node_wot_uses_every_operation_over_http_and_reads_over_mqtt(
    street: tuple[InProcessGateway, PumpStationSimulator, Mosquitto]
) -> None:
    gw, sim, _ = street
    assert gw.gw.http is not None
    directory = f"http://127.0.0.1:{gw.gw.http.port}/things"
    thing = "pump-station-1"
    room = await Consumer.start("http", directory, "control-room", "s3cret")
    try:
        level = await room.step("read", thing, name="level")
        assert level["ok"], level
        assert 0 <= level["result"] <= 6
        everything = await room.step("readall", thing)
        assert everything["ok"], everything
        assert {"level", "pump1_running", "outlet_pressure"} <= set(everything["result"])

        observing = await room.step("observe", thing, name="level")
        assert observing["ok"], observing
        changed = await room.wait(lambda d: d.get("id") == observing["step"] and ("value" in d or "invalid" in d))
        assert "value" in changed and 0 <= changed["value"] <= 6, changed

        wrote = await room.step("write", thing, name="pump1_frequency_setpoint", value=42.5)
        assert wrote["ok"], wrote
        await gw.wait_for(lambda: gw.gw.twins[thing].reported.get("pump1_frequency_setpoint") == 42.5,
                          what="the setpoint read back")

        started = await room.step("invoke", thing, name="start_pump", input={"pump": 2})
        assert started["ok"], started
        await gw.wait_for(lambda: gw.gw.twins[thing].reported.get("pump2_running") is True, what="pump 2 running")

        subscribed = await room.step("subscribe", thing, name="pump_fault")
        assert subscribed["ok"], subscribed
        await gw.wait_for(lambda: gw.gw.watchers._devices.get(thing, 0) >= 1, what="the event long-poll")
        sim.station.inject_fault(1)
        fault = await room.wait(lambda d: d.get("id") == subscribed["step"] and ("value" in d or "invalid" in d))
        assert "value" in fault, fault
        assert fault["value"]["type"] == "error" and fault["value"]["output"]["pump"] == 1

        out_of_range = await room.step("write", thing, name="pump1_frequency_setpoint", value=99)
        assert not out_of_range["ok"]  # node-wot refuses it against the TD's schema, or the gateway does
    finally:
        await room.close()

    writes = sim.station.write_count
    visitor = await Consumer.start("http", directory, "visitor", "look")
    try:
        denied = await visitor.step("invoke", thing, name="stop_pump", input={"pump": 2})
        assert not denied["ok"] and "Forbidden" in denied["error"], denied
        read = await visitor.step("read", thing, name="level")
        assert read["ok"], read
    finally:
        await visitor.close()
    assert sim.station.write_count == writes  # nothing was written for the denied operator

    mqtt = await Consumer.start("mqtt", directory, "control-room", "s3cret")
    try:
        read = await mqtt.step("read", thing, name="outlet_pressure")
        assert read["ok"], read
        assert isinstance(read["result"], int | float)
        observing = await mqtt.step("observe", thing, name="level")
        assert observing["ok"], observing
        value = await mqtt.wait(lambda d: d.get("id") == observing["step"] and ("value" in d or "invalid" in d))
        assert "value" in value and 0 <= value["value"] <= 6, value
    finally:
        await mqtt.close()


EXAMPLES = Path(__file__).resolve().parent.parent / "deploy" / "examples"


def street_config(ix_url: str, coap_port: int) -> str:
    ix = yaml.safe_load((EXAMPLES / "intersection.yaml").read_text())["devices"][0]
    ix["model"] = str(EXAMPLES / ix["model"])
    ix["connection"].update({"url": ix_url, "pki_dir": "pki", "publishing_interval": 100})
    ix.update({"poll_period": 0.5, "reconnect_max": 0.5})
    aq = yaml.safe_load((EXAMPLES / "city-sensors.yaml").read_text())["devices"][0]
    aq["model"] = str(EXAMPLES / aq["model"])
    aq["connection"].update({"port": coap_port, "timeout": 1.0})
    aq.update({"poll_period": 0.5, "reconnect_max": 0.5})
    doc = {
        "gateway": {"id": "street", "data_dir": "DATA_DIR"},
        "hub": {"url": "mqtt://127.0.0.1:1", "reconnect_max": 60},
        "http": {"port": 0, "auth": "basic", "longpoll_timeout": 10, "users": {"control-room": {"secret": "s3cret"}}},
        "access": {"grants": [{"operators": ["control-room"], "role": "operator"}]},
        "devices": [ix, aq],
    }
    return yaml.safe_dump(doc, sort_keys=False)


async def test_node_wot_uses_the_intersection_over_opcua_and_a_coap_sensor(tmp_path: Path) -> None:
    from citytwin.simulators.city_sensors.server import CitySensorsSimulator
    from citytwin.simulators.intersection.server import IntersectionSimulator

    ix_sim = IntersectionSimulator(port=free_port(), tick=0.05, speed=10.0, seed=5)
    aq_sim = CitySensorsSimulator(port=free_port(udp=True), tick=0.05, seed=4, interval=0.2)
    await ix_sim.start()
    await aq_sim.start()
    try:
        async with InProcessGateway(street_config(ix_sim.url, aq_sim.port), tmp_path, None) as gw:
            await gw.wait_for(lambda: all(r.online for r in gw.gw.runners.values()), timeout=30, what="online")
            assert gw.gw.http is not None
            room = await Consumer.start("http", f"http://127.0.0.1:{gw.gw.http.port}/things", "control-room", "s3cret")
            try:
                plan = await room.step("read", "intersection-1", name="plan")
                assert plan["ok"] and plan["result"] in (1, 2, 3), plan
                observing = await room.step("observe", "intersection-1", name="phase_remaining")
                assert observing["ok"], observing
                tick = await room.wait(lambda d: d.get("id") == observing["step"] and ("value" in d or "invalid" in d))
                assert "value" in tick, tick
                wrote = await room.step("write", "intersection-1", name="green_extension", value=12)
                assert wrote["ok"], wrote
                await gw.wait_for(lambda: gw.gw.twins["intersection-1"].reported.get("green_extension") == 12,
                                  what="green extension read back")
                invoked = await room.step("invoke", "intersection-1", name="set_plan", input={"plan": 2})
                assert invoked["ok"] and invoked["result"] == {"active_plan": 2}, invoked

                pm = await room.step("read", "air-quality-1", name="pm25")
                assert pm["ok"] and isinstance(pm["result"], int | float), pm
                observing = await room.step("observe", "air-quality-1", name="pm25")
                assert observing["ok"], observing
                sample = await room.wait(lambda d: d.get("id") == observing["step"] and ("value" in d or "invalid" in d))
                assert "value" in sample, sample
                wrote = await room.step("write", "air-quality-1", name="report_interval", value=0.5)
                assert wrote["ok"], wrote
                await gw.wait_for(lambda: gw.gw.twins["air-quality-1"].reported.get("report_interval") == 0.5,
                                  what="report interval read back")
                calibrated = await room.step("invoke", "air-quality-1", name="calibrate", input={})
                assert calibrated["ok"], calibrated
                assert "calibrations" in (calibrated["result"] or {}), calibrated
            finally:
                await room.close()
    finally:
        await aq_sim.stop()
        await ix_sim.stop()
