"""Modbus TCP and RTU over TCP reads cancelled in flight, twenty times, at varied moments.

``test_modbus_cancel.py`` cancels while the answer is held; these also cancel a few loop
steps either side of the answer's arrival, where Python 3.11's ``asyncio.wait_for`` (which
pymodbus would use, given a timeout) loses the cancellation. The driver closes the link when a
cancelled request still owes its answer, so the next read is the runner's re-connect and read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from cancel_support import HoldingProxy, cancel_reads_in_flight

from citytwin.drivers.base import Quality, Reading
from citytwin.drivers.modbus.binding import (
    ModbusPoint,
    ModbusRtuOverTcpConnection,
    ModbusTcpConnection,
)
from citytwin.drivers.modbus.rtu_over_tcp import ModbusRtuOverTcpDriver
from citytwin.drivers.modbus.tcp import ModbusTcpDriver
from citytwin.simulators.pump_station.server import PumpStationSimulator

pytestmark = pytest.mark.timeout(60)
POINTS = {"level": ModbusPoint.model_validate({"table": "input_register", "address": 0})}


def good(readings: list[Reading]) -> None:
    (reading,) = readings
    assert reading.quality is Quality.GOOD and isinstance(reading.value, int), readings


@pytest.fixture(params=["tcp", "rtu-over-tcp"])
async def proxied(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, HoldingProxy]]:
    rtu = request.param == "rtu-over-tcp"
    async with PumpStationSimulator(port=0, unit=3, seed=3, tick=0.05, rtu_over_tcp=rtu) as sim, \
            HoldingProxy(sim.port) as proxy:
        yield request.param, proxy


async def test_reads_cancelled_in_flight_end_at_once_and_the_link_stays_in_step(
    proxied: tuple[str, HoldingProxy]
) -> None:
    kind, proxy = proxied
    driver: ModbusTcpDriver
    if kind == "tcp":
        driver = ModbusTcpDriver(ModbusTcpConnection(host="127.0.0.1", port=proxy.port, unit=3, timeout=2), POINTS)
    else:
        driver = ModbusRtuOverTcpDriver(
            ModbusRtuOverTcpConnection(host="127.0.0.1", port=proxy.port, unit=3, timeout=2), POINTS)
    async with driver:
        outcome = await cancel_reads_in_flight(driver, proxy, good)
        assert outcome["cancelled"] >= 10, outcome
