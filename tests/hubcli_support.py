"""Running ``citytwin hub`` as a real subprocess without blocking the test's event loop.

The simulator runs in the test's loop, so the CLI must be awaited, never run with a blocking
``subprocess.run`` (the station would stop answering the gateway meanwhile).
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from typing import Any

import orjson


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return orjson.loads(self.out)

    def lines(self) -> list[Any]:
        return [orjson.loads(line) for line in self.out.splitlines() if line.strip()]


class Running:
    """A ``citytwin hub`` command still running; ``out`` holds its stdout lines as they come
    (the CLI flushes every line), so a test can wait for a line instead of sleeping."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.out: list[str] = []
        assert proc.stdout is not None and proc.stderr is not None
        self._out = asyncio.create_task(self._read(proc.stdout))
        self._err = asyncio.create_task(proc.stderr.read())

    async def _read(self, stream: asyncio.StreamReader) -> None:
        async for line in stream:
            self.out.append(line.decode())

    def lines(self) -> list[Any]:
        return [orjson.loads(line) for line in self.out if line.strip()]

    async def result(self, timeout: float = 60) -> Result:
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise
        err = await self._err
        await self._out
        assert self.proc.returncode is not None
        return Result(self.proc.returncode, "".join(self.out), err.decode())


async def start_hub_cli(*args: str, env: dict[str, str] | None = None) -> Running:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "citytwin.gateway.cli", "hub", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    return Running(proc)


async def hub_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> Result:
    return await (await start_hub_cli(*args, env=env)).result(timeout)
