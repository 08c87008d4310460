"""One supervised task per device: connect, poll on a fixed schedule, go offline, back off.

The runner owns time and health (the driver owns neither): polls keep their period without
drift and never overlap, missed ticks are skipped rather than bunched, a failing device goes
offline with its reason logged once, and reconnects back off with jitter. Any unexpected
error is caught here so that one device can never take the gateway down.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from citytwin.drivers.base import Driver
from citytwin.drivers.errors import DriverError
from citytwin.gateway.backoff import Backoff
from citytwin.gateway.devicespec import DeviceSpec
from citytwin.gateway.pipeline import DevicePipeline

if TYPE_CHECKING:
    from citytwin.gateway.metrics import DeviceMetrics

log = logging.getLogger("citytwin.device")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class DeviceRunner:
    def __init__(
        self,
        spec: DeviceSpec,
        driver: Driver,
        pipeline: DevicePipeline,
        on_status: Callable[[DeviceSpec, bool, str | None], None],
        snapshot_interval: float,
    ) -> None:
        self.spec = spec
        self.driver = driver
        self.pipeline = pipeline
        self.on_status = on_status
        self.snapshot_interval = snapshot_interval
        self.online: bool | None = None  # None until the first attempt ends
        self.last_error: str | None = None
        self.last_poll_ms = 0
        self.polls = 0
        self.started_ms = now_ms()  # for health: a device that never answered is silent since then
        self.metrics: DeviceMetrics | None = None
        self.lock = asyncio.Lock()  # serializes polls and command writes on the one link
        self._refresh = asyncio.Event()

    def request_refresh(self) -> None:
        """Poll as soon as possible (after a write), without waiting for the next tick."""
        self._refresh.set()

    def _set_online(self, online: bool, reason: str | None) -> None:
        changed = online != self.online
        self.online = online
        self.last_error = reason
        if self.metrics is not None:
            self.metrics.set_online(online)
        if changed:
            if online:
                log.info("%s: online", self.spec.id)
            else:
                log.warning("%s: offline: %s", self.spec.id, reason)
            self.on_status(self.spec, online, reason)

    async def run(self) -> None:
        cfg = self.spec.config
        backoff = Backoff(cfg.reconnect_min, cfg.reconnect_max)
        while True:
            try:
                async with self.lock:
                    await self.driver.connect()
                backoff.reset()
                await self._poll_loop()
            except DriverError as exc:
                if self.metrics is not None:
                    self.metrics.read_error(type(exc).__name__)
                self._set_online(False, f"{type(exc).__name__}: {exc}")
            except Exception as exc:  # a bug must not stop the device for good, nor the gateway
                if self.metrics is not None:
                    self.metrics.read_error("internal")
                if self.last_error != f"internal error: {exc!r}":  # once per distinct failure, not per retry
                    log.exception("%s: unexpected error in device task", self.spec.id)
                self._set_online(False, f"internal error: {exc!r}")
            try:
                async with self.lock:
                    await self.driver.close()
            except DriverError:
                pass
            await asyncio.sleep(backoff.next_delay())

    async def _poll_loop(self) -> None:
        loop = asyncio.get_running_loop()
        period = self.spec.config.poll_period
        deadline = loop.time()
        next_snapshot = loop.time()
        first = True
        while True:
            full = loop.time() >= next_snapshot
            if full:
                next_snapshot = loop.time() + self.snapshot_interval
            await self.poll(full)
            if first:  # spread devices over the period: 1,000 polls at one instant queue up as latency
                first = False
                deadline += period * (zlib.crc32(self.spec.id.encode()) % 1000) / 1000
            deadline += period
            now = loop.time()
            if deadline <= now:  # fell behind: skip the missed ticks, keep the phase
                deadline += period * (int((now - deadline) / period) + 1)
            self._refresh.clear()
            try:
                await asyncio.wait_for(self._refresh.wait(), deadline - now)
            except TimeoutError:
                pass

    async def poll(self, full: bool = False) -> None:
        async with self.lock:
            started = time.perf_counter()
            readings = await self.driver.read()
            elapsed = time.perf_counter() - started
        if self.metrics is not None:
            self.metrics.polled(elapsed, readings)
        ts = now_ms()
        self.last_poll_ms = ts
        self.polls += 1
        if self.online is not True:
            self._set_online(True, None)
            full = True
        reported = self.pipeline.process(readings, ts, full)
        if self.metrics is not None:
            self.metrics.reported(reported)

    def status(self) -> dict[str, Any]:
        return {
            "online": bool(self.online),
            "last_error": self.last_error,
            "last_poll": self.last_poll_ms,
            "polls": self.polls,
        }

