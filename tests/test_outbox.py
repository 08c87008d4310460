"""The outbox on its own: durable, ordered, bounded, counted — against a simple model."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import orjson
import pytest
from conftest import eventually
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from citytwin.gateway.outbox import Limits, Outbox, Row


async def drain(box: Outbox, count: int, limit: int = 1000) -> list[Row]:
    """Take and acknowledge ``count`` rows, then wait until the outbox is idle: a row missing
    times out, a row too many keeps it from ever being idle (no quiet period is guessed)."""
    rows: list[Row] = []
    while len(rows) < count:
        batch = await asyncio.wait_for(box.take(limit), 10)
        rows.extend(batch)
        box.ack(batch)
    await eventually(lambda: box.idle, timeout=10, step=0.005)
    return rows


async def owed_take(box: Outbox, limit: int, timeout: float = 10) -> list[Row]:
    """``take`` when rows are owed: something must come within ``timeout``. Asked again every
    0.2 s because of the lost wake-up below (test_a_row_stored_while_take_reads_the_backlog_...)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            return await asyncio.wait_for(box.take(limit), 0.2)
        except TimeoutError:
            if asyncio.get_running_loop().time() > deadline:
                raise


def body(row: Row) -> dict:
    return orjson.loads(row.wire_payload())


async def test_seq_is_contiguous_per_device_and_survives_reopen(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", Limits())
    await box.open()
    for i in range(5):
        box.append("a", "t/a", {"n": i})
        box.append("b", "t/b", {"n": i})
    await box.close()
    # reopened without a session: everything is backlog, in order, flagged as replay
    box = Outbox(tmp_path / "o.db", Limits(replay_rate=1e6))
    await box.open()
    assert box.depth == 10
    await box.session_started()
    rows = await drain(box, 10)
    assert [(r.device, r.seq) for r in rows] == [(d, s) for s in range(1, 6) for d in "ab"]
    assert all(body(r)["replay"] is True for r in rows)
    box.append("a", "t/a", {"n": 5})
    (live,) = await drain(box, 1)
    assert live.seq == 6 and "replay" not in body(live)
    await box.close()
    box = Outbox(tmp_path / "o.db", Limits())
    await box.open()
    assert box.depth == 0 and box.last_seq("a") == 6 and box.last_seq("b") == 5
    await box.close()


async def test_unacknowledged_rows_come_back_in_the_next_session(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", Limits(replay_rate=1e6))
    await box.open()
    await box.session_started()
    for i in range(3):
        box.append("a", "t", {"n": i})
    first = await asyncio.wait_for(box.take(10), 1)
    assert [r.seq for r in first] == [1, 2, 3]
    box.session_ended()  # the link dropped before any PUBACK
    await box.session_started()
    again = await drain(box, 3)
    assert [r.seq for r in again] == [1, 2, 3]
    await box.close()


async def test_bound_drops_oldest_and_counts_exactly(tmp_path: Path) -> None:
    drops: list[dict[str, int]] = []
    box = Outbox(tmp_path / "o.db", Limits(max_messages=100, replay_rate=1e6), drops.append)
    await box.open()
    for i in range(250):
        box.append("a" if i % 2 else "b", "t", {"n": i})
        if i % 50 == 0:
            await asyncio.sleep(0)  # let the writer commit in several batches
    await box.close()
    assert box.stats.dropped == 150
    assert sum(sum(d.values()) for d in drops) == 150
    box = Outbox(tmp_path / "o.db", Limits(max_messages=100, replay_rate=1e6))
    await box.open()
    await box.session_started()
    rows = await drain(box, 100)
    assert len(rows) == 100
    # the newest survive, in order; the lost ones are exactly the first seqs
    kept = {d: [r.seq for r in rows if r.device == d] for d in "ab"}
    assert kept["a"] == list(range(126 - 50, 126))[-50:] and kept["b"] == list(range(76, 126))
    await box.close()


@pytest.mark.parametrize("acked_before_reconnect", [True, False])
async def test_rows_in_flight_are_never_dropped_so_drops_count_exactly_what_never_arrives(
    tmp_path: Path, acked_before_reconnect: bool
) -> None:
    """A row handed to the hub link may still arrive: the bound drops the oldest rows that are
    not in flight. Counting a row in flight as dropped made the count exceed the loss."""
    box = Outbox(tmp_path / "o.db", Limits(max_messages=10, replay_rate=1e6))
    await box.open()
    await box.session_started()
    for i in range(10):
        box.append("a", "t", {"n": i})
    handed = await owed_take(box, 4)
    assert [r.seq for r in handed] == [1, 2, 3, 4]
    for i in range(6):
        box.append("a", "t", {"n": i})
    await eventually(lambda: box.stats.dropped == 6, timeout=5, step=0.005)
    delivered = [r.seq for r in handed] if acked_before_reconnect else []
    if acked_before_reconnect:
        box.ack(handed)
    box.session_ended()  # unacknowledged rows in flight are stored backlog again
    await box.session_started()
    rows = await drain(box, 10 - len(delivered))
    delivered += [r.seq for r in rows]
    assert sorted(delivered) == [1, 2, 3, 4, *range(11, 17)]
    missing = set(range(1, 17)) - set(delivered)
    assert len(missing) == box.stats.dropped == box.stats.dropped_by_device["a"]
    await box.close()


async def test_replay_rate_limits_the_backlog_but_not_live_data(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", Limits(replay_rate=50))
    await box.open()
    for i in range(40):
        box.append("a", "t", {"n": i})
    await box.close()
    box = Outbox(tmp_path / "o.db", Limits(replay_rate=50))
    await box.open()
    await box.session_started()
    box.append("a", "t", {"live": True})
    first = await asyncio.wait_for(box.take(100), 1)
    assert first[0].seq == 41 and not first[0].replay  # live goes first, at once
    loop = asyncio.get_running_loop()
    start = loop.time()
    rows = first[1:] + await drain(box, 40 - len(first[1:]), limit=100)
    assert [r.seq for r in rows] == list(range(1, 41))
    assert all(r.replay for r in rows)
    assert loop.time() - start >= 0.5  # 40 messages at 50/s cannot all go at once
    await box.close()


async def test_a_full_disk_keeps_data_in_memory_and_loses_nothing_once_it_recovers(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", Limits(replay_rate=1e6))
    await box.open()
    await box.session_started()
    assert box._db is not None
    # SQLITE_FULL for real: cap the database at its current size
    pages = box._db.execute("PRAGMA page_count").fetchone()[0]
    box._db.execute(f"PRAGMA max_page_count = {pages}")
    for i in range(200):
        box.append("a", "t", {"pad": "x" * 500, "n": i})
    rows = await drain(box, 200)
    assert [r.seq for r in rows] == list(range(1, 201))  # still published while connected
    assert box.stats.disk_errors >= 1
    with pytest.raises(sqlite3.OperationalError):
        box._db.execute("INSERT INTO outbox (device, seq, topic, payload, qos, ts) VALUES ('x', 1, 't', zeroblob(100000), 1, 0)")
    await box.close()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(
    st.tuples(st.just("append"), st.sampled_from("abc")),
    st.tuples(st.just("publish"), st.integers(1, 5)),
    st.tuples(st.just("reconnect"), st.none()),
    st.tuples(st.just("restart"), st.none()),
), max_size=40))
def test_outbox_behaves_like_its_model(tmp_path_factory: pytest.TempPathFactory, ops: list) -> None:
    """Model: a FIFO per device; append adds seq n+1; publish+ack removes the published
    rows; a reconnect or restart loses nothing unacknowledged; seq never repeats."""
    path = tmp_path_factory.mktemp("box") / "o.db"

    async def run() -> None:
        box = Outbox(path, Limits(replay_rate=1e9))
        await box.open()
        await box.session_started()
        model: dict[str, list[int]] = {}
        last: dict[str, int] = {}
        delivered: list[tuple[str, int]] = []
        for op, arg in ops:
            if op == "append":
                last[arg] = last.get(arg, 0) + 1
                model.setdefault(arg, []).append(last[arg])
                box.append(arg, f"t/{arg}", {})
            elif op == "publish":
                if not any(model.values()):
                    continue  # nothing owed: take() would (rightly) wait for the next append
                batch = await owed_take(box, arg)
                box.ack(batch)
                for row in batch:
                    delivered.append((row.device, row.seq))
                    if row.seq in model.get(row.device, []):
                        model[row.device].remove(row.seq)
            elif op == "reconnect":
                box.session_ended()
                await box.session_started()
            else:
                await box.close()
                box = Outbox(path, Limits(replay_rate=1e9))
                await box.open()
                await box.session_started()
        while any(model.values()):  # everything owed arrives (duplicates may follow: at least once)
            batch = await owed_take(box, 1000)
            box.ack(batch)
            for row in batch:
                if row.seq in model.get(row.device, []):
                    model[row.device].remove(row.seq)
                delivered.append((row.device, row.seq))
        assert all(not seqs for seqs in model.values()), model
        for device in last:
            assert box.last_seq(device) == last[device]
            # per device, every seq arrived, none beyond what was appended
            assert {s for d, s in delivered if d == device} == set(range(1, last[device] + 1))
        await box.close()

    asyncio.run(run())


async def test_a_row_stored_while_take_reads_the_backlog_is_handed_out_at_once(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", Limits(replay_rate=1e9))
    await box.open()
    await box.session_started()
    try:
        for n in range(1, 11):  # a race: ten tries make it all but certain
            box.append("a", "t", {"n": n})  # stored while take reads the (empty) backlog
            box.session_ended()
            await box.session_started()
            rows = await asyncio.wait_for(box.take(10), 3)
            assert rows[-1].seq == n
            box.ack(rows)
    finally:
        await box.close()
