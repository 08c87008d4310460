"""Store-and-forward for reports and events: nothing is lost while the hub is away.

Every uplink message is written to SQLite (WAL) before it is published and deleted only
after the broker's PUBACK. Writes are group-committed on a thread of their own, so the
event loop never blocks and acquisition never waits for the hub or the disk. The per-device
sequence number is assigned in the same transaction as the row, so ``seq`` is contiguous
across restarts and crashes: a gap on the hub means a counted drop, never a silent loss.

Two lanes feed the hub link. *Live* rows, written while connected, go out at once; the
live lane holds at most ``live_window_bytes`` in memory, and when the hub link falls further
behind than that, the rest is streamed from SQLite in order, as the backlog is. The
*backlog* (everything stored and unacknowledged when a session starts) is replayed in
order, in chunks read from disk, at ``replay_rate`` messages per second, flagged
``"replay": true``. The store is bounded by messages, bytes and age; beyond a bound the
oldest rows are dropped and every drop is counted per device and reported to ``on_drop``.
If the disk fails (full, read-only), messages are kept in memory (bounded the same way)
with a clear error, and the disk is retried.

Memory is a function of the configuration, not of how far behind the box is (issue 13): the
write queue (reports serialized, not yet stored) and the live window are bounded in bytes.
``congestion`` says when either is full; the gateway's poll gate then holds the next polls
(``wait_room``) instead of letting the queues grow: what is shed is a poll, never a stored
message, and ``seq`` stays contiguous.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from citytwin.gateway.jsonbytes import dumps

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
# (device, topic, payload serialized without its seq, qos, points): a report waiting to be stored
Pending = tuple[str, str, bytes, int, int]
LIVE_CHUNK = 64  # live rows read back from disk at a time once the live window overflowed


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
    write_queue_bytes: int = 1024 * 1024  # serialized, not yet stored; beyond it polls wait
    # live rows kept in memory; the rest stream from disk and polls wait: small, because what
    # waits here is latency (256 kB is ~170 reports of 100 properties)
    live_window_bytes: int = 256 * 1024


@dataclass(slots=True)
class Stats:
    dropped: int = 0
    dropped_by_device: dict[str, int] = field(default_factory=dict)
    replayed: int = 0
    disk_errors: int = 0


def _id_chunks(ids: list[int]) -> Iterator[tuple[list[int], str]]:
    """``ids`` in chunks an ``IN (...)`` can take (SQLite allows 999 variables a statement),
    each with its placeholders."""
    for start in range(0, len(ids), 900):
        chunk = ids[start:start + 900]
        yield chunk, ",".join("?" * len(chunk))


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
        # every stored row with an id up to this was dropped, except rows handed to the hub link
        # (``_handed``): those are never victims, so a count of drops is a count of lost messages
        self._dropped_upto = 0
        # ids handed to the hub link and not yet deleted after their acknowledgement; written on
        # the event loop, read by the writer thread, both under ``_drop_lock``
        self._handed: set[int] = set()
        self._drop_lock = threading.Lock()
        # touched only on the event loop:
        self._seq: dict[str, int] = {}
        self._pending: list[Pending] = []
        self._pending_bytes = 0
        self._acked: list[int] = []
        self._memory_only: collections.deque[Row] = collections.deque()
        self._live: collections.deque[Row] = collections.deque()
        self._live_bytes = 0
        self._live_cursor = 0  # largest stored id put in the live lane (from memory or disk)
        self._live_spilled = False  # the window overflowed: live rows past the cursor wait on disk
        self._room = asyncio.Event()
        self._room.set()
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

    @property
    def pending(self) -> tuple[int, int]:
        """(messages, bytes) serialized and waiting to be stored."""
        return len(self._pending), self._pending_bytes

    @property
    def live(self) -> tuple[int, int, bool]:
        """(messages, bytes) in the live window, and whether live rows also wait on disk."""
        return len(self._live), self._live_bytes, self._live_spilled

    def congestion(self) -> str | None:
        """Why new data should wait (a bounded queue is full), or None."""
        limits = self.limits
        if self._pending_bytes >= limits.write_queue_bytes:
            return (f"outbox write queue full ({self._pending_bytes} of {limits.write_queue_bytes} bytes): "
                    "the disk is slower than the data")
        if self._connected and self._live_spilled:
            return (f"hub link behind: the live window ({limits.live_window_bytes} bytes) is full "
                    "and live messages are streamed from disk")
        return None

    async def wait_room(self) -> None:
        """Return once no bounded queue is full (at once when none is)."""
        while self.congestion() is not None:
            self._room.clear()
            await self._room.wait()

    def _check_room(self) -> None:
        if not self._room.is_set() and self.congestion() is None:
            self._room.set()

    # --- producer side -----------------------------------------------------------------
    def append(self, device: str, topic: str, payload: dict[str, Any], qos: int = 1, points: int = 0) -> None:
        """Queue a message; its ``seq`` is assigned when it is stored. Never blocks: the poll gate
        waits for room (``wait_room``) before the polls that produce messages."""
        data = dumps(payload)  # kept until stored and published: without orjson's spare room
        self._pending.append((device, topic, data, qos, points))
        self._pending_bytes += len(data)
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
        self._pending_bytes = 0
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
        if acked:
            with self._drop_lock:
                self._handed.difference_update(acked)
        if not self._disk_ok:
            log.warning("outbox: %s is writable again; stored %d message(s) held in memory", self.path, retrying)
            self._disk_ok = True
        if self._connected:
            self._to_live(rows)
        self._check_room()
        if dropped:
            self._count_drops(dropped)
        if rows:
            self._ready.set()

    def _number(self, batch: list[Pending]) -> list[Row]:
        rows = []
        seqs = self._seq
        for device, topic, data, qos, points in batch:
            seq = seqs.get(device, 0) + 1
            seqs[device] = seq
            # "seq" first, spliced into the object serialized at append time
            payload = b'{"seq":%d,%s' % (seq, data[1:]) if len(data) > 2 else b'{"seq":%d}' % seq
            rows.append(Row(None, device, seq, topic, payload, qos, False, points))
        return rows

    def _to_live(self, rows: list[Row]) -> None:
        """Stored rows of this session join the live lane while its window has room."""
        window = self.limits.live_window_bytes
        live = self._live
        for row in rows:
            if row.id is None or row.id <= self._live_cursor:
                continue  # not stored, or already taken from disk into the lane
            size = len(row.payload)
            if self._live_spilled or self._live_bytes + size > window:
                self._live_spilled = True  # it stays on disk; take() streams it in order
                continue
            live.append(row)
            self._live_bytes += size
            self._live_cursor = row.id

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
            self._live_bytes += sum(len(r.payload) for r in rows)
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
            for chunk, marks in _id_chunks(acked):
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
            dropped, depth, size = self._enforce_limits(db, now, depth, size)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            for row in rows:
                row.id = None
            raise
        self._db_depth, self._db_bytes = depth, size
        if self._oldest_ts is None and rows:
            self._oldest_ts = now
        if dropped or depth == 0:
            self._oldest_ts = db.execute("SELECT MIN(ts) FROM outbox").fetchone()[0]
        return dropped

    def _enforce_limits(
        self, db: sqlite3.Connection, now: int, depth: int, size: int
    ) -> tuple[dict[str, int], int, int]:
        """Delete the oldest rows past the age, count and byte bounds, except rows in flight.

        A row the hub link holds may reach the hub yet: counting it as dropped would report a
        loss that did not happen. Victims are chosen and ``_dropped_upto`` raised under the lock
        ``take`` hands rows out under, so a row is either handed out or dropped, never both.
        """
        limits = self.limits
        dropped: dict[str, int] = {}
        cutoff = now - int(limits.max_age * 1000)
        expired = self._oldest_ts is not None and self._oldest_ts < cutoff
        if not expired and depth <= limits.max_messages and size <= limits.max_bytes:
            return dropped, depth, size
        with self._drop_lock:
            handed = self._handed
            victims: list[int] = []
            if expired:
                for rid, device, removed in db.execute(
                    "SELECT id, device, LENGTH(payload) FROM outbox WHERE ts < ? ORDER BY id", (cutoff,)
                ):
                    if rid not in handed:
                        victims.append(rid)
                        dropped[device] = dropped.get(device, 0) + 1
                        depth, size = depth - 1, size - removed
            after = victims[-1] if victims else 0
            while depth > limits.max_messages or size > limits.max_bytes:
                excess = max(depth - limits.max_messages, 1)
                rows = db.execute(
                    "SELECT id, device, LENGTH(payload) FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                    (after, min(excess, 10_000) + len(handed)),
                ).fetchall()
                if not rows:
                    break
                for rid, device, removed in rows:
                    if rid in handed:
                        continue
                    victims.append(rid)
                    dropped[device] = dropped.get(device, 0) + 1
                    depth, size = depth - 1, size - removed
                    if depth <= limits.max_messages and size <= limits.max_bytes:
                        break
                after = rows[-1][0]
            for chunk, marks in _id_chunks(victims):
                db.execute(f"DELETE FROM outbox WHERE id IN ({marks})", chunk)
            if victims:
                self._dropped_upto = max(self._dropped_upto, victims[-1])
        return dropped, depth, size

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
        self._live_bytes = sum(len(r.payload) for r in self._memory_only)
        self._live_cursor = until
        self._live_spilled = False
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
        until, total, first = db.execute("SELECT COALESCE(MAX(id), 0), COUNT(*), MIN(id) FROM outbox").fetchone()
        if first is not None:
            with self._drop_lock:  # rows in flight last session survive below the mark: read them again
                self._dropped_upto = min(self._dropped_upto, int(first) - 1)
        return int(until), int(total)

    def session_ended(self) -> None:
        self._connected = False
        with self._drop_lock:  # what was in flight and not acknowledged is backlog again
            self._handed.intersection_update(self._acked)
        self._live.clear()
        self._live_bytes = 0
        self._live_spilled = False  # what waits on disk is the next session's backlog
        self._backlog.clear()
        self._check_room()

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
            # cleared before looking, not after: a row signalled while this reads from disk
            # (the awaits below) must wake the wait at the end, not wait for the next append
            self._ready.clear()
            batch: list[Row] = []
            upto = self._dropped_upto
            while len(batch) < limit:
                if not self._live:
                    if not (self._connected and self._live_spilled):
                        break
                    await self._stream_live()
                    upto = self._dropped_upto
                    if not self._live:
                        break
                row = self._live.popleft()
                self._live_bytes -= len(row.payload)
                if row.id is None or row.id > upto:
                    batch.append(row)
            if len(batch) < limit and self.backlog_pending():
                batch.extend(await self._take_backlog(limit - len(batch)))
            if batch:
                batch = self._hand_out(batch)
            if batch:
                return batch
            if self.backlog_pending():
                await asyncio.sleep(max(0.001, 1.0 / self.limits.replay_rate))
                continue
            await self._ready.wait()

    def _hand_out(self, batch: list[Row]) -> list[Row]:
        """Rows dropped while ``take`` read are left out; the rest are safe from the bounds."""
        with self._drop_lock:
            upto = self._dropped_upto
            batch = [row for row in batch if row.id is None or row.id > upto]
            self._handed.update(row.id for row in batch if row.id is not None)
        return batch

    async def _stream_live(self) -> None:
        """The live window overflowed: read the next live rows from disk, in order."""
        after = max(self._live_cursor, self._dropped_upto)
        chunk: list[Row] = await self._run(self._read_rows, after, None, LIVE_CHUNK, False)
        if not self._connected:
            return  # the session ended meanwhile: these rows are the next session's backlog
        read = len(chunk)
        chunk = [r for r in chunk if r.id is not None and r.id > self._live_cursor]
        kept, size, window = 0, self._live_bytes, self.limits.live_window_bytes
        for row in chunk:  # what fits the window (at least one row); the rest is read again later
            if kept and size + len(row.payload) > window:
                break
            size += len(row.payload)
            kept += 1
        if kept:
            self._live.extend(chunk[:kept])
            self._live_bytes = size
            self._live_cursor = chunk[kept - 1].id or self._live_cursor
        if read < LIVE_CHUNK and kept == len(chunk):
            # caught up with the disk: rows stored from now on (their store completes after this
            # read, on the same single writer thread) join the lane from memory again
            self._live_spilled = False
            self._check_room()

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
            chunk: list[Row] = await self._run(self._read_rows, after, self._live_after, REPLAY_CHUNK, True)
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

    def _read_rows(self, after: int, until: int | None, limit: int, replay: bool) -> list[Row]:
        db = self._db
        assert db is not None
        bound = (1 << 62) if until is None else until
        return [
            Row(rid, device, seq, topic, payload, qos, replay)
            for rid, device, seq, topic, payload, qos in db.execute(
                "SELECT id, device, seq, topic, payload, qos FROM outbox WHERE id > ? AND id <= ? "
                "ORDER BY id LIMIT ?", (after, bound, limit),
            )
        ]

    @property
    def idle(self) -> bool:
        """Nothing waits to be written or published in this session."""
        return (not self._pending and not self._live and not self._live_spilled and not self.backlog_pending()
                and not self._acked)
