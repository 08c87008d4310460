"""The device runner is the one door to a device: error classes, pushes, devices that call in,
supervised tasks and a shutdown that runs every step (in process, tests/harness.py)."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from harness import Call, FakeDevice, FakeDriver, InProcessGateway

from citytwin.drivers.base import Quality, Reading
from citytwin.drivers.errors import ConnectionClosed, DeviceError, RequestTimeout
from citytwin.gateway.store import TwinStore

CONFIG = """
gateway: {id: runner-gw, data_dir: DATA_DIR, flush_interval: 0.1}
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
    reconnect_min: 0.05
    reconnect_max: 0.1
    EXTRA
    points:
      level:        {table: input_register, address: 0, scale: 0.01}
      pump1_fault:  {table: discrete_input, address: 1}
      pump1_frequency_setpoint: {table: holding_register, address: 0, scale: 0.01}
"""


def config(extra: str = "") -> str:
    return CONFIG.replace("EXTRA", extra)


def device() -> FakeDevice:
    return FakeDevice({"level": 250, "pump1_fault": False, "pump1_frequency_setpoint": 3000})


async def test_offline_only_after_allowed_failures(tmp_path: Path) -> None:
    fake = device()
    async with InProcessGateway(config("allowed_failures: 4"), tmp_path, fake) as gw:
        runner = gw.gw.runners["ps"]
        await gw.wait_for(lambda: runner.online, what="online")
        calls = len(fake.calls)
        fake.fail = RequestTimeout("no answer")
        await gw.wait_for(lambda: runner.failures >= 1, what="a first failure")
        assert runner.online is True  # one failure is not an outage
        await gw.wait_for(lambda: runner.online is False, what="offline")
        assert runner.failures == 4
        assert runner.last_error == "RequestTimeout: no answer"
        # every failure re-opened the link (connect after close), as the backoff allowed
        ops = [c.op for c in fake.calls[calls:]]
        assert ops.count("close") >= 3 and ops.count("connect") >= 3
        fake.fail = None
        await gw.wait_for(lambda: runner.online is True, what="online again")
        assert runner.failures == 0


async def test_a_device_error_makes_points_bad_and_keeps_the_link(tmp_path: Path) -> None:
    fake = device()
    async with InProcessGateway(config(), tmp_path, fake) as gw:
        runner = gw.gw.runners["ps"]
        await gw.wait_for(lambda: runner.online, what="online")
        connects = sum(1 for c in fake.calls if c.op == "connect")

        def refuse(call: Call) -> Any:
            if call.op == "read":
                raise DeviceError("exception code 4 (server device failure)", 4)
            return fake(call)

        gw.drivers["ps"].handler = refuse
        await gw.wait_for(lambda: (c := runner.current("level")) is not None and c.quality == "bad", what="bad")
        polls = runner.polls
        await gw.wait_for(lambda: runner.polls >= polls + 3, what="polls go on")
        assert runner.online is True and runner.failures == 0
        assert sum(1 for c in fake.calls if c.op == "connect") == connects  # the link stayed up
        current = runner.current("level")
        assert current is not None and "exception code 4" in (current.reason or "")
        assert gw.gw.twins["ps"].reported_meta["level"][1] == "bad"


async def test_pushed_readings_count_as_contact(tmp_path: Path) -> None:
    fake = device()
    async with InProcessGateway(config("poll_period: 3600"), tmp_path, fake) as gw:
        runner = gw.gw.runners["ps"]
        await gw.wait_for(lambda: runner.online, what="online")
        runner.last_seen_ms = 0
        gw.drivers["ps"].push([Reading("level", 321, time.time_ns() // 1_000_000, Quality.GOOD)])
        assert runner.last_seen_ms > 0
        current = runner.current("level")
        assert current is not None and current.value == 3.21 and current.age < 1
        assert gw.gw.twins["ps"].reported["level"] == 3.21


class CallingIn(FakeDriver):
    """A device that calls in (a listener driver's shape): never polled."""

    polled = False


async def test_a_device_that_calls_in_is_online_while_it_reports(tmp_path: Path) -> None:
    fake = device()
    spec = config("allowed_failures: 2")
    async with InProcessGateway(spec, tmp_path, fake) as gw:
        gw.gw.driver_factory = lambda name, conn, points: CallingIn(fake, "ps", points)
        await gw.gw._stop_device("ps", "test: replaced by a calling-in driver")
        gw.gw._start_device("ps", gw.specs["ps"])
        runner = gw.gw.runners["ps"]
        driver = runner._driver
        assert isinstance(driver, CallingIn)
        await gw.wait_for(lambda: any(c.op == "connect" for c in fake.calls), what="connect")
        assert runner.online is None  # connected to nothing yet: no report
        reads = sum(1 for c in fake.calls if c.op == "read")
        driver.push([Reading("level", 100, time.time_ns() // 1_000_000, Quality.GOOD)])
        assert runner.online is True
        driver._link_sink(False, "station hung up")  # type: ignore[misc]
        assert runner.online is False and runner.last_error == "station hung up"
        driver.push([Reading("level", 110, time.time_ns() // 1_000_000, Quality.GOOD)])
        assert runner.online is True
        # silence beyond allowed_failures × the expected interval: offline
        await gw.wait_for(lambda: runner.online is False, what="offline after silence")
        assert "no report for" in (runner.last_error or "")
        assert sum(1 for c in fake.calls if c.op == "read") == reads  # never polled


async def test_a_bug_in_a_device_task_is_logged_and_retried(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fake = device()
    caplog.set_level(logging.ERROR, logger="citytwin.device")

    def buggy(call: Call) -> Any:
        if call.op == "read":
            raise ZeroDivisionError("a bug in a driver")
        return fake(call)

    async with InProcessGateway(config(), tmp_path, buggy) as gw:
        runner = gw.gw.runners["ps"]
        await gw.wait_for(lambda: runner.failures >= 2, what="two failures")
        records = [r for r in caplog.records if "unexpected error in device task" in r.getMessage()]
        assert len(records) == 1  # once per distinct failure, not per retry
        assert records[0].exc_info is not None  # with its traceback
        assert "ZeroDivisionError" in (runner.last_error or "")


async def test_a_crashed_task_is_logged_and_reported_unhealthy(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from citytwin.gateway.httpapi import health

    async def crash() -> None:
        raise RuntimeError("boom")

    async with InProcessGateway(config(), tmp_path, device()) as gw:
        task = gw.gw.tasks.spawn(crash(), "test:crash")
        await asyncio.wait({task})
        assert ("test:crash", "RuntimeError('boom')") in gw.gw.tasks.crashes
        assert any("task test:crash crashed" in r.getMessage() and r.exc_info for r in caplog.records)
        report = health(gw.gw)
        assert "task test:crash crashed: RuntimeError('boom')" in report["problems"]


async def test_a_driver_whose_close_raises_still_leaves_a_clean_store(tmp_path: Path) -> None:
    fake = device()

    def close_fails(call: Call) -> Any:
        if call.op == "close":
            raise ConnectionClosed("the socket was already gone")
        return fake(call)

    async with InProcessGateway(config(), tmp_path, close_fails) as gw:
        runner = gw.gw.runners["ps"]
        await gw.wait_for(lambda: runner.online, what="online")
        await gw.wait_for(lambda: "level" in gw.gw.twins["ps"].reported, what="a reported value")
    store = TwinStore(tmp_path / "twins.db")
    stored = await store.open()
    try:
        assert store.previous_run_clean  # outbox, twins and store were closed after the failed close
        assert stored["ps"]["reported"]["level"] == 2.5
    finally:
        await store.close()


async def test_commands_go_through_the_runner_with_the_configured_timeout(tmp_path: Path) -> None:
    fake = device()
    slow = asyncio.Event()

    async def hangs_on_write(call: Call) -> Any:
        if call.op == "write":
            await slow.wait()
        return fake(call)

    spec = config("command_timeout: 0.2")
    async with InProcessGateway(spec, tmp_path, hangs_on_write) as gw:
        runner = gw.gw.runners["ps"]
        await gw.wait_for(lambda: runner.online, what="online")
        started = time.monotonic()
        reply = await gw.command("ps", "set", payload={"id": "t1", "properties": {"pump1_frequency_setpoint": 40}})
        assert reply["status"] == "timeout", reply
        assert "within 0.2 s" in reply["error"]["message"]
        assert time.monotonic() - started < 2
        slow.set()


async def test_shutdown_without_a_hub_says_what_is_safe_and_what_comes_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="citytwin.hub")
    async with InProcessGateway(config(), tmp_path, device()) as gw:
        await gw.wait_for(lambda: gw.gw.outbox.depth > 0, what="reports stored")
        await gw.command("ps", "get", payload={"id": "g1"})
    (line,) = [r.getMessage() for r in caplog.records if "at shutdown" in r.getMessage()]
    assert line.startswith("hub mqtt://127.0.0.1:1 unreachable at shutdown: ")
    assert "report(s) and event(s) are safe in the outbox and go out after the next start" in line
    assert "retained state document(s) (status, twins) were not sent; the next start publishes them again" in line
    assert "not delivered" not in line


async def test_a_driver_that_never_closes_does_not_keep_the_gateway_from_stopping(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake = device()
    never = asyncio.Event()

    async def close_hangs(call: Call) -> Any:
        if call.op == "close":
            await never.wait()  # a link that never finishes closing
        return fake(call)

    caplog.set_level(logging.ERROR, logger="citytwin.gateway")
    harness = InProcessGateway(config(), tmp_path, close_hangs)
    async with harness as gw:
        gw.gw.step_timeout = 0.5
        await gw.wait_for(lambda: gw.gw.runners["ps"].online, what="online")
    assert any("shutdown: device links did not finish within 0.5 s" in r.getMessage() for r in caplog.records)
    store = TwinStore(tmp_path / "twins.db")
    await store.open()
    try:
        assert store.previous_run_clean  # the later steps still ran
    finally:
        await store.close()


async def test_writes_sent_back_to_back_share_one_read_back(tmp_path: Path) -> None:
    # each write asks for a refresh poll to read its effect back; 20 writes in a row used to cost
    # 20 full polls (most of a command's CPU): now they share one within REFRESH_GAP
    fake = device()
    async with InProcessGateway(config("poll_period: 3600"), tmp_path, fake) as gw:
        runner = gw.gw.runners["ps"]
        await gw.wait_for(lambda: runner.polls >= 1 and runner.online, what="the first poll")
        polls = runner.polls
        for n in range(20):
            reply = await gw.command("ps", "set", None, {"id": f"w{n}", "properties": {"pump1_frequency_setpoint": 30 + n}})
            assert reply["status"] == "succeeded", reply
        assert len(fake.writes) == 20
        # the last value written is read back soon, not at the next tick an hour away
        await gw.wait_for(lambda: gw.gw.twins["ps"].reported.get("pump1_frequency_setpoint") == 49,
                          timeout=5, what="the last write read back")
        assert 1 <= runner.polls - polls <= 5, runner.polls - polls
