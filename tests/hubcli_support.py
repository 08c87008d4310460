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


async def hub_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> Result:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "citytwin.gateway.cli", "hub", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())
