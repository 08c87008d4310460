"""Reverse control fails closed: interlocks refuse values they cannot trust.

Run in process (tests/harness.py) with a dict-backed fake device, so each value quality can
be set on cue; tests/test_interlock_modbus.py repeats the sensor-fault case against a real
Modbus slave.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from harness import FakeDevice, InProcessGateway

from citytwin.drivers.errors import ConnectionClosed, DeviceError, RequestTimeout

CONFIG = """
gateway: {id: trust-gw, data_dir: DATA_DIR, flush_interval: 0.2}
hub: {url: "mqtt://127.0.0.1:1", reconnect_max: 60}
http: {enabled: false}
access:
  grants: [{operators: [tester], role: admin}]
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
    interlocks:
      - services: [start_pump]
        require: pump{pump}_fault == false
        message: the pump has a latched fault
      - services: [start_pump]
        require: level >= 0.5
        message: the wet well is too low
      - services: [set_frequency]
        max_change: {input: hz, property: "pump{pump}_frequency_setpoint", limit: 20}
        RULE_EXTRA
    services:
      start_pump: {writes: [{point: "pump{pump}_run_cmd", value: true}]}
      set_frequency: {writes: [{point: "pump{pump}_frequency_setpoint", value: $hz}]}
"""


def config(extra: str = "") -> str:
    return CONFIG.replace("RULE_EXTRA", extra)


async def start_pump(gw: InProcessGateway, command_id: str) -> dict[str, Any]:
    return await gw.command("ps", "invoke", "start_pump", {"id": command_id, "input": {"pump": 1}})


async def settled(gw: InProcessGateway, device: FakeDevice, prop: str, raw: Any) -> None:
    """Set a raw register and wait until the runner has seen it (a poll after the change)."""
    device.values[prop] = raw
    runner = gw.gw.runners["ps"]
    polls = runner.polls
    await gw.wait_for(lambda: runner.polls >= polls + 2, what=f"two polls after {prop}={raw!r}")


@pytest.fixture
def device() -> FakeDevice:
    return FakeDevice({"level": 250, "pump1_fault": False, "pump2_fault": False,
                       "pump1_frequency_setpoint": 3000, "pump2_frequency_setpoint": 3000})


async def test_in_range_start_succeeds_fault_code_refused_and_nothing_written(tmp_path: Path, device: FakeDevice) -> None:
    async with InProcessGateway(config(), tmp_path, device) as gw:
        await gw.wait_for(lambda: gw.gw.runners["ps"].online, what="online")
        reply = await start_pump(gw, "c1")
        assert reply["status"] == "succeeded", reply
        assert device.writes == [{"pump1_run_cmd": True}]

        await settled(gw, device, "level", 65535)  # the sensor's fault code: 655.35 m, model max 6 m
        reply = await start_pump(gw, "c2")
        assert reply["status"] == "rejected"
        assert reply["error"]["code"] == "interlock"
        message = reply["error"]["message"]
        assert message.startswith("interlock 2 (require level >= 0.5): level is uncertain: 655.35")
        assert "above max 6" in message
        assert "too low" not in message  # the configured message describes trusted values only
        assert len(device.writes) == 1  # nothing written

        await settled(gw, device, "level", 250)
        reply = await start_pump(gw, "c3")
        assert reply["status"] == "succeeded", reply
        assert len(device.writes) == 2


async def test_a_point_gone_bad_refuses_even_with_a_good_last_value(tmp_path: Path, device: FakeDevice) -> None:
    async with InProcessGateway(config(), tmp_path, device) as gw:
        await gw.wait_for(lambda: gw.gw.runners["ps"].online, what="online")
        await settled(gw, device, "level", DeviceError("exception code 2 (illegal data address)"))
        reply = await start_pump(gw, "bad-1")
        assert reply["status"] == "rejected"
        assert "level is bad: exception code 2" in reply["error"]["message"]
        assert device.writes == []


async def test_a_stale_value_is_refused(tmp_path: Path, device: FakeDevice) -> None:
    # polls fail (timeouts) but the device is not offline yet (allowed_failures): values age
    stale = CONFIG.replace("    poll_period: 0.05\n", "    poll_period: 0.05\n    allowed_failures: 1000\n")
    async with InProcessGateway(stale.replace("RULE_EXTRA", ""), tmp_path, device) as gw:
        runner = gw.gw.runners["ps"]
        await gw.wait_for(lambda: runner.online, what="online")
        assert (await start_pump(gw, "s0"))["status"] == "succeeded"
        device.fail = RequestTimeout("no answer within 1 s")
        await gw.wait_for(lambda: (c := runner.current("level")) is not None and c.age > 0.4, what="level to age")
        assert runner.online  # not offline: 1000 failures are allowed
        reply = await start_pump(gw, "s1")
        assert reply["status"] == "rejected"
        # the default bound: 3 poll periods of 50 ms
        assert "pump1_fault is stale: last confirmed" in reply["error"]["message"]
        assert "(max_age 0.15 s)" in reply["error"]["message"]
        assert device.writes == [{"pump1_run_cmd": True}]


async def test_uncertain_is_refused_unless_the_rule_accepts_it(tmp_path: Path, device: FakeDevice) -> None:
    accepting = CONFIG.replace("        require: level >= 0.5\n", "        require: level >= 0.5\n        accept: uncertain\n")
    accepting = accepting.replace("RULE_EXTRA", "")
    async with InProcessGateway(accepting, tmp_path, device) as gw:
        await gw.wait_for(lambda: gw.gw.runners["ps"].online, what="online")
        await settled(gw, device, "level", 700)  # 7 m: above the model's 6 m, uncertain
        reply = await start_pump(gw, "u1")
        assert reply["status"] == "succeeded", reply


async def test_an_offline_device_has_no_trusted_values(tmp_path: Path, device: FakeDevice) -> None:
    async with InProcessGateway(config(), tmp_path, device) as gw:
        runner = gw.gw.runners["ps"]
        await gw.wait_for(lambda: runner.online, what="online")
        current = runner.current("level")
        assert current is not None and current.quality == "good"
        device.fail = ConnectionClosed("peer closed")
        await gw.wait_for(lambda: runner.online is False, what="offline after allowed_failures")
        current = runner.current("level")
        assert current is not None and current.quality == "bad"
        assert "device offline" in (current.reason or "")
        reply = await start_pump(gw, "off-1")
        assert reply["status"] == "failed" and reply["error"]["code"] == "device_offline", reply
        # a dry run reaches the interlocks, and they refuse what an offline device last said
        reply = await gw.command("ps", "invoke", "start_pump", {"id": "off-2", "dry_run": True, "input": {"pump": 1}})
        assert reply["status"] == "rejected"
        assert "pump1_fault is bad: device offline: ConnectionClosed: peer closed" in reply["error"]["message"]
        assert device.writes == []
