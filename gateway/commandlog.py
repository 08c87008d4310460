"""The durable record of every command id: nothing runs twice, nothing runs late after a crash.

A command's id is committed (fsync) as *executing* before anything touches the device and
updated with its reply when it ends. The same id again gets the stored reply back. Ids still
*executing* when the gateway starts belong to a run that died mid-command: their effect on the
device cannot be known, so they are closed as ``unknown`` and never re-executed. Executed
commands also answer rate interlocks ("at most 6 starts per hour").
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

SCHEMA = """
CREATE TABLE IF NOT EXISTS commands (
    id TEXT NOT NULL, device TEXT NOT NULL, kind TEXT NOT NULL, target TEXT NOT NULL,
    inputs BLOB NOT NULL, state TEXT NOT NULL, reply BLOB, reply_to TEXT, correlation BLOB,
    received INTEGER NOT NULL, finished INTEGER,
    PRIMARY KEY (device, id)
);
CREATE INDEX IF NOT EXISTS commands_recent ON commands (device, target, finished);
"""


@dataclass(slots=True)
class Interrupted:
    """A command that was executing when the previous run ended."""

    id: str
    device: str
    target: str
    reply_to: str | None
    correlation: bytes | None


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class CommandLog:
    def __init__(self, path: Path, retention: float = 7 * 24 * 3600.0) -> None:
        self.path = path
        self.retention = retention
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="commands")
        self._db: sqlite3.Connection | None = None

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def open(self) -> list[Interrupted]:
        """Open, prune old records, and close interrupted commands as ``unknown``."""
        return await self._run(self._open)  # type: ignore[no-any-return]

    def _open(self) -> list[Interrupted]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # a recorded id must survive power loss
        db.executescript(SCHEMA)
        self._db = db
        now = _now_ms()
        db.execute("DELETE FROM commands WHERE finished IS NOT NULL AND finished < ?",
                   (now - int(self.retention * 1000),))
        interrupted = [
            Interrupted(cid, device, target, reply_to, correlation)
            for cid, device, target, reply_to, correlation in db.execute(
                "SELECT id, device, target, reply_to, correlation FROM commands WHERE state = 'executing'"
            )
        ]
        return interrupted

    async def begin(
        self, device: str, command_id: str, kind: str, target: str, inputs: dict[str, Any],
        reply_to: str | None, correlation: bytes | None,
    ) -> dict[str, Any] | None:
        """Record the id before execution; returns the stored reply if the id was seen before."""
        return await self._run(  # type: ignore[no-any-return]
            self._begin, device, command_id, kind, target, orjson.dumps(inputs), reply_to, correlation
        )

    def _begin(
        self, device: str, command_id: str, kind: str, target: str, inputs: bytes,
        reply_to: str | None, correlation: bytes | None,
    ) -> dict[str, Any] | None:
        db = self._db
        assert db is not None
        row = db.execute("SELECT state, reply FROM commands WHERE device = ? AND id = ?",
                         (device, command_id)).fetchone()
        if row is not None:
            _, reply = row
            if reply is not None:
                return orjson.loads(reply)  # type: ignore[no-any-return]
            return {"status": "unknown", "error": {"code": "in_progress",
                    "message": "a command with this id is still executing"}}
        db.execute(
            "INSERT INTO commands (id, device, kind, target, inputs, state, reply_to, correlation, received) "
            "VALUES (?, ?, ?, ?, ?, 'executing', ?, ?, ?)",
            (command_id, device, kind, target, inputs, reply_to, correlation, _now_ms()),
        )
        return None

    async def finish(self, device: str, command_id: str, reply: dict[str, Any]) -> None:
        await self._run(self._finish, device, command_id, orjson.dumps(reply))

    def _finish(self, device: str, command_id: str, reply: bytes) -> None:
        db = self._db
        assert db is not None
        db.execute("UPDATE commands SET state = 'done', reply = ?, finished = ? WHERE device = ? AND id = ?",
                   (reply, _now_ms(), device, command_id))

    async def executed_since(self, device: str, targets: list[str], since_ms: int) -> list[tuple[int, dict[str, Any]]]:
        """(finished ms, inputs) of succeeded commands to these targets since a time."""
        return await self._run(self._executed_since, device, targets, since_ms)  # type: ignore[no-any-return]

    def _executed_since(self, device: str, targets: list[str], since_ms: int) -> list[tuple[int, dict[str, Any]]]:
        db = self._db
        assert db is not None
        marks = ",".join("?" * len(targets))
        rows = db.execute(
            f"SELECT finished, inputs, reply FROM commands WHERE device = ? AND target IN ({marks}) "
            "AND finished >= ? AND state = 'done' ORDER BY finished",
            (device, *targets, since_ms),
        ).fetchall()
        out = []
        for finished, inputs, reply in rows:
            if orjson.loads(reply).get("status") in ("succeeded", "accepted"):
                out.append((int(finished), orjson.loads(inputs)))
        return out

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await self._run(db.close)
        self._executor.shutdown(wait=True)
