"""DL/T 645 polling on one RS-485 line: cycle time against the line's physical limit.

64 meters (by default) on one simulated line at 9600 baud, each polled for 10 data
identifiers, as 64 device runners would: every meter's ``read()`` started at once, the line's
lock putting one request on the wire at a time. The simulator (a subprocess, serving a pty)
holds each answer until the request and the answer would have crossed a real line at the
baud rate (``bits`` per character: 10 for 8N1), so the fastest any master could poll is
the bytes on the wire × bits / baud. The ratio of the measured cycle to that limit is the
driver's overhead (Python, the pty, asyncio, the lock hand-over); 1.0 would be none. A
real meter's turnaround (the standard allows 20–500 ms) adds to both; ``--turnaround``
simulates it and adds it to the limit.

The same run also polls the line with a naive master first: one blocking pyserial loop,
request after request, no asyncio, no lock, no decoding. Its cycle against the same limit is
what the pty, the simulator and this machine's wake-up latency cost by themselves; the
driver's ratio to it is what our driver adds on top.

Prints the figures and writes a JSON record to ``benchmarks/results/``. Usage::

    python -m benchmarks.meters_line [--meters 64] [--dis 10] [--cycles 2] [--baud 9600]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from citytwin.drivers.dlt645.binding import Dlt645Connection, Dlt645Point
from citytwin.drivers.dlt645.codec import parse_address, read_request
from citytwin.drivers.dlt645.driver import Dlt645Driver
from citytwin.drivers.serialline import Line

ROOT = Path(__file__).resolve().parent.parent
DIS = ("00010000", "00020000", "02010100", "02010200", "02010300",
       "02020100", "02020200", "02020300", "02030000", "02800002")


def start_simulator(link: Path, meters: int, baud: int, bits: int, turnaround: float) -> subprocess.Popen[bytes]:
    code = (
        "import asyncio\n"
        "from citytwin.simulators.meters_645.server import Meters645Simulator, make_meters\n"
        "async def main():\n"
        f"    sim = Meters645Simulator(make_meters({meters}, seed=1), link={str(link)!r}, baud={baud},\n"
        f"                             bits_per_byte={bits}, turnaround={turnaround})\n"
        "    async with sim:\n"
        "        await asyncio.Event().wait()\n"
        "asyncio.run(main())\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 20
    while not link.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("the meters-645 simulator did not start")
        time.sleep(0.05)
    return proc


def naive_cycle(args: argparse.Namespace, device: str) -> dict[str, Any]:
    """One poll of every meter and DI by a blocking loop: the same-run baseline."""
    import serial

    requests = [read_request(parse_address(f"{n + 1:012d}"), int(di, 16))
                for n in range(args.meters) for di in DIS[:args.dis]]
    wire = 0
    with serial.Serial(device, baudrate=args.baud, timeout=2.0 + args.turnaround) as port:
        port.reset_input_buffer()
        wall0 = time.perf_counter()
        for request in requests:
            port.write(request)
            answer = bytearray()
            while True:
                chunk = port.read(port.in_waiting or 1)
                if not chunk:
                    raise RuntimeError("the simulator did not answer the naive master")
                answer += chunk
                start = answer.find(0x68)
                if start >= 0 and len(answer) >= start + 10 and len(answer) >= start + 12 + answer[start + 9]:
                    break
            wire += len(request) + len(answer)
        wall = time.perf_counter() - wall0
    limit = wire * args.bits / args.baud + len(requests) * args.turnaround
    return {"cycle_s": round(wall, 3), "limit_s": round(limit, 3), "ratio": round(wall / limit, 3),
            "overhead_ms_per_exchange": round(1000 * (wall - limit) / len(requests), 2),
            "exchanges": len(requests), "wire_bytes": wire}


async def measure(args: argparse.Namespace, device: str) -> dict[str, Any]:
    points = {f"p{i}": Dlt645Point(di=di) for i, di in enumerate(DIS[:args.dis])}
    drivers = [
        Dlt645Driver(
            Dlt645Connection(serial=device, baudrate=args.baud, parity="N", address=f"{n + 1:012d}",
                             timeout=2.0 + args.turnaround),
            points,
        )
        for n in range(args.meters)
    ]
    for driver in drivers:
        await driver.connect()
    line: Line | None = drivers[0]._line
    assert line is not None
    try:
        await asyncio.gather(*(d.read() for d in drivers[:2]))  # warm up: imports, first frames
        cycles: list[dict[str, Any]] = []
        for _ in range(args.cycles):
            sent, received, requests = line.bytes_sent, line.bytes_received, sum(d.health.requests for d in drivers)
            cpu0, wall0 = time.process_time(), time.perf_counter()
            results = await asyncio.gather(*(d.read() for d in drivers))
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            good = sum(r.quality.value == "good" for readings in results for r in readings)
            exchanges = sum(d.health.requests for d in drivers) - requests
            wire_bytes = (line.bytes_sent - sent) + (line.bytes_received - received)
            limit = wire_bytes * args.bits / args.baud + exchanges * args.turnaround
            cycles.append({
                "cycle_s": round(wall, 3), "limit_s": round(limit, 3), "ratio": round(wall / limit, 3),
                "overhead_ms_per_exchange": round(1000 * (wall - limit) / exchanges, 2),
                "exchanges": exchanges, "wire_bytes": wire_bytes, "good_readings": good,
                "cpu_percent": round(100 * cpu / wall, 1),
            })
    finally:
        for driver in drivers:
            await driver.close()
    best = min(cycles, key=lambda c: c["ratio"])
    return {"cycles": cycles, "best_ratio": best["ratio"],
            "mean_ratio": round(sum(c["ratio"] for c in cycles) / len(cycles), 3)}


def run(args: argparse.Namespace, device: str) -> dict[str, Any]:
    naive = naive_cycle(args, device)
    figures = asyncio.run(measure(args, device))
    figures["naive"] = naive
    figures["ratio_driver_to_naive"] = round(
        sum(c["cycle_s"] for c in figures["cycles"]) / len(figures["cycles"]) / naive["cycle_s"], 3
    )
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meters", type=int, default=64)
    parser.add_argument("--dis", type=int, default=10, choices=range(1, len(DIS) + 1), metavar="1..10")
    parser.add_argument("--cycles", type=int, default=2)
    parser.add_argument("--baud", type=int, default=9600)
    parser.add_argument("--bits", type=int, default=10, help="bits per character on the wire (8N1: 10)")
    parser.add_argument("--turnaround", type=float, default=0.0, help="each meter's answer delay (s)")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        link = Path(tmp) / "line"
        sim = start_simulator(link, args.meters, args.baud, args.bits, args.turnaround)
        try:
            figures = run(args, str(link))
        finally:
            sim.terminate()
            sim.wait(10)
    print(f"DL/T 645: {args.meters} meters × {args.dis} DIs on one simulated {args.baud}-baud line "
          f"({args.bits} bits/char, turnaround {args.turnaround * 1000:g} ms)")
    naive = figures["naive"]
    print(f"  naive   : {naive['cycle_s']:8.3f} s   line limit {naive['limit_s']:8.3f} s   ratio {naive['ratio']:.3f} "
          f"({naive['overhead_ms_per_exchange']} ms/exchange over the wire)   blocking pyserial loop, same line")
    for n, cycle in enumerate(figures["cycles"], start=1):
        print(f"  cycle {n}: {cycle['cycle_s']:8.3f} s   line limit {cycle['limit_s']:8.3f} s   "
              f"ratio {cycle['ratio']:.3f} ({cycle['overhead_ms_per_exchange']} ms/exchange over the wire)   "
              f"{cycle['exchanges']} exchanges, {cycle['wire_bytes']} bytes, "
              f"{cycle['good_readings']} good readings, gateway CPU {cycle['cpu_percent']} %")
    print(f"  ratio cycle / physical limit: best {figures['best_ratio']}, mean {figures['mean_ratio']}; "
          f"driver / naive master: {figures['ratio_driver_to_naive']}")
    record = {
        "benchmark": "meters_line",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "parameters": {k: v for k, v in vars(args).items() if k != "output"},
        "figures": figures,
    }
    args.output.mkdir(parents=True, exist_ok=True)
    out = args.output / f"meters_line-{record['when'].replace(':', '')}.json"
    out.write_text(orjson.dumps(record, option=orjson.OPT_INDENT_2).decode())
    print(f"  record: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
