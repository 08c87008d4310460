"""Store-and-forward for reports and events: nothing is lost while the hub is away.

Every uplink message is written to SQLite (WAL) before it is published and deleted only
after the broker's PUBACK. Writes are group-committed on a thread of their own, so the
event loop never blocks and acquisition never waits for the hub or the disk. The per-device
sequence number is assigned in the same transaction as the row, so ``seq`` is contiguous
across restarts and crashes: a gap on the hub means a counted drop, never a silent loss.

Two lanes feed the hub link. *Live* rows, written while connected, go out at once.
The *backlog* (everything stored and unacknowledged when a session starts) is replayed in
order, in chunks read from disk, at ``replay_rate`` messages per second, flagged
``"replay": true``. The store is bounded by messages, bytes and age; beyond a bound the
oldest rows are dropped and every drop is counted per device and reported to ``on_drop``.
If the disk fails (full, read-only), messages are kept in memory (bounded the same way)
with a clear error, and the disk is retried.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("citytwin.outbox")

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT NOT NULL, seq INTEGER NOT NULL, topic TEXT NOT NULL,
    payload BLOB NOT NULL, qos INTEGER NOT NULL, ts INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS seqs (device TEXT PRIMARY KEY, seq INTEGER NOT NULL);
"""
REPLAY_CHUNK = 500


@dataclass(slots=True)
class Row:
    id: int | None  # None: kept in memory only (the disk failed)
    device: str
    seq: int
    topic: str
    payload: bytes
    qos: int
    replay: bool = False
    points: int = 0  # properties carried, for metrics

    def wire_payload(self) -> bytes:
        if self.replay:
            return b'{"replay":true,' + self.payload[1:]
        return self.payload


@dataclass(slots=True)
class Limits:
    max_messages: int = 1_000_000
    max_bytes: int = 512 * 1024 * 1024
    max_age: float = 7 * 24 * 3600.0
    replay_rate: float = 2000.0


