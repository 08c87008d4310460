"""The Modbus TCP driver against real peers over loopback.

A libmodbus slave (C, tests/libmodbus/slave.c) is the device; the faults a real device
cannot be made to produce on cue (silence, garbage, malformed answers, a peer that hangs
up mid-request) come from ``ScriptedPeer``, a small asyncio Modbus TCP server below.
"""

from __future__ import annotations

import asyncio
import struct
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from conftest import eventually, free_port
from modbus_peers import (
    HOLDING_PATTERN,
    SLAVE_POINTS,
    LibmodbusSlave,
    ScriptedPeer,
)

from citytwin.drivers.base import Quality, Reading
from citytwin.drivers.errors import (
    BindingError,
    ConnectError,
    ConnectionClosed,
    DeviceError,
    RequestTimeout,
)
from citytwin.drivers.modbus.binding import ModbusPoint, ModbusTcpConnection
from citytwin.drivers.modbus.tcp import ModbusTcpDriver
from citytwin.drivers.registry import DRIVER_NAMES, binding_models, create_driver

# -- peers ----------------------------------------------------------------------------


# -- helpers --------------------------------------------------------------------------


def make_driver(port: int, points: Mapping[str, dict[str, Any]], **conn: Any) -> ModbusTcpDriver:
    connection = ModbusTcpConnection(host="127.0.0.1", port=port, **conn)
    bindings = {name: ModbusPoint.model_validate(spec) for name, spec in points.items()}
    return ModbusTcpDriver(connection, bindings)


def by_point(readings: list[Reading]) -> dict[str, Reading]:
    result = {r.point: r for r in readings}
    assert len(result) == len(readings), "one reading per point"
    return result


def values(readings: list[Reading]) -> dict[str, Any]:
    assert all(r.quality is Quality.GOOD for r in readings), readings
    return {r.point: r.value for r in readings}


def holding(addresses: range | list[int]) -> dict[str, dict[str, Any]]:
    return {f"hr{a}": {"table": "holding_register", "address": a} for a in addresses}


# -- the libmodbus slave --------------------------------------------------------------


async def test_decodes_exactly_what_the_slave_holds(slave: LibmodbusSlave) -> None:
    driver = make_driver(slave.port, {name: spec for name, (spec, _) in SLAVE_POINTS.items()})
    async with driver:
        readings = await driver.read()
        assert values(readings) == {name: value for name, (_, value) in SLAVE_POINTS.items()}
        # coils 0..10 and 63 (gap 52 > 8), discrete inputs 0..7, holding 0..23 and
        # 200..233, input registers 0..1 and 50..60 (gap 48 > 8)
        assert driver.health.requests == 7
        assert driver.health.extra["requests_per_read"] == 7
        assert driver.health.failures == 0
        assert all(isinstance(r.ts, int) and r.ts > 1_600_000_000_000 for r in readings)


async def test_many_nearby_points_take_few_requests(slave: LibmodbusSlave) -> None:
    every_other = holding(HOLDING_PATTERN[::2])  # 30, 32, ..., 198: 85 points
    driver = make_driver(slave.port, every_other)
    async with driver:
        assert values(await driver.read()) == {f"hr{a}": 3 * a for a in HOLDING_PATTERN[::2]}
        assert driver.health.requests == 2  # 30..154 (125 registers), then 156..198
    uncoalesced = make_driver(slave.port, every_other, max_gap=0)
    async with uncoalesced:
        await uncoalesced.read()
        assert uncoalesced.health.requests == 85
    small = make_driver(slave.port, every_other, max_registers=50)
    async with small:
        assert values(await small.read()) == {f"hr{a}": 3 * a for a in HOLDING_PATTERN[::2]}
        assert small.health.requests == 4  # 30..78, 80..128, 130..178, 180..198


