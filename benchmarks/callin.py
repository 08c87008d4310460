"""Stations calling in: N HJ 212 stations x one 20-pollutant packet per second into one listener.

The server side runs in its own process (so its CPU and RSS are its own): one shared
listener and N ``Hj212Driver``s, each with a push sink that records packet-to-sink latency
(every packet carries its send time, epoch seconds, as pollutant ``w00000``; sender and
server share the machine's clock). The load side, in this process, opens N connections,
sends each station's packet once a second (staggered over the second) and counts the data
answers (9014). Two baselines, in the same run with the same load: a bare asyncio server that
only counts ``##`` frames (no parsing, no answers, no drivers) — the floor of Python sockets on
this machine — and the same server answering every frame with a canned 9014 (the gateway's
socket writes, with none of its work). Latency of the baselines is read from the same send
time found in the bytes. CPU is what the kernel accounts to the server process. Prints a table
and writes a JSON record to ``benchmarks/results/``.

    python -m benchmarks.callin [--stations 1000] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import NoReturn

from citytwin.drivers.hj212 import codec

POLLUTANTS = 20


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- the two servers (run with --serve) -----------------------------------------------


async def _serve_gateway(stations: int, seconds: float) -> NoReturn:
    from pydantic import SecretStr

    from citytwin.drivers.base import Reading
    from citytwin.drivers.hj212.binding import Hj212Connection, Hj212Point
    from citytwin.drivers.hj212.driver import Hj212Driver

    latencies: list[float] = []
    trace: list[tuple[float, float]] = []
    points = {"sent": Hj212Point(key="w00000-Rtd"), **{f"p{i}": Hj212Point(key=f"w{i:05d}-Rtd") for i in range(1, POLLUTANTS)}}

    def sink(readings: list[Reading] | tuple[Reading, ...]) -> None:
        now = time.time()
        for reading in readings:
            if reading.point == "sent":
                latencies.append(now - reading.value)
                if os.environ.get("CALLIN_TRACE"):
                    trace.append((now, now - reading.value))

    drivers = []
    port = 0
    for i in range(stations):
        conn = Hj212Connection(host="127.0.0.1", port=port, mn=f"BENCH{i:06d}", password=SecretStr("123456"))
        driver = Hj212Driver(conn, points)
        driver.set_push_sink(sink)  # type: ignore[arg-type]
        await driver.connect()
        port = driver.bound_port or 0
        drivers.append(driver)
    if os.environ.get("CALLIN_TRACE"):
        import atexit
        atexit.register(lambda: None)
        asyncio.get_running_loop().call_later(
            seconds + 1.4, lambda: Path(os.environ["CALLIN_TRACE"]).write_text(json.dumps(trace)))
    return await _measure(port, seconds, lambda: len(latencies), latencies)


async def _serve_baseline(stations: int, seconds: float, answer: bool = False) -> NoReturn:
    frames = 0
    canned = codec.encode(codec.Packet("20260101000000000", "91", "9014", "123456", "BENCH000000", 4, ""))
    latencies: list[float] = []
    marker = b"w00000-Rtd="

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal frames
        while data := await reader.read(65536):
            count = data.count(b"##")
            frames += count
            if answer:  # the same writes the gateway makes, with nothing decided
                writer.write(canned * count)
            at = data.find(marker)  # the same send time the gateway's sink reads, found, not parsed
            if at >= 0:
                latencies.append(time.time() - float(data[at + len(marker):data.find(b",", at)]))
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    return await _measure(port, seconds, lambda: frames, latencies)


async def _measure(port: int, seconds: float, count: object, latencies: list[float]) -> NoReturn:
    print(port, flush=True)  # the load side waits for this line
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # "go"
    del latencies[:]
    cpu0, t0, n0 = _cpu_s(), time.monotonic(), count()  # type: ignore[operator]
    await asyncio.sleep(seconds)
    cpu1, t1, n1 = _cpu_s(), time.monotonic(), count()  # type: ignore[operator]
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000 if ordered else float("nan")

    result = {"packets": n1 - n0, "packets_per_s": (n1 - n0) / (t1 - t0), "cpu_cores": (cpu1 - cpu0) / (t1 - t0),
            "rss_mb": _rss_mb(), "p50_ms": pct(0.50), "p99_ms": pct(0.99), "max_ms": pct(1.0) if ordered else float("nan")}
    print(json.dumps(result), flush=True)
    # keep answering until the load side is done (it says so on stdin), then leave without
    # an orderly teardown of 1,000 connections: the figures are taken
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    os._exit(0)


# -- the load side ----------------------------------------------------------------------


def _packet(mn: str, qn: int) -> bytes:
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(time.time() + 8 * 3600))
    groups = [f"DataTime={stamp}", f"w00000-Rtd={time.time():.6f},w00000-Flag=N"]
    groups += [f"w{i:05d}-Rtd={10 + i * 1.5:.2f},w{i:05d}-Flag=N" for i in range(1, POLLUTANTS)]
    return codec.encode(codec.Packet(f"{stamp}{qn % 1000:03d}", "32", "2011", "123456", mn, 5, ";".join(groups)))


async def _load(port: int, stations: int, seconds: float, answers: list[int], sent: list[int]) -> None:
    async def station(i: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)

        async def count_answers() -> None:
            while data := await reader.read(65536):
                answers[0] += data.count(b"\n")  # one CR LF per answer; "CN=9014" may straddle two reads

        counter = asyncio.create_task(count_answers())
        await asyncio.sleep(i / stations)  # stagger over the second
        loop = asyncio.get_running_loop()
        start = loop.time()
        sequence = 0
        try:
            while loop.time() - start < seconds:
                sequence += 1
                writer.write(_packet(f"BENCH{i:06d}", sequence))
                sent[0] += 1
                await asyncio.sleep(start + sequence - loop.time())
        finally:
            await asyncio.sleep(1.0)  # the last answers
            counter.cancel()
            await asyncio.gather(counter, return_exceptions=True)
            writer.close()

    await asyncio.gather(*(station(i) for i in range(stations)))


def _run(kind: str, stations: int, seconds: float) -> dict[str, float]:
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.callin", "--serve", kind, "--stations", str(stations),
                             "--seconds", str(seconds)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    port = int(proc.stdout.readline())
    answers, sent = [0], [0]

    async def main() -> None:
        load = asyncio.create_task(_load(port, stations, seconds + 2, answers, sent))
        await asyncio.sleep(1.5)  # every connection open and identified before measuring
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
        await load

    asyncio.run(main())
    result: dict[str, float] = json.loads(proc.stdout.readline())
    proc.stdin.write("stop\n")
    proc.stdin.flush()
    proc.wait(30)
    result["answers"], result["sent"] = answers[0], sent[0]
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stations", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--serve", choices=["gateway", "baseline", "answering"], default=None)
    args = parser.parse_args()
    if args.serve:
        if args.serve == "gateway":
            asyncio.run(_serve_gateway(args.stations, args.seconds))
        asyncio.run(_serve_baseline(args.stations, args.seconds, answer=args.serve == "answering"))
    baseline = _run("baseline", args.stations, args.seconds)
    answering = _run("answering", args.stations, args.seconds)
    gateway = _run("gateway", args.stations, args.seconds)
    offered = args.stations * args.seconds
    print(f"{args.stations} HJ 212 stations x 1 packet/s ({POLLUTANTS} pollutants), {args.seconds:g} s measured")
    print(f"{'':10} {'packets/s':>10} {'sent':>7} {'answered':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
          f"{'CPU cores':>10} {'CPU us/pkt':>11} {'RSS MB':>8}")
    for name, r in (("baseline", baseline), ("answering", answering), ("gateway", gateway)):
        print(f"{name:10} {r['packets_per_s']:10.0f} {r['sent']:7.0f} {r['answers']:9.0f} {r['p50_ms']:8.1f} {r['p99_ms']:8.1f} "
              f"{r['max_ms']:8.1f} {r['cpu_cores']:10.2f} {r['cpu_cores'] / r['packets_per_s'] * 1e6:11.0f} "
              f"{r['rss_mb']:8.1f}")
    print(f"gateway/baseline: packets {gateway['packets_per_s'] / baseline['packets_per_s']:.2f}, "
          f"CPU {gateway['cpu_cores'] / max(baseline['cpu_cores'], 1e-9):.1f}x, RSS +{gateway['rss_mb'] - baseline['rss_mb']:.0f} MB; "
          f"offered {offered / args.seconds:.0f}/s")
    record = {"benchmark": "callin", "stations": args.stations, "seconds": args.seconds, "pollutants": POLLUTANTS,
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
              "baseline": baseline, "answering": answering, "gateway": gateway, "time": time.strftime("%Y-%m-%dT%H%M%SZ", time.gmtime())}
    out = Path(__file__).parent / "results" / f"callin-{record['time']}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"record: {out}")


if __name__ == "__main__":
    main()
