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


def cmd_bacnet_building(args: argparse.Namespace) -> int:
    from citytwin.simulators.bacnet_building.server import serve

    return _run(lambda: serve(args.host, args.port, args.device_id, args.zones, args.speed, args.seed))


def add_sim_commands(sub: Any) -> None:
    sim = sub.add_parser("sim", help="run a device simulator")
    sims = sim.add_subparsers(dest="sim_command", required=True, metavar="SIMULATOR")

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second")
        parser.add_argument("--seed", type=int, default=None)

    pump = sims.add_parser("pump-station", help="pump station PLC over Modbus TCP (or RTU with --serial)")
    pump.add_argument("--host", default="127.0.0.1")
    pump.add_argument("--port", type=int, default=5020)
    pump.add_argument("--unit", type=int, default=1)
    pump.add_argument("--count", type=int, default=1, help="run COUNT stations on ports PORT, PORT+1, …")
    pump.add_argument("--serial", default=None, metavar="DEVICE", help="serve Modbus RTU on this serial device")
    pump.add_argument("--rtu-over-tcp", action="store_true", help="RTU framing on the TCP port (serial device servers)")
    pump.add_argument("--baudrate", type=int, default=19200)
    pump.add_argument("--parity", default="E", choices=["N", "E", "O"])
    common(pump)
    pump.set_defaults(func=cmd_pump_station)

    inter = sims.add_parser("intersection", help="signal controller and detectors over OPC UA")
    inter.add_argument("--host", default="127.0.0.1")
    inter.add_argument("--port", type=int, default=4840)
    inter.add_argument("--pki-dir", type=Path, default=None, help="enable the secured endpoint with certificates here")
    common(inter)
    inter.set_defaults(func=cmd_intersection)

    sensors = sims.add_parser("city-sensors", help="air-quality station and manhole level sensor over CoAP")
    sensors.add_argument("--host", default="127.0.0.1")
    sensors.add_argument("--port", type=int, default=5683)
    sensors.add_argument("--interval", type=float, default=5.0, help="seconds between observe notifications")
    common(sensors)
    sensors.set_defaults(func=cmd_city_sensors)

    meters = sims.add_parser("meters", help="water meters publishing on their own MQTT topics")
    meters.add_argument("--broker", default="mqtt://127.0.0.1:1883")
    meters.add_argument("--count", type=int, default=3)
    meters.add_argument("--prefix", default="meters")
    meters.add_argument("--report-interval", type=int, default=1)
    common(meters)
    meters.set_defaults(func=cmd_meters)

    building = sims.add_parser("bacnet-building", help="air-handling unit and lighting zones over BACnet/IP (COV)")
    building.add_argument("--host", default="127.0.0.1")
    building.add_argument("--port", type=int, default=47808, help="UDP port (the gateway needs another one on the same host)")
    building.add_argument("--device-id", type=int, default=1001)
    building.add_argument("--zones", type=int, default=4, help="lighting zones")
    common(building)
    building.set_defaults(func=cmd_bacnet_building)
