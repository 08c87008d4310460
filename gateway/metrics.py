"""The gateway's Prometheus metrics: one registry per gateway, never the process-wide default.

Label cardinality is bounded by the config, never by traffic: series are per device (and per
service of its thing model, and per error class), never per property, and a command for a
device or service the gateway does not know is counted under ``other``. Counters that the
runtime already keeps (messages published, drops) and live state (hub connected, backlog)
are read at scrape time by a collector instead of being mirrored on the hot path; so are the
per-device figures, kept as plain numbers on ``DeviceMetrics`` (bytes a device, not kilobytes).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from importlib.metadata import PackageNotFoundError, version
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from citytwin.gateway.devicemetrics import DeviceCollector, DeviceMetrics

OTHER = "other"  # the label value for a device or service this gateway does not know
PUBLISH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
COMMAND_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)



class HubState(Protocol):
    """What the collector reads from the hub link at scrape time."""

    connected: bool
    published: int
    points_published: int
    dropped: int

    def backlog(self) -> tuple[int, int, float]:
        """(messages waiting, their bytes, age in seconds of the oldest)."""
        ...


class OutboxStats(Protocol):
    dropped: int
    replayed: int
    disk_errors: int


class OutboxState(Protocol):
    """What the collector reads from the durable outbox at scrape time."""

    @property
    def pending(self) -> tuple[int, int]: ...

    @property
    def live(self) -> tuple[int, int, bool]: ...

    @property
    def stats(self) -> OutboxStats: ...

    @property
    def depth(self) -> int: ...

    @property
    def bytes(self) -> int: ...

    @property
    def oldest_age(self) -> float: ...


class OverloadState(Protocol):
    @property
    def cause(self) -> str | None: ...

    @property
    def episodes(self) -> int: ...


class GateState(Protocol):
    in_flight: int
    in_flight_limit: int
    limit: int
    loop_lag: float
    rate: float | None
    cpu_use: float


class CpuState(Protocol):
    @property
    def cores(self) -> float | None: ...

    @property
    def throttled(self) -> int: ...


def _version() -> str:
    try:
        return version("citytwin-gateway")
    except PackageNotFoundError:
        return "unknown"


class GatewayMetrics:
    def __init__(self, gateway_id: str, process: bool = True) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        self._services: dict[str, frozenset[str]] = {}
        self._hub: HubState | None = None
        self._outbox: OutboxState | None = None
        self._overload: OverloadState | None = None
        self._gate: GateState | None = None
        self._cpu: CpuState | None = None
        self._device_count = 0
        self._devices: dict[str, DeviceMetrics] = {}
        self._errors: dict[tuple[str, str], list[float]] = {}  # (device, reason) -> [count, created]
        reg.register(DeviceCollector(self._devices, self._errors))
        self.publish_latency = Histogram(
            "citytwin_hub_publish_latency_seconds",
            "From handing a batch of messages to the MQTT client to the broker's acknowledgement",
            buckets=PUBLISH_BUCKETS, registry=reg)
        self.commands = Counter(
            "citytwin_commands", "Commands by device, service and final status",
            ["device", "service", "status"], registry=reg)
        self.command_duration = Histogram(
            "citytwin_command_duration_seconds", "From receipt of a command to its reply",
            ["device", "service"], buckets=COMMAND_BUCKETS, registry=reg)
        self.task_crashes = Counter(
            "citytwin_task_crashes", "Gateway tasks that ended with an error (logged with a traceback)",
            ["task"], registry=reg)
        self.audit_failures = Counter(
            "citytwin_audit_write_failures", "Audit log writes or fsyncs that failed (records kept, retried)",
            registry=reg)
        self.reloads = Counter(
            "citytwin_config_reloads", "Config reloads by result (applied or refused)",
            ["result"], registry=reg)
        info = Gauge("citytwin_gateway_info", "Always 1; the gateway id and version as labels",
                     ["gateway", "version"], registry=reg)
        info.labels(gateway_id, _version()).set(1)
        reg.register(_LiveCollector(self))
        if process:
            ProcessCollector(registry=reg)
            PlatformCollector(registry=reg)
            GCCollector(registry=reg)

    def watch_hub(self, hub: HubState) -> None:
        self._hub = hub

    def watch_outbox(self, outbox: OutboxState) -> None:
        self._outbox = outbox

    def watch_overload(self, overload: OverloadState, gate: GateState, cpu: CpuState | None = None) -> None:
        self._overload = overload
        self._gate = gate
        self._cpu = cpu

    def device(self, device: str, services: Iterable[str]) -> DeviceMetrics:
        """The device's figures; a device restarted with a changed config keeps its counts."""
        self._services[device] = frozenset(services)
        self._device_count = len(self._services)
        figures = self._devices.get(device)
        if figures is None:
            figures = self._devices[device] = DeviceMetrics(device, self._errors)
        figures.set_online(False)
        return figures

    def forget_device(self, device: str) -> None:
        """Drop a removed device's series, so dashboards do not show it forever."""
        self._services.pop(device, None)
        self._device_count = len(self._services)
        self._devices.pop(device, None)
        for key in [key for key in self._errors if key[0] == device]:
            del self._errors[key]
        for labelled in (self.commands, self.command_duration):
            labelled.remove_by_labels({"device": device})

    def command(self, device: str, service: str, status: str, seconds: float) -> None:
        """``service`` is a service id, or ``properties/set`` / ``twin/desired``."""
        known = self._services.get(device)
        if known is None:
            device, service = OTHER, OTHER
        elif service not in known and service not in ("properties/set", "twin/desired"):
            service = OTHER
        self.commands.labels(device, service, status).inc()
        self.command_duration.labels(device, service).observe(seconds)

    def hub_published(self, seconds: float) -> None:
        self.publish_latency.observe(seconds)

    def live(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("citytwin_gateway_devices", "Devices configured and running",
                                value=self._device_count)
        if self._overload is not None:
            yield GaugeMetricFamily("citytwin_gateway_overloaded",
                                    "1 while the gateway sheds load (/health says the cause), else 0",
                                    value=1 if self._overload.cause is not None else 0)
            yield CounterMetricFamily("citytwin_gateway_overload_episodes",
                                      "Times the gateway became overloaded", value=self._overload.episodes)
        if self._gate is not None:
            yield GaugeMetricFamily("citytwin_polls_in_flight", "Polls admitted and not yet done",
                                    value=self._gate.in_flight)
            yield GaugeMetricFamily("citytwin_polls_in_flight_limit",
                                    "Polls admitted at once now (adapted to the loop's lag; at most "
                                    "gateway.max_polls_in_flight)", value=self._gate.limit)
            yield GaugeMetricFamily("citytwin_event_loop_lag_seconds",
                                    "How late the event loop woke last (saturated, or throttled by a CPU quota)",
                                    value=self._gate.loop_lag)
            yield GaugeMetricFamily("citytwin_polls_admitted_rate_limit",
                                    "Polls admitted per second at most (0: no rate limit; set when even one "
                                    "poll at a time overloads the box, or to stay under the CPU budget)",
                                    value=self._gate.rate or 0.0)
        if self._cpu is not None and self._gate is not None:
            yield GaugeMetricFamily("citytwin_cpu_budget_cores",
                                    "CPU the gateway keeps under: its cgroup's quota, else its CPUs, or "
                                    "gateway.cpu_budget (0: not controlled)", value=self._cpu.cores or 0.0)
            yield GaugeMetricFamily("citytwin_cpu_use_ratio",
                                    "CPU used over the last ~100 ms as a fraction of the budget (the poll "
                                    "gate paces polls above 0.75)", value=self._gate.cpu_use)
            yield CounterMetricFamily("citytwin_cpu_throttled_periods",
                                      "CFS periods in which the kernel froze the gateway's cgroup at its quota "
                                      "(cpu.stat nr_throttled, counted since the start)", value=self._cpu.throttled)
        hub = self._hub
        if hub is None:
            return
        messages, size, age = hub.backlog()
        yield GaugeMetricFamily("citytwin_hub_connected", "1 while the MQTT session to the hub is up",
                                value=1 if hub.connected else 0)
        yield CounterMetricFamily("citytwin_hub_messages_published",
                                  "Messages acknowledged by the broker (QoS 1) or written (QoS 0)",
                                  value=hub.published)
        yield CounterMetricFamily("citytwin_hub_points_published",
                                  "Properties carried by the reports the broker accepted",
                                  value=hub.points_published)
        # the hub link's own in-memory queue: retained state, replies, and (without an outbox) data
        yield GaugeMetricFamily("citytwin_hub_queue_messages", "Messages in the hub link's memory queue",
                                value=messages)
        yield GaugeMetricFamily("citytwin_hub_queue_bytes", "Payload bytes in the hub link's memory queue",
                                value=size)
        yield CounterMetricFamily("citytwin_hub_queue_dropped",
                                  "Messages dropped, oldest first, from the hub link's full memory queue",
                                  value=hub.dropped)
        box = self._outbox
        replayed = disk_errors = 0
        if box is not None:
            messages, size, age, dropped = box.depth, box.bytes, box.oldest_age, box.stats.dropped
            replayed, disk_errors = box.stats.replayed, box.stats.disk_errors
            queued, queued_bytes = box.pending
            live, live_bytes, spilled = box.live
            for name, text, value in (
                ("citytwin_outbox_write_queue_messages", "Reports serialized, waiting to be stored", queued),
                ("citytwin_outbox_write_queue_bytes", "Bytes serialized, waiting to be stored", queued_bytes),
                ("citytwin_outbox_live_window_messages", "Live reports held in memory for the hub link", live),
                ("citytwin_outbox_live_window_bytes", "Bytes of live reports held in memory", live_bytes),
                ("citytwin_outbox_live_spilled", "1 while live reports past the window wait on disk", int(spilled)),
            ):
                yield GaugeMetricFamily(name, text, value=value)
        else:
            dropped = hub.dropped
        yield GaugeMetricFamily("citytwin_outbox_messages", "Reports and events waiting for the hub",
                                value=messages)
        yield GaugeMetricFamily("citytwin_outbox_bytes", "Payload bytes waiting for the hub",
                                value=size)
        yield GaugeMetricFamily("citytwin_outbox_oldest_age_seconds",
                                "Age of the oldest message waiting for the hub (0 when empty)",
                                value=age)
        yield CounterMetricFamily("citytwin_outbox_dropped",
                                  "Messages dropped, oldest first, because the outbox hit a limit",
                                  value=dropped)
        yield CounterMetricFamily("citytwin_outbox_replayed",
                                  "Backlog messages replayed to the hub after outages",
                                  value=replayed)
        yield CounterMetricFamily("citytwin_outbox_disk_errors",
                                  "Failed writes of the outbox database (full or broken disk)",
                                  value=disk_errors)


class _LiveCollector:
    def __init__(self, metrics: GatewayMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return list(self._metrics.live())
