"""The gateway as one async context manager: entering starts everything, leaving stops it cleanly.

Start: open the twin store, restore twins, start the hub link, one supervised task per
device and the housekeeping ticker (twin publication and persistence). Stop: stop polling,
answer the commands already received, mark devices and the gateway offline on the hub,
flush twins to disk, and close the store as a clean shutdown. ``reload`` applies a changed
config file to the running set of devices (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from citytwin.drivers.base import Driver
from citytwin.drivers.registry import create_driver
from citytwin.gateway.access import Access
from citytwin.gateway.audit import AuditLog
from citytwin.gateway.backgroundpace import BackgroundPace
from citytwin.gateway.bootstrap import prepare_file
from citytwin.gateway.commandlog import CommandLog
from citytwin.gateway.commands import CommandRelay
from citytwin.gateway.config import ConfigError, GatewayConfig
from citytwin.gateway.cpubudget import CpuBudget
from citytwin.gateway.devicemeta import meta_document
from citytwin.gateway.devicespec import DeviceSpec
from citytwin.gateway.hublink import HubLink, now_ms
from citytwin.gateway.jsonbytes import dumps
from citytwin.gateway.metrics import GatewayMetrics
from citytwin.gateway.outbox import Limits, Outbox
from citytwin.gateway.overload import OverloadMonitor, PollGate
from citytwin.gateway.pipeline import DevicePipeline
from citytwin.gateway.remoteconfig import RemoteConfig
from citytwin.gateway.runner import DeviceRunner
from citytwin.gateway.store import TwinStore
from citytwin.gateway.tasks import Tasks
from citytwin.gateway.twins import Twin
from citytwin.gateway.watchers import Watchers

if TYPE_CHECKING:
    from citytwin.gateway.httpapi import HttpApi

_FLUSH_BATCH = 25  # twins rendered and persisted per store transaction (~4 ms of CPU at 100 properties)
_PUBLISH_GROUP = 8  # twins rendered per paced step of their publication (one hub publish window)
HUB_FIRST = 1.0  # seconds start-up waits at most for the hub's first connect attempt

log = logging.getLogger("citytwin.gateway")


def _settle_heap() -> None:
    """Collect once, then freeze what is left out of the garbage collector's way.

    After start-up (or a reload) the heap is mostly what the gateway keeps for good: configs,
    point maps, drivers, twins. Every full collection walked all of it: at 1,000 devices that
    was 60 ms of CPU at a time (100-300 ms under a quarter core), and every command arriving
    meanwhile waited. Frozen objects are never walked; what is created later still is. A
    reload unfreezes first, so what the old config leaves behind can be collected.
    """
    gc.collect()
    gc.freeze()


DriverFactory = Callable[[str, BaseModel, Mapping[str, BaseModel]], Driver]


class Gateway:
    def __init__(
        self,
        config: GatewayConfig,
        specs: dict[str, DeviceSpec],
        config_path: Path | None = None,
        driver_factory: DriverFactory = create_driver,
        settle_heap: bool = False,
    ) -> None:
        self.config = config
        # the process's garbage collector is tuned after start-up and reloads (``_settle_heap``):
        # for the process that owns it (``citytwin run``), not for a gateway inside a test
        self.settle_heap = settle_heap
        # how a device's driver is made: the registry, or a test's FakeDriver (tests/harness.py)
        self.driver_factory = driver_factory
        self.specs = dict(specs)
        self.config_path = config_path  # re-read by reload(); None: reload is not possible
        data_dir = Path(config.gateway.data_dir)
        box = config.outbox
        self.outbox = Outbox(
            data_dir / "outbox.db",
            Limits(box.max_messages, box.max_bytes, box.max_age, box.replay_rate,
                   box.write_queue_bytes, box.live_window_bytes),
            self._on_outbox_drop,
        )
        self.outbox.on_replayed = self._on_backlog_replayed
        self.hub = HubLink(config.hub, config.gateway.id, self._on_message, self.outbox)
        self.store = TwinStore(Path(config.gateway.data_dir) / "twins.db")
        self.twins: dict[str, Twin] = {}
        self.runners: dict[str, DeviceRunner] = {}
        # polls wait for room in the outbox's bounded queues and for a slot in flight (issue 13)
        # ... and are paced to stay under the CPU budget (the cgroup's quota), so commands find the box awake
        self.cpu = CpuBudget(config.gateway.cpu_budget)
        # twins published and persisted, each paced to a share of the CPU budget
        self._publish_pace, self._flush_pace = BackgroundPace(self.cpu), BackgroundPace(self.cpu)
        self.gate = PollGate(config.gateway.max_polls_in_flight, self.outbox.wait_room,
                             config.gateway.loop_lag_target, self.cpu)
        self.overload = OverloadMonitor(self.runners, [self.outbox, self.hub, self.gate])
        self.command_log = CommandLog(data_dir / "commands.db", config.commands.retention)
        self.audit = AuditLog(data_dir / "audit.log")
        self.access = Access(config.access, {})
        self.metrics: GatewayMetrics = GatewayMetrics(config.gateway.id)
        self.audit.on_failure = self.metrics.audit_failures.inc
        # every task the gateway starts, supervised: a crash is logged with its traceback
        self.tasks: Tasks = Tasks(lambda name, exc: self.metrics.task_crashes.labels(name.split(":")[0]).inc())
        self.relay = CommandRelay(
            self.hub, self.runners, self.twins, self._publish_twin,
            self.command_log, self.access, self.audit, config.commands, self.tasks,
        )
        self._hub_task: asyncio.Task[None] | None = None
        self._housekeeper: asyncio.Task[None] | None = None
        self._twin_dirty: set[str] = set()
        self.metrics.watch_hub(self.hub)
        self.metrics.watch_outbox(self.outbox)
        self.metrics.watch_overload(self.overload, self.gate, self.cpu)
        self.hub.metrics = self.relay.metrics = self.metrics
        self.http: HttpApi | None = None
        if config.http.enabled:  # aiohttp is ~25 MB of a gateway's memory: imported only when served
            from citytwin.gateway.httpapi import HttpApi

            self.http = HttpApi(self, config.http)
        self.started_ms: int = now_ms()
        self._device_tasks: dict[str, asyncio.Task[None]] = {}
        self._stored: dict[str, dict[str, Any]] = {}
        self._reload_lock = asyncio.Lock()
        self.watchers = Watchers()  # HTTP observers of values and events
        self.drain_timeout = 3.0  # how long shutdown waits for the hub to take what is queued
        self.step_timeout = 15.0  # the longest any one shutdown step may take
        self.remote = RemoteConfig(self)  # configs from the hub (config/desired)

    def _on_message(self, message: Any) -> None:
        if not self.remote.handle(message):
            self.relay.handle(message)

    async def __aenter__(self) -> Gateway:
        stored = await self.store.open()
        if not self.store.previous_run_clean:
            log.warning("previous run did not shut down cleanly: twin versions advanced past any it may have used")
        await self.outbox.open()
        await self.audit.open()
        interrupted = await self.command_log.open()
        self._stored = stored
        self.relay.starting = frozenset(self.specs)  # commands for these wait until they are built
        self._hub_task = self.tasks.spawn(self.hub.run(), "hub")
        self.tasks.spawn(self.overload.run(), "overload")
        self.tasks.spawn(self.gate.govern(), "poll-gate")
        # the hub's first connect attempt, briefly, before the devices: building 1,000 of them
        # held the connect back (3 s under a quarter core), and every first reading then waited
        # as backlog for a replay. A hub that refuses costs nothing; one that is silent, HUB_FIRST.
        await self.hub.wait_first_attempt(HUB_FIRST)
        for n, (device_id, spec) in enumerate(list(self.specs.items())):
            self._start_device(device_id, spec)
            if n % 16 == 15:
                await asyncio.sleep(0)  # start-up streams: devices built so far begin polling now
        self.relay.starting = frozenset()
        self.relay.started.set()
        if self.settle_heap:
            _settle_heap()
        self.relay.report_interrupted(interrupted)
        self._housekeeper = self.tasks.spawn(self._housekeeping(), "housekeeping")
        self.remote.publish_state()
        if self.http is not None:
            await self.http.start()
        log.info(
            "gateway %s started: %d device(s), hub %s, data in %s",
            self.config.gateway.id, len(self.specs), self.config.hub.url, self.config.gateway.data_dir,
        )
        return self

    def _start_device(self, device_id: str, spec: DeviceSpec) -> None:
        layout = spec.points.layout  # shared by the devices of one point map
        twin = self.twins.get(device_id)  # a device removed and added again keeps its twin
        if twin is None:
            stored = self._stored.pop(device_id, None)  # restored once; the twin keeps it from now on
            twin = Twin.restore(device_id, stored, layout) if stored is not None else Twin(device_id, layout)
            self.twins[device_id] = twin
        else:
            twin.use_layout(layout)
        twin.set_online(False, now_ms())
        pipeline = DevicePipeline(spec, twin, self._emitter(device_id))
        driver = self.driver_factory(spec.config.driver, spec.config.connection, spec.driver_points())
        # the runner is the one door to the device: polls, pushes, writes and calls go through it
        runner = DeviceRunner(spec, driver, pipeline, self._on_status, self.config.hub.snapshot_interval,
                              self.metrics.device(device_id, spec.model.services), self.gate)
        self.specs[device_id] = spec
        self.access.groups[device_id] = set(spec.config.groups)
        self.runners[device_id] = runner
        self.hub.send_state(self.hub.topics.device_status(device_id), {"state": "offline", "ts": twin.status_ts})
        # what the device is and where (uid, location, tags), retained for the hub's asset view
        self.hub.send_state(self.hub.topics.meta(device_id), meta_document(spec.config, spec.model.product_key, now_ms()))
        self._twin_dirty.add(device_id)
        self._device_tasks[device_id] = self.tasks.spawn(runner.run(), f"device:{device_id}")

    async def _stop_device(self, device_id: str, reason: str) -> None:
        """Stop polling, let a command in flight finish, close the link; the twin stays, offline."""
        await self.tasks.cancel([self._device_tasks.pop(device_id)])
        runner = self.runners.pop(device_id)
        del self.specs[device_id]
        try:
            await runner.close()
        except Exception as exc:
            log.warning("%s: error while closing: %s", device_id, exc)
        twin = self.twins[device_id]
        twin.set_online(False, now_ms())
        status = {"state": "offline", "ts": twin.status_ts, "reason": reason}
        self.hub.send_state(self.hub.topics.device_status(device_id), status)
        self._publish_twin(device_id)

    async def reload(self) -> dict[str, Any]:
        """Re-read the config file: start added devices, stop removed ones, restart changed ones.

        A file that fails validation changes nothing. Changes outside ``devices`` need a
        restart; they are reported and otherwise ignored.
        """
        if self.config_path is None:
            return {"result": "unavailable", "errors": ["this gateway was not started from a config file"]}
        async with self._reload_lock:
            try:
                config, specs = await asyncio.to_thread(prepare_file, self.config_path)
            except ConfigError as exc:
                for issue in exc.issues:
                    log.error("reload refused: %s", issue)
                self.metrics.reloads.labels("refused").inc()
                return {"result": "refused", "errors": [str(i) for i in exc.issues]}
            result = await self._apply(config, specs, str(self.config_path))
            self.remote.forget()  # the local file wins over a hub's config (reported with the file's settings)
            return result

    async def apply(self, config: GatewayConfig, specs: dict[str, DeviceSpec], source: str) -> dict[str, Any]:
        """Apply a validated config (from the hub: gateway/remoteconfig.py) as ``reload`` does."""
        async with self._reload_lock:
            return await self._apply(config, specs, source)

    async def _apply(self, config: GatewayConfig, specs: dict[str, DeviceSpec], source: str) -> dict[str, Any]:
        """Start added devices, stop removed ones, restart changed ones (their config differs)."""
        if self.settle_heap:
            gc.unfreeze()  # what the old config leaves behind may be collected again
        try:
            return await self._apply_specs(config, specs, source)
        finally:
            if self.settle_heap:
                _settle_heap()

    async def _apply_specs(self, config: GatewayConfig, specs: dict[str, DeviceSpec], source: str) -> dict[str, Any]:
        old = {d: s.config for d, s in self.specs.items()}
        removed = [d for d in old if d not in specs]
        added = [d for d in specs if d not in old]
        changed = [d for d in specs if d in old and specs[d].config != old[d]]
        for device_id in removed:
            await self._stop_device(device_id, "removed from the config")
            self.hub.send_state(self.hub.topics.meta(device_id), b"")  # clears the retained meta
            self.metrics.forget_device(device_id)
        for device_id in changed:
            await self._stop_device(device_id, "restarting with a changed config")
            self._start_device(device_id, specs[device_id])
        for device_id in added:
            self._start_device(device_id, specs[device_id])
        restart = [name for name in ("gateway", "hub", "http", "outbox")
                   if getattr(config, name, None) != getattr(self.config, name, None)]
        # who may do what takes effect at once: a revoked grant must not wait for a restart
        if config.access != self.config.access:
            log.info("config reload: access rules updated")
        self.access.config = config.access
        self.relay.settings = config.commands
        self.config = self.config.model_copy(update={
            name: getattr(config, name)
            for name in ("devices", "access", "commands", "templates", "inventory", "remote_config", "locked")})
        self.metrics.reloads.labels("applied").inc()
        log.info("config reloaded from %s: added %s, removed %s, changed %s", source,
                 added or "none", removed or "none", changed or "none")
        if restart:
            log.warning("config reload: changes to %s take effect only after a restart", ", ".join(restart))
        return {"result": "applied", "added": added, "removed": removed, "changed": changed,
                "unchanged": sorted(set(old) & set(specs) - set(changed)), "restart_needed": restart}

    def _emitter(self, device_id: str) -> Any:
        topics = self.hub.topics
        report_topic = topics.report(device_id)

        outbox = self.outbox
        qos = self.config.hub.qos
        watchers = self.watchers
        hub = self.hub
        values = self.config.hub.property_topics

        def emit(kind: str, payload: dict[str, Any]) -> None:
            if kind == "report":
                outbox.append(device_id, report_topic, payload, qos, len(payload["properties"]))
                if values:  # WoT consumers over MQTT: each value bare and retained
                    for name, entry in payload["properties"].items():
                        if entry["quality"] != "bad":
                            hub.send_state(topics.value(device_id, name), dumps(entry["value"]))
            else:
                outbox.append(device_id, topics.event(device_id, kind.removeprefix("event:")), payload, 1)
            watchers.published(device_id, kind, payload)
            self._twin_dirty.add(device_id)

        return emit

    def _on_backlog_replayed(self, messages: int, seconds: float) -> None:
        """Tell the hub that what it received flagged ``replay`` since the outage is complete."""
        self.hub.send(
            self.hub.topics.gateway_event("backlog_replayed"),
            {"ts": now_ms(), "type": "info", "output": {"messages": messages, "seconds": round(seconds, 3)}},
            qos=1,
        )

    def _on_outbox_drop(self, dropped: dict[str, int]) -> None:
        """Announce drops to the hub as a gateway event; live data keeps flowing."""
        self.hub.send(
            self.hub.topics.gateway_event("outbox_dropped"),
            {"ts": now_ms(), "type": "alert",
             "output": {"dropped": sum(dropped.values()), "devices": dropped,
                        "dropped_total": self.outbox.stats.dropped}},
            qos=1,
        )

    def _on_status(self, spec: DeviceSpec, online: bool, reason: str | None) -> None:
        twin = self.twins[spec.id]
        twin.set_online(online, now_ms())
        status: dict[str, Any] = {"state": "online" if online else "offline", "ts": twin.status_ts}
        if reason:
            status["reason"] = reason
        self.hub.send_state(self.hub.topics.device_status(spec.id), status)
        self._publish_twin(spec.id)
        if online:
            # a device back online converges on its desired state, like a shadow-aware device
            self.relay.sync_desired(spec.id)

    def _publish_twin(self, device_id: str, render_now: bool = False) -> None:
        self._twin_dirty.discard(device_id)
        twin = self.twins[device_id]
        # rendered when the hub link publishes it: the latest version, never kept as bytes;
        # ``render_now`` (paced publication, link up): rendered here, where its CPU is paced
        self.hub.send_state(self.hub.topics.twin(device_id), lambda: dumps(twin.document()),
                            rendered=dumps(twin.document()) if render_now and self.hub.connected else None)

    async def _housekeeping(self) -> None:
        """Twins published and persisted, each on its own schedule and paced: all of them at
        once was a burst of CPU that got the process throttled under a quota."""
        await asyncio.gather(self._publish_twins(), self._persist_twins())

    def _overloaded_factor(self) -> int:
        # overloaded: twins (a rendered document each) are the first thing to shed, and
        # persisting every twin each second too (a crash then loses up to 10 flush intervals
        # of twin history; reports are in the outbox regardless)
        return 10 if self.overload.cause else 1

    async def _publish_twins(self) -> None:
        """Each round publishes the twins changed since the last, spread over half the round
        and paced to the CPU budget; a round that takes longer delays the next (which then
        sends only the latest document of each twin)."""
        loop = asyncio.get_running_loop()
        pace = self._publish_pace
        next_round = loop.time() + self.config.gateway.twin_publish_interval
        while True:
            await asyncio.sleep(max(0.0, next_round - loop.time()))
            every = self.config.gateway.twin_publish_interval * self._overloaded_factor()
            next_round = loop.time() + every
            dirty = list(self._twin_dirty)
            spread = every / 2 * _PUBLISH_GROUP / len(dirty) if dirty else 0.0
            for start in range(0, len(dirty), _PUBLISH_GROUP):
                pace.start()
                for device_id in dirty[start:start + _PUBLISH_GROUP]:
                    if device_id in self._twin_dirty and device_id in self.twins:
                        self._publish_twin(device_id, render_now=True)
                await pace.pause(spread)

    async def _persist_twins(self) -> None:
        while True:
            every = self.config.gateway.flush_interval * self._overloaded_factor()
            await asyncio.sleep(every)
            await self.flush(spread=every / 2)

    async def flush(self, spread: float = 0.0) -> None:
        """Persist the twins changed since the last flush, a batch at a time.

        Each twin is rendered and encoded on its own, so one document tree is alive at a time
        (rendering all 1,000 first held ~30 MB at once and left the heap that much larger),
        and the event loop gets a turn between batches. With ``spread`` the batches are paced
        over up to that many seconds, and to a share of the CPU budget (their rendering here and
        their transaction on the store's thread): rendering 1,000 twins in one go is ~150 ms of
        CPU, which under a CPU quota got the process throttled and every command behind it
        waiting. Without (at shutdown) they go as fast as they can.
        """
        dirty = [d for d, t in self.twins.items() if t.dirty]
        pause = min(0.05, spread * _FLUSH_BATCH / len(dirty)) if spread and dirty else 0.0
        pace = self._flush_pace
        for start in range(0, len(dirty), _FLUSH_BATCH):
            pace.start()
            rows: list[tuple[str, bytes]] = []
            for device_id in dirty[start:start + _FLUSH_BATCH]:
                twin = self.twins.get(device_id)
                if twin is not None:
                    twin.dirty = False
                    rows.append((device_id, dumps(twin.snapshot())))
            rendered = pace.spent()
            try:
                stored = await self.store.save(rows)
            except Exception:
                # keep running on a full or broken disk; the twins stay dirty and are retried
                for device_id in dirty[start:]:
                    if device_id in self.twins:
                        self.twins[device_id].dirty = True
                log.exception("could not persist %d twin(s); will retry", len(dirty) - start)
                return
            if spread:
                await pace.pause(pause, spent=rendered + stored)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        log.info("gateway %s stopping", self.config.gateway.id)
        steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("operations endpoint", self._close_http),
            ("device tasks", lambda: self.tasks.cancel(
                [t for t in (self._housekeeper, *self._device_tasks.values()) if t is not None])),
            ("commands in flight", self.relay.close),
            ("command log", self.command_log.close),
            ("audit log", self.audit.close),
            ("device links", self._close_devices),
            ("hub drain", self._drain_hub),
            ("hub link", lambda: self.tasks.cancel([self._hub_task] if self._hub_task else [])),
            ("outbox", self.outbox.close),
            ("twins", self.flush),
            ("twin store", self.store.close),
            ("remaining tasks", self.tasks.cancel),
        ]
        # every step runs even when one fails: a driver whose close() raises must not keep the
        # outbox, the twins and the store from closing cleanly (or the next start is unclean)
        failed = []
        for name, step in steps:
            try:
                # a step that hangs (a device that never answers, a task that ignores its
                # cancellation) must not keep SIGTERM from stopping the gateway
                async with asyncio.timeout(self.step_timeout):
                    await step()
            except TimeoutError:
                failed.append(name)
                log.error("shutdown: %s did not finish within %g s; continuing with the other steps",
                          name, self.step_timeout)
            except Exception:
                failed.append(name)
                log.exception("shutdown: %s failed; continuing with the other steps", name)
        if failed:
            log.error("gateway %s stopped; these shutdown steps failed: %s", self.config.gateway.id, ", ".join(failed))
        else:
            log.info("gateway %s stopped", self.config.gateway.id)

    async def _drain_hub(self) -> None:
        await self.hub.drain(timeout=self.drain_timeout)

    async def _close_http(self) -> None:
        if self.http is not None:
            await self.http.close()

    async def _close_devices(self) -> None:
        """Mark every device offline on the hub, then close each link (each on its own)."""
        ts = now_ms()
        for device_id in self.runners:
            self.twins[device_id].set_online(False, ts)
            self.hub.send_state(self.hub.topics.device_status(device_id), {"state": "offline", "ts": ts})
            self._publish_twin(device_id)
        self.hub.send_state(self.hub.topics.gateway_status, {"state": "offline", "ts": ts})
        for device_id, runner in self.runners.items():
            try:
                await runner.close()
            except Exception:
                log.exception("%s: closing the device link failed", device_id)

    def status(self) -> dict[str, Any]:
        return {
            "gateway": self.config.gateway.id,
            "hub": {"connected": self.hub.connected, "published": self.hub.published,
                    "dropped": self.hub.dropped},
            "devices": {d: r.status() for d, r in self.runners.items()},
            "tasks": {"running": len(self.tasks), "crashed": [
                {"task": name, "error": error} for name, error in self.tasks.crashes]},
            "audit": {"failures": self.audit.failures, "last_error": self.audit.last_error},
        }
