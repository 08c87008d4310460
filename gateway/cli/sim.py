"""``citytwin sim …``: the device simulators, each a real protocol peer on this machine."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any


def _run(work: Callable[[], Awaitable[None]]) -> int:
    from citytwin.gateway.cli.main import run_until_signal

    return run_until_signal(work)


def cmd_pump_station(args: argparse.Namespace) -> int:
    if args.serial:
        from citytwin.simulators.pump_station.rtu import serve_rtu

        return _run(lambda: serve_rtu(args.serial, args.unit, args.baudrate, args.parity, args.speed, args.seed))

    from citytwin.simulators.pump_station.server import serve

    async def many() -> None:
        # a street of stations on consecutive ports, for demos and load tests
        await asyncio.gather(*(
            serve(args.host, args.port + i, args.unit, args.speed,
                  None if args.seed is None else args.seed + i, rtu_over_tcp=args.rtu_over_tcp)
            for i in range(args.count)
        ))

    return _run(many)


def cmd_intersection(args: argparse.Namespace) -> int:
    from citytwin.simulators.intersection.server import serve

    return _run(lambda: serve(args.host, args.port, speed=args.speed, seed=args.seed, pki_dir=args.pki_dir))


def cmd_city_sensors(args: argparse.Namespace) -> int:
    from citytwin.simulators.city_sensors.server import serve

    return _run(lambda: serve(args.host, args.port, args.speed, args.seed, args.interval))


def cmd_meters(args: argparse.Namespace) -> int:
    from citytwin.simulators.meters.server import serve

    return _run(lambda: serve(args.broker, args.count, args.prefix, args.report_interval, args.speed, args.seed))


def add_sim_commands(sub: Any) -> None:
    sim = sub.add_parser("sim", help="run a device simulator")
    sims = sim.add_subparsers(dest="sim_command", required=True, metavar="SIMULATOR")

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second")
        parser.add_argument("--seed", type=int, default=None,
                            help="seed of the simulated process noise, for repeatable runs (default: random)")

    pump = sims.add_parser("pump-station", help="pump station PLC over Modbus TCP (or RTU with --serial)")
    pump.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    pump.add_argument("--port", type=int, default=5020, help="Modbus TCP port to listen on")
    pump.add_argument("--unit", type=int, default=1, help="Modbus unit (slave) id the station answers to")
    pump.add_argument("--count", type=int, default=1, help="run COUNT stations on ports PORT, PORT+1, …")
    pump.add_argument("--serial", default=None, metavar="DEVICE",
                      help="serve Modbus RTU on this serial device instead of TCP (default: TCP)")
    pump.add_argument("--rtu-over-tcp", action="store_true", help="RTU framing on the TCP port (serial device servers)")
    pump.add_argument("--baudrate", type=int, default=19200, help="serial speed with --serial")
    pump.add_argument("--parity", default="E", choices=["N", "E", "O"], help="serial parity with --serial (none, even, odd)")
    common(pump)
    pump.set_defaults(func=cmd_pump_station)

    inter = sims.add_parser("intersection", help="signal controller and detectors over OPC UA")
    inter.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    inter.add_argument("--port", type=int, default=4840, help="OPC UA port to listen on")
    inter.add_argument("--pki-dir", type=Path, default=None,
                       help="enable the secured endpoint with certificates here (default: unsecured only)")
    common(inter)
    inter.set_defaults(func=cmd_intersection)

    sensors = sims.add_parser("city-sensors", help="air-quality station and manhole level sensor over CoAP")
    sensors.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    sensors.add_argument("--port", type=int, default=5683, help="CoAP UDP port to listen on")
    sensors.add_argument("--interval", type=float, default=5.0, help="seconds between observe notifications")
    common(sensors)
    sensors.set_defaults(func=cmd_city_sensors)

    meters = sims.add_parser("meters", help="water meters publishing on their own MQTT topics")
    meters.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="the meters' own MQTT broker")
    meters.add_argument("--count", type=int, default=3, help="how many meters (meter-1 … meter-COUNT)")
    meters.add_argument("--prefix", default="meters", help="first segment of the meters' topics")
    meters.add_argument("--report-interval", type=int, default=1, help="seconds between a meter's reports")
    common(meters)
    meters.set_defaults(func=cmd_meters)
