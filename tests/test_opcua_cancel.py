"""An OPC UA read cancelled in flight ends at once, and the session stays in step.

asyncua awaits each answer in ``asyncua.common.utils.wait_for``, which on Python 3.11 is
``wait_for2``: a cancellation that meets the answer raises (a ``CancelledWithResultError``)
instead of being lost, and the answer's future is cancelled with the request. Requests carry
ids, so a late answer cannot be taken for the next one; asyncua only drops it (logging a
warning "Future for request id N is already done"). These tests hold that behaviour to the
real intersection simulator (an asyncua server) through a proxy that holds its answers.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cancel_support import HoldingProxy, cancel_reads_in_flight
from conftest import free_port

from citytwin.drivers.base import Quality, Reading
from citytwin.drivers.opcua.binding import OpcUaConnection, OpcUaPoint
from citytwin.drivers.opcua.driver import OpcUaDriver
from citytwin.simulators.intersection.server import IntersectionSimulator

pytestmark = pytest.mark.timeout(60)
U = "nsu=urn:citytwin:sim:intersection;s="
POINTS = {
    "phase": OpcUaPoint(node=U + "Controller.Phase", mode="poll"),
    "occupancy_north": OpcUaPoint(node=U + "Detector.North.Occupancy", mode="poll"),
}


@pytest.fixture
async def proxy() -> AsyncIterator[HoldingProxy]:
    async with IntersectionSimulator(port=free_port(), tick=0.05, speed=20.0, seed=2) as sim, \
            HoldingProxy(sim.port) as p:
        yield p


def good(readings: list[Reading]) -> None:
    assert sorted(r.point for r in readings) == ["occupancy_north", "phase"], readings
    assert all(r.quality is Quality.GOOD for r in readings), readings
    assert isinstance({r.point: r.value for r in readings}["phase"], int)


async def test_reads_cancelled_in_flight_end_at_once_and_the_session_stays_in_step(
    proxy: HoldingProxy, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    connection = OpcUaConnection(url=f"opc.tcp://127.0.0.1:{proxy.port}/citytwin/intersection", pki_dir=tmp_path / "pki",
                                 subscribe=False, timeout=2.0, probe_interval=30.0)
    driver = OpcUaDriver(connection, POINTS)
    async with driver:
        outcome = await cancel_reads_in_flight(driver, proxy, good)
        assert outcome["cancelled"] >= 10, outcome
        assert driver.health.extra["connects"] == 1  # never needed to re-open the session
    noise = [r.getMessage() for r in caplog.records if r.name.startswith("asyncua")]
    assert noise == []
