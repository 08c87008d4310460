"""Modbus bindings beyond plain numbers, against real peers over loopback: byte orders,
bits inside registers (read-modify-write and mask write), fixed-length strings, read-back
verification, unit 0 (broadcast), every exception code, and RTU framing over TCP.

Peers: the libmodbus slave (C, tests/libmodbus/slave.c) over TCP, and as an RTU slave
behind socat acting as a serial device server (TCP <-> pty pair); our pump-station
simulator serving RTU over TCP; ``ScriptedPeer`` for what a healthy device never does.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from conftest import eventually, free_port
from modbus_peers import HOLDING_FREE, SLAVE_POINTS, LibmodbusSlave, ScriptedPeer

from citytwin.drivers.base import Quality, Reading
from citytwin.drivers.errors import BindingError, DeviceError, TransportError
from citytwin.drivers.modbus.binding import (
    ModbusPoint,
    ModbusRtuConnection,
    ModbusRtuOverTcpConnection,
    ModbusTcpConnection,
)
from citytwin.drivers.modbus.rtu import ModbusRtuDriver
from citytwin.drivers.modbus.rtu_over_tcp import ModbusRtuOverTcpDriver
from citytwin.drivers.modbus.tcp import EXCEPTION_NAMES, ModbusTcpDriver
from citytwin.drivers.registry import DRIVER_NAMES, binding_models, create_driver
from citytwin.simulators.pump_station.server import PumpStationSimulator

pytestmark = pytest.mark.timeout(60)


def make_driver(port: int, points: Mapping[str, dict[str, Any]], **conn: Any) -> ModbusTcpDriver:
    connection = ModbusTcpConnection(host="127.0.0.1", port=port, **conn)
    return ModbusTcpDriver(connection, {n: ModbusPoint.model_validate(p) for n, p in points.items()})


def values(readings: list[Reading]) -> dict[str, Any]:
    assert all(r.quality is Quality.GOOD for r in readings), readings
    return {r.point: r.value for r in readings}


def hr(address: int, **spec: Any) -> dict[str, Any]:
    return {"table": "holding_register", "address": address, **spec}


async def raw_words(port: int, start: int, count: int) -> list[int]:
    """The registers as sent, through a connection of its own (the libmodbus slave serves
    one connection at a time: call this while no other driver is connected)."""
    async with make_driver(port, {f"r{a}": hr(a) for a in range(start, start + count)}) as raw:
        readings = values(await raw.read())
    return [readings[f"r{a}"] for a in range(start, start + count)]


async def word(driver: ModbusTcpDriver, name: str) -> int:
    (reading,) = await driver.read([name])
    assert reading.quality is Quality.GOOD, reading
    return int(reading.value)


# -- byte and word order ------------------------------------------------------------------

LAYOUTS = {"ABCD": ("big", "big"), "CDAB": ("little", "big"), "BADC": ("big", "little"),
           "DCBA": ("little", "little")}  # fmt: skip


async def test_all_four_layouts_write_and_read_back(slave: LibmodbusSlave) -> None:
    points: dict[str, dict[str, Any]] = {}
    written: dict[str, Any] = {}
    address = HOLDING_FREE.start
    for layout, (word_order, byte_order) in LAYOUTS.items():
        for type_, value in [("float32", 21.75), ("int32", -123456), ("uint64", 0x0102030405060708),
                             ("float64", -1234.5678)]:  # fmt: skip
            name = f"{type_}_{layout}"
            points[name] = hr(address, type=type_, word_order=word_order, byte_order=byte_order)
            written[name] = value
            address += 2 if type_ in ("float32", "int32") else 4
    points["i16_swapped"] = hr(address, type="int16", byte_order="little")
    written["i16_swapped"] = -2
    driver = make_driver(slave.port, points)
    async with driver:
        await driver.write(written)
        assert values(await driver.read()) == written
    start = HOLDING_FREE.start  # float32 21.75 is 0x41AE0000: bytes A=41 B=AE C=00 D=00
    assert await raw_words(slave.port, start, 2) == [0x41AE, 0x0000]  # ABCD
    assert await raw_words(slave.port, start + 12, 2) == [0x0000, 0x41AE]  # CDAB
    assert await raw_words(slave.port, start + 24, 2) == [0xAE41, 0x0000]  # BADC
    assert await raw_words(slave.port, start + 36, 2) == [0x0000, 0xAE41]  # DCBA
    assert await raw_words(slave.port, address, 1) == [0xFEFF]


# -- bits inside registers ----------------------------------------------------------------


async def test_bit_write_changes_only_that_bit(slave: LibmodbusSlave) -> None:
    points = {
        "bit2": hr(216, type="bool", bit=2),
        "bit15": hr(216, type="bool", bit=15),
        "masked3": hr(216, type="bool", bit=3, write_mode="mask"),
        "masked0": hr(216, type="bool", bit=0, write_mode="mask"),
        "ir_bit": {"table": "input_register", "address": 60, "type": "bool", "bit": 5},
        "word": hr(216),
    }
    driver = make_driver(slave.port, points)
    async with driver:
        assert await word(driver, "word") == 0xA5C3
        before = driver.health.requests
        await driver.write({"bit2": True, "bit15": False})
        assert driver.health.requests - before == 4  # read and write back, twice
        assert await word(driver, "word") == 0x25C7
        before = driver.health.requests
        await driver.write({"masked3": True, "masked0": False})
        assert driver.health.requests - before == 2  # one mask write (function 22) each
        assert await word(driver, "word") == 0x25CE
        assert values(await driver.read()) == {
            "bit2": True, "bit15": False, "masked3": True, "masked0": False, "ir_bit": True,
            "word": 0x25CE,
        }  # fmt: skip
        with pytest.raises(BindingError, match="'ir_bit' is a read-only input_register"):
            await driver.write({"ir_bit": False})
        with pytest.raises(BindingError, match="'bit2': expects a bool"):
            await driver.write({"bit2": 1})


@pytest.mark.parametrize("write_mode", ["read_modify_write", "mask"])
async def test_concurrent_bit_writes_lose_no_update(
    slave: LibmodbusSlave, write_mode: str
) -> None:
    register = HOLDING_FREE.start
    points: dict[str, dict[str, Any]] = {
        f"b{i}": hr(register, type="bool", bit=i, write_mode=write_mode) for i in range(16)
    }
    points["word"] = hr(register)
    async with make_driver(slave.port, points) as driver:
        await asyncio.gather(*(driver.write({f"b{i}": True}) for i in range(16)))
        assert await word(driver, "word") == 0xFFFF
        await asyncio.gather(*(driver.write({f"b{i}": False}) for i in range(0, 16, 2)))
        assert await word(driver, "word") == 0xAAAA


async def test_bit_write_of_a_register_the_device_lacks(slave: LibmodbusSlave) -> None:
    async with make_driver(slave.port, {"b": hr(350, type="bool", bit=1)}) as driver:
        with pytest.raises(DeviceError, match=r"exception 2 \(illegal data address\) reading before writing b"):
            await driver.write({"b": True})


# -- strings ------------------------------------------------------------------------------


async def test_strings_are_padded_and_too_long_values_refused(slave: LibmodbusSlave) -> None:
    start = HOLDING_FREE.start
    points = {
        "tag": hr(start, type="string", length=4),
        "place": hr(start + 4, type="string", length=3, encoding="utf-8", byte_order="little"),
    }
    driver = make_driver(slave.port, points)
    async with driver:
        await driver.write({"tag": "PS-2", "place": "Süd"})
        assert values(await driver.read()) == {"tag": "PS-2", "place": "Süd"}
        requests = driver.health.requests
        for value, message in [
            ("PS-123456", "'tag': 'PS-123456' is 9 bytes in ascii; 4 registers hold 8"),
            ("Zürich", "'tag': 'Zürich' cannot be encoded as ascii"),
            (7, "'tag': expects a string"),
        ]:
            with pytest.raises(BindingError, match=message):
                await driver.write({"place": "ok", "tag": value})
        assert driver.health.requests == requests  # nothing was sent, not even "place"
    assert await raw_words(slave.port, start, 7) == [
        0x5053, 0x2D32, 0x0000, 0x0000,  # "PS-2", NUL padded
        0xC353, 0x64BC, 0x0000,  # S, ü (C3 BC), d, bytes swapped
    ]  # fmt: skip
    async with driver:
        await driver.write({"tag": "12345678"})  # exactly full: no terminator needed
        assert values(await driver.read(["tag"])) == {"tag": "12345678"}


async def test_undecodable_string_is_bad_alone(slave: LibmodbusSlave) -> None:
    # "Pumpe Süd" (utf-8, bytes swapped) read as ascii: the ü is not ascii
    points = {
        "as_ascii": hr(228, type="string", length=6, byte_order="little"),
        "u16": hr(215, byte_order="little"),
    }
    async with make_driver(slave.port, points) as driver:
        readings = {r.point: r for r in await driver.read()}
    assert readings["as_ascii"].quality is Quality.BAD
    assert "not valid ascii" in (readings["as_ascii"].error or "")
    assert (readings["u16"].quality, readings["u16"].value) == (Quality.GOOD, 0x1234)


# -- read-back verification ---------------------------------------------------------------


async def test_verify_reads_every_write_back(slave: LibmodbusSlave) -> None:
    start = HOLDING_FREE.start
    points = {
        "f": hr(start, type="float32"),
        "bit": hr(start + 2, type="bool", bit=4),
        "coil": {"table": "coil", "address": 40},
        "unchecked": hr(start + 3, verify=False),
    }
    driver = make_driver(slave.port, points, verify=True)
    async with driver:
        await driver.write({"f": 1.5, "bit": True, "coil": True})
        # f: write + read back; bit: read, write, read back; coil: write + read back
        assert driver.health.requests == 7
        await driver.write({"unchecked": 9})
        assert driver.health.requests == 8


async def test_verify_fails_when_the_device_holds_something_else() -> None:
    # the scripted peer acknowledges writes but its registers hold their own address
    async with ScriptedPeer([]) as peer:
        points = {"hr5": hr(5, verify=True), "f": hr(6, type="float32"), "hr9": hr(9)}
        async with make_driver(peer.port, points) as driver:
            await driver.write({"hr5": 5, "f": 2.0})  # 5 is what it holds; f is not checked
            with pytest.raises(
                DeviceError,
                match=r"reading back after writing hr5 \(holding_register 5\): "
                r"the device holds \[0x0005\], not \[0x0007\]",
            ):
                await driver.write({"hr5": 7, "hr9": 1})
            assert peer.functions == [6, 3, 16, 6, 3]  # hr9 was not written after the failure


# -- exception codes ----------------------------------------------------------------------


async def test_every_exception_code_reads_clearly() -> None:
    codes = [*EXCEPTION_NAMES, 12]
    assert sorted(EXCEPTION_NAMES) == [1, 2, 3, 4, 5, 6, 7, 8, 10, 11]
    async with ScriptedPeer([f"exception:{c}" for c in codes] * 2) as peer:
        async with make_driver(peer.port, {"hr7": hr(7)}) as driver:
            for code in codes:
                (reading,) = await driver.read()
                assert reading.quality is Quality.BAD and reading.value is None
                name = EXCEPTION_NAMES.get(code, "not a standard exception code")
                assert reading.error == (
                    f"modbus exception {code} ({name}) reading holding_register 7..7"
                )
            for code in codes:
                with pytest.raises(DeviceError, match=f"modbus exception {code} ") as info:
                    await driver.write({"hr7": 1})
                assert info.value.code == code
            assert driver.health.connected
            assert driver.health.extra["exceptions"] == 2 * len(codes)
    assert "gateway target device failed to respond" in EXCEPTION_NAMES[11]
    assert "gateway path unavailable" in EXCEPTION_NAMES[10]


# -- unit 0: broadcast --------------------------------------------------------------------


async def test_broadcast_writes_are_sent_and_not_awaited() -> None:
    # the peer stays silent: a driver waiting for an answer would time out
    async with ScriptedPeer(["silent"] * 10) as peer:
        points = {
            "hr3": hr(3),
            "f": hr(4, type="float32"),
            "coil": {"table": "coil", "address": 1},
            "bit": hr(8, type="bool", bit=1, write_mode="mask"),
        }
        driver = make_driver(
            peer.port, points, unit=0, broadcast_writes=True, timeout=30, broadcast_pause=0
        )
        async with driver:
            await asyncio.wait_for(driver.write({"hr3": 1, "f": 2.5, "coil": True, "bit": True}), 5)
            await eventually(lambda: peer.requests >= 4)
            assert (peer.units, peer.functions) == ([0, 0, 0, 0], [6, 16, 5, 22])
            readings = await driver.read()
            assert {r.quality for r in readings} == {Quality.BAD}
            assert all("unit 0 is the broadcast address" in (r.error or "") for r in readings)
            assert peer.requests == 4  # the read sent nothing
    broadcast = {"unit": 0, "broadcast_writes": True}
    with pytest.raises(BindingError, match="'b': unit 0 is the broadcast address: a bit cannot"):
        make_driver(1, {"b": hr(8, type="bool", bit=1)}, **broadcast)
    with pytest.raises(BindingError, match=r"'v': unit 0 .* nothing can be read back \(verify\)"):
        make_driver(1, {"v": hr(8, verify=True)}, **broadcast)


# -- RTU framing over TCP -----------------------------------------------------------------


async def test_rtu_over_tcp_against_the_simulator() -> None:
    points = {
        "level": {"table": "input_register", "address": 0, "type": "float32"},
        "pump1_frequency_setpoint": hr(0, type="float32"),
        "pump1_run_cmd": {"table": "coil", "address": 0},
    }
    async with PumpStationSimulator(port=0, unit=3, seed=1, rtu_over_tcp=True) as sim:
        connection = ModbusRtuOverTcpConnection(host="127.0.0.1", port=sim.port, unit=3)
        driver = create_driver(
            "modbus-rtu-over-tcp",
            connection,
            {n: ModbusPoint.model_validate(p) for n, p in points.items()},
        )
        assert isinstance(driver, ModbusRtuOverTcpDriver)
        async with driver:
            readings = values(await driver.read())
            assert abs(readings["level"] - sim.station.level) < 0.2
            await driver.write({"pump1_frequency_setpoint": 42.5, "pump1_run_cmd": True})
            assert sim.station.pump(1).setpoint == 42.5
            assert sim.station.pump(1).run_cmd is True
        # a Modbus TCP client gets no sense out of RTU frames: it fails, it does not hang
        tcp = make_driver(sim.port, {"sp": hr(0)}, unit=3, timeout=0.5)
        async with tcp:
            with pytest.raises(TransportError):
                await tcp.read()


@pytest.fixture
def serial_server(tmp_path: Path, slave_binary: Path) -> Iterator[int]:
    """libmodbus's RTU slave (unit 5) on a pty, behind socat as a serial device server."""
    socat = shutil.which("socat")
    if socat is None:
        pytest.fail("socat is not installed: run scripts/test.sh (Debian package socat)")
    a, b = str(tmp_path / "ttyA"), str(tmp_path / "ttyB")
    procs: list[subprocess.Popen[str]] = []
    try:
        procs.append(subprocess.Popen(
            [socat, f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
        ))  # fmt: skip
        for _ in range(200):
            if os.path.exists(a) and os.path.exists(b):
                break
            time.sleep(0.02)
        slave = subprocess.Popen(
            [str(slave_binary), "rtu", b, "19200", "N", "5"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        procs.append(slave)
        assert slave.stdout is not None and slave.stdout.readline().startswith("ready")
        port = free_port()
        # no probe connection: its socat child would hold the pty for a while and read
        # answers meant for the next one; -d -d makes socat say when it listens
        server = subprocess.Popen(
            [socat, "-d", "-d", f"tcp-listen:{port},bind=127.0.0.1,reuseaddr,fork",
             f"open:{a},raw,echo=0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        procs.append(server)
        assert server.stderr is not None
        listening = server.stderr.readline()
        assert "listening on" in listening, listening
        yield port
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(5)
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


async def test_rtu_over_tcp_against_libmodbus_behind_a_serial_server(serial_server: int) -> None:
    points = {name: binding for name, (binding, _) in SLAVE_POINTS.items()}
    connection = ModbusRtuOverTcpConnection(host="127.0.0.1", port=serial_server, unit=5)
    driver = ModbusRtuOverTcpDriver(
        connection, {n: ModbusPoint.model_validate(p) for n, p in points.items()}
    )
    async with driver:
        assert values(await driver.read()) == {name: v for name, (_, v) in SLAVE_POINTS.items()}
        await driver.write({"bit14": True, "name": "PS-9"})
        assert values(await driver.read(["bit14", "bit13", "name"])) == {
            "bit14": True, "bit13": True, "name": "PS-9",
        }  # fmt: skip


# -- registry and gateway traits ----------------------------------------------------------


def test_registry_entries_and_traits() -> None:
    assert {"modbus-tcp", "modbus-rtu", "modbus-rtu-over-tcp"} <= set(DRIVER_NAMES)
    models = binding_models("modbus-rtu-over-tcp")
    assert models.connection is ModbusRtuOverTcpConnection
    assert binding_models("modbus-rtu").connection is ModbusRtuConnection

    def point(**spec: Any) -> ModbusPoint:
        return ModbusPoint.model_validate(spec)

    text = point(table="holding_register", address=0, type="string", length=4)
    bit = point(table="holding_register", address=0, type="bool", bit=3)
    ir_bit = point(table="input_register", address=0, type="bool", bit=3)
    number = point(table="holding_register", address=0, type="int32", byte_order="little")
    assert (models.text(text), models.writable(text), models.integer_raw(text)) == (True, True, False)
    assert (models.text(bit), models.writable(bit), models.integer_raw(bit)) == (False, True, False)
    assert models.writable(ir_bit) is False
    assert (models.text(number), models.integer_raw(number)) == (False, True)
    with pytest.raises(BindingError, match="needs a ModbusRtuOverTcpConnection"):
        create_driver("modbus-rtu-over-tcp", ModbusTcpConnection(host="h"), {})
    rtu = create_driver("modbus-rtu", ModbusRtuConnection(port="/dev/null"), {"t": text})
    assert isinstance(rtu, ModbusRtuDriver)


def test_a_text_property_binds_to_a_string_point_only(tmp_path: Path) -> None:
    from citytwin.gateway.config import device_config_model
    from citytwin.gateway.devicespec import compile_device

    def compile_points(points: dict[str, Any]) -> list[str]:
        config = device_config_model("modbus-tcp").model_validate({
            "id": "vms-1", "model": "variable_message_sign", "driver": "modbus-tcp",
            "connection": {"host": "127.0.0.1"}, "points": points,
        })  # fmt: skip
        spec, issues = compile_device(config, ("devices", 0), tmp_path)
        if spec is not None:
            message = spec.points["message"]
            assert (message.to_value("SLOW DOWN"), message.to_raw("GO")) == ("SLOW DOWN", "GO")
            assert message.integer_raw is False
        return [text for _, text in issues]

    string = hr(100, type="string", length=32)
    assert compile_points({"message": string, "brightness": hr(140)}) == []
    assert compile_points({"message": hr(100), "brightness": string}) == [
        "a text property cannot be bound to a driver point",
        "a int property cannot be bound to a string point",
    ]
