"""Interop with libcoap (Debian libcoap3-bin), which shares no code with aiocoap or this project.

The driver against libcoap's coap-server, and libcoap's coap-client against our simulator.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import cbor2
import orjson
import pytest
from coap_peers import LibcoapServer, coap_client, coap_client_async
from conftest import eventually, free_port

from citytwin.drivers.base import Quality, Reading
from citytwin.drivers.coap.binding import CoapCall, CoapConnection, CoapPoint
from citytwin.drivers.coap.driver import CoapDriver
from citytwin.simulators.city_sensors.server import CitySensorsSimulator


@pytest.fixture
def libcoap() -> Iterator[LibcoapServer]:
    server = LibcoapServer()
    server.start()
    yield server
    server.stop()


def driver(port: int, points: dict[str, CoapPoint], **conn: Any) -> CoapDriver:
    return CoapDriver(CoapConnection(host="127.0.0.1", port=port, **conn), points)



async def test_put_then_get_json_and_cbor_on_libcoap(libcoap: LibcoapServer) -> None:
    points = {
        "a": CoapPoint(path="/data/json", pointer="/a", writable=True),
        "b": CoapPoint(path="/data/json", pointer="/s/b", writable=True),
        "c": CoapPoint(path="/data/cbor", pointer="/c", writable=True, format="cbor"),
        "raw": CoapPoint(path="/data/text", writable=True, format="text"),
    }
    async with driver(libcoap.port, points) as d:
        await d.write({"a": 1.5, "b": True, "c": 42, "raw": 17})  # PUT creates them (-d)
        readings = {r.point: r for r in await d.read()}
    assert {k: r.value for k, r in readings.items()} == {"a": 1.5, "b": True, "c": 42, "raw": 17}
    assert all(r.quality is Quality.GOOD for r in readings.values())
    # libcoap stored what was sent, with its Content-Format: check with its own client
    out = coap_client("-B", "2", "-A", "60", libcoap.url("/data/cbor")).stdout
    assert cbor2.loads(out) == {"c": 42}
    assert orjson.loads(coap_client("-B", "2", libcoap.url("/data/json")).stdout) == {
        "a": 1.5, "s": {"b": True}
    }


async def test_missing_resource_on_libcoap_is_bad_and_others_good(libcoap: LibcoapServer) -> None:
    coap_client("-B", "2", "-m", "put", "-t", "50", "-e", '{"v": 3}', libcoap.url("/here"))
    points = {"v": CoapPoint(path="/here", pointer="/v"), "w": CoapPoint(path="/gone", pointer="/w")}
    async with driver(libcoap.port, points) as d:
        readings = {r.point: r for r in await d.read()}
    assert readings["v"].value == 3 and readings["v"].quality is Quality.GOOD
    assert readings["w"].quality is Quality.BAD
    assert readings["w"].error is not None and readings["w"].error.startswith("4.04 Not Found")


async def test_observe_libcoap_and_register_again_after_it_restarts() -> None:
    server = LibcoapServer()
    server.start()
    url = server.url("/obs")
    try:
        await coap_client_async("-B", "2", "-m", "put", "-t", "50", "-e", '{"n": 0}', url)
        pushed: list[Reading] = []
        d = driver(server.port, {"n": CoapPoint(path="/obs", pointer="/n", observe=True)},
                   observe_max_silence=0.6, timeout=0.5)
        d.set_push_sink(pushed.extend)
        async with d:
            await eventually(lambda: d.health.extra["observing"] == 1)
            await coap_client_async("-B", "2", "-m", "put", "-t", "50", "-e", '{"n": 1}', url)
            await eventually(lambda: any(r.value == 1 for r in pushed))

            server.stop()  # the restarted server forgets the observation and the resource
            server.start()
            await coap_client_async("-B", "2", "-m", "put", "-t", "50", "-e", '{"n": 2}', url)
            await eventually(lambda: any(r.value == 2 for r in pushed), timeout=10)
            registrations = d.health.extra["registrations"]
            assert registrations >= 2
            await eventually(lambda: d.health.extra["observing"] == 1)
            await coap_client_async("-B", "2", "-m", "put", "-t", "50", "-e", '{"n": 3}', url)
            await eventually(lambda: any(r.value == 3 for r in pushed))
    finally:
        server.stop()


async def test_libcoap_client_reads_and_observes_our_simulator() -> None:
    sim = CitySensorsSimulator(port=free_port(udp=True), tick=0.05, seed=2, interval=0.2)
    async with sim:
        url = f"coap://127.0.0.1:{sim.port}"
        as_json = orjson.loads(await coap_client_async("-B", "2", "-A", "50", f"{url}/aq/climate"))
        assert set(as_json) == {"temperature", "humidity"}
        as_cbor = cbor2.loads(await coap_client_async("-B", "2", "-A", "60", f"{url}/aq/gas"))
        assert set(as_cbor) == {"no2", "o3", "co"} and all(v > 0 for v in as_cbor.values())
        refused = await asyncio.to_thread(
            coap_client, "-B", "2", "-A", "41", f"{url}/aq/gas", check=False
        )
        assert b"4.06" in refused.stdout + refused.stderr
        links = (await coap_client_async("-B", "2", f"{url}/.well-known/core")).decode()
        assert "</mh/level>" in links and "obs" in links

        # Observe for 2 s: one JSON document per line, a notification per interval
        out = await coap_client_async("-B", "3", "-s", "2", "-w", f"{url}/mh/level")
        lines = [orjson.loads(line) for line in out.splitlines() if line.strip()]
        assert len(lines) >= 4, lines
        assert all(set(doc) == {"level", "fill", "overflow"} for doc in lines)


async def test_libcoap_client_writes_and_calls_our_simulator(tmp_path: Any) -> None:
    sim = CitySensorsSimulator(port=free_port(udp=True), tick=3600, seed=2)
    async with sim:
        url = f"coap://127.0.0.1:{sim.port}"
        await coap_client_async("-B", "2", "-m", "put", "-t", "50", "-e", '{"interval": 12}',
                                f"{url}/aq/config")
        assert sim.station.interval == 12.0
        payload = tmp_path / "patch.cbor"
        payload.write_bytes(cbor2.dumps({"overflow_level": 1.25}))
        await coap_client_async("-B", "2", "-m", "put", "-t", "60", "-f", str(payload),
                                f"{url}/mh/config")
        assert sim.manhole.overflow_level == 1.25
        bad = await asyncio.to_thread(
            coap_client, "-B", "2", "-m", "put", "-t", "50", "-e", '{"interval": "x"}',
            f"{url}/aq/config", check=False,
        )
        assert b"4.00" in bad.stdout + bad.stderr and sim.station.interval == 12.0
        out = await coap_client_async("-B", "2", "-m", "post", "-A", "60", f"{url}/aq/calibrate")
        assert cbor2.loads(out)["calibrations"] == 1

        # and the driver reads back what libcoap wrote: the two implementations agree
        points = {"interval": CoapPoint(path="/aq/config", pointer="/interval", format="cbor")}
        async with driver(sim.port, points) as d:
            (reading,) = await d.read()
            assert reading.value == 12.0
            assert (await d.invoke(CoapCall(path="/aq/calibrate"), {}))["calibrations"] == 2
