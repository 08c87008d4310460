"""Foundation figures: pump stations → gateway → mosquitto, and hub commands back.

Runs real processes over loopback: mosquitto (``set_tcp_nodelay true``), N pump-station
simulators in one process, ``citytwin run`` as a subprocess, and this process as the hub
(a counting subscriber and an operator sending commands). Prints a table and writes a JSON
record to ``benchmarks/results/``. Usage::

    python -m benchmarks.foundation [--devices 20] [--period 0.1] [--seconds 15] [--commands 300]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
import yaml

from benchmarks.procs import ProcStats, port_block, wait_port

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "deploy" / "examples" / "pump-station.yaml"
PREFIX = "citytwin/v1/bench"


def gateway_config(path: Path, hub_port: int, sim_port: int, devices: int, period: float) -> None:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["gateway"].update({"id": "bench", "data_dir": str(path.parent / "data")})
    doc["hub"].update({"url": f"mqtt://127.0.0.1:{hub_port}", "prefix": "citytwin/v1", "snapshot_interval": 1.0})
    doc["access"] = {"identity": ["user_property", "payload"], "anonymous": "operator", "grants": []}
    doc["http"] = {"enabled": False}
    template = doc["devices"][0]
    for point in template["points"].values():
        point["deadband"] = 0.0  # report every change: the load is what moves
    doc["devices"] = []
    for i in range(devices):
        device = yaml.safe_load(yaml.safe_dump(template))
        device["id"] = f"ps-{i:04d}"
        device["connection"]["port"] = sim_port + i
        device["poll_period"] = period
        doc["devices"].append(device)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


async def measure(args: argparse.Namespace, hub_port: int, gateway: subprocess.Popen[bytes]) -> dict[str, Any]:
    stats = ProcStats(gateway.pid)
    points = reports = 0
    replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
    async with aiomqtt.Client("127.0.0.1", hub_port, max_queued_incoming_messages=0,
                              socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)) as hub:
        await hub.subscribe(f"{PREFIX}/+/properties/report", qos=0)
        await hub.subscribe(f"{PREFIX}/+/replies", qos=1)

        async def listen() -> None:
            nonlocal points, reports
            async for message in hub.messages:
                assert isinstance(message.payload, bytes)
                body = orjson.loads(message.payload)
                if str(message.topic).endswith("/replies"):
                    future = replies.pop(body["id"], None)
                    if future is not None:
                        future.set_result(body)
                else:
                    reports += 1
                    points += len(body["properties"])

        listener = asyncio.create_task(listen())
        # warm up: every device online and reporting
        deadline = time.monotonic() + 30
        while reports < args.devices and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(2)
        stats.reset()
        points0, reports0, t0 = points, reports, time.monotonic()
        await asyncio.sleep(args.seconds)
        elapsed = time.monotonic() - t0
        throughput = {
            "points_per_s": (points - points0) / elapsed,
            "reports_per_s": (reports - reports0) / elapsed,
            "gateway_cpu_percent": stats.cpu_percent(),
            "gateway_rss_mb": stats.rss_mb(),
        }
        rtts = []
        for i in range(args.commands):
            command_id = f"bench-{i}"
            future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            replies[command_id] = future
            hz = 30.0 + (i % 20)
            sent = time.perf_counter()
            await hub.publish(f"{PREFIX}/ps-0000/services/set_frequency/invoke",
                              orjson.dumps({"id": command_id, "input": {"pump": 1, "hz": hz}}), qos=1)
            reply = await asyncio.wait_for(future, 10)
            rtts.append((time.perf_counter() - sent) * 1000)
            assert reply["status"] == "succeeded", reply
        listener.cancel()
    rtts.sort()
    commands = {
        "count": len(rtts),
        "p50_ms": statistics.median(rtts) if rtts else None,
        "p99_ms": rtts[int(0.99 * (len(rtts) - 1))] if rtts else None,
        "max_ms": rtts[-1] if rtts else None,
    }
    return {"throughput": throughput, "commands": commands}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--period", type=float, default=0.1)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--commands", type=int, default=300)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    with tempfile.TemporaryDirectory(prefix="citytwin-bench-") as tmp:
        work = Path(tmp)
        hub_port, sim_port = port_block(), port_block(args.devices)
        (work / "mosquitto.conf").write_text(
            f"listener {hub_port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n"
            "persistence false\nmax_queued_messages 1000000\n"
        )
        procs: list[subprocess.Popen[bytes]] = []
        try:
            procs.append(subprocess.Popen([mosquitto, "-c", str(work / "mosquitto.conf")],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            procs.append(subprocess.Popen([sys.executable, "-m", "citytwin.gateway.cli", "--log-level", "warning",
                                           "sim", "pump-station", "--port", str(sim_port),
                                           "--count", str(args.devices), "--seed", "1"]))
            wait_port(hub_port)
            wait_port(sim_port + args.devices - 1)
            gateway_config(work / "gw.yaml", hub_port, sim_port, args.devices, args.period)
            gateway = subprocess.Popen([sys.executable, "-m", "citytwin.gateway.cli", "--log-level", "warning",
                                        "run", "-c", str(work / "gw.yaml")])
            procs.append(gateway)
            figures = asyncio.run(measure(args, hub_port, gateway))
        finally:
            for proc in reversed(procs):
                proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
    offered = args.devices * 17 / args.period
    record = {
        "benchmark": "foundation",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "parameters": vars(args) | {"output": str(args.output), "points_polled_per_s": offered},
        **figures,
    }
    t, c = figures["throughput"], figures["commands"]
    print(f"devices {args.devices} × 17 points every {args.period * 1000:.0f} ms = {offered:,.0f} points polled/s")
    print(f"  delivered to the hub: {t['points_per_s']:,.0f} points/s in {t['reports_per_s']:,.0f} reports/s "
          f"(report by exception, deadband 0)")
    print(f"  gateway: {t['gateway_cpu_percent']:.0f} % of one core, RSS {t['gateway_rss_mb']:.0f} MB")
    print(f"commands (set_frequency, hub → gateway → Modbus write → reply), n={c['count']}: "
          f"p50 {c['p50_ms']:.2f} ms, p99 {c['p99_ms']:.2f} ms, max {c['max_ms']:.2f} ms")
    args.output.mkdir(parents=True, exist_ok=True)
    out = args.output / f"foundation-{record['when'].replace(':', '')}.json"
    out.write_text(orjson.dumps(record, option=orjson.OPT_INDENT_2).decode())
    print(f"record: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
