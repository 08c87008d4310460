"""A BACnet read cancelled in flight ends at once, and the next read gets its own answer.

bacpypes3 awaits no ``wait_for`` for a confirmed request: ``Application.request`` returns a
plain future, our task awaits it under our own ``asyncio.timeout``, and cancelling it runs
bacpypes3's ``_request_done``, which forgets the request, so a late answer matches no open
request (invoke ids keep them apart) and is dropped. Held to the building simulator (bacpypes3
device objects) through a UDP proxy that holds its answers; every point is polled (no COV),
so everything the proxy holds is an answer to a read.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
from cancel_support import HoldingUdpProxy, cancel_reads_in_flight
from test_bacnet_jspeer import free_udp_port

from citytwin.drivers.bacnet.binding import BacnetConnection, BacnetPoint
from citytwin.drivers.bacnet.driver import BacnetDriver
from citytwin.drivers.base import Quality, Reading
from citytwin.simulators.bacnet_building.server import BuildingSimulator

pytestmark = pytest.mark.timeout(60)
POINTS = {
    "supply_air_temp": BacnetPoint(object="analog-input,1", mode="poll"),
    "filter_dp": BacnetPoint(object="analog-input,3", mode="poll"),
}


@pytest.fixture
async def sim() -> AsyncIterator[BuildingSimulator]:
    async with BuildingSimulator(port=free_udp_port(), zones=2, speed=0.0, seed=1) as simulator:
        yield simulator


async def test_reads_cancelled_in_flight_end_at_once_and_the_next_read_is_its_own(
    sim: BuildingSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    objects = sim.building.objects
    expected = {"supply_air_temp": float(objects["ahu-supply-air-temp"].presentValue),
                "filter_dp": float(objects["ahu-filter-dp"].presentValue)}

    def right(readings: list[Reading]) -> None:
        assert all(r.quality is Quality.GOOD for r in readings), readings
        assert {r.point: r.value for r in readings} == expected

    async with HoldingUdpProxy(sim.port) as proxy:
        connection = BacnetConnection(address=f"127.0.0.1:{proxy.port}", device_id=1001,
                                      local_address=f"127.0.0.1:{free_udp_port()}", timeout=2.0, cov=False)
        async with BacnetDriver(connection, POINTS) as driver:
            outcome = await cancel_reads_in_flight(driver, proxy, right)
            assert outcome["cancelled"] >= 10, outcome
    noise = [r.getMessage() for r in caplog.records if r.name.startswith(("bacpypes3", "citytwin"))]
    assert noise == []
