"""The hub link at start-up and at connect (issue 13: start-up streams, commands stay fast):
the devices start once the hub's first connect attempt is over (at most HUB_FIRST), and the
retained state of 1,000 devices (2,000 documents) does not hold back the first report or a
command's answer: both go out beside the state. Over a real mosquitto."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import Hub, Mosquitto, eventually
from harness import Call, InProcessGateway

from citytwin.gateway.app import HUB_FIRST
from citytwin.gateway.config import HubSection
from citytwin.gateway.hublink import HubLink
from citytwin.gateway.outbox import Limits, Outbox

STATES = 600


async def test_a_reply_and_the_first_report_do_not_wait_behind_the_state_at_connect(
    tmp_path: Path, mosquitto: Mosquitto, hub: Hub
) -> None:
    outbox = Outbox(tmp_path / "o.db", Limits())
    await outbox.open()
    link = HubLink(HubSection(url=mosquitto.url), "gw", lambda received: None, outbox)
    for n in range(STATES):  # queued while the hub was away, as at start-up
        link.send_state(link.topics.device_status(f"d{n}"), {"state": "offline", "ts": n})
    link.send(f"{link.topics.base}/d0/replies", {"id": "c1", "status": "succeeded"})
    outbox.append("d0", link.topics.report("d0"), {"n": 1}, points=1)
    running = asyncio.create_task(link.run())
    try:
        # every device's status, the gateway's, the reply and the report
        await eventually(lambda: len(hub.messages) >= STATES + 3, timeout=30)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await outbox.close()
    order = [topic for topic, _, _ in hub.messages]
    states = [t for t in order if t.endswith("/status") and "/d" in t]
    assert len(states) == STATES and len(set(states)) == STATES  # every document, once
    reply = order.index(f"{link.topics.base}/d0/replies")
    report = order.index(link.topics.report("d0"))
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


def counting_device() -> tuple[Callable[[Call], Any], list[float]]:
    """A device whose every read gives a new value (so each is reported), and the loop times
    of its reads."""
    reads: list[float] = []

    def device(call: Call) -> Any:
        if call.op != "read":
            return None
        reads.append(asyncio.get_running_loop().time())
        return {"level": 100 + len(reads)}

    return device, reads


async def test_with_the_hub_up_the_first_reading_goes_out_live_not_as_backlog(
    tmp_path: Path, mosquitto: Mosquitto, hub: Hub
) -> None:
    """The devices start once the hub's first connect attempt is over: their first readings go
    out on the live lane, not stored first and replayed (under a quarter core, the devices held
    the connect back for 3 s)."""
    hub.base = "citytwin/v1/first-gw"
    device, _ = counting_device()
    async with InProcessGateway(CONFIG.replace("HUB", mosquitto.url), tmp_path, device) as gw:
        await gw.wait_for(lambda: len(hub.on("a/properties/report")) >= 2, what="two reports at the hub")
        assert gw.gw.outbox.stats.replayed == 0


async def test_a_silent_hub_holds_the_devices_back_for_at_most_a_second(tmp_path: Path) -> None:
    """A hub that takes the TCP connection and never answers MQTT CONNECT: polling starts anyway,
    after HUB_FIRST, and the readings wait in the outbox."""
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    device, reads = counting_device()
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        async with InProcessGateway(CONFIG.replace("HUB", f"mqtt://127.0.0.1:{port}"), tmp_path, device) as gw:
            entered = loop.time() - started
            await gw.wait_for(lambda: reads, what="the first poll")
            assert accepted and not gw.gw.hub.connected
            assert 0.9 <= entered < HUB_FIRST + 1.0, entered
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
