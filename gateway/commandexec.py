"""Carrying out a checked command through the device's runner, and what its answer says.

The runner is the one door to the device (its lock, its timeouts, its online state); this
module only turns the runner's outcome into the reply's status: ``succeeded`` with output,
``failed`` (offline: nothing was sent; or the device refused), or ``timeout`` (the effect is
unknown).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from citytwin.drivers.errors import DriverError
from citytwin.gateway.commandchecks import raw_writes
from citytwin.gateway.runner import DeviceOffline, DeviceRunner, DeviceTimeout


async def run_writes(runner: DeviceRunner, writes: Mapping[str, Any], timeout: float | None) -> dict[str, Any]:
    raw = raw_writes(runner.spec, writes)
    try:
        await runner.write(raw, timeout)
    except (DeviceOffline, DeviceTimeout, DriverError) as exc:
        return failure(exc)
    return {"status": "succeeded", "output": {}}


async def run_call(runner: DeviceRunner, call: Any, inputs: Mapping[str, Any], timeout: float) -> dict[str, Any]:
    try:
        output = await runner.invoke(call, inputs, timeout)
    except (DeviceOffline, DeviceTimeout, DriverError) as exc:
        return failure(exc)
    return {"status": "succeeded", "output": output}


def failure(exc: Exception) -> dict[str, Any]:
    if isinstance(exc, DeviceOffline):
        return {"status": "failed", "error": {"code": "device_offline", "message": f"{exc}; nothing was sent"}}
    if isinstance(exc, DeviceTimeout):
        return {"status": "timeout", "error": {
            "code": "timeout", "message": f"{exc}; it may or may not have taken effect"}}
    return {"status": "failed", "error": {"code": type(exc).__name__, "message": str(exc)}}


def dry(would: dict[str, Any]) -> dict[str, Any]:
    return {"status": "succeeded", "output": {"dry_run": True, **would}}
