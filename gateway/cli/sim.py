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


def cmd_meters_645(args: argparse.Namespace) -> int:
    from citytwin.simulators.meters_645.server import serve

    host = None if args.tcp_port is None else args.host
    return _run(lambda: serve(args.count, host, args.tcp_port or 0, not args.no_pty, args.link,
                              args.baud, args.speed, args.seed))


def cmd_meters_188(args: argparse.Namespace) -> int:
    from citytwin.simulators.meters_188.server import serve

    host = None if args.tcp_port is None else args.host
    return _run(lambda: serve(args.water, args.heat, host, args.tcp_port or 0, not args.no_pty,
                              args.link, args.speed, args.seed))
def _flags(items: list[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in items)


def cmd_hj212_station(args: argparse.Namespace) -> int:
    from citytwin.simulators.hj212_station.station import serve

    return _run(lambda: serve(
        args.host, args.port, args.count, args.mn, args.password, args.kind, args.interval, args.seed,
        pollutants=args.pollutants, bad_crc=args.bad_crc, garbage=args.garbage, fragment=args.fragment,
        retransmit_rate=args.retransmit_rate, flags=_flags(args.flag),
    ))


def cmd_hydro_station(args: argparse.Namespace) -> int:
    from citytwin.simulators.hydro_station.station import serve

    return _run(lambda: serve(
        args.host, args.port, args.count, args.station, args.password, args.interval, args.seed,
        encoding=args.encoding, bad_crc=args.bad_crc, garbage=args.garbage, fragment=args.fragment,
        multi_packet=args.multi_packet, retransmit_rate=args.retransmit_rate,
    ))
def cmd_bacnet_building(args: argparse.Namespace) -> int:
    from citytwin.simulators.bacnet_building.server import serve

    return _run(lambda: serve(args.host, args.port, args.device_id, args.zones, args.speed, args.seed))


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

    def meter_line(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--link", default=None, metavar="PATH", help="symlink PATH to the line's pty")
        parser.add_argument("--no-pty", action="store_true", help="serve no pty (TCP only)")
        parser.add_argument("--host", default="127.0.0.1", help="address the serial server listens on")
        parser.add_argument("--tcp-port", type=int, default=None, metavar="PORT",
                            help="also serve the line as a transparent serial server on PORT (0: any)")

    m645 = sims.add_parser("meters-645", help="DL/T 645-2007 electricity meters on one RS-485 line (pty, TCP)")
    m645.add_argument("--count", type=int, default=3, help="meters at addresses 000000000001 …")
    m645.add_argument("--baud", type=int, default=None, help="pace answers as a line at this baud rate")
    meter_line(m645)
    common(m645)
    m645.set_defaults(func=cmd_meters_645)

    m188 = sims.add_parser("meters-188", help="CJ/T 188 water meters with valves and heat meters on one line")
    m188.add_argument("--water", type=int, default=2, help="cold-water meters at 00000000000001 …")
    m188.add_argument("--heat", type=int, default=1, help="heat meters at 00000000001001 …")
    meter_line(m188)
    common(m188)
    m188.set_defaults(func=cmd_meters_188)
    def faults(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--bad-crc", action="store_true", help="every third frame with a wrong CRC")
        parser.add_argument("--garbage", action="store_true", help="noise bytes between frames")
        parser.add_argument("--fragment", action="store_true", help="write each frame in two pieces")
        parser.add_argument("--retransmit-rate", type=float, default=0.0, help="share of reports sent twice")

    hj212 = sims.add_parser("hj212-station", help="HJ 212-2017 data logger calling in (air quality or site dust)")
    hj212.add_argument("--host", default="127.0.0.1", help="the centre (gateway) to connect to")
    hj212.add_argument("--port", type=int, default=8212, help="the centre's HJ 212 listening port")
    hj212.add_argument("--mn", default="010000A8900016F000169DC0", help="the station's MN (its identity)")
    hj212.add_argument("--password", default="123456", help="the station's access password (PW)")
    hj212.add_argument("--kind", choices=["air", "dust"], default="air", help="an ambient air station or a site dust/noise monitor")
    hj212.add_argument("--interval", type=float, default=30.0, help="seconds between real-time (2011) uploads")
    hj212.add_argument("--count", type=int, default=1, help="COUNT stations, MNs numbered in the last 4 characters")
    hj212.add_argument("--pollutants", type=int, default=None, help="pad each upload to this many pollutant codes")
    hj212.add_argument("--flag", action="append", default=[], metavar="CODE=FLAG", help="force a data flag, e.g. a34004=C")
    hj212.add_argument("--seed", type=int, default=None, help="random seed, for repeatable values")
    faults(hj212)
    hj212.set_defaults(func=cmd_hj212_station)

    hydro = sims.add_parser("hydro-station", help="SL 651-2014 rain gauge / water-level station calling in")
    hydro.add_argument("--host", default="127.0.0.1", help="the centre (gateway) to connect to")
    hydro.add_argument("--port", type=int, default=8651, help="the centre's SL 651 listening port")
    hydro.add_argument("--station", default="0012345678", help="remote station address, 10 hex digits")
    hydro.add_argument("--password", default="1234", help="the station's password")
    hydro.add_argument("--encoding", choices=["hex", "ascii"], default="hex", help="HEX/BCD or ASCII frames")
    hydro.add_argument("--interval", type=float, default=300.0, help="seconds between timed (32) reports")
    hydro.add_argument("--count", type=int, default=1, help="COUNT stations at consecutive addresses")
    hydro.add_argument("--multi-packet", action="store_true", help="send reports as two SYN packets (M3)")
    hydro.add_argument("--seed", type=int, default=None, help="random seed, for repeatable values")
    faults(hydro)
    hydro.set_defaults(func=cmd_hydro_station)
    building = sims.add_parser("bacnet-building", help="air-handling unit and lighting zones over BACnet/IP (COV)")
    building.add_argument("--host", default="127.0.0.1", help="address the BACnet device listens on")
    building.add_argument("--port", type=int, default=47808, help="UDP port (the gateway needs another one on the same host)")
    building.add_argument("--device-id", type=int, default=1001, help="the BACnet device instance")
    building.add_argument("--zones", type=int, default=4, help="lighting zones")
    common(building)
    building.set_defaults(func=cmd_bacnet_building)
