"""The audit log: append-only JSON lines, each record chained to the one before by its hash.

Each record carries ``prev`` (the previous record's hash) and ``hash`` = SHA-256 of the
record's canonical JSON without ``hash``. Editing, removing or reordering any record breaks
the chain at that point, which ``citytwin audit verify`` reports with the line number.
Appends go through one thread and are flushed and fsynced per batch.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("citytwin.audit")

GENESIS = "0" * 64


def record_hash(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _last_hash(path: Path) -> str:
    if not path.exists() or path.stat().st_size == 0:
        return GENESIS
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - 65536))
        lines = [line for line in f.read().splitlines() if line.strip()]
    if not lines:
        return GENESIS
    try:
        return str(orjson.loads(lines[-1])["hash"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return GENESIS  # verify will report the broken tail; new records still chain


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit")
        self._prev = GENESIS
        self._pending: list[dict[str, Any]] = []
        self._flushing: asyncio.Task[None] | None = None
        # a write or fsync that failed: surfaced (error log, metric, /health), records kept
        self.failures = 0
        self.last_error: str | None = None
        self.on_failure: Callable[[], None] | None = None

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._prev = await asyncio.get_running_loop().run_in_executor(self._executor, _last_hash, self.path)

    def append(self, record: dict[str, Any]) -> None:
        """Chain and queue a record; it reaches the disk within one flush."""
        record = {**record, "prev": self._prev}
        record["hash"] = record_hash(record)
        self._prev = record["hash"]
        self._pending.append(record)
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            data = b"".join(orjson.dumps(r) + b"\n" for r in batch)
            try:
                await asyncio.get_running_loop().run_in_executor(self._executor, self._write, data)
            except OSError as exc:
                # keep the records (they are chained already) and retry with the next append
                self._pending[:0] = batch
                self.failures += 1
                self.last_error = f"{self.path}: {exc}"
                log.error("audit log: cannot write %d record(s) to %s: %s", len(batch), self.path, exc)
                if self.on_failure is not None:
                    self.on_failure()
                return
            if self.last_error is not None:
                log.info("audit log: writing again after %d failure(s)", self.failures)
                self.last_error = None

    def _write(self, data: bytes) -> None:
        with self.path.open("ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    async def close(self) -> None:
        try:
            if self._flushing is not None:
                await self._flushing
            await self._flush()
        finally:
            self._executor.shutdown(wait=True)
        if self._pending:
            raise OSError(f"{len(self._pending)} audit record(s) could not be written: {self.last_error}")


def read_records(path: Path) -> Iterator[tuple[int, dict[str, Any] | None, str]]:
    """(line number, record or None if unreadable, raw line)."""
    with path.open("rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                yield number, None, line.decode(errors="replace")
                continue
            yield number, record if isinstance(record, dict) else None, line.decode(errors="replace")


def verify(path: Path) -> tuple[int, list[str]]:
    """(records checked, problems); an empty problem list means the chain is intact."""
    problems: list[str] = []
    prev = GENESIS
    count = 0
    for number, record, _ in read_records(path):
        count += 1
        if record is None:
            problems.append(f"{path}:{number}: not a JSON record")
            prev = ""
            continue
        if record.get("prev") != prev:
            problems.append(f"{path}:{number}: chain broken: the record before it was removed, "
                            "reordered or edited (prev does not match)")
        if record.get("hash") != record_hash(record):
            problems.append(f"{path}:{number}: record edited (its hash does not match its content)")
        prev = str(record.get("hash", ""))
    return count, problems
