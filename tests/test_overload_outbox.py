"""The outbox's memory bounds (issue 13), on its own with a real SQLite file: the live lane keeps
a bounded window and streams the rest from disk in order; the write queue and the window say
when polling must wait; the poll gate's control loop sheds, then recovers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from citytwin.gateway.outbox import Limits, Outbox, Row
from citytwin.gateway.overload import PollGate

WINDOW = 2000


async def test_the_live_window_is_bounded_and_the_rest_streams_from_disk_in_order(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", Limits(live_window_bytes=WINDOW, write_queue_bytes=1024))
    await box.open()
    await box.session_started()
    room = asyncio.ensure_future(box.wait_room())
    await asyncio.sleep(0)
    assert room.done()  # nothing queued: room at once
    for i in range(300):  # ~100 bytes each: 15× the window
        box.append("a" if i % 3 else "b", "t", {"n": i, "pad": "x" * 60})
    assert box.congestion() is not None and "write queue" in (box.congestion() or "")
    async with asyncio.timeout(10):
        while box.pending[0]:
            await asyncio.sleep(0.01)
    # stored: the window holds what fits, the rest waits on disk, and polling still waits
    live, live_bytes, spilled = box.live
    assert spilled and live_bytes <= WINDOW and 0 < live < 300
    assert "hub link behind" in (box.congestion() or "")
    waiting = asyncio.ensure_future(box.wait_room())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    delivered: list[Row] = []
    async with asyncio.timeout(10):
        while len(delivered) < 300:
            batch = await box.take(8)
            assert box.live[1] <= WINDOW  # never more than the window in memory
            delivered.extend(batch)
            box.ack(batch)
    assert [orjson.loads(r.payload)["n"] for r in delivered] == list(range(300))  # one lane, in order
    for device in "ab":
        seqs = [r.seq for r in delivered if r.device == device]
        assert seqs == list(range(1, len(seqs) + 1))
    assert not any(r.replay for r in delivered)
    async with asyncio.timeout(5):
        await waiting  # caught up: polling may go on
    assert box.congestion() is None and box.live == (0, 0, False)
    box.append("a", "t", {"n": 300})  # and live rows come from memory again
    (row,) = await asyncio.wait_for(box.take(8), 5)
    assert orjson.loads(row.payload)["n"] == 300
    await box.close()


async def test_a_window_overflow_while_disconnected_is_backlog_not_congestion(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", Limits(live_window_bytes=WINDOW, replay_rate=1e6))
    await box.open()
    for i in range(100):
        box.append("a", "t", {"n": i, "pad": "x" * 60})
    async with asyncio.timeout(10):
        while box.pending[0]:
            await asyncio.sleep(0.01)
    assert box.congestion() is None  # store-and-forward: the hub being away never stops polling
    await box.session_started()
    rows: list[Row] = []
    async with asyncio.timeout(10):
        while len(rows) < 100:
            batch = await box.take(50)
            rows.extend(batch)
            box.ack(batch)
    assert [r.seq for r in rows] == list(range(1, 101)) and all(r.replay for r in rows)
    await box.close()


def test_the_poll_gate_halves_then_paces_then_recovers() -> None:
    gate = PollGate(32, lag_target=0.01)
    for _ in range(20):
        gate.adjust(0.05, 200.0)  # the loop wakes 50 ms late: shed
    assert gate.limit == 1 and gate.rate is not None and gate.rate < 200.0
    paced = gate.rate
    for _ in range(200):
        gate.adjust(0.0, 100.0)  # quiet again: the rate grows back, then the limit
    assert gate.rate is None or gate.rate > paced
    for _ in range(400):
        gate.adjust(0.0, 100.0)
    assert gate.rate is None and gate.limit == 32
