"""The per-device series of the gateway's metrics, as plain numbers read at scrape time.

Why not prometheus_client's labelled children: a child holds one locked value per sample (a
histogram one per bucket), 21 value objects and as many locks a device, ~8 kB and a label
lookup each at creation (issues 13 and 19). Here a device costs one slotted object and a short
list of buckets, ~0.4 kB (``benchmarks/device_metrics.py``); ``GatewayMetrics`` registers the
collector that renders them.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence

import prometheus_client.metrics
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from citytwin.drivers.base import Quality, Reading

POLL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_POLL_BOUNDS = (*POLL_BUCKETS, math.inf)
_go_float: Callable[[float], str] = floatToGoString  # how prometheus_client writes ``le`` (untyped there)
_POLL_LE = tuple(_go_float(bound) for bound in _POLL_BOUNDS)
_ONLINE = "citytwin_device_online"
_DURATION = "citytwin_device_poll_duration_seconds"
_POINTS_READ = "citytwin_device_points_read"
_READ_ERRORS = "citytwin_device_read_errors"
_LAST_SUCCESS = "citytwin_device_last_success_timestamp_seconds"
_POINTS_REPORTED = "citytwin_device_points_reported"
_POLLS_SKIPPED = "citytwin_device_polls_skipped"
_POLL_LAG = "citytwin_device_poll_lag_seconds"
_HELP = {
    _ONLINE: "1 while the device answers its polls, else 0",
    _DURATION: "Duration of one batched driver read",
    _POINTS_READ: "Points returned by successful reads (any quality)",
    _READ_ERRORS: "Failed reads or connects by error class, and points read with bad quality (bad_point)",
    _LAST_SUCCESS: "Unix time of the last successful poll",
    _POINTS_REPORTED: "Properties handed to the hub link in reports",
    _POLLS_SKIPPED: "Poll ticks skipped because the previous poll ended after they were due (load shed at the source)",
    _POLL_LAG: "How late the last poll started after it was due (waiting for the event loop, a slot or queue room)",
}


class DeviceMetrics:
    """The figures of one device as plain numbers; the registry's collector reads them at scrape.

    Why not prometheus_client children: a labelled child holds one locked value per sample
    (a histogram one per bucket), 21 value objects and as many locks a device, ~8 kB and a
    label lookup each at creation (issues 13 and 19). Here a device costs one slotted object
    and a short list of buckets, ~0.4 kB (``benchmarks/device_metrics.py``).

    Only the event loop writes them (the runner's polls, pushes and reports), and /metrics is
    rendered on that loop too (``gateway/httpapi.py`` calls ``generate_latest`` in its
    handler), so a scrape never sees half an update. Were it moved to a thread, each field is
    still one object read whole under the GIL: at worst a scrape in the middle of ``polled``
    counts an observation whose duration is not in the sum yet, as prometheus_client's own
    Histogram can.
    """

    __slots__ = ("_errors", "buckets", "created", "device", "last_success", "online", "points_read",
                 "points_reported", "poll_lag", "poll_sum", "polls_skipped")

    def __init__(self, device: str, errors: dict[tuple[str, str], list[float]]) -> None:
        self.device = device
        self.created = time.time()  # the series' ``_created``, as a child's creation time was
        self.online = 0
        self.points_read = 0
        self.points_reported = 0
        self.polls_skipped = 0
        self.last_success = 0.0
        self.poll_lag = 0.0
        self.buckets = [0] * len(_POLL_BOUNDS)  # observations per bucket, not cumulative
        self.poll_sum = 0.0
        self._errors = errors  # the gateway's (device, reason) -> [count, created], shared

    def set_online(self, online: bool) -> None:
        self.online = 1 if online else 0

    def polled(self, seconds: float, readings: Sequence[Reading]) -> None:
        """A successful read: its duration, its points, and each point that came back bad."""
        self.buckets[bisect_left(_POLL_BOUNDS, seconds)] += 1  # the first bound >= seconds
        self.poll_sum += seconds
        self.points_read += len(readings)
        self.last_success = time.time()
        bad = sum(1 for r in readings if r.quality is Quality.BAD)
        if bad:
            self._count_error("bad_point", bad)

    def pushed(self, readings: Sequence[Reading]) -> None:
        """Readings the device sent unasked: contact, like a successful poll."""
        self.points_read += len(readings)
        self.last_success = time.time()

    def read_error(self, reason: str) -> None:
        """A read or connect that failed as a whole; ``reason`` is an error class name."""
        self._count_error(reason, 1)

    def reported(self, points: int) -> None:
        self.points_reported += points

    def skipped(self, polls: int) -> None:
        """Poll ticks missed: the previous poll ended after they were due (polls stretch)."""
        self.polls_skipped += polls

    def lag(self, seconds: float) -> None:
        self.poll_lag = seconds

    def _count_error(self, reason: str, n: int) -> None:
        # most devices never fail: the series appears with the first error, as a labelled child did
        entry = self._errors.get((self.device, reason))
        if entry is None:
            self._errors[self.device, reason] = [float(n), time.time()]
        else:
            entry[0] += n


def _created_series() -> bool:
    """Whether counters and histograms carry ``_created``, as prometheus_client's own decide.

    It reads PROMETHEUS_DISABLE_CREATED_SERIES at import and ``disable_created_metrics()``
    flips it; the device series follow the same switch, so all families of a scrape agree.
    """
    return bool(getattr(prometheus_client.metrics, "_use_created", True))


class DeviceCollector:
    """Every device's series, made at scrape time from the live ``DeviceMetrics``.

    The families, their order, HELP, types, labels and samples (``_created`` included) are
    those the labelled Gauge/Counter/Histogram children exposed before (tests/test_metrics_devices.py).
    """

    def __init__(self, devices: dict[str, DeviceMetrics], errors: dict[tuple[str, str], list[float]]) -> None:
        self._devices = devices
        self._errors = errors

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, HistogramMetricFamily, CounterMetricFamily, CounterMetricFamily,
                             GaugeMetricFamily, CounterMetricFamily, CounterMetricFamily, GaugeMetricFamily]:
        device = ["device"]
        return (GaugeMetricFamily(_ONLINE, _HELP[_ONLINE], labels=device),
                HistogramMetricFamily(_DURATION, _HELP[_DURATION], labels=device),
                CounterMetricFamily(_POINTS_READ, _HELP[_POINTS_READ], labels=device),
                CounterMetricFamily(_READ_ERRORS, _HELP[_READ_ERRORS], labels=["device", "reason"]),
                GaugeMetricFamily(_LAST_SUCCESS, _HELP[_LAST_SUCCESS], labels=device),
                CounterMetricFamily(_POINTS_REPORTED, _HELP[_POINTS_REPORTED], labels=device),
                CounterMetricFamily(_POLLS_SKIPPED, _HELP[_POLLS_SKIPPED], labels=device),
                GaugeMetricFamily(_POLL_LAG, _HELP[_POLL_LAG], labels=device))

    def describe(self) -> Iterable[Metric]:
        """The names, so the registry refuses a clash as it did for the labelled metrics."""
        return self._families()

    def collect(self) -> Iterable[Metric]:
        created = _created_series()
        families = self._families()
        online, duration, points, errors, last, reported, skipped, lag = families
        for d in list(self._devices.values()):  # a copy: safe even if a scrape ever runs in a thread
            labels = {"device": d.device}  # shared by the device's samples; exposition only reads them
            online.add_sample(_ONLINE, labels, float(d.online))
            count = 0.0
            for le, observed in zip(_POLL_LE, d.buckets, strict=True):
                count += observed
                duration.add_sample(_DURATION + "_bucket", {"device": d.device, "le": le}, count)
            duration.add_sample(_DURATION + "_count", labels, count)
            duration.add_sample(_DURATION + "_sum", labels, d.poll_sum)
            if created:
                duration.add_sample(_DURATION + "_created", labels, d.created)
            for family, name, value in ((points, _POINTS_READ, d.points_read),
                                        (reported, _POINTS_REPORTED, d.points_reported),
                                        (skipped, _POLLS_SKIPPED, d.polls_skipped)):
                family.add_sample(name + "_total", labels, float(value))
                if created:
                    family.add_sample(name + "_created", labels, d.created)
            last.add_sample(_LAST_SUCCESS, labels, d.last_success)
            lag.add_sample(_POLL_LAG, labels, float(d.poll_lag))
        for (device, reason), (failed, since) in list(self._errors.items()):
            errors.add_metric([device, reason], failed, since if created else None)
        return families