async def test_subset_reads_only_those_points(slave: LibmodbusSlave) -> None:
    driver = make_driver(slave.port, holding([30, 31, 100, 101]))
    async with driver:
        subset = await driver.read(["hr100", "hr30"])
        assert values(subset) == {"hr30": 90, "hr100": 300}
        assert driver.health.requests == 2
        assert values(await driver.read(["hr100", "hr30"])) == {"hr30": 90, "hr100": 300}
        assert values(await driver.read(["hr100", "hr101"])) == {"hr100": 300, "hr101": 303}
        assert driver.health.requests == 5
        with pytest.raises(BindingError, match="unknown points: 'nope'"):
            await driver.read(["hr30", "nope"])
        with pytest.raises(BindingError):
            await driver.read("hr30")
        assert driver.health.requests == 5


async def test_writes_land_in_the_slave(slave: LibmodbusSlave) -> None:
    points = {
        "u16": {"table": "holding_register", "address": 100},
        "i16": {"table": "holding_register", "address": 101, "type": "int16"},
        "f32": {"table": "holding_register", "address": 102, "type": "float32"},
        "f32_little": {
            "table": "holding_register",
            "address": 104,
            "type": "float32",
            "word_order": "little",
        },
        "i32_little": {
            "table": "holding_register",
            "address": 106,
            "type": "int32",
            "word_order": "little",
        },
        "u64": {"table": "holding_register", "address": 108, "type": "uint64"},
        "f64_little": {
            "table": "holding_register",
            "address": 112,
            "type": "float64",
            "word_order": "little",
        },
        "coil20": {"table": "coil", "address": 20},
        "coil0": {"table": "coil", "address": 0},
    }
    written = {
        "u16": 65535,
        "i16": -32768,
        "f32": -0.15625,
        "f32_little": 6.5,
        "i32_little": -2_000_000_000,
        "u64": 2**64 - 2,
        "f64_little": -1e300,
        "coil20": True,
        "coil0": False,
    }
    driver = make_driver(slave.port, points)
    async with driver:
        before = driver.health.requests
        await driver.write(written)
        assert driver.health.requests - before == len(written)  # one request per point
        assert values(await driver.read()) == written
    # a new client sees them too: they live in the slave, not in the driver
    async with make_driver(slave.port, points) as again:
        assert values(await again.read()) == written
    # the words are where the binding says, in the stated word order
    raw = make_driver(slave.port, holding(range(100, 108)))
    async with raw:
        words = values(await raw.read())
    assert words["hr100"] == 0xFFFF and words["hr101"] == 0x8000
    assert (words["hr102"], words["hr103"]) == (0xBE20, 0x0000)  # -0.15625f, high word first
    assert (words["hr104"], words["hr105"]) == (0x0000, 0x40D0)  # 6.5f, low word first
    assert (words["hr106"], words["hr107"]) == struct.unpack(
        ">HH", struct.pack(">i", -2_000_000_000)
    )[::-1]


async def test_float32_write_uses_one_request_for_both_registers(slave: LibmodbusSlave) -> None:
    points = {"f32": {"table": "holding_register", "address": 120, "type": "float32"}}
    driver = make_driver(slave.port, points)
    async with driver:
        await driver.write({"f32": 1.5})
        assert driver.health.requests == 1
        assert values(await driver.read()) == {"f32": 1.5}


async def test_bad_raw_values_are_refused_before_anything_is_sent(slave: LibmodbusSlave) -> None:
    points = {
        "u16": {"table": "holding_register", "address": 130},
        "i16": {"table": "holding_register", "address": 131, "type": "int16"},
        "f32": {"table": "holding_register", "address": 132, "type": "float32"},
        "coil": {"table": "coil", "address": 30},
        "ir": {"table": "input_register", "address": 0},
        "di": {"table": "discrete_input", "address": 0},
    }
    driver = make_driver(slave.port, points)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"u16": 70000}, r"'u16': 70000 is out of range for uint16 \(0\.\.65535\)"),
        ({"u16": -1}, "out of range"),
        ({"u16": 1.5}, "not an integer"),
        ({"u16": True}, "expects a number"),
        ({"u16": "12"}, "expects a number"),
        ({"i16": 40000}, "out of range for int16"),
        ({"f32": 1e39}, "out of range for float32"),
        ({"f32": float("nan")}, "not a finite number"),
        ({"coil": 1}, "expects a bool"),
        ({"ir": 1}, "'ir' is a read-only input_register"),
        ({"di": True}, "'di' is a read-only discrete_input"),
        ({"nope": 1}, "unknown point 'nope'"),
        ({"u16": 7, "i16": 99999}, "'i16'"),  # the valid first value is not written either
    ]
    async with driver:
        for request, message in cases:
            with pytest.raises(BindingError, match=message):
                await driver.write(request)
        assert driver.health.requests == 0
        assert values(await driver.read(["u16"])) == {"u16": 390}  # 3 * 130, untouched
        await driver.write({"u16": 12.0})  # an integral float is accepted
        assert values(await driver.read(["u16"])) == {"u16": 12}


