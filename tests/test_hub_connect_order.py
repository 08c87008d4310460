"""What the hub link sends when it connects (issue 13: start-up streams, commands stay fast):
the retained state of 1,000 devices (2,000 documents) must not hold back the first report or a
command's answer. Both go out beside the state, over a real mosquitto."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiomqtt
from conftest import Mosquitto

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
