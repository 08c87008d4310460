"""A CoAP read cancelled in flight ends at once, and the next read gets its own answers.

aiocoap awaits no ``wait_for``: a request's ``response`` is a plain future, and cancelling
it (our task awaits it under our own ``asyncio.timeout``) cancels the request's runner, which
stops its retransmissions; a late answer matches no open exchange and is dropped (tokens and
message ids keep exchanges apart). A read of several resources is a ``gather``, cancelled
with its task. Held to the city-sensors simulator through a UDP proxy holding its answers.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
from cancel_support import HoldingUdpProxy, cancel_reads_in_flight
from conftest import free_port

from citytwin.drivers.base import Quality, Reading
from citytwin.drivers.coap.binding import CoapConnection, CoapPoint
from citytwin.drivers.coap.driver import CoapDriver
from citytwin.simulators.city_sensors.server import CitySensorsSimulator

pytestmark = pytest.mark.timeout(60)
POINTS = {
    "pm25": CoapPoint(path="/aq/pm", pointer="/pm25"),
    "no2": CoapPoint(path="/aq/gas", pointer="/no2", format="cbor"),
    "temperature": CoapPoint(path="/aq/climate", pointer="/temperature", format="json"),
}


@pytest.fixture
async def sim() -> AsyncIterator[CitySensorsSimulator]:
    """Physics that never ticks during the test: every served value is known."""
    async with CitySensorsSimulator(port=free_port(udp=True), tick=3600, seed=5, interval=3600) as simulator:
        yield simulator


async def test_reads_cancelled_in_flight_end_at_once_and_the_next_read_is_its_own(
    sim: CitySensorsSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    aq = sim.station
    expected = {"pm25": aq.pm25, "no2": aq.no2, "temperature": aq.temperature}

    def right(readings: list[Reading]) -> None:
        assert all(r.quality is Quality.GOOD for r in readings), readings
        assert {r.point: r.value for r in readings} == expected

    async with HoldingUdpProxy(sim.port) as proxy, \
            CoapDriver(CoapConnection(host="127.0.0.1", port=proxy.port, timeout=2.0), POINTS) as driver:
        outcome = await cancel_reads_in_flight(driver, proxy, right)
        assert outcome["cancelled"] >= 10, outcome
    noise = [r.getMessage() for r in caplog.records if r.name.startswith(("citytwin.coap", "aiocoap"))]
    assert noise == []
