"""The hub link at start-up and at connect (issue 13: start-up streams, commands stay fast):
the devices start once the hub's first connect attempt is over (at most HUB_FIRST), and the
retained state of 1,000 devices (2,000 documents) does not hold back the first report or a
command's answer: both go out beside the state. Over a real mosquitto."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiomqtt
from conftest import Mosquitto
from harness import Call, InProcessGateway

from citytwin.gateway.app import HUB_FIRST
from citytwin.gateway.config import HubSection
from citytwin.gateway.hublink import HubLink
from citytwin.gateway.outbox import Limits, Outbox

STATES = 600


async def test_a_reply_and_the_first_report_do_not_wait_behind_the_state_at_connect(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    outbox = Outbox(tmp_path / "o.db", Limits())
    await outbox.open()
    hub = HubLink(HubSection(url=mosquitto.url), "gw", lambda received: None, outbox)
    for n in range(STATES):  # queued while the hub was away, as at start-up
        hub.send_state(hub.topics.device_status(f"d{n}"), {"state": "offline", "ts": n})
    hub.send(f"{hub.topics.base}/d0/replies", {"id": "c1", "status": "succeeded"})
    outbox.append("d0", hub.topics.report("d0"), {"n": 1}, points=1)
    order: list[str] = []
    ready = asyncio.Event()

    async def listen() -> None:
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
            await client.subscribe(f"{hub.topics.base}/#", qos=1)
            ready.set()
            async for message in client.messages:
                order.append(str(message.topic))

    listener = asyncio.create_task(listen())
    await asyncio.wait_for(ready.wait(), 10)
    link = asyncio.create_task(hub.run())
    try:
        async with asyncio.timeout(30):
            while sum(t.endswith("/status") for t in order) < STATES + 1 or len(order) < STATES + 3:
                await asyncio.sleep(0.01)
    finally:
        link.cancel()
        listener.cancel()
        await asyncio.gather(link, listener, return_exceptions=True)
        await outbox.close()
    states = [t for t in order if t.endswith("/status") and "/d" in t]
    assert len(states) == STATES and len(set(states)) == STATES  # every document, once
    reply = order.index(f"{hub.topics.base}/d0/replies")
    report = order.index(hub.topics.report("d0"))
    # the reply goes in the first window; the report beside the state, not after all of it
    # (before: both came after all 600 state documents)
    assert reply < 20, order[:reply + 1]
    assert report < STATES // 2, f"the first report came after {report} messages"


CONFIG = """
gateway: {id: first-gw, data_dir: DATA_DIR}
hub: {url: "HUB", reconnect_min: 0.1, reconnect_max: 0.5}
http: {enabled: false}
devices:
  - id: a
    model: pump_station
    driver: modbus-tcp
    connection: {host: 127.0.0.1, port: 1}
    poll_period: 0.5
    points:
      level: {table: input_register, address: 0, scale: 0.01}
"""


READS: list[float] = []


def _reading(call: Call) -> Any:
    if call.op != "read":
        return None
    READS.append(asyncio.get_running_loop().time())
    return {"level": 100 + len(READS)}  # a new value each poll: each is reported


async def test_with_the_hub_up_the_first_reading_goes_out_live_not_as_backlog(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """The devices start once the hub's first connect attempt is over: their first readings go
    out on the live lane, not stored first and replayed (under a quarter core, the devices held
    the connect back for 3 s)."""
    reports: list[bytes] = []
    ready = asyncio.Event()

    async def listen() -> None:
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
            await client.subscribe("citytwin/v1/first-gw/a/properties/report", qos=1)
            ready.set()
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                reports.append(message.payload)

    listener = asyncio.create_task(listen())
    try:
        await asyncio.wait_for(ready.wait(), 10)
        async with InProcessGateway(CONFIG.replace("HUB", mosquitto.url), tmp_path, _reading) as gw:
            await gw.wait_for(lambda: len(reports) >= 2, what="two reports at the hub")
            assert gw.gw.outbox.stats.replayed == 0
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)


async def test_a_silent_hub_holds_the_devices_back_for_at_most_a_second(tmp_path: Path) -> None:
    """A hub that takes the TCP connection and never answers MQTT CONNECT: polling starts anyway,
    after HUB_FIRST, and the readings wait in the outbox."""
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        async with InProcessGateway(CONFIG.replace("HUB", f"mqtt://127.0.0.1:{port}"), tmp_path, _reading) as gw:
            entered = loop.time() - started
            READS.clear()
            await gw.wait_for(lambda: READS, what="the first poll")
            assert accepted and not gw.gw.hub.connected
            assert 0.9 <= entered < HUB_FIRST + 1.0, entered
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
