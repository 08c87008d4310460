"""Many Modbus devices from one template share their compiled read plan (issues 13 and 19).

Against two real libmodbus slaves: drivers built from equal point maps hold the very same
plan, yet each decodes its own device's values; the mapping a driver is given is kept as is
(no copy) and never changed; a plan lives only as long as a driver holds it.
"""

from __future__ import annotations

import gc
import json
import random
import struct
import subprocess
import sys
import weakref
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from modbus_peers import SLAVE_POINTS, LibmodbusSlave

from citytwin.drivers.base import Quality
from citytwin.drivers.errors import BindingError
from citytwin.drivers.modbus.binding import ModbusPoint, ModbusTcpConnection
from citytwin.drivers.modbus.codec import _format
from citytwin.drivers.modbus.tcp import ModbusTcpDriver
from citytwin.drivers.registry import create_driver
from citytwin.simulators.pump_station.server import PumpStationSimulator

ROOT = Path(__file__).resolve().parent.parent

# the slave's fixed values (every decoder kind), plus free registers each test writes
FIXED = ("u16", "i32_little", "f32_dcba", "bit13", "location", "coil0", "di1", "ir_f32_big")
WRITTEN: dict[str, dict[str, Any]] = {
    "setpoint": {"table": "holding_register", "address": 240},
    "level": {"table": "holding_register", "address": 242, "type": "int32", "word_order": "little"},
    "flow": {"table": "holding_register", "address": 244, "type": "float32"},
}


class PointConfig(ModbusPoint):  # as the gateway extends the binding
    scale: float = 1.0


def template(**extra: Any) -> dict[str, ModbusPoint]:
    """A freshly validated point map: equal to every other one, no object shared."""
    specs = {name: SLAVE_POINTS[name][0] for name in FIXED} | WRITTEN
    return {name: PointConfig.model_validate({**spec, **extra}) for name, spec in specs.items()}


@pytest.fixture
def slaves(slave_binary: Path) -> Iterator[tuple[LibmodbusSlave, LibmodbusSlave]]:
    first, second = LibmodbusSlave(slave_binary), LibmodbusSlave(slave_binary)
    first.start()
    try:
        second.start()
        try:
            yield first, second
        finally:
            second.stop()
    finally:
        first.stop()


def driver(port: int, points: Any, **conn: Any) -> ModbusTcpDriver:
    made = create_driver("modbus-tcp", ModbusTcpConnection(host="127.0.0.1", port=port, **conn), points)
    assert isinstance(made, ModbusTcpDriver)
    return made


async def test_equal_maps_share_one_plan_and_each_device_decodes_its_own_values(
    slaves: tuple[LibmodbusSlave, LibmodbusSlave],
) -> None:
    first, second = slaves
    # equal bindings, separately validated; gateway-only fields (scale) and the unit id differ
    a = driver(first.port, template(), unit=1)
    b = driver(second.port, template(scale=0.5), unit=7)
    assert a._plan is b._plan and a._plan_all is b._plan_all
    fixed = {name: SLAVE_POINTS[name][1] for name in FIXED}
    async with a, b:
        await a.write({"setpoint": 111, "level": -70_000, "flow": 1.5})
        await b.write({"setpoint": 222, "level": 80_000, "flow": -2.25})
        read_a, read_b = await a.read(), await b.read()
        assert all(r.quality is Quality.GOOD for r in read_a + read_b)
        assert {r.point: r.value for r in read_a} == fixed | {"setpoint": 111, "level": -70_000, "flow": 1.5}
        assert {r.point: r.value for r in read_b} == fixed | {"setpoint": 222, "level": 80_000, "flow": -2.25}
        # subset plans are shared too, and still read each device's own registers
        sub_a, sub_b = await a.read(["flow", "setpoint"]), await b.read(["flow", "setpoint"])
        assert a._subset_plan(["flow", "setpoint"]) is b._subset_plan(["flow", "setpoint"])
        assert {r.point: r.value for r in sub_a} == {"setpoint": 111, "flow": 1.5}
        assert {r.point: r.value for r in sub_b} == {"setpoint": 222, "flow": -2.25}
        with pytest.raises(BindingError, match="unknown points: 'nope'"):
            await b.read(["flow", "nope"])
        assert a.health.requests == b.health.requests


