"""A Modbus request cancelled mid-flight (the gateway stopping, a command's time up) leaves
no answer for pymodbus to log as unasked for.

At shutdown the gateway cancels its device tasks, then closes each link (gateway/app.py); an
answer arriving in between used to reach pymodbus with nobody awaiting it, and it logged
"ERROR: received pdu without a corresponding request". The pump-station simulator answers
through a proxy that holds the answer until the request has been cancelled, so the answer
always comes after the cancellation, as it sometimes did at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cancel_support import HoldingProxy
from harness import InProcessGateway

from citytwin.drivers.base import Quality
from citytwin.drivers.errors import ConnectionClosed
from citytwin.drivers.modbus.binding import ModbusPoint, ModbusTcpConnection
from citytwin.drivers.modbus.tcp import ModbusTcpDriver
from citytwin.simulators.pump_station.server import PumpStationSimulator

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def proxy() -> AsyncIterator[HoldingProxy]:
    async with PumpStationSimulator(port=0, seed=3, tick=0.05) as sim, HoldingProxy(sim.port) as p:
        p.hold = True
        yield p


def pymodbus_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("pymodbus") and r.levelno >= logging.WARNING]


async def test_a_read_cancelled_in_flight_closes_the_link_and_pymodbus_stays_quiet(
    proxy: HoldingProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="pymodbus")
    driver = ModbusTcpDriver(ModbusTcpConnection(host="127.0.0.1", port=proxy.port, timeout=5),
                             {"level": ModbusPoint.model_validate({"table": "input_register", "address": 0})})
    await driver.connect()
    try:
        poll = asyncio.create_task(driver.read())
        await asyncio.wait_for(proxy.holding.wait(), 10)  # the device answered; the proxy holds it
        poll.cancel()  # what stopping the gateway does to its device tasks
        with pytest.raises(asyncio.CancelledError):
            await poll
        proxy.release()  # the answer comes after all

        # the link was closed with the cancellation: nothing is left to read the answer
        async def settled() -> None:
            while not proxy.client_gone.is_set() and not pymodbus_records(caplog):
                await asyncio.sleep(0.01)

        await asyncio.wait_for(settled(), 10)
        assert pymodbus_records(caplog) == []
        assert proxy.client_gone.is_set()
        assert not driver.health.connected
        with pytest.raises(ConnectionClosed):
            await driver.read()  # the runner re-opens the link, as after a timeout
    finally:
        await driver.close()
    assert pymodbus_records(caplog) == []
    # and the link works again once re-opened
    async with driver:
        (reading,) = await driver.read()
        assert reading.quality is Quality.GOOD and isinstance(reading.value, int)


STOPPING = """
gateway: {id: stop-gw, data_dir: DATA_DIR, flush_interval: 0.2}
hub: {url: "mqtt://127.0.0.1:1", reconnect_max: 60}
http: {enabled: false}
devices:
"""
DEVICE = """
  - id: ps{n}
    model: pump_station
    driver: modbus-tcp
    connection: {{host: 127.0.0.1, port: {port}, timeout: 1.0}}
    poll_period: 0.01
    points:
      level: {{table: input_register, address: 0, scale: 0.01}}
"""


async def test_a_gateway_stopping_mid_poll_is_quiet_and_prompt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Twenty devices polling every 10 ms: some request is always on the wire when the gateway
    stops. Before, about one stop in two logged pymodbus's "received pdu without a
    corresponding request", and one in four left a device task running 10 s past its
    cancellation (pymodbus's asyncio.wait_for, on Python 3.11, swallowed it)."""
    caplog.set_level(logging.INFO)
    async with PumpStationSimulator(port=0, seed=3, tick=0.05) as sim:
        config = STOPPING + "".join(DEVICE.format(n=n, port=sim.port) for n in range(20))
        async with InProcessGateway(config, tmp_path, None) as gw:
            await gw.wait_for(lambda: all(r.polls > 20 for r in gw.gw.runners.values()), what="polling")
    assert pymodbus_records(caplog) == []
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []  # e.g. "task device:ps7 did not stop within 10 s of its cancellation"
    assert "gateway stop-gw stopped" in caplog.messages
