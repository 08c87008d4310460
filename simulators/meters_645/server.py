"""Several DL/T 645-2007 meters on one simulated RS-485 line (``citytwin sim meters-645``).

Every meter sees every frame and answers only its own address (or the wildcard AA…AA when it
is alone); a broadcast time sync (99…99) sets every clock and gets no answer. Answers longer
than ``max_data`` data bytes go out in follow-up frames, as the standard has it for long
answers (the real limit is 200; a test lowers it). Faults: a ``silent`` meter never answers;
DIs in a meter's ``corrupt`` set go out with a wrong checksum; unknown DIs get the exception
answer with ERR bit 1 (no such data); a control command with a wrong password gets ERR bit 2.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

from citytwin.simulators.meters_645.meter import Meter645
from citytwin.simulators.serialbus import Bus, SerialLineSimulator

log = logging.getLogger(__name__)

READ, READ_FOLLOW, TIME_SYNC, CONTROL = 0x11, 0x12, 0x08, 0x1C
ERR_OTHER, ERR_NO_DATA, ERR_PASSWORD = 0x01, 0x02, 0x04
CONTROL_CODES = {0x1A: "trip", 0x1B: "close_allow", 0x1C: "close", 0x2A: "alarm",
                 0x2B: "alarm_release", 0x3A: "hold", 0x3B: "hold_release"}


def frame(address: bytes, control: int, data: bytes, corrupt: bool = False) -> bytes:
    body = bytes([0x68, *address, 0x68, control, len(data), *((b + 0x33) & 0xFF for b in data)])
    checksum = (sum(body) + (1 if corrupt else 0)) & 0xFF
    return bytes([0xFE, 0xFE]) + body + bytes([checksum, 0x16])


class Bus645(Bus):
    def __init__(self, meters: list[Meter645], max_data: int = 200) -> None:
        self.meters = {m.wire_address: m for m in meters}
        self.max_data = max_data
        self._pending: dict[bytes, tuple[int, bytes]] = {}  # address -> (DI, rest of a long answer)
        self.requests = 0

    def step(self, dt_s: float) -> None:
        for meter in self.meters.values():
            meter.step(dt_s)

    def feed(self, buffer: bytearray) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        while True:
            start = buffer.find(0x68)
            if start < 0:
                wake = len(buffer)
                buffer.clear()
                if wake:
                    out.append((wake, b""))
                return out
            if len(buffer) < start + 10:
                return out
            if buffer[start + 7] != 0x68:
                del buffer[:start + 1]
                continue
            size = 12 + buffer[start + 9]
            if len(buffer) < start + size:
                return out
            raw = bytes(buffer[start:start + size])
            del buffer[:start + size]
            if sum(raw[:-2]) & 0xFF != raw[-2] or raw[-1] != 0x16:
                continue  # a broken request: a meter stays silent
            data = bytes((b - 0x33) & 0xFF for b in raw[10:-2])
            self.requests += 1
            out.append((start + size, self._answer(raw[1:7], raw[8], data)))

    def _meter(self, address: bytes) -> Meter645 | None:
        if address == b"\xaa" * 6 and len(self.meters) == 1:
            return next(iter(self.meters.values()))
        return self.meters.get(address)

    def _answer(self, address: bytes, control: int, data: bytes) -> bytes:
        if address == b"\x99" * 6 and control == TIME_SYNC and len(data) == 6:
            digits = data[::-1].hex()
            when = dt.datetime(2000 + int(digits[:2]), int(digits[2:4]), int(digits[4:6]),
                               int(digits[6:8]), int(digits[8:10]), int(digits[10:12]))
            for each in self.meters.values():
                each.clock_offset = (when - dt.datetime.now()).total_seconds()
            return b""
        meter = self._meter(address)
        if meter is None or meter.silent:
            return b""
        own = meter.wire_address
        if control == READ and len(data) == 4:
            return self._read(meter, int.from_bytes(data, "little"))
        if control == READ_FOLLOW and len(data) == 5:
            return self._follow(meter, int.from_bytes(data[:4], "little"), data[4])
        if control == CONTROL and len(data) >= 16:
            return self._control(meter, data)
        return frame(own, 0xC0 | (control & 0x1F), bytes([ERR_OTHER]))

    def _read(self, meter: Meter645, di: int) -> bytes:
        own = meter.wire_address
        value = meter.value(di)
        if value is None:
            return frame(own, 0xD1, bytes([ERR_NO_DATA]))
        di_bytes = di.to_bytes(4, "little")
        room = self.max_data - 4
        corrupt = di in meter.corrupt
        if len(value) <= room:
            return frame(own, 0x91, di_bytes + value, corrupt)
        self._pending[own] = (di, value[room:])
        return frame(own, 0xB1, di_bytes + value[:room], corrupt)

    def _follow(self, meter: Meter645, di: int, seq: int) -> bytes:
        own = meter.wire_address
        pending = self._pending.get(own)
        if pending is None or pending[0] != di:
            return frame(own, 0xD2, bytes([ERR_NO_DATA]))
        room = self.max_data - 5
        chunk, rest = pending[1][:room], pending[1][room:]
        di_bytes = di.to_bytes(4, "little")
        if rest:
            self._pending[own] = (di, rest)
            return frame(own, 0xB2, di_bytes + chunk + bytes([seq]))
        del self._pending[own]
        return frame(own, 0x92, di_bytes + chunk + bytes([seq]))

    def _control(self, meter: Meter645, data: bytes) -> bytes:
        own = meter.wire_address
        password = f"{data[0]:02X}" + data[1:4][::-1].hex().upper()
        if password != meter.password:
            return frame(own, 0xDC, bytes([ERR_PASSWORD]))
        command = CONTROL_CODES.get(data[8])
        if command is None:
            return frame(own, 0xDC, bytes([ERR_OTHER]))
        if command == "trip" and not meter.hold:
            meter.relay_closed = False
        elif command in ("close", "close_allow"):
            meter.relay_closed = True
        elif command in ("alarm", "alarm_release"):
            meter.alarm = command == "alarm"
        elif command in ("hold", "hold_release"):
            meter.hold = command == "hold"
        log.info("meter %s: %s", meter.address, command)
        return frame(own, 0x9C, b"")


def make_meters(count: int, seed: int | None = None, speed: float = 1.0, first: int = 1) -> list[Meter645]:
    """``count`` meters at addresses 000000000001, 000000000002, … with different loads."""
    return [
        Meter645(f"{first + i:012d}", base_kw=5.0 + 3.0 * (i % 7),
                 seed=None if seed is None else seed + i, speed=speed)
        for i in range(count)
    ]


class Meters645Simulator(SerialLineSimulator):
    """The meters of ``make_meters`` (or the given ones) on one line, over a pty and/or TCP."""

    def __init__(self, meters: list[Meter645], max_data: int = 200, **line: object) -> None:
        self.meters = {m.address: m for m in meters}
        self.bus645 = Bus645(meters, max_data)
        super().__init__(self.bus645, **line)  # type: ignore[arg-type]


async def serve(
    count: int, host: str | None, port: int, pty: bool, link: str | None,
    baud: int | None, speed: float, seed: int | None,
) -> None:
    """Run until cancelled; says where the line is."""
    sim = Meters645Simulator(make_meters(count, seed, speed), pty=pty, link=link, host=host, port=port, baud=baud)
    async with sim:
        where = [f"pty {sim.device}" + (f" (link {link})" if link else "")] if pty else []
        if host is not None:
            where.append(f"TCP {host}:{sim.tcp_port}")
        print(f"meters-645: {count} meters, addresses 000000000001…{count:012d}, on {' and '.join(where)}", flush=True)
        await asyncio.Event().wait()