async def test_devices_of_other_unit_ids_share_the_plan_and_each_is_asked_by_its_own() -> None:
    # the pump station answers only its own unit id (others get exception 11)
    points = {
        "level": {"table": "input_register", "address": 0, "type": "float32"},
        "setpoint": {"table": "holding_register", "address": 0, "type": "float32"},
        "run": {"table": "coil", "address": 0},
    }
    frozen = {"port": 0, "tick": 3600.0, "seed": 1}
    async with (
        PumpStationSimulator(unit=3, initial_level=1.25, **frozen) as three,
        PumpStationSimulator(unit=9, initial_level=4.5, **frozen) as nine,
    ):
        a = driver(three.port, {n: PointConfig.model_validate(p) for n, p in points.items()}, unit=3)
        b = driver(nine.port, {n: PointConfig.model_validate(p) for n, p in points.items()}, unit=9)
        assert a._plan is b._plan
        async with a, b:
            await a.write({"setpoint": 31.5, "run": True})
            await b.write({"setpoint": 47.0})
            got_a = {r.point: r for r in await a.read()}
            got_b = {r.point: r for r in await b.read()}
        assert all(r.quality is Quality.GOOD for r in [*got_a.values(), *got_b.values()])
        assert (got_a["setpoint"].value, got_a["run"].value) == (31.5, True)
        assert (got_b["setpoint"].value, got_b["run"].value) == (47.0, False)
        assert got_a["level"].value == pytest.approx(three.station.level, abs=0.01)
        assert got_b["level"].value == pytest.approx(nine.station.level, abs=0.01)
        assert abs(got_a["level"].value - got_b["level"].value) > 3


def test_a_binding_or_a_request_limit_that_differs_gets_its_own_plan() -> None:
    base = driver(502, template())
    assert driver(502, template(), max_gap=0)._plan is not base._plan
    other = template()
    other["level"] = PointConfig.model_validate({**WRITTEN["level"], "word_order": "big"})
    assert driver(502, other)._plan is not base._plan
    renamed = template()
    renamed["flow_rate"] = renamed.pop("flow")
    assert driver(502, renamed)._plan is not base._plan
    reordered = dict(reversed(template().items()))  # the order of the map does not matter
    assert driver(502, reordered)._plan is base._plan


async def test_the_driver_keeps_the_mapping_it_is_given_and_never_changes_it(
    slaves: tuple[LibmodbusSlave, LibmodbusSlave],
) -> None:
    points = template()
    before = {name: (id(p), p.model_dump()) for name, p in points.items()}
    read_only = MappingProxyType(points)  # any attempt to change it would raise
    devices = [driver(slaves[0].port, read_only), driver(slaves[1].port, read_only)]
    assert all(d._points is read_only for d in devices)  # no copy per device
    for device in devices:
        async with device:
            await device.write({"setpoint": 5, "bit13": False, "coil0": False})
            await device.write({"bit13": True, "coil0": True})
            await device.read()
            await device.read(["setpoint", "bit13"])
    assert {name: (id(p), p.model_dump()) for name, p in points.items()} == before


def test_a_plan_lives_only_while_a_driver_holds_it() -> None:
    points = template(scale=3.0)
    first = driver(502, points)
    plan = weakref.ref(first._plan)
    second = driver(503, template())
    assert second._plan is plan()
    del first, second
    gc.collect()
    assert plan() is None


def test_counted_formats_unpack_exactly_as_the_codes_written_out() -> None:
    rng = random.Random(19)
    for _ in range(200):
        codes = [rng.choice("HhIifQqd") for _ in range(rng.randint(1, 40))]
        codes = [c for c in codes for _ in range(rng.choice((1, 1, 3)))]  # runs
        written_out = struct.Struct(">" + "".join(codes))
        data = rng.randbytes(written_out.size)
        counted = struct.Struct(_format(codes)).unpack(data)
        assert [repr(v) for v in counted] == [repr(v) for v in written_out.unpack(data)]  # NaN too
    assert _format(["H"] * 100 + ["I", "H"]) == ">100HIH"


def test_the_modbus_memory_benchmark_runs_and_writes_a_record(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.modbus_memory", "--devices", "20", "--points", "10",
         "--output", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    (path,) = tmp_path.glob("modbus_memory-*.json")
    record = json.loads(path.read_text())
    runs = {(r["case"], r["trace"]): r for r in record["runs"]}
    assert set(runs) == {(c, t) for c in ("unshared", "copies", "shared") for t in (True, False)}
    assert runs["unshared", True]["distinct_plans"] == 20 and runs["shared", True]["distinct_plans"] == 1
    # what sharing saves is the driver's own memory: the plan and the point map
    owners = {case: runs[case, True]["per_device_bytes_by_owner"]["citytwin"] for case in ("unshared", "shared")}
    assert owners["shared"] < owners["unshared"]
    assert "shared vs unshared" in result.stdout
