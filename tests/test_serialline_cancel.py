"""DL/T 645 and CJ/T 188 reads cancelled in flight end at once, and the line stays in step.

Both drivers speak through ``drivers/serialline.py``: our own ``asyncio.timeout`` around a
wait for the receive buffer, no library ``wait_for``. What a cancellation can break there is
the line: the meter answers the cancelled request all the same, and an answer arriving after
the next request went out was taken for that one's (its DI or SER then did not match, and
the next read came back BAD). The meters' simulators serve the line over TCP, as a serial
device server does, through a proxy that holds their answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence

import pytest
from cancel_support import CANCEL_BOUND, IN_FLIGHT_BOUND, HoldingProxy, cancel_reads_in_flight

from citytwin.drivers.base import Driver, Quality, Reading
from citytwin.drivers.cjt188.binding import Cjt188Connection, Cjt188Point
from citytwin.drivers.dlt645.binding import Dlt645Connection, Dlt645Point
from citytwin.drivers.registry import create_driver
from citytwin.simulators.meters_188.server import Meters188Simulator
from citytwin.simulators.meters_188.server import make_meters as make_188
from citytwin.simulators.meters_645.server import Meters645Simulator
from citytwin.simulators.meters_645.server import make_meters as make_645

pytestmark = pytest.mark.timeout(60)
DLT645 = {"energy": "00010000", "voltage_a": "02010100", "frequency": "02800002"}
WATER = ["accumulated_flow", "valve_open"]


@pytest.fixture
async def line645() -> AsyncIterator[HoldingProxy]:
    async with Meters645Simulator(make_645(2, seed=7), pty=False, host="127.0.0.1", tick=0.05) as sim, \
            HoldingProxy(sim.tcp_port) as proxy:
        yield proxy


@pytest.fixture
async def line188() -> AsyncIterator[HoldingProxy]:
    async with Meters188Simulator(make_188(2, 0, seed=5), pty=False, host="127.0.0.1", tick=0.05) as sim, \
            HoldingProxy(sim.tcp_port) as proxy:
        yield proxy


def meter645(port: int, address: str = "000000000001") -> Driver:
    connection = Dlt645Connection.model_validate(
        {"address": address, "host": "127.0.0.1", "port": port, "parity": "N", "timeout": 0.5})
    return create_driver("dlt645", connection, {n: Dlt645Point(di=di) for n, di in DLT645.items()})


def meter188(port: int, address: str = "00000000000001") -> Driver:
    connection = Cjt188Connection.model_validate(
        {"meter_type": "cold_water", "address": address, "host": "127.0.0.1", "port": port,
         "parity": "N", "timeout": 0.5})
    return create_driver("cjt188", connection, {f: Cjt188Point(field=f) for f in WATER})


def all_good(names: Sequence[str]) -> Callable[[list[Reading]], None]:
    def check(readings: list[Reading]) -> None:
        assert sorted(r.point for r in readings) == sorted(names), readings
        assert all(r.quality is Quality.GOOD for r in readings), readings
    return check


async def cancel_then_read_on(driver: Driver, proxy: HoldingProxy, first: list[str], then: list[str]) -> list[Reading]:
    """Cancel a read of ``first`` while its answer is held; the answer comes just as the next
    read (of ``then``) goes out, as a slow meter's would."""
    proxy.holding.clear()
    proxy.hold = True
    task = asyncio.ensure_future(driver.read(first))
    async with asyncio.timeout(IN_FLIGHT_BOUND):
        await proxy.holding.wait()
    assert task.cancel()
    done, _ = await asyncio.wait({task}, timeout=CANCEL_BOUND)
    assert done and task.cancelled()
    following = asyncio.ensure_future(driver.read(then))
    proxy.release()
    async with asyncio.timeout(IN_FLIGHT_BOUND):
        return await following


async def test_dlt645_reads_cancelled_in_flight_end_at_once(line645: HoldingProxy) -> None:
    async with meter645(line645.port) as meter:
        outcome = await cancel_reads_in_flight(meter, line645, all_good(list(DLT645)))
        assert outcome["cancelled"] >= 10, outcome


async def test_dlt645_a_late_answer_to_a_cancelled_read_is_not_taken_for_the_next(line645: HoldingProxy) -> None:
    async with meter645(line645.port) as meter:
        for _ in range(3):
            readings = await cancel_then_read_on(meter, line645, ["voltage_a"], ["energy"])
            all_good(["energy"])(readings)


async def test_cjt188_reads_cancelled_in_flight_end_at_once(line188: HoldingProxy) -> None:
    async with meter188(line188.port) as meter:
        outcome = await cancel_reads_in_flight(meter, line188, all_good(WATER))
        assert outcome["cancelled"] >= 10, outcome


async def test_cjt188_a_late_answer_to_a_cancelled_read_is_not_taken_for_the_next(line188: HoldingProxy) -> None:
    async with meter188(line188.port) as meter:
        for _ in range(3):
            all_good(WATER)(await cancel_then_read_on(meter, line188, WATER, WATER))
