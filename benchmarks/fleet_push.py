"""A config push that adds devices to a running gateway: do the others keep their polls?

What is measured: a real ``Gateway`` in this process with N devices from one template polling
K points each every P seconds (N*K/P points/s), whose drivers are in-memory devices (no
sockets: what is measured is the gateway's own scheduling). After a warm-up, a config that
adds M more devices of the same template is validated with ``remoteconfig.build`` (as a push
from the hub is, in a thread) and applied with ``Gateway.apply`` (the reload path a push
takes; the MQTT round trip adds nothing to the polls). Figures, for the devices that were
running before the push: the longest gap between two of a device's polls, against the poll
period, over the whole run and during the second after the push; points read by the
drivers against points taken in by the pipelines (lost points); and the time the push took
to validate and to apply. No broker: the outbox keeps what the hub link cannot publish.

Prints a table and writes a JSON record to ``benchmarks/results/``. Usage::

    python -m benchmarks.fleet_push [--devices 100] [--points 11] [--period 0.1] [--add 100]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import itertools
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from citytwin.drivers.base import Driver, Health, Quality, Reading

ROOT = Path(__file__).resolve().parent.parent


class MemoryDevice(Driver):
    """Answers every read at once with changing values and records when it was asked."""

    def __init__(self, name: str, points: Mapping[str, BaseModel], log: dict[str, list[float]]) -> None:
        self.names = [n for n in points if n != "setpoint"]
        self.polls = log.setdefault(name, [])
        self.n = 0
        self._health = Health()

    async def connect(self) -> None:
        self._health.connected = True

    async def close(self) -> None:
        self._health.connected = False

    async def read(self, points: Sequence[str] | None = None) -> list[Reading]:
        self.polls.append(time.monotonic())
        self.n += 1
        ts = time.time_ns() // 1_000_000
        return [Reading(name, (self.n + i) % 60000, ts, Quality.GOOD) for i, name in enumerate(points or self.names)]

    async def write(self, values: Mapping[str, Any]) -> None:
        return None

    @property
    def health(self) -> Health:
        return self._health


def write(work: Path, devices: int, k: int, period: float) -> Path:
    from benchmarks.fleet_memory import _binding, _model

    (work / "model.json").write_text(json.dumps(_model(k)))
    binding = {**_binding(k), "poll_period": period, "connection": {"port": 502}}
    binding.pop("interlocks")
    rows = "".join(f"dev-{i:04d},registers,10.1.{i // 250}.{i % 250 + 1}\n" for i in range(devices))
    (work / "inventory.csv").write_text("id,template,host\n" + rows)
    path = work / "gateway.yaml"
    path.write_text(json.dumps({
        "gateway": {"id": "bench-push", "data_dir": str(work / "data")},
        "hub": {"url": "mqtt://127.0.0.1:1", "reconnect_min": 5, "reconnect_max": 5},
        "http": {"enabled": False}, "templates": {"registers": binding}, "inventory": "inventory.csv",
    }))
    return path


def gaps(polls: list[float], start: float, end: float) -> float:
    """The longest gap between two polls (or a window edge and a poll) inside [start, end]."""
    inside = [t for t in polls if start <= t <= end]
    if not inside:
        return end - start
    marks = [start, *inside, end]
    return max(b - a for a, b in itertools.pairwise(marks))


async def measure(devices: int, k: int, period: float, add: int, warmup: float, after: float) -> dict[str, Any]:
    from citytwin.gateway.app import Gateway
    from citytwin.gateway.bootstrap import prepare_file
    from citytwin.gateway.remoteconfig import build

    polls: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="fleet-push-") as tmp:
        work = Path(tmp)
        path = write(work, devices, k, period)
        config, specs = prepare_file(path)

        owners = {id(s.config.connection): d for d, s in specs.items()}

        def factory(name: str, connection: Any, points: Mapping[str, BaseModel]) -> Driver:
            return MemoryDevice(owners[id(connection)], points, polls)

        gateway = Gateway(config, specs, path, driver_factory=factory)
        gateway.drain_timeout = 0.1
        async with gateway:
            await asyncio.sleep(warmup)
            before = set(gateway.runners)
            rows = "".join(f"dev-{i:04d},registers,10.1.{i // 250}.{i % 250 + 1}\n" for i in range(devices + add))
            text = path.read_text()
            pushed = time.monotonic()
            new_config, new_specs = await asyncio.to_thread(
                build, text, {"inventory.csv": "id,template,host\n" + rows}, "bench push", path)
            validated = time.monotonic()
            owners.update({id(s.config.connection): d for d, s in new_specs.items()})
            result = await gateway.apply(new_config, new_specs, "bench push")
            applied = time.monotonic()
            await asyncio.sleep(after)
            end = time.monotonic()
            read = sum(len(p) for p in polls.values()) * (k - 1)  # every point but the setpoint
            # the gateway's own count of points its polls took in (the counter behind the
            # citytwin_device_points_read metric; asking the registry per device re-collected
            # every device's series each time: quadratic in the fleet)
            taken = sum(r.metrics.points_read for r in gateway.runners.values() if r.metrics is not None)
            online = sum(1 for d in result["added"] if gateway.runners[d].online)
        old = [polls[d] for d in sorted(before)]
        start = min(p[0] for p in old)
        return {
            "devices": devices, "points": k, "period": period, "added": len(result["added"]),
            "points_per_s_before": round(devices * (k - 1) / period), "points_per_s_after": round((devices + add) * (k - 1) / period),
            "validate_s": round(validated - pushed, 3), "apply_s": round(applied - validated, 3),
            "max_gap_s": round(max(gaps(p, start + period * 2, end) for p in old), 3),
            # the baseline from the same run: the same devices before the push
            "max_gap_before_s": round(max(gaps(p, start + period * 2, pushed) for p in old), 3),
            "max_gap_push_s": round(max(gaps(p, pushed, pushed + max(1.0, applied - pushed + period)) for p in old), 3),
            "added_online": online,
            "points_read": read, "points_taken": taken, "lost": read - taken,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--points", type=int, default=11, help="points per device (one is a write-only setpoint)")
    parser.add_argument("--period", type=float, default=0.1)
    parser.add_argument("--add", type=int, default=100)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--after", type=float, default=3.0)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    r = asyncio.run(measure(args.devices, args.points, args.period, args.add, args.warmup, args.after))
    print(f"{r['devices']} devices x {r['points']} points every {r['period']:g} s ({r['points_per_s_before']:,} points/s); "
          f"push adds {r['added']} ({r['points_per_s_after']:,} points/s after)")
    print(f"validate {r['validate_s']:.3f} s (in a thread), apply {r['apply_s']:.3f} s")
    print(f"longest poll gap of the running devices: {r['max_gap_before_s']:.3f} s before the push (baseline), "
          f"{r['max_gap_push_s']:.3f} s around it ({r['max_gap_push_s'] / r['max_gap_before_s']:.2f}x), "
          f"{r['max_gap_s']:.3f} s over the run; period {r['period']:g} s")
    print(f"points read {r['points_read']:,}, taken in {r['points_taken']:,}, lost {r['lost']}; "
          f"added devices online {r['added_online']} of {r['added']}")
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H%M%SZ")
    record = {"benchmark": "fleet_push", "time": stamp, "python": sys.version.split()[0],
              "platform": platform.platform(), "cpus": os.cpu_count(), "load_avg": os.getloadavg(),
              "args": vars(args) | {"output": str(args.output)}, **r}
    args.output.mkdir(parents=True, exist_ok=True)
    out = args.output / f"fleet_push-{stamp}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
