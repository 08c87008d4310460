"""One measured run: a subject gateway on a shape, against the slave, the broker and the counter.

``measure`` starts the subject, times its start-up (spawn → first point at the hub → every
device seen), waits for a steady state, then measures delivered points/s, poll-to-hub
latency from the sentinel, CPU and RSS over a window; optionally command round trips under
that load, and optionally a broker outage (recovery) with the drain that follows.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import orjson

from benchmarks.cpuquota import CpuQuota
from benchmarks.procs import Mosquitto, ProcStats, Slave, Subscriber, stop
from benchmarks.subjects import Shape, Subject, device_id
from benchmarks.thingsboard import session_limits_reply


@dataclass(slots=True)
class Plan:
    seconds: float = 10.0  # measurement window
    warmup: float = 2.0  # steady state before measuring
    start_timeout: float = 60.0
    commands: int = 0
    outage: float = 0.0  # broker down this long (recovery), 0: no outage
    drain_timeout: float = 60.0
    commands_budget: float = 0.0  # stop sending commands after this many seconds (0: no limit)
    # seconds from one command's send to the next one's (0: back to back, each sent when the
    # previous is answered: a flood that measures the gateway's command throughput as much as
    # its latency; an operator's rate measures the latency under the telemetry load)
    command_interval: float = 0.0
    # a second command phase after the first, at this interval (0: none): the edge-box profile
    # measures both the flood (what the box can answer) and an operator's rate (how long one
    # command takes under the telemetry load, which is what the p99 goal is about)
    paced_commands: int = 0
    paced_interval: float = 0.05


def _throttled_since(quota: CpuQuota | None, before: dict[str, int]) -> dict[str, int]:
    """The quota's periods and throttled periods since ``before`` (one phase of a run)."""
    if quota is None:
        return {}
    now = quota.throttled()
    return {k: now.get(k, 0) - before.get(k, 0) for k in ("nr_periods", "nr_throttled")}


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def _delivered(mark: dict[str, Any], elapsed: float) -> dict[str, Any]:
    lat = mark["latencies_ms"]
    return {
        "points_per_s": round(mark["points"] / elapsed, 1),
        "messages_per_s": round(mark["messages"] / elapsed, 1),
        "latency_p50_ms": percentile(lat, 0.5),
        "latency_p99_ms": percentile(lat, 0.99),
        "latency_samples": len(lat),
    }


class Hub:
    """The hub side's own client: answers ThingsBoard's session-limits RPC, sends commands."""

    def __init__(self, subject: Subject, port: int) -> None:
        self.subject = subject
        self.port = port
        self.waiting: dict[str, asyncio.Future[float]] = {}
        self.client: aiomqtt.Client | None = None
        self.sent = 0  # command numbers run on across phases: a repeated id is answered from the log

    async def run(self, ready: asyncio.Event) -> None:
        while True:
            try:
                async with aiomqtt.Client("127.0.0.1", self.port, max_queued_incoming_messages=0,
                                          socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)) as client:
                    self.client = client
                    for topic in self.subject.reply_topics:
                        await client.subscribe(topic, qos=1)
                    ready.set()
                    async for message in client.messages:
                        await self._on_message(client, str(message.topic), message.payload)
            except aiomqtt.MqttError:
                self.client = None
                await asyncio.sleep(0.05)

    async def _on_message(self, client: aiomqtt.Client, topic: str, payload: Any) -> None:
        answer = session_limits_reply(topic)
        if answer is not None:
            await client.publish(answer[0], answer[1], qos=1)
            return
        if not isinstance(payload, bytes):
            return
        with contextlib.suppress(orjson.JSONDecodeError):
            body = orjson.loads(payload)
            if isinstance(body, dict):
                command = self.subject.reply_id(topic, body)
                future = self.waiting.pop(command, None) if command is not None else None
                if future is not None and not future.done():
                    future.set_result(time.perf_counter())

    async def round_trips(self, count: int, devices: int, budget: float = 0.0, interval: float = 0.0) -> dict[str, Any]:
        rtts: list[float] = []
        failures = 0
        loop = asyncio.get_running_loop()
        stop_at = loop.time() + budget if budget else None
        for _ in range(count):
            if stop_at is not None and loop.time() > stop_at:
                break
            client = self.client
            if client is None:
                await asyncio.sleep(0.1)
                continue
            number, self.sent = self.sent, self.sent + 1
            topic, payload, key = self.subject.command(device_id(number % devices), number, 1000 + number % 1000)
            future: asyncio.Future[float] = loop.create_future()
            self.waiting[key] = future
            sent = time.perf_counter()
            await client.publish(topic, payload, qos=1)
            try:
                done = await asyncio.wait_for(future, 5.0)
            except TimeoutError:
                failures += 1
                self.waiting.pop(key, None)
                if failures >= 5 and not rtts:  # not answering at all: say so, do not wait 1,000 × 5 s
                    break
                continue
            rtts.append((done - sent) * 1000)
            if interval:
                await asyncio.sleep(max(0.0, sent + interval - time.perf_counter()))
        return {"count": len(rtts), "failed": failures,
                "p50_ms": round(statistics.median(rtts), 3) if rtts else None,
                "p99_ms": percentile(rtts, 0.99), "max_ms": round(max(rtts), 3) if rtts else None}


