"""Memory and time of the per-device metrics: plain numbers and one collector against
prometheus_client's labelled children (issues 13 and 19).

Cases, each in a fresh Python process, in the same run:

- ``children`` (the baseline): what ``gateway/metrics.py`` did before: per device, a child of
  each of 7 labelled Gauge/Counter/Histogram metrics (bound once at creation), ``read_errors``
  children as errors happen. Rebuilt here from prometheus_client, since the gateway no longer
  has it;
- ``collector``: ``GatewayMetrics.device`` as it is now: a slotted ``DeviceMetrics`` of plain
  numbers, read by one collector at scrape time.

Each case creates ``GatewayMetrics`` and N devices, then runs ``polled`` P times per device
with K readings (one device in 100 reads a bad point), a report, a lag and a skip. Figures:
the time to create the N devices (the best of 3 fresh sets), the time per ``polled`` call
(the best of 3 rounds), the RSS growth after gc and the first round, the bytes tracemalloc
traces per device (a separate set with tracing on), and the time of one scrape
(``generate_latest``, median of 5) with its size. The parent also checks that both cases
expose the same per-device samples (wall-clock values aside).

Prints a table and writes a JSON record to ``benchmarks/results/``. Usage::

    python -m benchmarks.device_metrics [--devices 1000] [--polls 3] [--points 100]
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from citytwin.drivers.base import Quality, Reading
from citytwin.gateway.devicemetrics import POLL_BUCKETS
from citytwin.gateway.metrics import GatewayMetrics

ROOT = Path(__file__).resolve().parent.parent
CASES = ("children", "collector")


class Device(Protocol):
    def set_online(self, online: bool) -> None: ...
    def polled(self, seconds: float, readings: Sequence[Reading]) -> None: ...
    def reported(self, points: int) -> None: ...
    def skipped(self, polls: int) -> None: ...
    def lag(self, seconds: float) -> None: ...


class Children:
    """The baseline: the labelled metrics and per-device children ``gateway/metrics.py`` had."""

    def __init__(self) -> None:
        self.registry = reg = CollectorRegistry()
        self.services: dict[str, frozenset[str]] = {}
        self.device_online = Gauge("citytwin_device_online", "1 while the device answers its polls, else 0",
                                   ["device"], registry=reg)
        self.poll_duration = Histogram("citytwin_device_poll_duration_seconds", "Duration of one batched driver read",
                                       ["device"], buckets=POLL_BUCKETS, registry=reg)
        self.points_read = Counter("citytwin_device_points_read", "Points returned by successful reads (any quality)",
                                   ["device"], registry=reg)
        self.read_errors = Counter(
            "citytwin_device_read_errors",
            "Failed reads or connects by error class, and points read with bad quality (bad_point)",
            ["device", "reason"], registry=reg)
        self.last_success = Gauge("citytwin_device_last_success_timestamp_seconds",
                                  "Unix time of the last successful poll", ["device"], registry=reg)
        self.points_reported = Counter("citytwin_device_points_reported", "Properties handed to the hub link in reports",
                                       ["device"], registry=reg)
        self.polls_skipped = Counter(
            "citytwin_device_polls_skipped",
            "Poll ticks skipped because the previous poll ended after they were due (load shed at the source)",
            ["device"], registry=reg)
        self.poll_lag = Gauge(
            "citytwin_device_poll_lag_seconds",
            "How late the last poll started after it was due (waiting for the event loop, a slot or queue room)",
            ["device"], registry=reg)

    def device(self, device: str, services: Iterable[str]) -> ChildrenDevice:
        self.services[device] = frozenset(services)
        return ChildrenDevice(self, device)


class ChildrenDevice:
    def __init__(self, owner: Children, device: str) -> None:
        self._owner = owner
        self.device = device
        self._online = owner.device_online.labels(device)
        self._duration = owner.poll_duration.labels(device)
        self._points = owner.points_read.labels(device)
        self._last_ok = owner.last_success.labels(device)
        self._reported = owner.points_reported.labels(device)
        self._skipped = owner.polls_skipped.labels(device)
        self._lag = owner.poll_lag.labels(device)
        self._online.set(0)

    def set_online(self, online: bool) -> None:
        self._online.set(1 if online else 0)

    def polled(self, seconds: float, readings: Sequence[Reading]) -> None:
        self._duration.observe(seconds)
        self._points.inc(len(readings))
        self._last_ok.set(time.time())
        bad = sum(1 for r in readings if r.quality is Quality.BAD)
        if bad:
            self._owner.read_errors.labels(self.device, "bad_point").inc(bad)

    def reported(self, points: int) -> None:
        self._reported.inc(points)

    def skipped(self, polls: int) -> None:
        self._skipped.inc(polls)

    def lag(self, seconds: float) -> None:
        self._lag.set(seconds)


class Fleet:
    """One case's metrics for N devices, made and exercised the same way in both cases."""

    def __init__(self, case: str) -> None:
        self.gateway = GatewayMetrics("bench", process=False)
        if case == "children":
            children = Children()
            self.registries = [self.gateway.registry, children.registry]
            self.make: Callable[[str, Iterable[str]], Device] = children.device
        else:
            self.registries = [self.gateway.registry]
            self.make = self.gateway.device
        self.devices: list[Device] = []

    def create(self, n: int) -> None:
        services = ("start_pump", "stop_pump")
        self.devices = [self.make(f"device-{i:05d}", services) for i in range(n)]

    def poll(self, polls: int, good: list[Reading], bad: list[Reading]) -> None:
        for i, device in enumerate(self.devices):
            device.set_online(True)
            for p in range(polls):
                device.polled(0.002 * (1 + p), bad if i % 100 == 0 else good)
            device.reported(len(good))
            device.lag(0.001)
            device.skipped(1)

    def scrape(self) -> bytes:
        return b"".join(generate_latest(r) for r in self.registries)


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def child(case: str, n: int, polls: int, k: int) -> dict[str, Any]:
    """In the child process: one case, measured."""
    good = [Reading(f"p{i}", i, 0, Quality.GOOD) for i in range(k)]
    bad = [*good[:-1], Reading("bad", None, 0, Quality.BAD, "exception 2")]
    gc.collect()
    floor = _rss_kb()
    fleet = Fleet(case)
    started = time.perf_counter()
    fleet.create(n)
    create_s = [time.perf_counter() - started]
    poll_s: list[float] = []
    rss = 0
    for _ in range(3):  # the first round is the one the RSS and the scrape see; best of 3 timed
        started = time.perf_counter()
        fleet.poll(polls, good, bad)
        poll_s.append(time.perf_counter() - started)
        if len(poll_s) == 1:
            gc.collect()
            rss = _rss_kb()  # before the other sets: memory they free stays with the process
    for _ in range(2):
        other = Fleet(case)
        started = time.perf_counter()
        other.create(n)
        create_s.append(time.perf_counter() - started)
        del other
    text = fleet.scrape()
    scrape_s = []
    for _ in range(5):
        started = time.perf_counter()
        fleet.scrape()
        scrape_s.append(time.perf_counter() - started)
    samples = _samples(text)
    del fleet
    gc.collect()

    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    traced = Fleet(case)
    traced.create(n)
    traced.poll(polls, good, bad)
    gc.collect()
    traced_bytes = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return {"case": case, "devices": n, "create_s": round(min(create_s), 4),
            "polled_us": round(min(poll_s) / (n * polls) * 1e6, 2),
            "traced_bytes_per_device": round(traced_bytes / n), "rss_mb": round((rss - floor) / 1024, 1),
            "scrape_s": round(statistics.median(scrape_s), 4), "scrape_bytes": len(text),
            "samples": samples}


