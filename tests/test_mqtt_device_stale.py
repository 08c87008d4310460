"""A device on its own MQTT broker that goes quiet must not look confirmed (reverse control
fails closed).

The broker link stays up while the device is silent, so the driver's poll (a link check)
succeeds; the gateway must still let the device's values age from when the device sent them,
and interlocks must refuse them once stale. The real gateway in process (tests/harness.py)
with its real mqtt driver, a real mosquitto, and mosquitto_pub as the device.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import Mosquitto
from harness import InProcessGateway

pytestmark = pytest.mark.timeout(60)

STATE = "dev/m1/state"
CONFIG = """
gateway: {id: stale-gw, data_dir: DATA_DIR, flush_interval: 0.2}
hub: {url: "mqtt://127.0.0.1:1", reconnect_max: 60}
http: {enabled: false}
access:
  grants: [{operators: [tester], role: admin}]
devices:
  - id: m1
    model: water_meter_valve
    driver: mqtt
    connection: {url: "BROKER", command_topic: dev/m1/cmd}
    poll_period: 0.05
    stale_after: 1.0
    points:
      volume:      {topic: dev/m1/state, pointer: /volume}
      battery_low: {topic: dev/m1/state, pointer: /battery_low}
      valve_open:  {topic: dev/m1/state, pointer: /valve, set: {payload: {cmd: valve, open: $value}}}
    interlocks:
      - services: [set_valve]
        require: battery_low == false
        message: the battery is low
    services:
      set_valve: {call: {payload: {cmd: valve, open: $open}}}
"""


async def publish(broker: Mosquitto, topic: str, payload: str) -> None:
    """The device speaks: one message through mosquitto's own client."""
    tool = shutil.which("mosquitto_pub")
    if tool is None:
        pytest.fail("mosquitto_pub is not installed: run scripts/test.sh (Debian mosquitto-clients)")
    proc = await asyncio.create_subprocess_exec(
        tool, "-h", "127.0.0.1", "-p", str(broker.port), "-t", topic, "-m", payload)
    assert await proc.wait() == 0


async def set_valve(gw: InProcessGateway, command_id: str) -> dict[str, Any]:
    return await gw.command("m1", "invoke", "set_valve", {"id": command_id, "input": {"open": False}})


async def test_a_silent_device_goes_stale_though_its_broker_link_is_up(tmp_path: Path, mosquitto: Mosquitto) -> None:
    async with InProcessGateway(CONFIG.replace("BROKER", mosquitto.url), tmp_path, None) as gw:
        runner = gw.gw.runners["m1"]
        await gw.wait_for(lambda: runner.online, what="online (the broker link)")
        assert runner.current("battery_low") is None  # nothing sent yet: nothing to trust

        await publish(mosquitto, STATE, '{"volume": 12.5, "battery_low": false, "valve": true}')
        fresh = await gw.wait_for(lambda: runner.current("battery_low"), what="the device's first message")
        assert fresh.value is False and fresh.quality == "good" and fresh.age < 1.0
        reply = await set_valve(gw, "v1")
        assert reply["status"] == "succeeded", reply

        # the device goes quiet; polls keep succeeding (the broker is up), and must not confirm it
        polls = runner.polls
        seen = runner.last_seen_ms  # nor count as contact with the device (/health's "silent")
        await gw.wait_for(lambda: (c := runner.current("battery_low")) is not None and c.age > 1.0,
                          what="battery_low to go stale")
        assert runner.online and runner.polls > polls + 5
        assert runner.last_seen_ms == seen and runner.last_poll_ms > seen
        reply = await set_valve(gw, "v2")
        assert reply["status"] == "rejected", reply
        assert reply["error"]["code"] == "interlock"
        message = reply["error"]["message"]
        assert message.startswith("interlock 1 (require battery_low == false): battery_low is stale: last confirmed")
        assert "(max_age 1 s)" in message
        assert "battery is low" not in message  # the configured message is for trusted values

        # the device speaks again: its value is confirmed from that moment
        await publish(mosquitto, STATE, '{"volume": 12.6, "battery_low": false, "valve": false}')
        await gw.wait_for(lambda: (c := runner.current("volume")) is not None and c.value == 12.6,
                          what="the device's next message")
        assert runner.last_seen_ms > seen
        reply = await set_valve(gw, "v3")
        assert reply["status"] == "succeeded", reply
