"""CoAP Observe notifications/s: into the gateway pipeline vs the raw aiocoap observe loop.

One city-sensors simulator in a subprocess notifies its four observable resources on every
physics tick (reporting interval 0, physics at 600x so values move past their deadbands). In this process, measured one after the other against
that same server:

- raw: an aiocoap client context observing the four resources with ``async for`` and
  decoding each payload, nothing else (the library's own ceiling on this machine);
- gateway: two ``CoapDriver``s (air-quality station, manhole) observing the same resources,
  each notification going through the push sink into a real ``DevicePipeline`` (scaling,
  model checks, deadband, twin update, report messages) built from
  ``deploy/examples/city-sensors.yaml``.

The ratio gateway/raw is the gateway's overhead. Prints a table and writes a JSON record to
``benchmarks/results/``. Usage::

    python -m benchmarks.coap_observe [--seconds 5] [--tick 0.0002]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cbor2
import orjson
from aiocoap import GET, Context, Message

from citytwin.drivers.registry import create_driver
from citytwin.gateway.bootstrap import prepare_file
from citytwin.gateway.pipeline import DevicePipeline
from citytwin.gateway.twins import Twin

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "deploy" / "examples" / "city-sensors.yaml"
RESOURCES = (("aq", "pm"), ("aq", "gas"), ("aq", "climate"), ("mh", "level"))


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(port: int, tick: float) -> subprocess.Popen[bytes]:
    code = (
        "import asyncio; from citytwin.simulators.city_sensors.server import serve; "
        f"asyncio.run(serve(port={port}, interval=0, tick={tick}, seed=1, speed=600))"
    )
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL)


async def wait_ready(context: Any, port: int) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        message = Message(code=GET, uri=f"coap://127.0.0.1:{port}/mh/battery")
        try:
            async with asyncio.timeout(0.5):
                await context.request(message).response
            return
        except Exception:  # not listening yet (refused or no answer)
            await asyncio.sleep(0.1)
    raise TimeoutError("the simulator did not start")


async def raw_loop(context: Any, port: int, seconds: float) -> int:
    count = 0

    async def observe(path: tuple[str, ...]) -> None:
        nonlocal count
        message = Message(code=GET, uri=f"coap://127.0.0.1:{port}/{'/'.join(path)}", observe=0)
        request = context.request(message)
        try:
            first = await request.response
            orjson.loads(first.payload)
            async for note in request.observation:
                if note.opt.content_format == 60:
                    cbor2.loads(note.payload)
                else:
                    orjson.loads(note.payload)
                count += 1
        finally:
            request.observation.cancel()

    tasks = [asyncio.create_task(observe(path)) for path in RESOURCES]
    await asyncio.sleep(0.5)  # registrations settle
    start = count
    await asyncio.sleep(seconds)
    measured = count - start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return measured


async def gateway_loop(port: int, seconds: float) -> dict[str, int]:
    _, specs = prepare_file(EXAMPLE)
    drivers = []
    reports = 0
    processed = 0

    def emit(kind: str, payload: dict[str, Any]) -> None:
        nonlocal reports
        reports += 1

    for spec in specs.values():
        spec.config.connection.port = port
        pipeline = DevicePipeline(spec, Twin(spec.id), emit)
        driver = create_driver(spec.config.driver, spec.config.connection, spec.driver_points())

        def sink(readings: Any, pipeline: DevicePipeline = pipeline) -> None:
            nonlocal processed
            processed += 1
            pipeline.process(readings, time.time_ns() // 1_000_000)

        driver.set_push_sink(sink)
        drivers.append(driver)
    for driver in drivers:
        await driver.connect()
    try:
        await asyncio.sleep(0.5)
        start_processed, start_reports = processed, reports
        await asyncio.sleep(seconds)
        return {"notifications": processed - start_processed, "reports": reports - start_reports}
    finally:
        for driver in drivers:
            await driver.close()


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    port = free_udp_port()
    server = start_server(port, args.tick)
    try:
        context = await Context.create_client_context()
        try:
            await wait_ready(context, port)
            cpu0 = time.process_time()
            raw = await raw_loop(context, port, args.seconds)
            raw_cpu = time.process_time() - cpu0
        finally:
            await context.shutdown()
        cpu0 = time.process_time()
        gateway = await gateway_loop(port, args.seconds)
        gateway_cpu = time.process_time() - cpu0
    finally:
        server.terminate()
        server.wait(10)
    raw_rate = raw / args.seconds
    gw_rate = gateway["notifications"] / args.seconds
    return {
        "raw_notifications_per_s": round(raw_rate),
        "gateway_notifications_per_s": round(gw_rate),
        "gateway_reports_per_s": round(gateway["reports"] / args.seconds),
        "ratio_gateway_to_raw": round(gw_rate / raw_rate, 3) if raw_rate else None,
        # the simulator sets the pace when it is slower than the client: CPU per
        # notification then shows the overhead the rates cannot (both include 0.5 s of setup)
        "raw_cpu_us_per_notification": round(1e6 * raw_cpu / raw, 1) if raw else None,
        "gateway_cpu_us_per_notification": (
            round(1e6 * gateway_cpu / gateway["notifications"], 1) if gateway["notifications"] else None
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--tick", type=float, default=0.0002, help="simulator tick (s): its notification pace")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    figures = asyncio.run(measure(args))
    print("CoAP Observe, 4 resources on one simulator, loopback")
    print(f"  raw aiocoap observe loop : {figures['raw_notifications_per_s']:>8} notifications/s")
    print(f"  gateway pipeline         : {figures['gateway_notifications_per_s']:>8} notifications/s "
          f"({figures['gateway_reports_per_s']} reports/s)")
    print(f"  ratio gateway / raw      : {figures['ratio_gateway_to_raw']}")
    print(f"  client CPU per notification: raw {figures['raw_cpu_us_per_notification']} µs, "
          f"gateway {figures['gateway_cpu_us_per_notification']} µs")
    record = {
        "benchmark": "coap_observe",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "parameters": {"seconds": args.seconds, "tick": args.tick},
        "figures": figures,
    }
    args.output.mkdir(parents=True, exist_ok=True)
    out = args.output / f"coap_observe-{record['when'].replace(':', '')}.json"
    out.write_text(orjson.dumps(record, option=orjson.OPT_INDENT_2).decode())
    print(f"  record: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