async def measure(subject: Subject, shape: Shape, plan: Plan, work: Path, quota: CpuQuota | None = None) -> dict[str, Any]:
    broker = Mosquitto(work)  # creates ``work``
    broker.start()
    slave = Slave(shape.k)
    subscriber = Subscriber(broker.port, subject.topics, shape.k)
    hub = Hub(subject, broker.port)
    ready = asyncio.Event()
    hub_task = asyncio.create_task(hub.run(ready))
    proc = None
    sampler = None
    try:
        await asyncio.wait_for(ready.wait(), 10)
        spawned = time.monotonic()
        proc = subject.start(work, broker.port, slave.port, shape)
        if quota is not None:
            quota.add(proc.pid)  # the edge-box profile: the subject (its threads and children) only
        stats = ProcStats(proc.pid)
        sampler = asyncio.create_task(stats.run_sampler())
        first = all_seen = None
        deadline = spawned + plan.start_timeout
        while time.monotonic() < deadline and proc.poll() is None:
            mark = await subscriber.amark()
            if first is None and mark["points"]:
                first = mark["monotonic"] - spawned
            if mark["devices"] >= shape.devices:
                all_seen = mark["monotonic"] - spawned
                break
            await asyncio.sleep(0.05)
        result: dict[str, Any] = {
            "subject": subject.name, "shape": shape.label,
            "parameters": {"devices": shape.devices, "k": shape.k, "period_s": shape.period,
                           "points_per_poll": shape.points_per_poll, "seconds": plan.seconds},
            "startup": {"first_point_s": round(first, 2) if first is not None else None,
                        "all_devices_s": round(all_seen, 2) if all_seen is not None else None,
                        "rss_mb": round(stats.rss_mb(), 1)},
        }
        if proc.poll() is not None:
            result["error"] = f"{subject.name} exited with {proc.returncode} while starting"
            return result
        await asyncio.sleep(plan.warmup)
        before = await subscriber.amark()
        stats.reset()
        throttled = quota.throttled() if quota is not None else {}
        await asyncio.sleep(plan.seconds)
        mark = await subscriber.amark()
        throttled = _throttled_since(quota, throttled)
        elapsed = mark["monotonic"] - before["monotonic"]
        offered = shape.devices * shape.points_per_poll / shape.period
        steady = _delivered(mark, elapsed)
        steady["polled_points_per_s"] = round(offered, 1)
        # one sentinel per device per poll, whatever the subject: polls done / polls due
        # (no sentinel: one report per device per poll that changed anything)
        done = mark["messages"] if shape.source == "sim" else len(mark["latencies_ms"])
        steady["polls_kept"] = round(done / elapsed / (shape.devices / shape.period), 3)
        steady.update(stats.figures())
        steady["broker_dropped"] = mark["broker_dropped"] - before["broker_dropped"]
        steady["seq_missing"] = mark["seq_missing"]
        if throttled:
            steady["throttled_periods"] = throttled
        result["steady"] = steady
        if plan.commands:
            stats.reset()
            throttled = quota.throttled() if quota is not None else {}
            result["commands"] = await hub.round_trips(plan.commands, shape.devices, plan.commands_budget,
                                                            plan.command_interval) | stats.figures()
            if quota is not None:
                result["commands"]["throttled_periods"] = _throttled_since(quota, throttled)
        if plan.paced_commands:
            stats.reset()
            throttled = quota.throttled() if quota is not None else {}
            result["commands_paced"] = await hub.round_trips(
                plan.paced_commands, shape.devices, plan.commands_budget, plan.paced_interval
            ) | stats.figures() | {"interval_s": plan.paced_interval}
            if quota is not None:
                result["commands_paced"]["throttled_periods"] = _throttled_since(quota, throttled)
        if plan.outage:
            result["recovery"] = await _outage(broker, subscriber, stats, steady["points_per_s"], plan)
        return result
    finally:
        if sampler is not None:
            sampler.cancel()
        hub_task.cancel()
        await asyncio.gather(hub_task, return_exceptions=True)
        stop(proc)
        cleanup = getattr(subject, "cleanup", None)
        if cleanup is not None:
            cleanup()
        subscriber.stop()
        slave.stop()
        broker.stop()


