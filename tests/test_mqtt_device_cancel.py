"""A device command over MQTT cancelled in flight ends at once, and the next one gets its own reply.

The MQTT device driver's ``read`` sends nothing (every point is pushed; it only answers from
what arrived), so what can be cancelled in flight is a command: ``write`` or ``invoke``, which
the runner times and the gateway cancels when it stops. aiomqtt waits for a QoS 1 publish's
PUBACK (and a SUBACK, and CONNACK) in ``asyncio.wait_for`` with the client's timeout, which on
Python 3.11 loses a cancellation meeting the acknowledgement (CPython gh-86296): the command
then went on to wait for, and return, its reply. Held to mosquitto and the meters simulator,
the driver's side of the broker link through a proxy that holds what the broker sends it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cancel_support import HoldingProxy, cancel_reads_in_flight
from conftest import Mosquitto

from citytwin.drivers.mqtt_device.binding import MqttCall, MqttConnection
from citytwin.drivers.mqtt_device.driver import MqttDeviceDriver
from citytwin.simulators.meters.server import MetersSimulator

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def meters(mosquitto: Mosquitto) -> AsyncIterator[MetersSimulator]:
    async with MetersSimulator(mosquitto.url, count=1, seed=7, reconnect_delay=0.1) as sim:
        async with asyncio.timeout(10):
            await sim.connected.wait()
        yield sim


async def test_commands_cancelled_in_flight_end_at_once_and_the_next_gets_its_own_reply(
    mosquitto: Mosquitto, meters: MetersSimulator
) -> None:
    async with HoldingProxy(mosquitto.port) as proxy:
        connection = MqttConnection.model_validate({
            "url": f"mqtt://127.0.0.1:{proxy.port}", "command_topic": "meters/wm-0001/cmd",
            "reply_topic": "meters/wm-0001/reply", "timeout": 3,
        })
        driver = MqttDeviceDriver(connection, {})
        call = MqttCall(payload={"cmd": "valve", "open": "$open"}, output={"valve": "/valve"})
        state = {"open": True}

        async def command() -> dict[str, Any]:
            state["open"] = not state["open"]
            return await driver.invoke(call, {"open": state["open"]})

        def own_reply(outputs: dict[str, Any]) -> None:
            assert outputs == {"valve": "open" if state["open"] else "closed"}

        async with driver:
            outcome = await cancel_reads_in_flight(driver, proxy, own_reply, request=command)
            assert outcome["cancelled"] >= 10, outcome
