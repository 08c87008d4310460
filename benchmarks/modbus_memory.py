"""Memory of N Modbus TCP drivers built from one template's point map (issues 13 and 19).

What is measured: N ``modbus-tcp`` drivers created through the driver registry (as the
gateway creates them) for one 102-point map (``K`` uint16 registers, one uint32, one writable
uint16 setpoint: the shape of ``benchmarks/subjects.py``'s ``Citytwin.document``), each
connected to the libmodbus bench slave (``benchmarks/bench_slave.c``, one connection per
device) and read once. Every device's readings are checked (all GOOD, the slave's pattern
decoded). Each case runs in a fresh Python process, twice: once with tracemalloc (bytes
allocated since just before the drivers were built, by phase, and by the package whose
code allocated them) and once without it for the RSS (tracemalloc's own memory would
inflate it). Object counts per device come from ``gc.get_objects()`` after the read.

Cases, in the same run and against the same slave:

- ``unshared`` (the baseline): every device gets its own copy of the point map, and the
  plan and ``Struct`` caches are emptied before each driver is built, so each compiles its
  own plan (with today's compiler): what sharing saves. The code before sharing is measured
  by running this benchmark on it (it works without the caches);
- ``copies``: every device its own (equal) copy of the map, the cache on: sharing by value;
- ``shared``: one map object for all devices, as the gateway hands a template's devices.

Prints a table and writes a JSON record to ``benchmarks/results/``. Usage::

    python -m benchmarks.modbus_memory [--devices 1000] [--points 100]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime
import gc
import json
import os
import platform
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

from benchmarks.procs import Slave
from citytwin.drivers.base import Driver, Quality

ROOT = Path(__file__).resolve().parent.parent
CASES = ("unshared", "copies", "shared")
PHASES = ("built", "connected", "read")
_KINDS = ("deque", "Future", "Task", "Lock", "Event", "Struct", "function", "dict", "ReadBlock")


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise LookupError("VmRSS")


def _points(k: int) -> dict[str, dict[str, Any]]:
    points: dict[str, dict[str, Any]] = {
        f"r_{i}": {"table": "holding_register", "address": i, "type": "uint16"} for i in range(k)
    }
    points["sentinel"] = {"table": "holding_register", "address": k, "type": "uint32"}
    points["setpoint"] = {"table": "holding_register", "address": k + 2, "type": "uint16"}
    return points


def _owner(filename: str) -> str:
    for part in ("citytwin", "pymodbus", "asyncio"):
        if f"/{part}/" in filename:
            return part
    if "/drivers/" in filename:  # the editable install's source tree is named drivers/
        return "citytwin"
    return "other"


async def _measure(trace: bool) -> int:
    # one loop step first: the handle that resumed this task holds the finished gather
    await asyncio.sleep(0)
    gc.collect()
    return tracemalloc.get_traced_memory()[0] if trace else _rss_kb() * 1024


async def _connect_all(drivers: list[Driver]) -> None:
    gate = asyncio.Semaphore(64)

    async def connect(driver: Driver) -> None:
        async with gate:
            await driver.connect()

    await asyncio.gather(*(connect(d) for d in drivers))


async def _read_all(drivers: list[Driver], k: int) -> None:
    """Read every device once, all at once; each device's readings are checked and dropped
    as they come (as the gateway's runner does), so they do not count as the drivers'."""

    async def read(driver: Driver) -> None:
        readings = await driver.read()
        got = {r.point: r for r in readings}
        assert len(got) == k + 2 and all(r.quality is Quality.GOOD for r in readings), readings[:3]
        base = got["r_0"].value
        assert all(got[f"r_{i}"].value == (base + i) & 0xFFFF for i in range(k)), "decoded wrong"

    await asyncio.gather(*(read(d) for d in drivers))


async def _child(port: int, n: int, k: int, case: str, trace: bool) -> dict[str, Any]:
    from citytwin.drivers.modbus import codec as codec_module
    from citytwin.drivers.modbus import plan as plan_module
    from citytwin.drivers.modbus.binding import ModbusPoint, ModbusTcpConnection
    from citytwin.drivers.registry import create_driver

    template = {name: ModbusPoint.model_validate(spec) for name, spec in _points(k).items()}
    connection = ModbusTcpConnection(host="127.0.0.1", port=port, unit=1, timeout=5.0)
    cache = getattr(plan_module, "_SHARED", None)  # absent before plans were shared
    structs = getattr(codec_module, "_struct", None)  # likewise
    warmup = create_driver("modbus-tcp", connection, dict(template))  # imports, lazy library state
    await warmup.connect()
    await warmup.read()
    await warmup.close()
    del warmup
    if trace:
        tracemalloc.start(1)
    figures = {"start": await _measure(trace)}
    counted = collections.Counter(type(o).__name__ for o in gc.get_objects())
    drivers: list[Driver] = []
    started = time.perf_counter()
    for _ in range(n):
        if case == "unshared" and cache is not None and structs is not None:
            cache.clear()
            structs.cache_clear()
        points = template if case == "shared" else dict(template)
        drivers.append(create_driver("modbus-tcp", connection, points))
    build_us = (time.perf_counter() - started) * 1e6 / n
    del points
    figures["built"] = await _measure(trace)
    await _connect_all(drivers)
    figures["connected"] = await _measure(trace)
    await _read_all(drivers, k)
    figures["read"] = await _measure(trace)
    owners: dict[str, int] = collections.Counter()
    if trace:
        snapshot = tracemalloc.take_snapshot()
        for stat in snapshot.statistics("filename"):
            owners[_owner(stat.traceback[0].filename)] += stat.size
        if os.environ.get("MODBUS_MEMORY_LINES"):  # where the bytes are, line by line
            for stat in snapshot.statistics("lineno")[:25]:
                print(f"{stat.size // n:>8} B/device {stat.count / n:>6.2f}/device {stat.traceback[0]}", file=sys.stderr)
        tracemalloc.stop()
    counts = collections.Counter(type(o).__name__ for o in gc.get_objects())
    counts.subtract(counted)
    result = {
        "case": case, "trace": trace, "devices": n,
        "per_device_bytes": {phase: round((figures[phase] - figures["start"]) / n) for phase in PHASES},
        "objects_per_device": {kind: round(counts[kind] / n, 2) for kind in _KINDS},
        "build_us_per_device": round(build_us, 1),
        "distinct_plans": len({id(getattr(d, "_plan_all", None)) for d in drivers}),
    }
    if trace:
        result["per_device_bytes_by_owner"] = {o: round(size / n) for o, size in sorted(owners.items())}
    for driver in drivers:
        await driver.close()
    return result


def run_case(n: int, k: int, case: str, trace: bool) -> dict[str, Any]:
    # a fresh slave each time: its registers count answers, and values under 256 are shared
    # int objects in Python, so every process must read the same values
    slave = Slave(k)
    command = [sys.executable, "-m", "benchmarks.modbus_memory", "--child", case, "--port", str(slave.port),
               "--devices", str(n), "--points", str(k)]
    if trace:
        command.append("--trace")
    try:
        out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=900, check=False)
    finally:
        slave.stop()
    if out.returncode != 0:
        raise RuntimeError(f"{case}: {out.stderr.strip()[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--points", type=int, default=100, help="uint16 registers (plus a uint32 and a setpoint)")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--label", default="", help="a note kept in the record (e.g. which code was measured)")
    parser.add_argument("--child", choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    n, k = args.devices, args.points
    if args.child is not None:
        print(json.dumps(asyncio.run(_child(args.port, n, k, args.child, args.trace))))
        return 0
    runs = [run_case(n, k, case, trace) for case in CASES for trace in (True, False)]
    traced = {r["case"]: r for r in runs if r["trace"]}
    rss = {r["case"]: r for r in runs if not r["trace"]}
    print(f"{n} modbus-tcp drivers x {k + 2} points, one template; bytes per device since before building "
          "(tracemalloc | RSS, fresh process per figure); build us: create_driver per device")
    print(f"{'case':<10}" + "".join(f"{'traced ' + p:>17}" for p in PHASES) + "".join(f"{'RSS ' + p:>15}" for p in PHASES)
          + f"{'plans':>7}{'build us':>10}")
    for case in CASES:
        t, r = traced[case]["per_device_bytes"], rss[case]["per_device_bytes"]
        print(f"{case:<10}" + "".join(f"{t[p]:>17,}" for p in PHASES) + "".join(f"{r[p]:>15,}" for p in PHASES)
              + f"{traced[case]['distinct_plans']:>7}{rss[case]['build_us_per_device']:>10.0f}")
    print("traced bytes per device after the read, by the code that allocated them:")
    for case in CASES:
        print(f"  {case:<10}" + "  ".join(f"{o} {b:,}" for o, b in traced[case]["per_device_bytes_by_owner"].items()))
    print("objects per device after the read (gc-tracked, created since before building):")
    for case in CASES:
        print(f"  {case:<10}" + "  ".join(f"{kind} {c:g}" for kind, c in rss[case]["objects_per_device"].items()))
    base, best = traced["unshared"]["per_device_bytes"], traced["shared"]["per_device_bytes"]
    ratios = {
        "built_traced": round(best["built"] / base["built"], 3) if base["built"] else None,
        "read_traced": round(best["read"] / base["read"], 3) if base["read"] else None,
        "read_rss": round(rss["shared"]["per_device_bytes"]["read"] / rss["unshared"]["per_device_bytes"]["read"], 3)
        if rss["unshared"]["per_device_bytes"]["read"] else None,
    }
    print(f"shared vs unshared: built {ratios['built_traced']}x, after the read {ratios['read_traced']}x (traced), "
          f"{ratios['read_rss']}x (RSS); saved {base['read'] - best['read']:,} traced bytes per device")
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H%M%SZ")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT,
                            check=False).stdout.strip()
    record = {"benchmark": "modbus_memory", "time": stamp, "python": sys.version.split()[0],
              "platform": platform.platform(), "cpus": os.cpu_count(), "commit": commit, "label": args.label,
              "measured": "create_driver + connect + one read per device against the libmodbus bench slave; "
                          "tracemalloc and RSS in separate fresh processes, after gc.collect()",
              "args": {"devices": n, "points": k + 2}, "runs": runs, "ratios": ratios}
    args.output.mkdir(parents=True, exist_ok=True)
    out = args.output / f"modbus_memory-{stamp}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
