"""BACnet: 1,000 objects delivered by COV into the driver's push sink, against polling them.

A bacpypes3 device in a subprocess serves ``--objects`` analog-input objects and moves every
one of them past its COV increment once per ``--change-period`` seconds (spread evenly). In
this process, one after the other against that same device:

- cov: a ``BacnetDriver`` with every object bound in ``mode: cov`` (unconfirmed
  notifications into the push sink), and ``read()`` called once per poll period as the
  gateway's runner does (it then only probes the device);
- poll: the baseline, the same objects bound in ``mode: poll``, ``read()`` once per poll
  period (ReadPropertyMultiple of present-value and status-flags, 40 objects a request);
- cov into the gateway pipeline: as cov, every batch pushed on into a real
  ``DevicePipeline`` (model checks, deadband, twin update, report messages) built from a
  generated model and config — everything up to the outbox and the MQTT publish.

Figures: readings delivered per second, this process's CPU (user+system) as a share of one
core, and CPU per delivered reading; the cov/poll ratios are from the same run. The push
sink only counts in the first two; the hub link (outbox, MQTT) is in none of them. Prints a
table and writes a JSON record to ``benchmarks/results/``. Usage::

    python -m benchmarks.bacnet_cov [--objects 1000] [--seconds 10] [--change-period 2] [--poll-period 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import yaml

from citytwin.drivers.bacnet.binding import BacnetConnection, BacnetPoint
from citytwin.drivers.bacnet.driver import BacnetDriver
from citytwin.drivers.base import Reading
from citytwin.gateway.bootstrap import prepare_file
from citytwin.gateway.pipeline import DevicePipeline
from citytwin.gateway.twins import Twin

ROOT = Path(__file__).resolve().parent.parent

DEVICE = """
import asyncio, sys
from bacpypes3.app import Application
from bacpypes3.local.analog import AnalogInputObject
from bacpypes3.local.device import DeviceObject
from bacpypes3.local.networkport import NetworkPortObject

port, count, period = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])