async def _outage(broker: Mosquitto, subscriber: Subscriber, stats: ProcStats, live: float,
                  plan: Plan) -> dict[str, Any]:
    """Broker down ``plan.outage`` s under load, then up: how much comes back, how fast, in order."""
    await subscriber.amark()
    broker.stop()
    down = time.monotonic()
    await asyncio.sleep(plan.outage)
    stats.reset()
    broker.start()
    up = time.monotonic()
    points = replayed = 0
    last_replay = first_replay = None
    quiet_since = caught_up = up
    marks = []
    while time.monotonic() - up < plan.drain_timeout:
        await asyncio.sleep(0.25)
        mark = await subscriber.amark()
        marks.append(mark)
        points += mark["points"]
        if mark["replayed_points"]:
            replayed += mark["replayed_points"]
            first_replay = first_replay or mark["monotonic"]
            last_replay = mark["monotonic"]
        # done once the rate is back to live for 2 s (and any replay has stopped)
        if mark["points"] / 0.25 > 1.5 * live or mark["replayed_points"]:
            quiet_since = time.monotonic()
            caught_up = mark["monotonic"]
        elif time.monotonic() - quiet_since > 2.0 and points:
            break
    window = time.monotonic() - up
    missed = live * (up - down)
    recovered = max(0.0, points - live * window) if not replayed else float(replayed)
    drain_time = (last_replay - up) if (replayed and last_replay) else None
    figures = stats.figures()
    return {
        "outage_s": round(up - down, 1), "points_during_outage_est": round(missed),
        "recovered_points": round(recovered), "recovered_fraction": round(recovered / missed, 3) if missed else None,
        "drain_s": round(drain_time, 2) if drain_time else None,
        "drain_points_per_s": round(replayed / drain_time, 1) if drain_time else None,
        # for any subject (no replay flag needed): broker up → the rate is back to live
        "catch_up_s": round(caught_up - up, 2) if caught_up > up else None,
        "catch_up_points_per_s": round(recovered / (caught_up - up), 1) if caught_up > up else None,
        "hit_drain_timeout": window >= plan.drain_timeout,
        "live_points_per_s_during_drain": round((points - replayed) / window, 1),
        "seq_missing": marks[-1]["seq_missing"] if marks else None,
        "out_of_order": marks[-1]["out_of_order"] if marks else None,
        **figures,
    }