async def test_modbus_exception_marks_only_that_block_bad(slave: LibmodbusSlave) -> None:
    points = {
        "ir0": {"table": "input_register", "address": 0},
        "ir150": {"table": "input_register", "address": 150},  # past the slave's map
        "hr0": {"table": "holding_register", "address": 0},
    }
    driver = make_driver(slave.port, points)
    async with driver:
        readings = by_point(await driver.read())
        assert readings["ir150"].quality is Quality.BAD
        assert readings["ir150"].value is None
        assert readings["ir150"].error == (
            "modbus exception 2 (illegal data address) reading input_register 150..150"
        )
        assert (readings["ir0"].quality, readings["ir0"].value) == (Quality.GOOD, 1000)
        assert (readings["hr0"].quality, readings["hr0"].value) == (Quality.GOOD, 1234)
        health = driver.health
        assert health.connected
        assert (health.requests, health.failures, health.extra["exceptions"]) == (3, 1, 1)
        assert health.last_error == readings["ir150"].error
        # the link stays usable
        assert by_point(await driver.read())["hr0"].value == 1234


async def test_block_crossing_the_end_of_the_map_is_bad_as_a_whole(
    slave: LibmodbusSlave,
) -> None:
    # 95 and 104 join into one request (gap 8); 100..104 do not exist on the slave
    points = {
        "ir95": {"table": "input_register", "address": 95},
        "ir104": {"table": "input_register", "address": 104},
    }
    async with make_driver(slave.port, points) as driver:
        readings = await driver.read()
    assert [r.quality for r in readings] == [Quality.BAD, Quality.BAD]
    assert readings[0].error == (
        "modbus exception 2 (illegal data address) reading input_register 95..104"
    )
    async with make_driver(slave.port, points, max_gap=7) as driver:
        apart = by_point(await driver.read())
    assert apart["ir95"].value == 1095
    assert apart["ir104"].quality is Quality.BAD


async def test_device_exception_on_write_raises_device_error(slave: LibmodbusSlave) -> None:
    points = {
        "missing": {"table": "holding_register", "address": 350},
        "hr0": {"table": "holding_register", "address": 0},
    }
    driver = make_driver(slave.port, points)
    async with driver:
        with pytest.raises(
            DeviceError, match=r"modbus exception 2 \(illegal data address\)"
        ) as info:
            await driver.write({"missing": 1})
        assert info.value.code == 2
        assert driver.health.connected
        assert by_point(await driver.read())["hr0"].value == 1234


async def test_slave_restart_then_reconnect(slave_binary: Path) -> None:
    peer = LibmodbusSlave(slave_binary)
    peer.start()
    driver = make_driver(peer.port, holding([30]))
    try:
        await driver.connect()
        assert values(await driver.read()) == {"hr30": 90}
        peer.stop()
        with pytest.raises(ConnectionClosed):
            for _ in range(50):  # the FIN may take a moment to reach the client
                await driver.read()
                await asyncio.sleep(0.02)
        assert not driver.health.connected
        with pytest.raises(ConnectionClosed, match="not connected"):
            await driver.read()
        with pytest.raises(ConnectError, match="Connection refused"):
            await driver.connect()
        peer = LibmodbusSlave(slave_binary, peer.port)
        peer.start()
        await driver.connect()
        assert values(await driver.read()) == {"hr30": 90}
        assert driver.health.extra["connects"] == 2
    finally:
        await driver.close()
        peer.stop()


