"""A hub that stops taking messages (mosquitto stopped with SIGSTOP: connected, silent) fills
the outbox's bounded live window; polling then waits instead of the heap growing, health says
why, and when the broker resumes every stored message arrives, in order, without a seq gap
(issue 13: what is shed is a poll, never a stored message)."""

from __future__ import annotations

import asyncio
import itertools
import signal
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
from conftest import Mosquitto
from harness import Call, InProcessGateway

from citytwin.gateway.httpapi import health

WINDOW = 2048

CONFIG = """
gateway: {id: bp-gw, data_dir: DATA_DIR, flush_interval: 0.2}
hub: {url: "HUB", reconnect_min: 0.1, reconnect_max: 0.5}
outbox: {live_window_bytes: WINDOW, write_queue_bytes: 4096}
http: {enabled: false}
devices:
  - id: a
    model: pump_station
    driver: modbus-tcp
    connection: {host: 127.0.0.1, port: 1}
    poll_period: 0.01
    points:
      level: {table: input_register, address: 0, scale: 0.01}
"""


async def test_a_stalled_hub_slows_polling_and_loses_nothing(tmp_path: Path, mosquitto: Mosquitto) -> None:
    counter = itertools.count()

    def device(call: Call) -> Any:
        return {"level": next(counter) % 60000} if call.op == "read" else None

    seqs: list[int] = []

    async def subscribe(ready: asyncio.Event) -> None:
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
            await client.subscribe("citytwin/v1/bp-gw/a/properties/report", qos=1)
            ready.set()
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                seqs.append(orjson.loads(message.payload)["seq"])

    ready = asyncio.Event()
    listener = asyncio.create_task(subscribe(ready))
    await asyncio.wait_for(ready.wait(), 10)
    text = CONFIG.replace("HUB", mosquitto.url).replace("WINDOW", str(WINDOW))
    proc = mosquitto.proc
    assert proc is not None
    try:
        async with InProcessGateway(text, tmp_path, device) as gw:
            outbox, runner = gw.gw.outbox, gw.gw.runners["a"]
            gw.gw.overload.settle = 0.3
            await gw.wait_for(lambda: len(seqs) >= 20, what="live reports at the hub")
            proc.send_signal(signal.SIGSTOP)
            try:
                peak = 0

                def congested() -> bool:
                    nonlocal peak
                    peak = max(peak, outbox.live[1])
                    return outbox.congestion() is not None

                await gw.wait_for(congested, what="the live window full")
                assert "hub link behind" in (outbox.congestion() or "")
                polls = runner.polls
                await gw.wait_for(lambda: congested() and runner.behind > 0.2, what="polls held back")
                # polling waits for room: at most the poll already admitted completes
                assert runner.polls - polls <= 1
                assert peak <= WINDOW  # memory bounded by the configuration
                assert outbox.pending[1] <= 4096 + 512
                await gw.wait_for(lambda: health(gw.gw)["degraded"], what="degraded")
                assert "hub link behind" in health(gw.gw)["degraded"]
            finally:
                proc.send_signal(signal.SIGCONT)
            await gw.wait_for(lambda: outbox.congestion() is None and runner.behind < 0.05, timeout=20,
                              what="polling again")
            await gw.wait_for(lambda: seqs and max(seqs) >= outbox.last_seq("a") and outbox.idle, timeout=20,
                              what="everything delivered")
            assert sorted(set(seqs)) == list(range(1, outbox.last_seq("a") + 1)), "a seq gap"
            assert seqs == sorted(seqs)  # in order: the window and the disk are one lane
            assert runner.skipped > 0
            await gw.wait_for(lambda: health(gw.gw)["degraded"] is None, what="no longer degraded")
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
