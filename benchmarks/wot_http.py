"""WoT over HTTP under load: TD requests and property reads while the gateway carries telemetry.

One process runs the real gateway (runners, pipeline, twins, outbox, relay, the aiohttp
endpoint) with synthetic drivers: ``--devices`` × ``--points`` values that change on every
poll of ``--period`` seconds (100 × 100 at 1 s: 10 k points/s), the hub unreachable so every
report is stored. A keep-alive client then asks, one request at a time, for the TD of a
device, one property, and — the baseline, same server, same moment — a bare aiohttp handler
that answers a constant. Latencies are per request, p50/p99 in ms; the ratio to the baseline
says what the WoT layer adds over the framework itself. Prints a table and writes a JSON record
to ``benchmarks/results/``. Usage::

    python -m benchmarks.wot_http [--devices 100] [--points 100] [--period 1.0] [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import random
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web
from pydantic import BaseModel

from citytwin.drivers.base import Driver, Health, Quality, Reading
from citytwin.gateway.app import Gateway
from citytwin.gateway.bootstrap import prepare

RESULTS = Path(__file__).resolve().parent / "results"


class Wandering(Driver):
    """Every point a random walk, read in one batch: telemetry without a device."""

    def __init__(self, points: Mapping[str, BaseModel]) -> None:
        self.values = {name: random.uniform(0, 50) for name in points}
        self._health = Health(connected=True)

    async def connect(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def read(self, points: Sequence[str] | None = None) -> list[Reading]:
        ts = time.time_ns() // 1_000_000
        out = []
        for name, value in self.values.items():
            value = min(50.0, max(0.0, value + random.uniform(-1, 1)))
            self.values[name] = value
            out.append(Reading(name, round(value, 2), ts, Quality.GOOD))
        return out

    async def write(self, values: Mapping[str, Any]) -> None:
        pass

    @property
    def health(self) -> Health:
        return self._health


def model(points: int) -> dict[str, Any]:
    props = [{"identifier": f"p{i}", "name": f"point {i}", "accessMode": "r",
              "dataType": {"type": "float", "specs": {"min": "0", "max": "100", "unit": "m"}}}
             for i in range(points)]
    return {"schema": "https://iotx-tsl.oss-ap-southeast-1.aliyuncs.com/schema.json",
            "profile": {"productKey": "bench.wot.sensor"}, "properties": props, "events": [], "services": []}


def config(devices: int, points: int, period: float, data: Path) -> str:
    doc = {
        "gateway": {"id": "wot-bench", "data_dir": str(data)},
        "hub": {"url": "mqtt://127.0.0.1:1", "reconnect_max": 60},
        "outbox": {"max_messages": 1_000_000},
        "http": {"port": 0},
        "access": {"anonymous": "viewer"},
        "devices": [{
            "id": f"dev-{d}", "model": "model.json", "driver": "modbus-tcp",
            "connection": {"host": "127.0.0.1", "port": 1}, "poll_period": period,
            "points": {f"p{i}": {"table": "holding_register", "address": i, "type": "float32"} for i in range(points)},
        } for d in range(devices)],
    }
    return yaml.safe_dump(doc)


async def timed(session: aiohttp.ClientSession, url: str, count: int) -> list[float]:
    out = []
    for _ in range(count):
        start = time.perf_counter()
        async with session.get(url) as response:
            await response.read()
            assert response.status == 200, (url, response.status)
        out.append((time.perf_counter() - start) * 1000)
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    data = Path(tempfile.mkdtemp(prefix="wot-bench-"))
    (data / "model.json").write_text(json.dumps(model(args.points)))
    cfg, specs = prepare(config(args.devices, args.points, args.period, data), "bench.yaml", data)
    gateway = Gateway(cfg, specs, driver_factory=lambda name, conn, points: Wandering(points))
    gateway.drain_timeout = 0.1
    assert gateway.http is not None

    async def noop(request: web.Request) -> web.Response:
        return web.Response(body=b"1", content_type="application/json")

    gateway.http.app.router.add_get("/noop", noop)
    async with gateway:
        while not all(r.online for r in gateway.runners.values()):
            await asyncio.sleep(0.1)
        await asyncio.sleep(args.period * 2)  # telemetry in full flow
        base = gateway.http.base_url
        read_before = sum(r.polls for r in gateway.runners.values())
        started = time.monotonic()
        async with aiohttp.ClientSession() as session:
            await timed(session, f"{base}/noop", 50)  # warm the connection
            results = {
                "baseline (bare handler)": await timed(session, f"{base}/noop", args.requests),
                "TD request": await timed(session, f"{base}/things/dev-7", args.requests),
                "property read": await timed(session, f"{base}/things/dev-7/properties/p3", args.requests),
            }
        elapsed = time.monotonic() - started
        polls = sum(r.polls for r in gateway.runners.values()) - read_before
    load = polls * args.points / elapsed
    rows = {name: {"p50_ms": round(pct(v, 0.5), 3), "p99_ms": round(pct(v, 0.99), 3)} for name, v in results.items()}
    base50 = rows["baseline (bare handler)"]["p50_ms"]
    for row in rows.values():
        row["p50_ratio_to_baseline"] = round(row["p50_ms"] / base50, 2)
    return {"devices": args.devices, "points": args.points, "period": args.period,
            "points_per_second_during_requests": round(load), "requests_each": args.requests,
            "load_average": os.getloadavg(), "results": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--points", type=int, default=100)
    parser.add_argument("--period", type=float, default=1.0)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    record = asyncio.run(run(args))
    print(f"telemetry during the requests: {record['points_per_second_during_requests']} points/s "
          f"({args.devices} devices x {args.points} points every {args.period:g} s); "
          f"load average {record['load_average'][0]:.1f}")
    print(f"{'request':28} {'p50 ms':>8} {'p99 ms':>8} {'p50 / baseline':>15}")
    for name, row in record["results"].items():
        print(f"{name:28} {row['p50_ms']:8.2f} {row['p99_ms']:8.2f} {row['p50_ratio_to_baseline']:15.2f}")
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H%M%SZ")
    out = RESULTS / f"wot_http-{stamp}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
