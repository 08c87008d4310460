"""Devices served as W3C WoT Things over HTTP, in process (tests/harness.py): the directory,
reads with quality, long-poll observation and events, writes and actions through the relay
(access, interlocks, idempotency, audit), and basic authentication. node-wot consumes the
same endpoint in tests/test_wot_nodewot.py."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import orjson
import pytest
from harness import FakeDevice, InProcessGateway

from citytwin.drivers.base import Quality, Reading

ROOT = Path(__file__).resolve().parent.parent

CONFIG = """
gateway: {id: wot-gw, data_dir: DATA_DIR}
hub: {url: "mqtt://127.0.0.1:1", reconnect_max: 60, property_topics: true}
http: {port: 0, auth: basic, longpoll_timeout: 5,
       users: {control-room: {secret: s3cret}, visitor: {secret: look}, intruder: {secret: x}}}
access:
  grants:
    - {operators: [control-room], role: operator}
    - {operators: [visitor], role: viewer}
devices:
  - id: ps
    model: pump_station
    driver: modbus-tcp
    connection: {host: 127.0.0.1, port: 1}
    poll_period: 0.05
    points:
      level:         {table: input_register, address: 0, scale: 0.01}
      pump1_fault:   {table: discrete_input, address: 1}
      pump2_fault:   {table: discrete_input, address: 3}
      pump1_frequency_setpoint: {table: holding_register, address: 0, scale: 0.01}
      pump2_frequency_setpoint: {table: holding_register, address: 2, scale: 0.01}
    outputs:
      pump1_run_cmd: {table: coil, address: 0}
      pump2_run_cmd: {table: coil, address: 1}
    events:
      - {event: high_level, when: level >= 4.5, clear: level < 4.2, output: {level: $level}}
    interlocks:
      - services: [start_pump]
        require: level >= 0.5
    services:
      start_pump: {writes: [{point: "pump{pump}_run_cmd", value: true}]}