async def test_connect_refused_raises_connect_error() -> None:
    refused_port = free_port()  # nothing listens: connects are refused
    driver = make_driver(refused_port, holding([0]))
    for _ in range(2):  # and again: connect() is safe to repeat after a failure
        with pytest.raises(ConnectError, match=f"127.0.0.1:{refused_port}: Connection refused"):
            await driver.connect()
    health = driver.health
    assert not health.connected
    assert health.last_error is not None and "Connection refused" in health.last_error
    await driver.close()


# -- faults from the scripted peer ----------------------------------------------------


async def test_silent_peer_times_out_and_drops_the_link() -> None:
    async with ScriptedPeer(["silent"]) as peer:
        driver = make_driver(peer.port, holding([0, 1]), timeout=0.2)
        await driver.connect()
        with pytest.raises(RequestTimeout, match=r"within 0.2 s reading holding_register 0..1"):
            await asyncio.wait_for(driver.read(), 5)
        health = driver.health
        assert not health.connected
        assert (health.requests, health.failures, health.extra["timeouts"]) == (1, 1, 1)
        await driver.connect()
        assert values(await driver.read()) == {"hr0": 0, "hr1": 1}
        assert peer.connections == 2
        await driver.close()


async def test_garbage_answer_drops_the_link_at_once() -> None:
    async with ScriptedPeer(["garbage"]) as peer:
        # a long timeout: getting ConnectionClosed, not RequestTimeout, shows it was not awaited
        driver = make_driver(peer.port, holding([0]), timeout=30)
        await driver.connect()
        with pytest.raises(ConnectionClosed, match="not a Modbus TCP answer"):
            await driver.read()
        assert not driver.health.connected
        await driver.connect()
        assert values(await driver.read()) == {"hr0": 0}
        await driver.close()


@pytest.mark.parametrize(
    ("action", "reason"),
    [
        ("short", "malformed answer reading holding_register 5..14: 5 of 10 registers"),
        ("bad_count", "holding_register 5..14: byte count 22 in an answer carrying 20 bytes"),
        ("wrong_function", "function code 4 in the answer, expected 3"),
        (
            "long_exception",
            "malformed answer reading holding_register 5..14: exception answer of 3 bytes",
        ),
    ],
)
async def test_malformed_answer_gives_bad_quality_and_keeps_the_link(
    action: str, reason: str
) -> None:
    async with ScriptedPeer([action]) as peer:
        driver = make_driver(
            peer.port,
            {
                "a": {"table": "holding_register", "address": 5},
                "b": {"table": "holding_register", "address": 14},
            },
            timeout=30,
        )
        async with driver:
            readings = await driver.read()
            assert [r.quality for r in readings] == [Quality.BAD, Quality.BAD]
            assert all(r.error is not None and reason in r.error for r in readings), readings
            assert driver.health.connected
            assert driver.health.extra["decode_errors"] == 1
            # the same connection answers the next request correctly
            assert values(await driver.read()) == {"a": 5, "b": 14}
        assert peer.connections == 1


async def test_device_exception_from_scripted_peer() -> None:
    async with ScriptedPeer(["exception"]) as peer, make_driver(peer.port, holding([7])) as driver:
        (reading,) = await driver.read()
        assert reading.error == (
            "modbus exception 4 (server device failure) reading holding_register 7..7"
        )


async def test_answer_split_across_segments_is_reassembled() -> None:
    async with ScriptedPeer(["split"]) as peer, make_driver(peer.port, holding(range(3))) as driver:
        assert values(await driver.read()) == {"hr0": 0, "hr1": 1, "hr2": 2}


