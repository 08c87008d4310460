"""Modbus RTU over a real serial line: a pseudo-terminal pair from socat between the driver
and our pump-station RTU simulator, libmodbus's RTU slave, or a scripted faulty peer."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from modbus_peers import SLAVE_POINTS

from citytwin.drivers.base import Quality
from citytwin.drivers.errors import ConnectError, RequestTimeout
from citytwin.drivers.modbus.binding import ModbusPoint, ModbusRtuConnection
from citytwin.drivers.modbus.rtu import ModbusRtuDriver
from citytwin.drivers.registry import create_driver
from citytwin.simulators.pump_station.rtu import PumpStationRtuSimulator

pytestmark = pytest.mark.timeout(60)


class PtyPair:
    """Two linked pseudo-terminals, ``a`` and ``b``: a null-modem cable in software."""

    def __init__(self, directory: Path) -> None:
        socat = shutil.which("socat")
        if socat is None:
            pytest.fail("socat is not installed: run scripts/test.sh (Debian package socat)")
        self.a = str(directory / "ttyA")
        self.b = str(directory / "ttyB")
        self.proc = subprocess.Popen(
            [socat, f"pty,raw,echo=0,link={self.a}", f"pty,raw,echo=0,link={self.b}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for _ in range(200):
            if os.path.exists(self.a) and os.path.exists(self.b):
                return
            time.sleep(0.02)
        self.close()
        pytest.fail("socat did not create the pty pair")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


@pytest.fixture
def line(tmp_path: Path) -> Iterator[PtyPair]:
    pair = PtyPair(tmp_path)
    yield pair
    pair.close()


def rtu_driver(port: str, points: dict[str, dict[str, Any]], **conn: Any) -> ModbusRtuDriver:
    # Linux ptys refuse parity (tcsetattr: EINVAL once PARENB is set): 8N1 on the pty pair
    connection = ModbusRtuConnection.model_validate(
        {"port": port, "timeout": 0.5, "parity": "N", **conn}
    )
    return ModbusRtuDriver(connection, {n: ModbusPoint.model_validate(p) for n, p in points.items()})


STATION_POINTS: dict[str, dict[str, Any]] = {
    "level": {"table": "input_register", "address": 0, "type": "float32"},
    "outlet_pressure": {"table": "input_register", "address": 6},
    "pump1_running": {"table": "discrete_input", "address": 0},
    "pump1_frequency_setpoint": {"table": "holding_register", "address": 0, "type": "float32"},
    "pump1_run_cmd": {"table": "coil", "address": 0},
}


@pytest.fixture
async def station(line: PtyPair) -> AsyncIterator[PumpStationRtuSimulator]:
    async with PumpStationRtuSimulator(line.b, unit=1, parity="N", seed=1, initial_level=2.0) as sim:
        yield sim


async def test_rtu_against_the_simulator(line: PtyPair, station: PumpStationRtuSimulator) -> None:
    driver = create_driver(
        "modbus-rtu",
        ModbusRtuConnection(port=line.a, timeout=1.0, parity="N"),
        {n: ModbusPoint.model_validate(p) for n, p in STATION_POINTS.items()},
    )
    async with driver:
        readings = {r.point: r for r in await driver.read()}
        assert all(r.quality is Quality.GOOD for r in readings.values()), readings
        assert abs(readings["level"].value - station.station.level) < 0.2
        await driver.write({"pump1_frequency_setpoint": 42.5, "pump1_run_cmd": True})
        assert station.station.pump(1).setpoint == 42.5
        assert station.station.pump(1).run_cmd is True
        again = {r.point: r.value for r in await driver.read(["pump1_frequency_setpoint", "pump1_run_cmd"])}
        assert again == {"pump1_frequency_setpoint": 42.5, "pump1_run_cmd": True}
        assert driver.health.extra["requests_per_read"] == 4


async def test_silent_unit_times_out_and_its_neighbour_keeps_the_line(
    line: PtyPair, station: PumpStationRtuSimulator
) -> None:
    good = rtu_driver(line.a, {"level": STATION_POINTS["level"]}, unit=1)
    silent = rtu_driver(line.a, {"level": STATION_POINTS["level"]}, unit=7, timeout=0.3)
    async with good, silent:
        with pytest.raises(RequestTimeout, match=r"within 0\.3 s"):
            await silent.read()
        for _ in range(3):  # the shared line stays open and in step
            (level,) = await good.read()
            assert level.quality is Quality.GOOD
        await silent.connect()  # what the device runner does after its backoff
        results = await asyncio.gather(good.read(), silent.read(), return_exceptions=True)
        assert isinstance(results[1], RequestTimeout)
        assert not isinstance(results[0], BaseException) and results[0][0].quality is Quality.GOOD


async def test_serial_settings_must_agree_on_one_line(
    line: PtyPair, station: PumpStationRtuSimulator
) -> None:
    first = rtu_driver(line.a, {"level": STATION_POINTS["level"]})
    other = rtu_driver(line.a, {"level": STATION_POINTS["level"]}, baudrate=9600)
    async with first:
        with pytest.raises(ConnectError, match="the line is open at"):
            await other.connect()


async def test_missing_port() -> None:
    driver = rtu_driver("/dev/does-not-exist-citytwin", {"x": {"table": "coil", "address": 0}})
    with pytest.raises(ConnectError, match="does-not-exist"):
        await driver.connect()


# -- libmodbus ----------------------------------------------------------------------------


@pytest.fixture
def libmodbus_rtu(line: PtyPair, slave_binary: Path) -> Iterator[subprocess.Popen[str]]:
    """libmodbus's RTU slave as unit 5 on the far end of the line."""
    proc = subprocess.Popen(
        [str(slave_binary), "rtu", line.b, "19200", "N", "5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline()
        assert ready.startswith("ready"), (ready, proc.stderr.read() if proc.stderr else "")
        yield proc
    finally:
        proc.terminate()
        proc.wait(5)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


async def test_rtu_against_libmodbus(line: PtyPair, libmodbus_rtu: subprocess.Popen[str]) -> None:
    points = {name: binding for name, (binding, _) in SLAVE_POINTS.items()}
    driver = rtu_driver(line.a, points, unit=5)
    async with driver:
        values = {r.point: r.value for r in await driver.read()}
        assert values == {name: value for name, (_, value) in SLAVE_POINTS.items()}
        await driver.write({"i32_big": -7, "coil1": True})
        after = {r.point: r.value for r in await driver.read(["i32_big", "coil1"])}
        assert after == {"i32_big": -7, "coil1": True}
        beyond = rtu_driver(line.a, {"x": {"table": "input_register", "address": 150}}, unit=5)
        async with beyond:
            (bad,) = await beyond.read()
        assert bad.quality is Quality.BAD and "illegal data address" in (bad.error or "")


async def test_broadcast_write_reaches_libmodbus_unanswered(
    line: PtyPair, libmodbus_rtu: subprocess.Popen[str]
) -> None:
    points = {
        "hr240": {"table": "holding_register", "address": 240},
        "name": {"table": "holding_register", "address": 241, "type": "string", "length": 2},
    }
    # a long timeout: had the driver waited for an answer, this test would time out
    broadcast = rtu_driver(line.a, points, unit=0, broadcast_writes=True, timeout=30)
    unit5 = rtu_driver(line.a, points, unit=5)
    async with broadcast, unit5:
        await asyncio.wait_for(broadcast.write({"hr240": 4711, "name": "B1"}), 5)
        values = {r.point: r.value for r in await unit5.read()}
        assert values == {"hr240": 4711, "name": "B1"}
        (refused, _) = await broadcast.read()
        assert refused.quality is Quality.BAD and "broadcast" in (refused.error or "")


# -- a scripted peer for what a healthy slave never sends -----------------------------------


def crc16(frame: bytes) -> bytes:
    crc = 0xFFFF
    for byte in frame:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc.to_bytes(2, "little")


def answer(unit: int, value: int) -> bytes:
    body = bytes([unit, 3, 2]) + value.to_bytes(2, "big")
    return body + crc16(body)


class ScriptedPeer:
    """Answers each 8-byte read request on its end of the line with ``script(n)``'s bytes."""

    def __init__(self, path: str, script: Callable[[int, bytes], bytes]) -> None:
        import termios
        import tty

        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.fd)
        termios.tcflush(self.fd, termios.TCIOFLUSH)
        self.script = script
        self.buffer = b""
        self.requests = 0
        asyncio.get_running_loop().add_reader(self.fd, self._readable)

    def _readable(self) -> None:
        self.buffer += os.read(self.fd, 256)
        while len(self.buffer) >= 8:
            request, self.buffer = self.buffer[:8], self.buffer[8:]
            self.requests += 1
            os.write(self.fd, self.script(self.requests, request))

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.fd)
        os.close(self.fd)


