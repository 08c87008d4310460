"""OPC UA notifications/s: into the gateway pipeline vs the raw asyncua subscription loop.

A node-opcua server in a subprocess (``tests/node-opcua/server.js`` with a load of N Double
variables, all changed every ``--period`` ms) is subscribed to twice, one after the other, in
this process:

- raw: an ``asyncua.Client`` subscription over the N variables in iterator mode, consuming
  every DataChangeEvent with ``async for`` and touching its value, nothing else (the
  library's own ceiling on this machine);
- gateway: an ``OpcUaDriver`` over the same N variables (same publishing and sampling
  intervals), each notification going through the push sink into a real ``DevicePipeline``
  (model checks, deadband, twin update, report messages) built from a generated thing model
  with N float properties.

The ratio gateway/raw is the gateway's overhead. Prints a table and writes a JSON record to
``benchmarks/results/``. Needs node and ``npm ci`` in tests/node-opcua (scripts/test.sh).
Usage::

    python -m benchmarks.opcua_notifications [--items 1000] [--seconds 5] [--publishing 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.subscription import DataChangeEvent

from citytwin.drivers.registry import create_driver
from citytwin.gateway.bootstrap import prepare_file
from citytwin.gateway.pipeline import DevicePipeline
from citytwin.gateway.twins import Twin

ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = ROOT / "tests" / "node-opcua"
NS = "urn:citytwin:test:node-opcua"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(port: int, pki: Path, items: int, period: int) -> subprocess.Popen[str]:
    if not (NODE_DIR / "node_modules" / "node-opcua").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True)
    proc = subprocess.Popen(["node", "server.js", str(port), str(pki), str(items), str(period)],
                            cwd=NODE_DIR, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("READY"):
            return proc
    raise RuntimeError("the node-opcua server did not start")


async def raw_loop(url: str, items: int, publishing: float, seconds: float) -> int:
    client = Client(url, timeout=10)
    await client.connect()
    count = 0
    try:
        ns = await client.get_namespace_index(NS)
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=publishing, RequestedLifetimeCount=300,
            RequestedMaxKeepAliveCount=10, MaxNotificationsPerPublish=0, PublishingEnabled=True, Priority=0)
        sub = await client.create_subscription(params, queue_maxsize=100_000)
        nodes = [client.get_node(ua.NodeId(ua.String(f"Load.{i}"), ua.Int16(ns))) for i in range(items)]
        await sub.subscribe_data_change(nodes, sampling_interval=publishing)

        async def consume() -> None:
            nonlocal count
            async for event in sub:
                if isinstance(event, DataChangeEvent):
                    _ = event.value
                    count += 1

        task = asyncio.create_task(consume())
        await asyncio.sleep(1.0)  # initial values and warm-up
        start = count
        await asyncio.sleep(seconds)
        measured = count - start
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return measured
    finally:
        await client.disconnect()


def write_config(tmp: Path, url: str, items: int, publishing: float) -> Path:
    props = [{
        "identifier": f"p{i}", "name": f"Load {i}", "accessMode": "r", "required": False,
        "dataType": {"type": "double", "specs": {"min": "0", "max": "1000000000", "step": "1"}},
    } for i in range(items)]
    model = {"schema": "https://iotx-tsl.oss-ap-southeast-1.aliyuncs.com/schema.json",
             "profile": {"productKey": "citytwin.bench.load", "version": "1.0"},
             "properties": props, "events": [], "services": []}
    (tmp / "load.json").write_text(json.dumps(model))
    config = {
        "gateway": {"id": "bench", "data_dir": str(tmp / "data")},
        "devices": [{
            "id": "load", "model": "load.json", "driver": "opcua",
            "connection": {"url": url, "pki_dir": str(tmp / "pki"), "publishing_interval": publishing,
                           "sampling_interval": publishing},
            "points": {f"p{i}": {"node": f"nsu={NS};s=Load.{i}"} for i in range(items)},
        }],
    }
    path = tmp / "bench.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


async def gateway_loop(config: Path, seconds: float) -> dict[str, int]:
    _, specs = prepare_file(config)
    spec = specs["load"]
    reports = 0
    notifications = 0

    def emit(kind: str, payload: dict[str, Any]) -> None:
        nonlocal reports
        reports += 1

    pipeline = DevicePipeline(spec, Twin(spec.id), emit)

    def sink(readings: Any) -> None:
        nonlocal notifications
        notifications += len(readings)
        pipeline.process(readings, time.time_ns() // 1_000_000)

    driver = create_driver(spec.config.driver, spec.config.connection, spec.driver_points())
    driver.set_push_sink(sink)
    await driver.connect()
    try:
        await asyncio.sleep(1.0)
        start_n, start_r, start_twin = notifications, reports, pipeline.twin.version
        await asyncio.sleep(seconds)
        await driver.read()  # the session is still healthy at the end
        return {"notifications": notifications - start_n, "reports": reports - start_r,
                "twin_versions": pipeline.twin.version - start_twin}
    finally:
        await driver.close()


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    logging.getLogger("asyncua").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        port = free_port()
        server = start_server(port, tmp / "server-pki", args.items, args.period)
        url = f"opc.tcp://127.0.0.1:{port}/UA/Peer"
        try:
            cpu0 = time.process_time()
            raw = await raw_loop(url, args.items, args.publishing, args.seconds)
            raw_cpu = time.process_time() - cpu0
            cpu0 = time.process_time()
            gateway = await gateway_loop(write_config(tmp, url, args.items, args.publishing), args.seconds)
            gateway_cpu = time.process_time() - cpu0
        finally:
            server.terminate()
            server.wait(10)
    raw_rate = raw / args.seconds
    gw_rate = gateway["notifications"] / args.seconds
    return {
        "benchmark": "opcua_notifications",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "params": {"items": args.items, "seconds": args.seconds, "publishing_ms": args.publishing,
                   "server_change_period_ms": args.period, "server": "node-opcua (tests/node-opcua)"},
        "raw_asyncua": {"notifications_per_s": round(raw_rate), "cpu_s": round(raw_cpu, 2)},
        "gateway": {"notifications_per_s": round(gw_rate), "cpu_s": round(gateway_cpu, 2),
                    "reports_per_s": round(gateway["reports"] / args.seconds),
                    "twin_versions_per_s": round(gateway["twin_versions"] / args.seconds)},
        "ratio_gateway_to_raw": round(gw_rate / raw_rate, 3) if raw_rate else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--publishing", type=float, default=50.0, help="publishing interval, ms")
    parser.add_argument("--period", type=int, default=10, help="server change period, ms")
    args = parser.parse_args()
    record = asyncio.run(measure(args))
    print(f"OPC UA notifications/s ({args.items} items, publishing {args.publishing:g} ms, {args.seconds:g} s each)")
    print(f"  raw asyncua loop : {record['raw_asyncua']['notifications_per_s']:>8} /s  (cpu {record['raw_asyncua']['cpu_s']} s)")
    print(f"  gateway pipeline : {record['gateway']['notifications_per_s']:>8} /s  (cpu {record['gateway']['cpu_s']} s,"
          f" {record['gateway']['reports_per_s']} reports/s)")
    print(f"  gateway / raw    : {record['ratio_gateway_to_raw']}")
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"opcua_notifications-{record['when'].replace(':', '')}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"  record: {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
