"""Twin persistence in SQLite (WAL), on a thread of its own so the event loop never blocks.

Twins are written in batches: the gateway flushes dirty twins every ``flush_interval``
seconds and at shutdown. A crash can therefore lose the last interval of twin history; so
that versions never repeat after one, the store records whether the last run ended cleanly,
and after an unclean end every version jumps by ``CRASH_MARGIN`` (far more changes than one
flush interval can hold). Sequence numbers need no such margin: the outbox stores them in
the same transaction as the messages that carry them.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

CRASH_MARGIN = 1_000_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS twins (device TEXT PRIMARY KEY, doc BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class TwinStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="twin-store")
        self._db: sqlite3.Connection | None = None
        self.previous_run_clean = True

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def open(self) -> dict[str, dict[str, Any]]:
        """Open the database and return every stored twin snapshot, counters already advanced."""
        return await self._run(self._open)  # type: ignore[no-any-return]

    def _open(self) -> dict[str, dict[str, Any]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(SCHEMA)
        row = db.execute("SELECT value FROM meta WHERE key='clean'").fetchone()
        self.previous_run_clean = row is None or row[0] == "1"
        db.execute("INSERT OR REPLACE INTO meta VALUES ('clean', '0')")
        self._db = db
        twins: dict[str, dict[str, Any]] = {}
        for device, blob in db.execute("SELECT device, doc FROM twins"):
            doc = orjson.loads(blob)
            if not self.previous_run_clean:
                doc["version"] = int(doc.get("version", 0)) + CRASH_MARGIN
            twins[device] = doc
        if not self.previous_run_clean and twins:
            # persist the advanced counters now, so a second crash cannot reuse them
            self._save([(d, orjson.dumps(doc)) for d, doc in twins.items()])
        return twins

    async def save(self, rows: list[tuple[str, bytes]]) -> float:
        """Persist (device, encoded twin snapshot) rows in one transaction; the CPU seconds it took
        on the store's thread (the caller paces its work by them)."""
        if not rows:
            return 0.0
        spent: float = await self._run(self._save, rows)
        return spent

    def _save(self, rows: list[tuple[str, bytes]]) -> float:
        assert self._db is not None
        started = time.thread_time()
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO twins VALUES (?, ?)", rows)
        return time.thread_time() - started

    async def close(self) -> None:
        """Mark the run as cleanly ended and close; call after the last save."""
        if self._db is not None:
            await self._run(self._close)
        self._executor.shutdown(wait=True)

    def _close(self) -> None:
        assert self._db is not None
        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('clean', '1')")
        self._db.close()
        self._db = None