async def test_peer_closing_mid_request_fails_fast_then_reconnects() -> None:
    async with ScriptedPeer(["ok", "close"]) as peer:
        driver = make_driver(peer.port, holding([0]), timeout=30)
        await driver.connect()
        assert values(await driver.read()) == {"hr0": 0}
        with pytest.raises(ConnectionClosed, match="the peer closed the connection"):
            await driver.read()  # a 30 s timeout: only the close hook can end this early
        assert not driver.health.connected
        await driver.connect()
        assert values(await driver.read()) == {"hr0": 0}
        assert peer.connections == 2
        await driver.close()


async def test_peer_hanging_up_while_idle_is_noticed_and_not_redialled() -> None:
    async with ScriptedPeer(["answer_then_close"]) as peer:
        driver = make_driver(peer.port, holding([0]))
        await driver.connect()
        assert values(await driver.read()) == {"hr0": 0}
        await eventually(lambda: not driver.health.connected)
        assert peer.connections == 1  # pymodbus's own reconnect stays off: backoff is ours
        assert driver.health.last_error == (
            f"connection to 127.0.0.1:{peer.port} lost: the peer closed the connection"
        )
        with pytest.raises(ConnectionClosed, match="not connected"):
            await driver.read()
        await driver.connect()
        assert values(await driver.read()) == {"hr0": 0}
        assert peer.connections == 2
        await driver.close()


async def test_close_during_a_request_ends_it() -> None:
    async with ScriptedPeer(["silent"]) as peer:
        driver = make_driver(peer.port, holding([0]), timeout=30)
        await driver.connect()
        task = asyncio.create_task(driver.read())
        await eventually(lambda: peer.requests > 0)
        await driver.close()
        with pytest.raises(ConnectionClosed, match="the driver closed the connection"):
            await task
        await driver.close()  # idempotent


async def test_not_connected_read_and_write_raise() -> None:
    driver = make_driver(1502, holding([0]))
    with pytest.raises(ConnectionClosed, match="not connected"):
        await driver.read()
    with pytest.raises(ConnectionClosed, match="not connected"):
        await driver.write({"hr0": 1})


# -- registry -------------------------------------------------------------------------


def test_registry_and_bindings_do_not_import_pymodbus() -> None:
    code = (
        "import sys\n"
        "from citytwin.drivers.registry import binding_models\n"
        "models = binding_models('modbus-tcp')\n"
        "models.point.model_validate({'table': 'coil', 'address': 1})\n"
        "assert 'pymodbus' not in sys.modules, 'pymodbus was imported'\n"
        "from citytwin.drivers.registry import create_driver\n"
        "create_driver('modbus-tcp', models.connection(host='h'), {})\n"
        "assert 'pymodbus' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_registry_creates_drivers_and_rejects_mismatches() -> None:
    assert "modbus-tcp" in DRIVER_NAMES
    models = binding_models("modbus-tcp")
    assert models.connection is ModbusTcpConnection and models.point is ModbusPoint

    class PointConfig(ModbusPoint):  # as the gateway extends the binding
        scale: float = 1.0

    point = PointConfig.model_validate({"table": "input_register", "address": 3, "scale": 0.1})
    driver = create_driver("modbus-tcp", ModbusTcpConnection(host="h"), {"p": point})
    assert isinstance(driver, ModbusTcpDriver)
    with pytest.raises(BindingError, match="unknown driver 'opc-ua'; known drivers: modbus-tcp"):
        create_driver("opc-ua", ModbusTcpConnection(host="h"), {})
    with pytest.raises(BindingError, match="needs a ModbusTcpConnection"):
        create_driver("modbus-tcp", point, {})
    with pytest.raises(BindingError, match="point 'p': modbus-tcp needs a ModbusPoint"):
        create_driver(
            "modbus-tcp", ModbusTcpConnection(host="h"), {"p": ModbusTcpConnection(host="h")}
        )


def test_point_too_wide_for_the_request_limit_is_a_binding_error() -> None:
    with pytest.raises(BindingError, match="'x': a float64 needs 4 registers"):
        make_driver(
            502,
            {"x": {"table": "holding_register", "address": 0, "type": "float64"}},
            max_registers=3,
        )
