"""The gateway as one async context manager: entering starts everything, leaving stops it cleanly.

Start: open the twin store, restore twins, start the hub link, one supervised task per
device and the housekeeping ticker (twin publication and persistence). Stop: stop polling,
answer the commands already received, mark devices and the gateway offline on the hub,
flush twins to disk, and close the store as a clean shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from types import TracebackType
from typing import Any

from citytwin.drivers.registry import create_driver
from citytwin.gateway.commands import CommandRelay
from citytwin.gateway.config import GatewayConfig
from citytwin.gateway.devicespec import DeviceSpec
from citytwin.gateway.hublink import HubLink, now_ms
from citytwin.gateway.pipeline import DevicePipeline
from citytwin.gateway.store import TwinStore
from citytwin.gateway.supervisor import DeviceRunner
from citytwin.gateway.twins import Twin

log = logging.getLogger("citytwin.gateway")

TWIN_PUBLISH_INTERVAL = 1.0  # s; the retained twin document is republished at most this often


class Gateway:
    def __init__(self, config: GatewayConfig, specs: dict[str, DeviceSpec]) -> None:
        self.config = config
        self.specs = specs
        self.hub = HubLink(config.hub, config.gateway.id, self._on_message)
        self.store = TwinStore(Path(config.gateway.data_dir) / "twins.db")
        self.twins: dict[str, Twin] = {}
        self.runners: dict[str, DeviceRunner] = {}
        self.relay = CommandRelay(self.hub, self.runners, self._on_desired)
        self._tasks: list[asyncio.Task[Any]] = []
        self._twin_dirty: set[str] = set()

    def _on_message(self, message: Any) -> None:
        self.relay.handle(message)

    async def __aenter__(self) -> Gateway:
        stored = await self.store.open()
        if not self.store.previous_run_clean:
            log.warning("previous run did not shut down cleanly: twin versions and sequence numbers advanced")
        topics = self.hub.topics
        for device_id, spec in self.specs.items():
            twin = Twin.restore(device_id, stored[device_id]) if device_id in stored else Twin(device_id)
            twin.set_online(False, now_ms())
            self.twins[device_id] = twin
            pipeline = DevicePipeline(spec, twin, self._emitter(device_id))
            driver = create_driver(spec.config.driver, spec.config.connection, spec.driver_points())
            # pushed readings (subscriptions, observe) take the same path as polled ones
            driver.set_push_sink(pipeline.push)
            self.runners[device_id] = DeviceRunner(
                spec, driver, pipeline, self._on_status, self.config.hub.snapshot_interval
            )
            self.hub.send_state(topics.device_status(device_id), {"state": "offline", "ts": twin.status_ts})
            self._twin_dirty.add(device_id)
        self._tasks.append(asyncio.create_task(self.hub.run(), name="hub"))
        for device_id, runner in self.runners.items():
            self._tasks.append(asyncio.create_task(runner.run(), name=f"device:{device_id}"))
        self._tasks.append(asyncio.create_task(self._housekeeping(), name="housekeeping"))
        log.info(
            "gateway %s started: %d device(s), hub %s, data in %s",
            self.config.gateway.id, len(self.specs), self.config.hub.url, self.config.gateway.data_dir,
        )
        return self

    def _emitter(self, device_id: str) -> Any:
        topics = self.hub.topics
        report_topic = topics.report(device_id)

        def emit(kind: str, payload: dict[str, Any]) -> None:
            if kind == "report":
                self.hub.send(report_topic, payload)
            else:
                self.hub.send(topics.event(device_id, kind.removeprefix("event:")), payload, qos=1)
            self._twin_dirty.add(device_id)

        return emit

    def _on_status(self, spec: DeviceSpec, online: bool, reason: str | None) -> None:
        twin = self.twins[spec.id]
        twin.set_online(online, now_ms())
        status: dict[str, Any] = {"state": "online" if online else "offline", "ts": twin.status_ts}
        if reason:
            status["reason"] = reason
        self.hub.send_state(self.hub.topics.device_status(spec.id), status)
        self._publish_twin(spec.id)

    def _on_desired(self, device_id: str, patch: dict[str, Any]) -> int:
        twin = self.twins[device_id]
        twin.patch_desired(patch, now_ms())
        self._publish_twin(device_id)
        return twin.version

    def _publish_twin(self, device_id: str) -> None:
        self._twin_dirty.discard(device_id)
        self.hub.send_state(self.hub.topics.twin(device_id), self.twins[device_id].document())

    async def _housekeeping(self) -> None:
        interval = min(TWIN_PUBLISH_INTERVAL, self.config.gateway.flush_interval)
        loop = asyncio.get_running_loop()
        next_flush = loop.time() + self.config.gateway.flush_interval
        while True:
            await asyncio.sleep(interval)
            for device_id in list(self._twin_dirty):
                self._publish_twin(device_id)
            if loop.time() >= next_flush:
                next_flush = loop.time() + self.config.gateway.flush_interval
                await self.flush()

    async def flush(self) -> None:
        dirty = [(d, t.snapshot()) for d, t in self.twins.items() if t.dirty]
        for twin in self.twins.values():
            twin.dirty = False
        try:
            await self.store.save(dirty)
        except Exception:
            # keep running on a full or broken disk; the twins stay dirty and are retried
            for device_id, _ in dirty:
                self.twins[device_id].dirty = True
            log.exception("could not persist %d twin(s); will retry", len(dirty))

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        log.info("gateway %s stopping", self.config.gateway.id)
        hub_task, *others = self._tasks
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        await self.relay.close()
        ts = now_ms()
        for device_id, runner in self.runners.items():
            self.twins[device_id].set_online(False, ts)
            self.hub.send_state(self.hub.topics.device_status(device_id), {"state": "offline", "ts": ts})
            self._publish_twin(device_id)
            await runner.driver.close()
        self.hub.send_state(self.hub.topics.gateway_status, {"state": "offline", "ts": ts})
        await self.hub.drain(timeout=3.0)
        hub_task.cancel()
        await asyncio.gather(hub_task, return_exceptions=True)
        await self.flush()
        await self.store.close()
        log.info("gateway %s stopped", self.config.gateway.id)

    def status(self) -> dict[str, Any]:
        return {
            "gateway": self.config.gateway.id,
            "hub": {"connected": self.hub.connected, "published": self.hub.published,
                    "dropped": self.hub.dropped},
            "devices": {d: r.status() for d, r in self.runners.items()},
        }