async def main():
    objects = [AnalogInputObject(objectIdentifier=("analog-input", i), objectName=f"ai-{i}",
               presentValue=0.0, statusFlags=[0, 0, 0, 0], eventState="normal", outOfService=False,
               units="degreesCelsius", covIncrement=0.5) for i in range(1, count + 1)]
    device = DeviceObject(objectIdentifier=("device", 3003), objectName="bench", vendorIdentifier=999)
    net = NetworkPortObject(f"127.0.0.1:{port}", objectIdentifier=("network-port", 1),
                            objectName="NetworkPort-1", networkNumber=0, networkNumberQuality="unknown")
    Application.from_object_list([device, net, *objects])
    await asyncio.sleep(1.0)  # the socket is bound by a task of its own
    print("ready", flush=True)
    batch = max(1, count // 50)  # 50 batches per period
    i = 0
    while True:
        await asyncio.sleep(period / 50)
        for _ in range(batch):
            obj = objects[i % count]
            obj.presentValue = float(obj.presentValue) + 1.0
            i += 1

asyncio.run(main())
"""


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def pipeline_for(objects: int, port: int, workdir: Path) -> tuple[DevicePipeline, Any]:
    """A real ``DevicePipeline`` (model checks, deadband, twin, report messages) for a device
    with one float property per object, from a generated model and config."""
    model = {
        "profile": {"productKey": "bench.bacnet.objects"},
        "properties": [
            {"identifier": f"p{i}", "name": f"p{i}", "accessMode": "r", "required": False,
             "dataType": {"type": "float", "specs": {"min": "-1000000", "max": "1000000", "unit": "°C"}}}
            for i in range(1, objects + 1)
        ],
    }
    (workdir / "model.json").write_text(orjson.dumps(model).decode())
    config = {
        "gateway": {"id": "bench", "data_dir": str(workdir / "data")},
        "hub": {"url": "mqtt://127.0.0.1:1"},
        "devices": [{
            "id": "objects", "model": "model.json", "driver": "bacnet",
            "connection": {"address": f"127.0.0.1:{port}", "device_id": 3003,
                           "local_address": f"127.0.0.1:{free_udp_port()}", "timeout": 5.0, "cov_lifetime": 3600},
            "points": {f"p{i}": {"object": f"analog-input,{i}"} for i in range(1, objects + 1)},
        }],
    }
    (workdir / "gw.yaml").write_text(yaml.safe_dump(config))
    _, specs = prepare_file(workdir / "gw.yaml")
    spec = specs["objects"]
    reports = {"count": 0}

    def emit(kind: str, payload: dict[str, Any]) -> None:
        reports["count"] += 1

    return DevicePipeline(spec, Twin(spec.id), emit), spec


async def run(mode: str, port: int, args: argparse.Namespace, pipeline: DevicePipeline | None = None) -> dict[str, Any]:
    conn = BacnetConnection(address=f"127.0.0.1:{port}", local_address=f"127.0.0.1:{free_udp_port()}",
                            device_id=3003, timeout=5.0, cov_lifetime=3600)
    points = {f"p{i}": BacnetPoint(object=f"analog-input,{i}", mode=mode) for i in range(1, args.objects + 1)}  # type: ignore[arg-type]
    driver = BacnetDriver(conn, points)
    delivered = 0

    def sink(readings: Sequence[Reading]) -> None:
        nonlocal delivered
        delivered += len(readings)
        if pipeline is not None:
            pipeline.push(readings)

    driver.set_push_sink(sink)
    await driver.connect()
    try:
        await asyncio.sleep(1.0)  # the initial notifications of every subscription settle
        delivered = 0
        cpu0, wall0 = cpu_seconds(), time.monotonic()
        deadline = wall0 + args.seconds
        while time.monotonic() < deadline:
            tick = time.monotonic()
            polled = await driver.read()
            delivered += len(polled)
            if pipeline is not None and polled:
                pipeline.push(polled)
            await asyncio.sleep(max(0.0, args.poll_period - (time.monotonic() - tick)))
        cpu, wall = cpu_seconds() - cpu0, time.monotonic() - wall0
        health = driver.health
    finally:
        await driver.close()
    return {
        "readings_per_s": round(delivered / wall, 1),
        "cpu_cores": round(cpu / wall, 3),
        "cpu_us_per_reading": round(cpu / delivered * 1e6, 1) if delivered else None,
        "requests": health.requests,
        "subscribed": health.extra["subscribed"],
    }


def start_device(port: int, args: argparse.Namespace) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", DEVICE, str(port), str(args.objects), str(args.change_period)],
                            stdout=subprocess.PIPE, text=True)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    port = free_udp_port()
    device = start_device(port, args)
    try:
        assert device.stdout is not None
        if device.stdout.readline().strip() != "ready":
            raise RuntimeError("the benchmark device did not start")
        cov = await run("cov", port, args)
        poll = await run("poll", port, args)
        with tempfile.TemporaryDirectory() as work:
            pipeline, _ = pipeline_for(args.objects, port, Path(work))
            cov_pipeline = await run("cov", port, args, pipeline)
    finally:
        device.terminate()
        device.wait(10)
    return {
        "cov": cov,
        "poll": poll,
        "cov_into_pipeline": cov_pipeline,
        "ratio_cpu_cov_to_poll": round(cov["cpu_cores"] / poll["cpu_cores"], 3) if poll["cpu_cores"] else None,
        "ratio_cpu_per_reading_cov_to_poll": (
            round(cov["cpu_us_per_reading"] / poll["cpu_us_per_reading"], 3)
            if cov["cpu_us_per_reading"] and poll["cpu_us_per_reading"] else None),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--change-period", type=float, default=2.0, help="s in which every object changes once")
    parser.add_argument("--poll-period", type=float, default=1.0, help="s between read() calls (the runner's poll)")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    figures = asyncio.run(measure(args))
    cov, poll = figures["cov"], figures["poll"]
    print(f"BACnet/IP, {args.objects} analog inputs on one bacpypes3 device (subprocess), loopback")
    print(f"  each object changes every {args.change_period} s; read() every {args.poll_period} s")
    for name, f in (("cov ", cov), ("poll", poll), ("cov into the gateway pipeline", figures["cov_into_pipeline"])):
        print(f"  {name}: {f['readings_per_s']:>8} readings/s  {f['cpu_cores']:>6} cores  "
              f"{f['cpu_us_per_reading']} µs CPU/reading  ({f['requests']} requests, {f['subscribed']} subscribed)")
    print(f"  CPU cov / poll: {figures['ratio_cpu_cov_to_poll']} (per reading: {figures['ratio_cpu_per_reading_cov_to_poll']})")
    record = {
        "benchmark": "bacnet_cov",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "parameters": {"objects": args.objects, "seconds": args.seconds,
                       "change_period": args.change_period, "poll_period": args.poll_period},
        "figures": figures,
    }
    args.output.mkdir(parents=True, exist_ok=True)
    out = args.output / f"bacnet_cov-{record['when'].replace(':', '')}.json"
    out.write_text(orjson.dumps(record, option=orjson.OPT_INDENT_2).decode())
    print(f"  record: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
