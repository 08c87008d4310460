"""Overload without collapse (issue 13), in process with fake drivers whose reads are slow or
held: polls stretch and are counted, commands overtake queued polls, health says why.

A held or slow read models an overloaded box without timing assertions: the tests assert on
counts, ordering and bounds, never on how long something took.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from pathlib import Path
from typing import Any

import pytest
from harness import Call, FakeDevice, InProcessGateway

from citytwin.gateway.httpapi import health, status
from citytwin.gateway.prioritylock import PriorityLock

CONFIG = """
gateway: {id: load-gw, data_dir: DATA_DIR, flush_interval: 0.2, max_polls_in_flight: IN_FLIGHT}
hub: {url: "mqtt://127.0.0.1:1", reconnect_max: 60}
http: {enabled: false}
access:
  grants: [{operators: [tester], role: admin}]
devices:
DEVICES
"""

DEVICE = """
  - id: ID
    model: pump_station
    driver: modbus-tcp
    connection: {host: 127.0.0.1, port: 1}
    poll_period: 0.05
    points:
      level:        {table: input_register, address: 0, scale: 0.01}
      pump1_frequency_setpoint: {table: holding_register, address: 0, scale: 0.01}
"""


def config(devices: list[str], in_flight: int = 32) -> str:
    body = "".join(DEVICE.replace("ID", d) for d in devices)
    return CONFIG.replace("DEVICES", body).replace("IN_FLIGHT", str(in_flight))


class HeldReads(FakeDevice):
    """A device whose reads can be held (``hold``) until released; every call is recorded in order."""

    def __init__(self) -> None:
        super().__init__({"level": 250, "pump1_frequency_setpoint": 3000})
        self.held = asyncio.Event()
        self.held.set()
        self.waiting = 0  # reads currently held
        self.ends: list[float] = []  # loop time each read ended
        self.starts: list[float] = []

    def hold(self) -> None:
        self.held.clear()

    async def handle(self, call: Call) -> Any:
        loop = asyncio.get_running_loop()
        if call.op == "read":
            self.starts.append(loop.time())
            self.waiting += 1
            try:
                await self.held.wait()
            finally:
                self.waiting -= 1
            self.ends.append(loop.time())
        return self(call)


def skipped_metric(gw: InProcessGateway, device: str) -> float:
    value = gw.gw.metrics.registry.get_sample_value("citytwin_device_polls_skipped_total", {"device": device})
    return value or 0.0


async def test_polls_stretch_and_the_missed_ticks_are_counted(tmp_path: Path) -> None:
    dev = HeldReads()
    async with InProcessGateway(config(["a"]), tmp_path, {"a": dev.handle}) as gw:
        runner = gw.gw.runners["a"]
        await gw.wait_for(lambda: runner.polls >= 3, what="a few polls")
        assert runner.skipped == 0  # a fast device keeps its period
        dev.hold()
        await gw.wait_for(lambda: dev.waiting == 1, what="a read held")
        reads_before = len(dev.starts)
        held_from = dev.starts[-1]
        loop = asyncio.get_running_loop()
        # hold it across at least four poll periods (the loop's clock, not a sleep as synchronisation)
        await gw.wait_for(lambda: loop.time() - held_from > 4 * 0.05, what="four periods")
        dev.held.set()
        await gw.wait_for(lambda: len(dev.starts) >= reads_before + 2, what="two polls after the release")
        # the missed ticks were counted, never made up: no burst of reads after the release
        assert runner.skipped >= 4
        assert skipped_metric(gw, "a") == runner.skipped
        released = dev.ends[reads_before - 1]
        following = dev.starts[reads_before]
        # stretched: the next poll is due one period after the held one completed
        assert following >= released + 0.05 * 0.99, (released, following)
        assert status(gw.gw)["devices"]["a"]["skipped"] == runner.skipped


def _phase(t1: float, t2: float, period: float = 0.05) -> float:
    return (t1 - t2) % period


async def test_devices_that_fell_behind_together_keep_their_own_phases(tmp_path: Path) -> None:
    """Two devices held and released at the same moment do not poll together afterwards: each
    goes back to its own tick. (Restarting each schedule at "now" gathered every device that
    fell behind into one phase: a burst of polls each period, throttled under a CPU quota.)"""
    x, y = HeldReads(), HeldReads()
    y.held = x.held  # one switch for both
    async with InProcessGateway(config(["x", "y"]), tmp_path, {"x": x.handle, "y": y.handle}) as gw:
        loop = asyncio.get_running_loop()
        await gw.wait_for(lambda: len(x.starts) >= 4 and len(y.starts) >= 4, what="a few polls of each")
        before = _phase(x.starts[-1], y.starts[-1])
        assert 0.01 < before < 0.04, before  # spread over the period by device id
        x.hold()
        await gw.wait_for(lambda: x.waiting == 1 and y.waiting == 1, what="both reads held")
        count_x, count_y = len(x.starts), len(y.starts)
        held_from = max(x.starts[-1], y.starts[-1])
        await gw.wait_for(lambda: loop.time() - held_from > 4 * 0.05, what="four periods")
        x.held.set()  # both released at once
        await gw.wait_for(lambda: len(x.starts) > count_x and len(y.starts) > count_y, what="a poll of each")
        after = _phase(x.starts[count_x], y.starts[count_y])
        drift = min(abs(after - before), 0.05 - abs(after - before))
        assert drift < 0.01, (before, after)
        assert gw.gw.runners["x"].skipped >= 4 and gw.gw.runners["y"].skipped >= 4


async def test_a_command_overtakes_queued_polls(tmp_path: Path) -> None:
    """The link lock serves a waiting command before a waiting poll; the poll gate never
    holds a command back."""
    a, b = HeldReads(), HeldReads()
    order: list[str] = []

    def recorder(dev: HeldReads, name: str) -> Any:
        async def handle(call: Call) -> Any:
            order.append(f"{name}:{call.op}")
            return await dev.handle(call)
        return handle

    # one poll in flight at a time for the whole gateway: b's polls queue behind a's held read
    async with InProcessGateway(config(["a", "b"], in_flight=1), tmp_path,
                                {"a": recorder(a, "a"), "b": recorder(b, "b")}) as gw:
        runner_a, runner_b = gw.gw.runners["a"], gw.gw.runners["b"]
        await gw.wait_for(lambda: runner_a.online and runner_b.online, what="both online")
        a.hold()
        await gw.wait_for(lambda: a.waiting == 1, what="a's read held, the only slot taken")
        mark = len(order)
        reply = await gw.command("b", "set", payload={"id": "c1", "properties": {"pump1_frequency_setpoint": 41}})
        assert reply["status"] == "succeeded", reply
        assert a.waiting == 1  # a's read is still held: the command did not wait for the slot
        assert order[mark:].count("b:write") == 1 and "b:read" not in order[mark:]

        # on one device: a poll waiting for the link goes after a command that waits too
        b.hold()
        await gw.wait_for(lambda: b.waiting == 1 or a.waiting == 1, what="a read held")
        a.held.set()
        await gw.wait_for(lambda: b.waiting == 1, what="b's read held")
        queued_poll = asyncio.create_task(runner_b.poll())  # a refresh poll, queued on b's link
        await gw.wait_for(lambda: runner_b._lock.locked, what="b's link busy")
        mark = len(order)
        command = asyncio.create_task(
            gw.command("b", "set", payload={"id": "c2", "properties": {"pump1_frequency_setpoint": 42}}))
        await gw.wait_for(lambda: runner_b._lock.urgent_waiting == 1, what="the command waiting for b's link")
        b.held.set()
        assert (await command)["status"] == "succeeded"
        await queued_poll
        after = [op for op in order[mark:] if op.startswith("b:")]
        assert after.index("b:write") < after.index("b:read"), after


async def test_priority_lock_serves_commands_first_then_polls_in_order() -> None:
    lock = PriorityLock()
    served: list[str] = []

    async def take(name: str, urgent: bool) -> None:
        async with lock.hold(urgent):
            served.append(name)
            await asyncio.sleep(0)

    await lock.acquire()
    tasks = [asyncio.create_task(take(n, u)) for n, u in (("poll1", False), ("poll2", False), ("cmd1", True),
                                                         ("poll3", False), ("cmd2", True))]
    await asyncio.sleep(0)
    cancelled = asyncio.create_task(take("gone", True))
    await asyncio.sleep(0)
    cancelled.cancel()  # a waiter that gives up is skipped, and does not keep the lock
    lock.release()
    await asyncio.gather(*tasks)
    assert served == ["cmd1", "cmd2", "poll1", "poll2", "poll3"]
    assert not lock.locked


async def test_health_says_degraded_overloaded_with_the_cause_and_logs_each_change_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    slow = {"on": True}
    counter = itertools.count()

    def device(call: Call) -> Any:
        return {"level": next(counter) % 1000, "pump1_frequency_setpoint": 3000} if call.op == "read" else None

    async def handle(call: Call) -> Any:
        if call.op == "read" and slow["on"]:
            await asyncio.sleep(0.12)  # longer than the period, with one slot: the others wait
        return device(call)

    caplog.set_level(logging.INFO, logger="citytwin.overload")
    async with InProcessGateway(config(["a", "b", "c"], in_flight=1), tmp_path, handle) as gw:
        monitor = gw.gw.overload
        monitor.settle = 0.3
        await gw.wait_for(lambda: health(gw.gw)["degraded"], timeout=15, what="degraded")
        report = health(gw.gw)
        assert report["degraded"].startswith("overloaded: "), report
        assert "started a period or more late" in report["degraded"]
        # degraded, not a problem (the hub is absent here, that is the only problem): a restart
        # would not make the box faster
        assert not any("overload" in p or "late" in p for p in report["problems"]), report
        load = status(gw.gw)["load"]
        assert load["degraded"] == report["degraded"] and load["polls_skipped"] > 0
        metric = gw.gw.metrics.registry.get_sample_value("citytwin_gateway_overloaded")
        assert metric == 1
        slow["on"] = False
        await gw.wait_for(lambda: health(gw.gw)["degraded"] is None, timeout=15, what="recovered")
        lines = [r.getMessage() for r in caplog.records if r.name == "citytwin.overload"]
        assert sum(1 for line in lines if line.startswith("degraded: overloaded")) == 1, lines
        assert sum(1 for line in lines if line.startswith("no longer overloaded")) == 1, lines


async def test_cpu_over_budget_paces_polls_and_says_so(tmp_path: Path) -> None:
    """Real CPU time, burnt by a thread of this process (hashing releases the GIL, so the event
    loop does not lag): the gate reads it against a small ``gateway.cpu_budget``, paces polls,
    and /health, /status and the metrics say why; once the burning stops it lets go."""
    import hashlib
    import threading

    stop = threading.Event()

    def burn() -> None:
        data = b"x" * 4_000_000
        while not stop.is_set():
            hashlib.sha256(data).digest()

    text = config(["a", "b", "c"]).replace("max_polls_in_flight: 32", "max_polls_in_flight: 32, cpu_budget: 0.5")
    async with InProcessGateway(text, tmp_path, {d: HeldReads().handle for d in "abc"}) as gw:
        gw.gw.overload.settle = 0.3
        cpu = status(gw.gw)["load"]["cpu"]
        assert cpu["budget_cores"] == 0.5 and cpu["target_ratio"] == 0.75, cpu
        burner = threading.Thread(target=burn, daemon=True)
        burner.start()
        try:
            await gw.wait_for(lambda: "CPU budget" in (health(gw.gw)["degraded"] or ""), timeout=15,
                              what="degraded for CPU")
            assert "of 0.5 core used, polls paced to" in (health(gw.gw)["degraded"] or "")
            cpu = status(gw.gw)["load"]["cpu"]
            assert cpu["polls_admitted_per_s_cpu_limit"] is not None and cpu["use_cores"] > 0, cpu
            registry = gw.gw.metrics.registry
            assert registry.get_sample_value("citytwin_cpu_budget_cores") == 0.5
            assert (registry.get_sample_value("citytwin_cpu_use_ratio") or 0) > 0
            assert registry.get_sample_value("citytwin_cpu_throttled_periods_total") is not None
        finally:
            stop.set()
            burner.join()
        await gw.wait_for(lambda: gw.gw.gate.cpu_rate is None, timeout=15, what="pacing released")
        await gw.wait_for(lambda: health(gw.gw)["degraded"] is None, timeout=15, what="recovered")