@dataclass(slots=True)
class Stats:
    dropped: int = 0
    dropped_by_device: dict[str, int] = field(default_factory=dict)
    replayed: int = 0
    disk_errors: int = 0


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Outbox:
    def __init__(
        self,
        path: Path,
        limits: Limits,
        on_drop: Callable[[dict[str, int]], None] | None = None,
    ) -> None:
        self.path = path
        self.limits = limits
        self.on_drop = on_drop
        # told once a session's backlog has been sent: (messages, seconds)
        self.on_replayed: Callable[[int, float], None] | None = None
        self.stats = Stats()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
        self._db: sqlite3.Connection | None = None
        # touched only on the outbox thread (after open):
        self._db_depth = 0
        self._db_bytes = 0
        self._oldest_ts: int | None = None
        self._dropped_upto = 0  # every stored row with an id up to this was dropped
        # touched only on the event loop:
        self._seq: dict[str, int] = {}
        self._pending: list[tuple[str, str, dict[str, Any], int, int]] = []
        self._acked: list[int] = []
        self._memory_only: collections.deque[Row] = collections.deque()
        self._live: collections.deque[Row] = collections.deque()
        self._backlog: collections.deque[Row] = collections.deque()
        self._connected = False
        self._live_after = 0  # stored rows with a larger id are live in this session
        self._backlog_after = 0  # last backlog id read from disk
        self._backlog_total = 0
        self._replay_started = 0.0
        self._replayed_session = 0
        self._tokens = 0.0
        self._last_refill = 0.0
        self._disk_ok = True
        self._last_disk_try = 0.0
        self._wake_writer = asyncio.Event()
        self._ready = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False

    # --- lifecycle ---------------------------------------------------------------------
    async def open(self) -> None:
        await self._run(self._open)
        self._writer = asyncio.create_task(self._write_loop(), name="outbox-writer")

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(SCHEMA)
        self._seq = dict(db.execute("SELECT device, seq FROM seqs"))
        depth, size, oldest = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0), MIN(ts) FROM outbox"
        ).fetchone()
        self._db_depth, self._db_bytes, self._oldest_ts = depth, size, oldest
        self._db = db
        if depth:
            log.info("outbox: %d message(s) (%d bytes) from before the restart await delivery", depth, size)

    async def close(self) -> None:
        """Store what is pending and delete what was acknowledged, then close."""
        # let the writer finish its batch (cancelling it would abandon a store in flight)
        self._closing = True
        self._wake_writer.set()
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
        await self._flush()
        if self._db is not None:
            db, self._db = self._db, None
            await self._run(db.close)
        self._executor.shutdown(wait=True)
        if self._memory_only:
            log.error("outbox: %d message(s) held in memory only (the disk failed) are lost at shutdown",
                      len(self._memory_only))

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    @property
    def depth(self) -> int:
        return self._db_depth + len(self._memory_only)

    @property
    def bytes(self) -> int:
        return self._db_bytes + sum(len(r.payload) for r in self._memory_only)

    @property
    def oldest_age(self) -> float:
        return 0.0 if self._oldest_ts is None else max(0.0, (_now_ms() - self._oldest_ts) / 1000)

    def last_seq(self, device: str) -> int:
        return self._seq.get(device, 0)

    # --- producer side -----------------------------------------------------------------
    def append(self, device: str, topic: str, payload: dict[str, Any], qos: int = 1, points: int = 0) -> None:
        """Queue a message; its ``seq`` is assigned when it is stored. Never blocks."""
        self._pending.append((device, topic, payload, qos, points))
        self._wake_writer.set()

    async def _write_loop(self) -> None:
        while not self._closing:
            await self._wake_writer.wait()
            self._wake_writer.clear()
            try:
                await self._flush()
            except Exception:
                log.exception("outbox writer failed; retrying")
                await asyncio.sleep(0.5)
                self._wake_writer.set()

    async def _flush(self) -> None:
        batch, self._pending = self._pending, []
        acked, self._acked = self._acked, []
        rows = self._number(batch)
        if self._memory_only and self._disk_ok is False and time.monotonic() - self._last_disk_try > 5.0:
            rows = [*self._memory_only, *rows]  # retry the disk with what waits in memory
            retrying = len(self._memory_only)
            self._memory_only.clear()
        else:
            retrying = 0
        if not rows and not acked:
            return
        if not self._disk_ok and not retrying:
            self._keep_in_memory(rows, acked, None)
            return
        self._last_disk_try = time.monotonic()
        try:
            dropped = await self._run(self._store, rows, acked)
        except sqlite3.Error as exc:
            self._keep_in_memory(rows, acked, exc)
            return
        if not self._disk_ok:
            log.warning("outbox: %s is writable again; stored %d message(s) held in memory", self.path, retrying)
            self._disk_ok = True
        if self._connected:
            self._live.extend(r for r in rows if r.id is not None and r.id > self._live_after)
        if dropped:
            self._count_drops(dropped)
        if rows:
            self._ready.set()

    def _number(self, batch: list[tuple[str, str, dict[str, Any], int, int]]) -> list[Row]:
        rows = []
        seqs = self._seq
        for device, topic, payload, qos, points in batch:
            seq = seqs.get(device, 0) + 1
            seqs[device] = seq
            rows.append(Row(None, device, seq, topic, orjson.dumps({"seq": seq, **payload}), qos, False, points))
        return rows

    def _keep_in_memory(self, rows: list[Row], acked: list[int], exc: sqlite3.Error | None) -> None:
        self._acked[:0] = acked
        if exc is not None:
            self.stats.disk_errors += 1
            if self._disk_ok:
                log.error("outbox: cannot write %s (%s): keeping messages in memory, at most %d; "
                          "they are lost if the gateway stops before the disk recovers",
                          self.path, exc, self.limits.max_messages)
            self._disk_ok = False
        for row in rows:
            row.id = None
        self._memory_only.extend(rows)
        if self._connected:
            self._live.extend(rows)
        dropped: dict[str, int] = {}
        while len(self._memory_only) > self.limits.max_messages:
            row = self._memory_only.popleft()
            dropped[row.device] = dropped.get(row.device, 0) + 1
        if dropped:
            self._count_drops(dropped)
        if rows:
            self._ready.set()

    def _store(self, rows: list[Row], acked: list[int]) -> dict[str, int]:
        db = self._db
        assert db is not None
        now = _now_ms()
        depth, size = self._db_depth, self._db_bytes
        db.execute("BEGIN IMMEDIATE")
        try:
            for start in range(0, len(acked), 900):
                chunk = acked[start:start + 900]
                marks = ",".join("?" * len(chunk))
                count, removed = db.execute(
                    f"SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox WHERE id IN ({marks})", chunk
                ).fetchone()
                db.execute(f"DELETE FROM outbox WHERE id IN ({marks})", chunk)
                depth, size = depth - count, size - removed
            for row in rows:
                row.id = db.execute(
                    "INSERT INTO outbox (device, seq, topic, payload, qos, ts) VALUES (?, ?, ?, ?, ?, ?)",
                    (row.device, row.seq, row.topic, row.payload, row.qos, now),
                ).lastrowid
                depth, size = depth + 1, size + len(row.payload)
            if rows:
                last = {row.device: row.seq for row in rows}
                db.executemany("INSERT OR REPLACE INTO seqs VALUES (?, ?)", list(last.items()))
            dropped, depth, size, dropped_upto = self._enforce_limits(db, now, depth, size)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            for row in rows:
                row.id = None
            raise
        self._db_depth, self._db_bytes = depth, size
        self._dropped_upto = max(self._dropped_upto, dropped_upto)
        if self._oldest_ts is None and rows:
            self._oldest_ts = now
        if dropped or depth == 0:
            self._oldest_ts = db.execute("SELECT MIN(ts) FROM outbox").fetchone()[0]
        return dropped

    def _enforce_limits(
        self, db: sqlite3.Connection, now: int, depth: int, size: int
    ) -> tuple[dict[str, int], int, int, int]:
        limits = self.limits
        dropped: dict[str, int] = {}
        upto = 0
        cutoff = now - int(limits.max_age * 1000)
        if self._oldest_ts is not None and self._oldest_ts < cutoff:
            for device, count, removed, last in db.execute(
                "SELECT device, COUNT(*), SUM(LENGTH(payload)), MAX(id) FROM outbox WHERE ts < ? GROUP BY device",
                (cutoff,),
            ).fetchall():
                dropped[device] = dropped.get(device, 0) + count
                depth, size, upto = depth - count, size - removed, max(upto, last)
            db.execute("DELETE FROM outbox WHERE ts < ?", (cutoff,))
        while depth > limits.max_messages or size > limits.max_bytes:
            excess = max(depth - limits.max_messages, 1)
            victims = db.execute(
                "SELECT id, device, LENGTH(payload) FROM outbox ORDER BY id LIMIT ?", (min(excess, 10_000),)
            ).fetchall()
            if not victims:
                break
            for _, device, removed in victims:
                dropped[device] = dropped.get(device, 0) + 1
                depth, size = depth - 1, size - removed
            upto = max(upto, victims[-1][0])
            db.execute("DELETE FROM outbox WHERE id <= ?", (victims[-1][0],))
        return dropped, depth, size, upto

    def _count_drops(self, dropped: dict[str, int]) -> None:
        total = sum(dropped.values())
        self.stats.dropped += total
        for device, count in dropped.items():
            self.stats.dropped_by_device[device] = self.stats.dropped_by_device.get(device, 0) + count
        log.warning("outbox full: dropped the %d oldest message(s) (%s); %d dropped in all",
                    total, ", ".join(f"{d}: {n}" for d, n in sorted(dropped.items())), self.stats.dropped)
        if self.on_drop is not None:
            self.on_drop(dropped)

    # --- publisher side ----------------------------------------------------------------
    async def session_started(self) -> None:
        """The hub link connected: what is stored now is backlog, what comes next is live."""
        until, total = await self._run(self._backlog_bounds)
        self._live.clear()
        self._live.extend(self._memory_only)
        self._backlog.clear()
        self._live_after = until
        self._backlog_after = 0
        self._backlog_total = total
        self._replayed_session = 0
        self._replay_started = self._last_refill = time.monotonic()
        self._tokens = 0.0
        self._connected = True
        if total:
            log.info("replaying a backlog of %d message(s) at up to %.0f/s", total, self.limits.replay_rate)
        self._ready.set()

    def _backlog_bounds(self) -> tuple[int, int]:
        db = self._db
        assert db is not None
        until, total = db.execute("SELECT COALESCE(MAX(id), 0), COUNT(*) FROM outbox").fetchone()
        return int(until), int(total)

    def session_ended(self) -> None:
        self._connected = False
        self._live.clear()
        self._backlog.clear()

    def ack(self, rows: list[Row]) -> None:
        """The broker acknowledged these rows: delete them (batched with the next write)."""
        ids = [r.id for r in rows if r.id is not None]
        if len(ids) != len(rows):
            acked = {id(r) for r in rows if r.id is None}
            self._memory_only = collections.deque(r for r in self._memory_only if id(r) not in acked)
        if ids:
            self._acked.extend(ids)
            self._wake_writer.set()

    def backlog_pending(self) -> bool:
        return self._connected and (bool(self._backlog) or self._backlog_after < self._live_after)

    async def take(self, limit: int) -> list[Row]:
        """Up to ``limit`` rows to publish next: live rows first, the backlog at the replay rate."""
        while True:
            batch: list[Row] = []
            upto = self._dropped_upto
            while self._live and len(batch) < limit:
                row = self._live.popleft()
                if row.id is None or row.id > upto:
                    batch.append(row)
            if len(batch) < limit and self.backlog_pending():
                batch.extend(await self._take_backlog(limit - len(batch)))
            if batch:
                return batch
            self._ready.clear()
            if self.backlog_pending():
                await asyncio.sleep(max(0.001, 1.0 / self.limits.replay_rate))
                continue
            await self._ready.wait()

    async def _take_backlog(self, room: int) -> list[Row]:
        now = time.monotonic()
        rate = self.limits.replay_rate
        self._tokens = min(max(rate, 1.0), self._tokens + (now - self._last_refill) * rate)
        self._last_refill = now
        allowed = min(room, int(self._tokens))
        if allowed <= 0:
            return []
        if not self._backlog:
            after = max(self._backlog_after, self._dropped_upto)
            chunk: list[Row] = await self._run(self._read_backlog, after, self._live_after)
            if not chunk:
                self._backlog_after = self._live_after
                self._finish_replay()
                return []
            self._backlog.extend(chunk)
            self._backlog_after = chunk[-1].id or after
        out: list[Row] = []
        upto = self._dropped_upto
        while self._backlog and len(out) < allowed:
            row = self._backlog.popleft()
            if row.id is not None and row.id > upto:
                out.append(row)
        self._tokens -= len(out)
        before = self._replayed_session
        self._replayed_session += len(out)
        self.stats.replayed += len(out)
        if self._replayed_session // 10_000 > before // 10_000:
            elapsed = time.monotonic() - self._replay_started
            log.info("replaying backlog: %d of %d message(s) sent (%.0f/s)",
                     self._replayed_session, self._backlog_total, self._replayed_session / max(elapsed, 1e-6))
        if not self._backlog and self._backlog_after >= self._live_after:
            self._finish_replay()
        return out

    def _finish_replay(self) -> None:
        if self._backlog_total:
            elapsed = time.monotonic() - self._replay_started
            log.info("backlog replayed: %d message(s) in %.1f s", self._replayed_session, elapsed)
            self._backlog_total = 0
            if self.on_replayed is not None and self._replayed_session:
                self.on_replayed(self._replayed_session, elapsed)

    def _read_backlog(self, after: int, until: int) -> list[Row]:
        db = self._db
        assert db is not None
        return [
            Row(rid, device, seq, topic, payload, qos, True)
            for rid, device, seq, topic, payload, qos in db.execute(
                "SELECT id, device, seq, topic, payload, qos FROM outbox WHERE id > ? AND id <= ? "
                "ORDER BY id LIMIT ?", (after, until, REPLAY_CHUNK),
            )
        ]

    @property
    def idle(self) -> bool:
        """Nothing waits to be written or published in this session."""
        return not self._pending and not self._live and not self.backlog_pending() and not self._acked
