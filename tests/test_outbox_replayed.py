"""The documented ``backlog_replayed`` gateway event: the outbox says when a backlog is done."""

from __future__ import annotations

from pathlib import Path

from citytwin.gateway.outbox import Limits, Outbox


async def test_the_outbox_reports_a_replayed_backlog_once(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", Limits())
    await box.open()
    for i in range(7):
        box.append("a", "t/a", {"n": i})
    await box.close()
    box = Outbox(tmp_path / "o.db", Limits(replay_rate=1e6))
    replayed: list[tuple[int, float]] = []
    box.on_replayed = lambda messages, seconds: replayed.append((messages, seconds))
    await box.open()
    await box.session_started()
    sent = 0
    while not replayed:
        batch = await box.take(100)
        sent += len(batch)
        box.ack(batch)
    assert sent == 7 and replayed[0][0] == 7 and replayed[0][1] >= 0
    box.append("a", "t/a", {"n": 7})  # live data afterwards does not announce anything
    box.ack(await box.take(100))
    assert len(replayed) == 1
    await box.close()