async def test_garbage_on_the_line(line: PtyPair) -> None:
    def script(n: int, request: bytes) -> bytes:
        unit = request[0]
        if n == 1:
            return answer(unit, 111)
        if n == 2:
            return b"\x00\xff\x13\x37\x42" * 3  # line noise only
        if n == 3:
            return answer(unit, 222)[:-1] + b"\x00"  # a bad CRC only
        if n == 4:
            return answer(unit + 1, 333)  # another unit's answer only
        return answer(unit, 444)

    peer = ScriptedPeer(line.b, script)
    try:
        driver = rtu_driver(line.a, {"hr": {"table": "holding_register", "address": 4}}, unit=3, timeout=0.3)
        async with driver:
            (first,) = await driver.read()
            assert (first.value, first.quality) == (111, Quality.GOOD)
            for _ in (2, 3, 4):  # none is taken for an answer: the request times out
                with pytest.raises(RequestTimeout):
                    await driver.read()
                await driver.connect()
            (last,) = await driver.read()
            assert (last.value, last.quality) == (444, Quality.GOOD)
            assert peer.requests == 5
    finally:
        peer.close()


async def test_a_request_cancelled_on_the_wire_ends_its_exchange_first(
    line: PtyPair, caplog: pytest.LogCaptureFixture
) -> None:
    """The gateway stopping cancels a poll whose request is on the line: its answer must not be
    logged by pymodbus as unasked for, nor taken for the next request's (RTU has no id)."""
    caplog.set_level(logging.DEBUG, logger="pymodbus")
    held = asyncio.Event()

    def script(n: int, request: bytes) -> bytes:
        if n == 1:
            held.set()
            return b""  # the unit takes its time: the test answers below
        return answer(request[0], 222)

    peer = ScriptedPeer(line.b, script)
    try:
        driver = rtu_driver(line.a, {"hr": {"table": "holding_register", "address": 4}}, unit=3, timeout=5)
        neighbour = rtu_driver(line.a, {"hr": {"table": "holding_register", "address": 4}}, unit=4)
        async with driver, neighbour:
            poll = asyncio.create_task(driver.read())
            await asyncio.wait_for(held.wait(), 10)
            poll.cancel()  # what stopping the gateway does to its device tasks
            os.write(peer.fd, answer(3, 111))  # the answer comes after all
            with pytest.raises(asyncio.CancelledError):
                await poll
            (mine,) = await driver.read()
            assert (mine.value, mine.quality) == (222, Quality.GOOD)  # not the cancelled request's 111
            (theirs,) = await neighbour.read()
            assert (theirs.value, theirs.quality) == (222, Quality.GOOD)
            assert peer.requests == 3
    finally:
        peer.close()
    quiet = [r for r in caplog.records if r.name.startswith("pymodbus") and r.levelno >= logging.WARNING]
    assert quiet == []
