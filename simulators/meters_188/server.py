"""CJ/T 188 water and heat meters on one simulated M-Bus/RS-485 line (``citytwin sim meters-188``).

Each meter answers the meter data read (control 01H, DI 901FH) and, with a valve, the valve
control (04H, DI A017H, 55H open / 99H close) with its status bytes; other requests get the
exception answer (control with D6 set, SER and status). ``di_order`` is how DIs travel
("little": the 2018 edition; "big": many 2004-edition meters).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

from citytwin.simulators.meters_188.meters import HeatMeter188, Meter188
from citytwin.simulators.serialbus import Bus, SerialLineSimulator

log = logging.getLogger(__name__)

READ_DATA, WRITE_DATA = 0x01, 0x04
DI_READ, DI_VALVE = 0x901F, 0xA017


def frame(meter: Meter188, control: int, di: int, ser: int, data: bytes, order: str) -> bytes:
    payload = di.to_bytes(2, order) + bytes([ser]) + data  # type: ignore[arg-type]
    body = bytes([0x68, meter.meter_type, *meter.wire_address, control, len(payload), *payload])
    checksum = (sum(body) + (1 if meter.corrupt else 0)) & 0xFF
    return bytes([0xFE, 0xFE, 0xFE, 0xFE]) + body + bytes([checksum, 0x16])


class Bus188(Bus):
    def __init__(self, meters: list[Meter188], di_order: Literal["little", "big"] = "little") -> None:
        self.meters = {(m.meter_type, m.wire_address): m for m in meters}
        self.di_order = di_order
        self.requests = 0

    def step(self, dt_s: float) -> None:
        for meter in self.meters.values():
            meter.step(dt_s)

    def feed(self, buffer: bytearray) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        while True:
            start = buffer.find(0x68)
            if start < 0:
                buffer.clear()
                return out
            if len(buffer) < start + 11:
                return out
            size = 13 + buffer[start + 10]
            if len(buffer) < start + size:
                return out
            raw = bytes(buffer[start:start + size])
            if raw[-1] != 0x16 or sum(raw[:-2]) & 0xFF != raw[-2]:
                del buffer[:start + 1]
                continue
            del buffer[:start + size]
            self.requests += 1
            out.append((start + size, self._answer(raw)))

    def _find(self, meter_type: int, address: bytes) -> Meter188 | None:
        if address == b"\xaa" * 7:
            same = [m for (t, _), m in self.meters.items() if t == meter_type]
            return same[0] if len(same) == 1 else None
        return self.meters.get((meter_type, address))

    def _answer(self, raw: bytes) -> bytes:
        meter = self._find(raw[1], raw[2:9])
        if meter is None or meter.silent:
            return b""
        control, payload = raw[9], raw[11:-2]
        if len(payload) < 3:
            return b""
        di, ser, data = int.from_bytes(payload[:2], self.di_order), payload[2], payload[3:]
        if control == READ_DATA and di == DI_READ:
            return frame(meter, 0x81, di, ser, meter.data(), self.di_order)
        if control == WRITE_DATA and di == DI_VALVE and meter.has_valve and data[:1] in (b"\x55", b"\x99"):
            if not meter.valve_stuck:
                meter.valve_open = data[0] == 0x55
            log.info("meter %s: valve %s", meter.address, "open" if meter.valve_open else "closed")
            return frame(meter, 0x84, di, ser, meter.status(), self.di_order)
        return frame(meter, 0xC0 | control, di, ser, meter.status(), self.di_order)


def make_meters(water: int = 2, heat: int = 1, seed: int | None = None, speed: float = 1.0) -> list[Meter188]:
    """Cold water meters with valves at 00000000000001…, heat meters at 00000000001001…"""
    meters: list[Meter188] = [
        Meter188(f"{i + 1:014d}", 0x10, seed=None if seed is None else seed + i, speed=speed, has_valve=True)
        for i in range(water)
    ]
    meters += [
        HeatMeter188(f"{1001 + i:014d}", 0x20, seed=None if seed is None else seed + 100 + i, speed=speed)
        for i in range(heat)
    ]
    return meters


class Meters188Simulator(SerialLineSimulator):
    """The meters on one line, over a pty and/or TCP."""

    def __init__(self, meters: list[Meter188], di_order: Literal["little", "big"] = "little", **line: object) -> None:
        self.meters = {m.address: m for m in meters}
        self.bus188 = Bus188(meters, di_order)
        super().__init__(self.bus188, **line)  # type: ignore[arg-type]


async def serve(
    water: int, heat: int, host: str | None, port: int, pty: bool, link: str | None,
    speed: float, seed: int | None,
) -> None:
    """Run until cancelled; says where the line is."""
    sim = Meters188Simulator(make_meters(water, heat, seed, speed), pty=pty, link=link, host=host, port=port)
    async with sim:
        where = [f"pty {sim.device}" + (f" (link {link})" if link else "")] if pty else []
        if host is not None:
            where.append(f"TCP {host}:{sim.tcp_port}")
        names = ", ".join(f"{m.address} ({'heat' if isinstance(m, HeatMeter188) else 'water'})"
                          for m in sim.meters.values())
        print(f"meters-188: {names} on {' and '.join(where)}", flush=True)
        await asyncio.Event().wait()
