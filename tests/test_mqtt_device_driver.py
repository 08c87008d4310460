"""The MQTT device driver against a real mosquitto, with our meters simulator and with
mosquitto's own command-line clients as the foreign peer."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from conftest import Mosquitto, Sink

from citytwin.drivers.base import Quality, Reading
from citytwin.drivers.errors import (
    ConnectError,
    DeviceError,
    RequestTimeout,
    TransportError,
)
from citytwin.drivers.mqtt_device.binding import MqttCall, MqttConnection, MqttPoint
from citytwin.drivers.mqtt_device.driver import MqttDeviceDriver
from citytwin.simulators.meters.server import MetersSimulator

pytestmark = pytest.mark.timeout(60)


def _client_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run scripts/test.sh (Debian mosquitto-clients)")
    return path


async def mosquitto_pub(broker: Mosquitto, topic: str, payload: bytes | str, *extra: str) -> None:
    data = payload.encode() if isinstance(payload, str) else payload
    proc = await asyncio.create_subprocess_exec(
        _client_tool("mosquitto_pub"), "-h", "127.0.0.1", "-p", str(broker.port),
        "-t", topic, "-s", *extra, stdin=asyncio.subprocess.PIPE,
    )
    await proc.communicate(data)
    assert proc.returncode == 0


def make_driver(
    broker: Mosquitto, points: dict[str, dict[str, Any]], **connection: Any
) -> tuple[MqttDeviceDriver, Sink]:
    conn = MqttConnection.model_validate({"url": broker.url, **connection})
    driver = MqttDeviceDriver(conn, {n: MqttPoint.model_validate(p) for n, p in points.items()})
    sink = Sink()
    driver.set_push_sink(sink)
    return driver, sink


@pytest.fixture
async def meters(mosquitto: Mosquitto) -> AsyncIterator[MetersSimulator]:
    sim = MetersSimulator(mosquitto.url, count=2, seed=7, reconnect_delay=0.1)
    async with sim:
        await asyncio.wait_for(sim.connected.wait(), 10)
        yield sim


METER_POINTS: dict[str, dict[str, Any]] = {
    "flow_rate": {"topic": "meters/wm-0001/telemetry", "pointer": "/flow", "timestamp": "/ts"},
    "volume": {"topic": "meters/wm-0001/telemetry", "pointer": "/volume", "timestamp": "/ts"},
    "battery": {"topic": "meters/wm-0001/status", "pointer": "/battery", "timestamp": "/time"},
    "valve_open": {
        "topic": "meters/wm-0001/status", "pointer": "/valve", "timestamp": "/time",
        "map": {"open": True, "closed": False},
    },
    "leak_alarm": {"topic": "meters/wm-0001/status", "pointer": "/leak"},
    "report_interval": {
        "topic": "meters/wm-0001/status", "pointer": "/interval",
        "set": {"payload": {"cmd": "config", "report_interval": "$value"}},
    },
}
METER_CONNECTION = {
    "command_topic": "meters/wm-0001/cmd", "reply_topic": "meters/wm-0001/reply", "timeout": 3,
}


# -- telemetry ----------------------------------------------------------------------------


async def test_payload_timestamps_epoch_ms_and_iso(mosquitto: Mosquitto) -> None:
    driver, sink = make_driver(mosquitto, {
        "flow": {"topic": "dev/1/telemetry", "pointer": "/data/flow", "timestamp": "/ts"},
        "temp": {"topic": "dev/1/status", "pointer": "/temp", "timestamp": "/time"},
        "untimed": {"topic": "dev/1/status", "pointer": "/on"},
    })
    async with driver:
        await mosquitto_pub(mosquitto, "dev/1/telemetry", '{"ts": 1700000000123, "data": {"flow": 1.5}}')
        await mosquitto_pub(
            mosquitto, "dev/1/status", '{"time": "2023-11-14T22:13:20.5Z", "temp": 21, "on": true}'
        )
        flow = await sink.wait("flow")
        temp = await sink.wait("temp")
        untimed = await sink.wait("untimed")
        assert flow == Reading("flow", 1.5, 1_700_000_000_123, Quality.GOOD)
        assert temp == Reading("temp", 21, 1_700_000_000_500, Quality.GOOD)
        assert untimed.value is True and untimed.ts > 1_700_000_000_500  # receipt time
        assert await driver.read() == []  # every point is pushed: a poll only checks the link
        latest = {r.point: r for r in await driver.read(["flow", "temp", "untimed"])}
        assert latest == {"flow": flow, "temp": temp, "untimed": untimed}
        assert await driver.read(["temp"]) == [temp]


async def test_wildcard_topics(mosquitto: Mosquitto) -> None:
    driver, sink = make_driver(mosquitto, {
        "any_flow": {"topic": "site/+/telemetry", "pointer": "/flow"},
        "deep": {"topic": "site/#", "pointer": "/level"},
    })
    async with driver:
        await mosquitto_pub(mosquitto, "site/a/telemetry", '{"flow": 1}')
        await mosquitto_pub(mosquitto, "site/b/telemetry", '{"flow": 2}')
        await mosquitto_pub(mosquitto, "site/x/y/z", '{"level": 3.5}')
        await mosquitto_pub(mosquitto, "other/a/telemetry", '{"flow": 99}')
        await sink.wait("any_flow", lambda r: r.value == 2)
        await sink.wait("deep", lambda r: r.value == 3.5)
        flows = [r.value for r in sink.readings if r.point == "any_flow"]
        assert flows == [1, 2]  # never 99: that topic does not match
        # site/a/telemetry also matches site/#, whose pointer names nothing there
        assert any(r.point == "deep" and r.quality is Quality.BAD for r in sink.readings)


async def test_malformed_payloads_give_bad_quality_not_a_crash(mosquitto: Mosquitto) -> None:
    driver, sink = make_driver(mosquitto, {
        "flow": {"topic": "dev/2/telemetry", "pointer": "/flow", "timestamp": "/ts"},
        "valve": {"topic": "dev/2/telemetry", "pointer": "/valve", "map": {"open": True, "closed": False}},
    })
    async with driver:
        await mosquitto_pub(mosquitto, "dev/2/telemetry", b"\xff{not json")
        bad = await sink.wait("flow")
        assert bad.quality is Quality.BAD and "not JSON" in (bad.error or "")
        await mosquitto_pub(mosquitto, "dev/2/telemetry", '{"flow": "fast", "valve": "ajar"}')
        text = await sink.wait("flow", lambda r: "not a number" in (r.error or ""))
        assert text.quality is Quality.BAD
        ajar = await sink.wait("valve", lambda r: "unmapped" in (r.error or ""))
        assert ajar.quality is Quality.BAD
        await mosquitto_pub(mosquitto, "dev/2/telemetry", '{"flow": 2.5, "ts": "soon", "valve": "open"}')
        stamp = await sink.wait("flow", lambda r: r.value == 2.5)
        assert stamp.quality is Quality.UNCERTAIN and "bad timestamp" in (stamp.error or "")
        await mosquitto_pub(mosquitto, "dev/2/telemetry", '{"flow": 3.0, "valve": "closed"}')
        good = await sink.wait("flow", lambda r: r.value == 3.0)
        assert good.quality is Quality.GOOD
        assert (await sink.wait("valve", lambda r: r.value is False)).quality is Quality.GOOD
        assert driver.health.connected and driver.health.extra["malformed"] == 1


async def test_meters_simulator_telemetry(mosquitto: Mosquitto, meters: MetersSimulator) -> None:
    driver, sink = make_driver(mosquitto, METER_POINTS, **METER_CONNECTION)
    async with driver:
        flow = await sink.wait("flow_rate")
        valve = await sink.wait("valve_open")  # retained status arrives at once
        assert flow.quality is Quality.GOOD and isinstance(flow.value, float)
        assert valve.value is True and valve.quality is Quality.GOOD
        battery = await sink.wait("battery")
        assert 0 < battery.value <= 100
        assert abs(battery.ts - flow.ts) < 60_000


# -- commands -----------------------------------------------------------------------------


async def test_service_call_round_trip_with_the_simulator(
    mosquitto: Mosquitto, meters: MetersSimulator
) -> None:
    driver, sink = make_driver(mosquitto, METER_POINTS, **METER_CONNECTION)
    call = MqttCall(payload={"cmd": "valve", "open": "$open"}, output={"valve_open": "/open"})
    async with driver:
        assert await driver.invoke(call, {"open": False}) == {"valve_open": False}
        assert meters.meters["wm-0001"].valve_open is False
        assert meters.meters["wm-0002"].valve_open is True
        await sink.wait("valve_open", lambda r: r.value is False)
        assert await driver.invoke(call, {"open": True}) == {"valve_open": True}
        with pytest.raises(DeviceError, match="'open' must be true or false"):
            await driver.invoke(call, {"open": "maybe"})


async def test_property_write_is_a_command(mosquitto: Mosquitto, meters: MetersSimulator) -> None:
    driver, sink = make_driver(mosquitto, METER_POINTS, **METER_CONNECTION)
    async with driver:
        await driver.write({"report_interval": 7})
        assert meters.meters["wm-0001"].report_interval == 7
        await sink.wait("report_interval", lambda r: r.value == 7)
        with pytest.raises(DeviceError, match=r"1\.\.3600"):
            await driver.write({"report_interval": 0})


async def test_mqtt_311_correlates_by_payload_id(mosquitto: Mosquitto, meters: MetersSimulator) -> None:
    driver, _ = make_driver(mosquitto, METER_POINTS, protocol="3.1.1", **METER_CONNECTION)
    call = MqttCall(payload={"cmd": "valve", "open": "$open"}, output={"valve": "/valve"})
    async with driver:
        results = await asyncio.gather(*(driver.invoke(call, {"open": i % 2 == 0}) for i in range(5)))
        assert sorted(r["valve"] for r in results) == ["closed", "closed", "open", "open", "open"]


async def test_command_round_trip_with_mosquitto_clients(mosquitto: Mosquitto) -> None:
    """mosquitto_sub sees the command as published; mosquitto_pub answers by its id."""
    sub = await asyncio.create_subprocess_exec(
        _client_tool("mosquitto_sub"), "-h", "127.0.0.1", "-p", str(mosquitto.port),
        "-t", "plc/7/cmd", "-t", "plc/7/probe", stdout=asyncio.subprocess.PIPE,
    )
    assert sub.stdout is not None
    try:
        # mosquitto_sub prints nothing when subscribed: probe until it echoes
        async def probe() -> None:
            while True:
                await mosquitto_pub(mosquitto, "plc/7/probe", "probe")
                try:
                    line = await asyncio.wait_for(sub.stdout.readline(), 0.3)  # type: ignore[union-attr]
                except TimeoutError:
                    continue
                if line.strip() == b"probe":
                    return

        await asyncio.wait_for(probe(), 10)
        driver, _ = make_driver(
            mosquitto, {"x": {"topic": "plc/7/state", "pointer": "/x"}},
            command_topic="plc/7/cmd", reply_topic="plc/7/ack", correlation="/meta/cid", timeout=5,
        )
        call = MqttCall(payload={"op": "reset", "args": ["$zone", 1]}, output={"done": "/result/done"})
        async with driver:
            invoke = asyncio.create_task(driver.invoke(call, {"zone": "north"}))
            while True:
                line = await asyncio.wait_for(sub.stdout.readline(), 10)
                if line.strip() != b"probe":
                    break
            command = orjson.loads(line)
            cid = command["meta"]["cid"]
            assert command == {"op": "reset", "args": ["north", 1], "meta": {"cid": cid}}
            # a reply for someone else first, then ours
            await mosquitto_pub(mosquitto, "plc/7/ack", '{"meta": {"cid": "other"}, "result": {"done": false}}')
            await mosquitto_pub(
                mosquitto, "plc/7/ack", orjson.dumps({"meta": {"cid": cid}, "result": {"done": True}})
            )
            assert await asyncio.wait_for(invoke, 10) == {"done": True}
            assert driver.health.extra["late_replies"] == 1
    finally:
        sub.terminate()
        await sub.wait()


async def test_reply_timeout(mosquitto: Mosquitto, meters: MetersSimulator) -> None:
    # wm-0099 is not simulated: nobody answers, like a meter that is offline
    driver, _ = make_driver(
        mosquitto, {"x": {"topic": "meters/wm-0099/status", "pointer": "/valve"}},
        command_topic="meters/wm-0099/cmd", reply_topic="meters/wm-0099/reply", timeout=0.3,
    )
    async with driver:
        with pytest.raises(RequestTimeout, match=r"no reply within 0\.3 s"):
            await driver.invoke(MqttCall(payload={"cmd": "valve", "open": False}), {})
        assert driver.health.failures == 1
        await driver.read()  # the link itself is fine


# -- the broker link ----------------------------------------------------------------------


async def test_broker_not_there(mosquitto: Mosquitto) -> None:
    mosquitto.stop()
    driver, _ = make_driver(mosquitto, {"x": {"topic": "a", "pointer": "/x"}}, connect_timeout=2)
    with pytest.raises(ConnectError, match=f"cannot connect to broker 127.0.0.1:{mosquitto.port}"):
        await driver.connect()
    with pytest.raises(TransportError):
        await driver.read()
    await driver.close()


async def test_broker_restart_then_reconnect(mosquitto: Mosquitto, meters: MetersSimulator) -> None:
    driver, sink = make_driver(mosquitto, METER_POINTS, **METER_CONNECTION)
    await driver.connect()
    try:
        await sink.wait("flow_rate")
        mosquitto.stop()

        async def link_down() -> None:
            while True:
                try:
                    await driver.read()
                except TransportError:
                    return
                await asyncio.sleep(0.05)

        await asyncio.wait_for(link_down(), 10)
        assert not driver.health.connected
        with pytest.raises(TransportError):
            await driver.invoke(MqttCall(payload={"cmd": "valve", "open": True}), {})
        mosquitto.start()
        await driver.connect()  # what the gateway's device runner does after its backoff
        sink.readings.clear()
        await asyncio.wait_for(meters.connected.wait(), 10)
        await sink.wait("flow_rate")
        call = MqttCall(payload={"cmd": "valve", "open": False}, output={"open": "/open"})
        assert await driver.invoke(call, {}) == {"open": False}
        assert driver.health.extra["connects"] == 2
    finally:
        await driver.close()