def _samples(text: bytes) -> list[list[Any]]:
    """The per-device samples, sorted; wall-clock values (``_created``, last success) as a marker."""
    out = []
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            if not s.name.startswith("citytwin_device_"):
                continue
            timed = s.name.endswith("_created") or s.name == "citytwin_device_last_success_timestamp_seconds"
            out.append([s.name, sorted(s.labels.items()), "<time>" if timed and s.value else s.value])
    return sorted(out, key=repr)


def run_case(case: str, n: int, polls: int, k: int) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "benchmarks.device_metrics", "--child", case, "--devices", str(n),
                          "--polls", str(polls), "--points", str(k)],
                         capture_output=True, text=True, cwd=ROOT, timeout=600, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{case}: {out.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--polls", type=int, default=3, help="polled() calls per device")
    parser.add_argument("--points", type=int, default=100, help="readings per poll")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--child", choices=CASES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    n, polls, k = args.devices, args.polls, args.points
    if args.child is not None:
        print(json.dumps(child(args.child, n, polls, k)))
        return 0
    cases = [run_case(case, n, polls, k) for case in CASES]
    old, new = cases
    same = old.pop("samples") == new.pop("samples")
    if not same:
        print("the two cases expose different samples", file=sys.stderr)
        return 1
    ratios = {key: round(new[key] / old[key], 3) for key in
              ("create_s", "polled_us", "traced_bytes_per_device", "scrape_s") if old[key]}
    print(f"per-device metrics, {n} devices, {polls} polls of {k} points each (fresh process per case)")
    print(f"{'case':<11}{'create s':>10}{'polled us':>11}{'traced B/device':>17}{'RSS MB':>8}{'scrape s':>10}"
          f"{'scrape kB':>11}")
    for c in cases:
        print(f"{c['case']:<11}{c['create_s']:>10.4f}{c['polled_us']:>11.2f}{c['traced_bytes_per_device']:>17}"
              f"{c['rss_mb']:>8.1f}{c['scrape_s']:>10.4f}{c['scrape_bytes'] / 1024:>11.0f}")
    print("collector vs children: " + ", ".join(f"{key} {value}x" for key, value in ratios.items())
          + "; same samples exposed")
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H%M%SZ")
    record = {"benchmark": "device_metrics", "time": stamp, "python": sys.version.split()[0],
              "platform": platform.platform(), "cpus": os.cpu_count(),
              "measured": "GatewayMetrics + N devices in a fresh process per case; create time best of 3; "
                          "tracemalloc and RSS after gc.collect(); scrape = generate_latest, median of 5",
              "args": {"devices": n, "polls": polls, "points": k}, "cases": cases, "ratios": ratios,
              "same_samples": same}
    args.output.mkdir(parents=True, exist_ok=True)
    out = args.output / f"device_metrics-{stamp}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