"""


@pytest.fixture
def device() -> FakeDevice:
    return FakeDevice({"level": 250, "pump1_fault": False, "pump2_fault": False,
                       "pump1_frequency_setpoint": 3000, "pump2_frequency_setpoint": 3000})


@pytest.fixture
async def served(tmp_path: Path, device: FakeDevice) -> AsyncIterator[tuple[InProcessGateway, str]]:
    async with InProcessGateway(CONFIG, tmp_path, device) as gw:
        await gw.wait_for(lambda: gw.gw.runners["ps"].online, what="online")
        assert gw.gw.http is not None and gw.gw.http.port
        yield gw, f"http://127.0.0.1:{gw.gw.http.port}"


def auth(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


ROOM = auth("control-room", "s3cret")


async def get(url: str, who: dict[str, str] | None = ROOM) -> tuple[int, Any, dict[str, str]]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=who or {}) as response:
        body = await response.read()
        return response.status, (orjson.loads(body) if body else None), dict(response.headers)


async def send(method: str, url: str, body: Any, who: dict[str, str] | None = ROOM,
               headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.request(
            method, url, data=orjson.dumps(body),
            headers={"Content-Type": "application/json", **(who or {}), **(headers or {})}) as response:
        raw = await response.read()
        return response.status, (orjson.loads(raw) if raw else None)


async def test_the_directory_lists_valid_thing_descriptions(served: tuple[InProcessGateway, str]) -> None:
    _, base = served
    code, listing, headers = await get(f"{base}/things")
    assert code == 200 and headers["Content-Type"].startswith("application/ld+json")
    (td,) = listing
    assert td["id"] == "urn:citytwin:wot-gw:ps" and td["security"] == ["basic_sc"]
    schema = orjson.loads((ROOT / "thingmodels" / "schemas" / "td-schema.json").read_bytes())
    jsonschema.validate(td, schema)
    assert set(td["properties"]) == {"level", "pump1_fault", "pump2_fault", "pump1_frequency_setpoint",
                                     "pump2_frequency_setpoint"}  # bound properties only
    assert td["properties"]["level"]["readOnly"] is True
    assert td["properties"]["pump1_frequency_setpoint"]["readOnly"] is False
    mqtt = [f for f in td["properties"]["level"]["forms"] if f["href"].startswith("mqtt://")]
    assert mqtt and mqtt[0]["href"].endswith("/citytwin/v1/wot-gw/ps/values/level")
    assert mqtt[0]["mqv:filter"] == "citytwin/v1/wot-gw/ps/values/level"
    assert set(td["actions"]) == {"start_pump"}  # bound services only
    code, same, headers = await get(f"{base}/things/urn:citytwin:wot-gw:ps")
    assert code == 200 and same == td and headers["Content-Type"].startswith("application/td+json")


async def test_anonymous_gets_a_challenge_and_wrong_credentials_are_refused(served: tuple[InProcessGateway, str]) -> None:
    _, base = served
    code, _, headers = await get(f"{base}/things/ps", who=None)
    assert code == 401 and headers["WWW-Authenticate"].startswith("Basic")
    code, _, _ = await get(f"{base}/things/ps", who=auth("control-room", "wrong"))
    assert code == 401
    code, listing, _ = await get(f"{base}/things", who=auth("intruder", "x"))
    assert code == 200 and listing == []  # authenticated, but granted nothing
    code, _, _ = await get(f"{base}/things/ps", who=auth("intruder", "x"))
    assert code == 403


async def test_reads_carry_quality_and_bad_values_are_unavailable(
    served: tuple[InProcessGateway, str], device: FakeDevice
) -> None:
    gw, base = served
    code, value, headers = await get(f"{base}/things/ps/properties/level")
    assert (code, value, headers["X-Citytwin-Quality"]) == (200, 2.5, "good")
    code, values, _ = await get(f"{base}/things/ps/properties")
    assert values["level"] == 2.5 and values["pump1_fault"] is False
    device.values["level"] = 700  # 7 m: outside the model's 0..6 m
    await gw.wait_for(lambda: gw.gw.runners["ps"].current("level").quality == "uncertain", what="uncertain")
    code, value, headers = await get(f"{base}/things/ps/properties/level")
    assert (code, value, headers["X-Citytwin-Quality"]) == (200, 7.0, "uncertain")
    assert "above max 6" in headers["X-Citytwin-Reason"]
    device.values["level"] = RuntimeError("sensor wire broken")
    await gw.wait_for(lambda: gw.gw.runners["ps"].current("level").quality == "bad", what="bad")
    code, body, _ = await get(f"{base}/things/ps/properties/level")
    assert code == 503 and "sensor wire broken" in body["error"]


async def test_writes_and_actions_go_through_the_relay(served: tuple[InProcessGateway, str], device: FakeDevice) -> None:
    gw, base = served
    code, body = await send("PUT", f"{base}/things/ps/properties/pump1_frequency_setpoint", 40,
                            headers={"Idempotency-Key": "w-1"})
    assert code == 204, body
    assert device.writes[-1] == {"pump1_frequency_setpoint": 4000}
    # the same key again: the first answer, not a second write
    code, body = await send("PUT", f"{base}/things/ps/properties/pump1_frequency_setpoint", 40,
                            headers={"Idempotency-Key": "w-1"})
    assert code == 204 and len(device.writes) == 1
    code, body = await send("PUT", f"{base}/things/ps/properties/pump1_frequency_setpoint", 99)
    assert code == 400 and body["error"]["code"] == "invalid_input"  # the model's range
    code, body = await send("PUT", f"{base}/things/ps/properties/level", 1)
    assert code in (400, 404) and body["status"] == "rejected"  # read-only
    # a viewer may read but not act; nothing is written
    code, body = await send("POST", f"{base}/things/ps/actions/start_pump", {"pump": 1}, who=auth("visitor", "look"))
    assert code == 403 and body["error"]["code"] == "unauthorized"
    assert len(device.writes) == 1
    code, body = await send("POST", f"{base}/things/ps/actions/start_pump", {"pump": 1})
    assert code == 204, body
    assert device.writes[-1] == {"pump1_run_cmd": True}
    # interlocks hold for HTTP as for the hub
    device.values["level"] = 10
    await gw.wait_for(lambda: gw.gw.runners["ps"].current("level").value == 0.1, what="low level")
    code, body = await send("POST", f"{base}/things/ps/actions/start_pump", {"pump": 2})
    assert code == 409 and body["error"]["code"] == "interlock"
    assert len(device.writes) == 2
    records = [orjson.loads(line) for line in (gw.gw.audit.path).read_bytes().splitlines()]
    assert any(r["operator"] == "control-room" and r["target"] == "start_pump" for r in records)


async def test_observation_and_events_are_long_polls(served: tuple[InProcessGateway, str], device: FakeDevice) -> None:
    gw, base = served
    code, _, _ = await get(f"{base}/things/ps/properties/level/observe")  # no change: the current value
    observing = asyncio.create_task(get(f"{base}/things/ps/properties/level/observe"))
    event = asyncio.create_task(get(f"{base}/things/ps/events/high_level"))
    await gw.wait_for(lambda: gw.gw.watchers._devices.get("ps", 0) >= 2, what="two watchers")
    device.values["level"] = 480  # 4.8 m: a new value, and the high_level event
    code, value, _ = await observing
    assert code == 200 and value == 4.8
    code, occurrence, _ = await event
    assert code == 200 and occurrence["type"] == "alert" and occurrence["output"] == {"level": 4.8}
    assert isinstance(occurrence["ts"], int)
    td = (await get(f"{base}/things/ps"))[1]
    jsonschema.validate(occurrence, td["events"]["high_level"]["data"])
    jsonschema.validate(value, {k: v for k, v in td["properties"]["level"].items() if k != "forms"})


async def test_pushed_values_reach_observers(served: tuple[InProcessGateway, str]) -> None:
    gw, base = served
    observing = asyncio.create_task(get(f"{base}/things/ps/properties/pump2_fault/observe"))
    await gw.wait_for(lambda: gw.gw.watchers._devices.get("ps", 0) >= 1, what="a watcher")
    gw.drivers["ps"].push([Reading("pump2_fault", True, time.time_ns() // 1_000_000, Quality.GOOD)])
    code, value, _ = await observing
    assert (code, value) == (200, True)
