"""The CoAP driver against our city-sensors simulator and hand-made faulty peers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import cbor2
import pytest
from aiocoap import BAD_REQUEST
from coap_peers import Fixed, SilentPeer, faulty_server
from conftest import eventually, free_port

from citytwin.drivers.base import Quality, Reading
from citytwin.drivers.coap import context as shared
from citytwin.drivers.coap.binding import CoapCall, CoapConnection, CoapPoint
from citytwin.drivers.coap.driver import CoapDriver
from citytwin.drivers.errors import BindingError, DeviceError, RequestTimeout
from citytwin.drivers.registry import binding_models, create_driver
from citytwin.simulators.city_sensors.server import CitySensorsSimulator


def driver(port: int, points: dict[str, CoapPoint], **conn: Any) -> CoapDriver:
    return CoapDriver(CoapConnection(host="127.0.0.1", port=port, **conn), points)


def by_point(readings: list[Reading]) -> dict[str, Reading]:
    return {r.point: r for r in readings}


@pytest.fixture
async def frozen() -> AsyncIterator[CitySensorsSimulator]:
    """A simulator whose physics never ticks during a test: every served value is known."""
    sim = CitySensorsSimulator(port=free_port(udp=True), tick=3600, seed=5, interval=3600)
    async with sim:
        yield sim


AQ = {
    "pm25": CoapPoint(path="/aq/pm", pointer="/pm25"),
    "pm10": CoapPoint(path="/aq/pm", pointer="/pm10"),
    "no2": CoapPoint(path="/aq/gas", pointer="/no2", format="cbor"),
    "o3": CoapPoint(path="/aq/gas", pointer="/o3", format="cbor"),
    "co": CoapPoint(path="/aq/gas", pointer="/co", format="cbor"),
    "temperature": CoapPoint(path="/aq/climate", pointer="/temperature", format="json"),
    "humidity": CoapPoint(path="/aq/climate", pointer="/humidity"),
}


async def test_get_json_and_cbor_one_request_per_resource(frozen: CitySensorsSimulator) -> None:
    aq = frozen.station
    async with driver(frozen.port, AQ) as d:
        readings = await d.read()
        assert d.health.requests == 3  # /aq/pm, /aq/gas (CBOR), /aq/climate
    values = {r.point: r.value for r in readings}
    assert all(r.quality is Quality.GOOD for r in readings), readings
    assert values == {
        "pm25": aq.pm25, "pm10": aq.pm10, "no2": aq.no2, "o3": aq.o3, "co": aq.co,
        "temperature": aq.temperature, "humidity": aq.humidity,
    }


async def test_a_subset_reads_only_its_resources(frozen: CitySensorsSimulator) -> None:
    async with driver(frozen.port, AQ) as d:
        readings = await d.read(["no2", "pm25"])
        assert d.health.requests == 2
        assert {r.point for r in readings} == {"no2", "pm25"}
        with pytest.raises(BindingError):
            await d.read(["nope"])


async def test_observe_pushes_notifications_and_reads_serve_them(frozen: CitySensorsSimulator) -> None:
    pushed: list[Reading] = []
    points = {"level": CoapPoint(path="/mh/level", pointer="/level", observe=True),
              "overflow": CoapPoint(path="/mh/level", pointer="/overflow", observe=True)}
    async with driver(frozen.port, points, observe_max_silence=30) as d:
        d.set_push_sink(pushed.extend)
        await eventually(lambda: d.health.extra["observing"] == 1)
        frozen.manhole.level = 1.234
        frozen.notify_all()
        await eventually(lambda: any(r.value == 1.234 for r in pushed))
        requests = d.health.requests
        readings = by_point(await d.read())  # served from the notification, no request
        assert readings["level"].value == 1.234 and readings["overflow"].value is False
        assert d.health.requests == requests
        frozen.manhole.level = 2.5  # above the weir: the alarm is in the same notification
        frozen.notify_all()
        await eventually(lambda: any(r.point == "overflow" and r.value is True for r in pushed))


async def test_observation_is_registered_again_after_the_server_restarts() -> None:
    port = free_port(udp=True)
    pushed: list[Reading] = []
    point = {"level": CoapPoint(path="/mh/level", pointer="/level", observe=True)}
    first = CitySensorsSimulator(port=port, tick=3600, interval=3600)
    await first.start()
    try:
        d = driver(port, point, observe_max_silence=0.5, timeout=0.5)
        d.set_push_sink(pushed.extend)
        async with d:
            await eventually(lambda: d.health.extra["observing"] == 1)
            await first.stop()
            second = CitySensorsSimulator(port=port, tick=3600, interval=3600)
            second.manhole.level = 0.777
            async with second:
                # the new server knows no observer until the driver registers again
                await eventually(lambda: any(r.value == 0.777 for r in pushed), timeout=10)
                await eventually(lambda: second.level.observers == 1)
                second.manhole.level = 0.888
                second.notify_all()
                await eventually(lambda: any(r.value == 0.888 for r in pushed))
            assert d.health.extra["registrations"] >= 2
    finally:
        await first.stop()


async def test_put_and_post_round_trips(frozen: CitySensorsSimulator) -> None:
    points = {
        "interval": CoapPoint(path="/mh/config", pointer="/interval", writable=True),
        "overflow_level": CoapPoint(path="/mh/config", pointer="/overflow_level", writable=True,
                                    format="cbor"),
    }
    async with driver(frozen.port, points) as d:
        await d.write({"interval": 2.5, "overflow_level": 1.5})
        assert d.health.requests == 1  # both values in one PUT of /mh/config
        assert frozen.manhole.interval == 2.5 and frozen.manhole.overflow_level == 1.5
        values = {r.point: r.value for r in await d.read()}
        assert values == {"interval": 2.5, "overflow_level": 1.5}

        frozen.station.pm_offset = 1.25
        output = await d.invoke(CoapCall(path="/aq/calibrate", payload={"kind": "zero"}), {})
        assert output == {"pm_offset_removed": 1.25, "calibrations": 1}
        assert frozen.station.calibrations == 1
        call = CoapCall(method="PUT", path="/aq/config", format="cbor", payload={"interval": "$s"},
                        output={"now": "/interval"})
        assert await d.invoke(call, {"s": 7}) == {"now": 7.0}
        assert frozen.station.interval == 7.0
        selftest = CoapCall(path="/mh/selftest", accept="cbor")
        assert (await d.invoke(selftest, {}))["radar"] == "ok"


async def test_device_errors_on_writes_and_calls(frozen: CitySensorsSimulator) -> None:
    points = {"interval": CoapPoint(path="/aq/config", pointer="/interval", writable=True),
              "pm25": CoapPoint(path="/aq/pm", pointer="/pm25")}
    async with driver(frozen.port, points) as d:
        with pytest.raises(DeviceError, match=r"4\.00 Bad Request .*interval must be") as info:
            await d.write({"interval": -1})
        assert info.value.code == BAD_REQUEST
        with pytest.raises(BindingError, match="not writable"):
            await d.write({"pm25": 1})
        with pytest.raises(DeviceError, match=r"4\.04 Not Found"):
            await d.invoke(CoapCall(path="/aq/nothing"), {})
        with pytest.raises(DeviceError, match=r"4\.05"):
            await d.invoke(CoapCall(path="/aq/pm"), {})  # POST to a read-only resource


async def test_a_missing_resource_is_bad_with_the_reason_and_the_rest_stays_good(
    frozen: CitySensorsSimulator,
) -> None:
    points = {**AQ, "lead": CoapPoint(path="/aq/lead", pointer="/pb")}
    async with driver(frozen.port, points) as d:
        readings = by_point(await d.read())
    assert readings["lead"].quality is Quality.BAD
    assert readings["lead"].error == "4.04 Not Found reading /aq/lead"
    assert all(r.quality is Quality.GOOD for name, r in readings.items() if name != "lead")


async def test_a_peer_that_never_answers_times_out() -> None:
    port = free_port(udp=True)
    peer, transport = await SilentPeer.start(port)
    try:
        points = {"level": CoapPoint(path="/mh/level", pointer="/level", observe=True)}
        async with driver(port, points, timeout=0.5) as d:
            with pytest.raises(RequestTimeout, match=r"no answer from coap://127\.0\.0\.1:\d+ within 0\.5 s reading /mh/level"):
                await d.read()
            assert d.health.extra["timeouts"] >= 1
        # retransmissions were sent within the timeout (CON), then given up
        assert peer.received >= 2
    finally:
        transport.close()


async def test_malformed_payloads_are_bad_readings_not_crashes() -> None:
    port = free_port(udp=True)
    shutdown = await faulty_server(port, {
        "/json": Fixed(b'{"a": 1,', 50),
        "/cbor": Fixed(b"\xa2\x61a", 60),
        "/xml": Fixed(b"<a>1</a>", 41),
        "/nested": Fixed(b'{"a": {"b": [1, 2]}}', 50),
        "/text": Fixed(b"21.5", 0),
        "/binary": Fixed(b"\xff\xfe", None),
        "/cbor-ok": Fixed(cbor2.dumps({"a": [10, 20]}), 60),
    })
    try:
        points = {
            "json": CoapPoint(path="/json", pointer="/a"),
            "cbor": CoapPoint(path="/cbor", pointer="/a"),
            "xml": CoapPoint(path="/xml"),
            "object": CoapPoint(path="/nested", pointer="/a"),
            "absent": CoapPoint(path="/nested", pointer="/a/c"),
            "element": CoapPoint(path="/nested", pointer="/a/b/1"),
            "text": CoapPoint(path="/text"),
            "binary": CoapPoint(path="/binary"),
            "cbor_ok": CoapPoint(path="/cbor-ok", pointer="/a/0"),
        }
        async with driver(port, points) as d:
            readings = by_point(await d.read())
    finally:
        await shutdown()
    bad = {name: r.error for name, r in readings.items() if r.quality is Quality.BAD}
    assert set(bad) == {"json", "cbor", "xml", "object", "absent", "binary"}, readings
    assert "malformed application/json payload" in (bad["json"] or "")
    assert "malformed application/cbor payload" in (bad["cbor"] or "")
    assert "unsupported Content-Format 41" in (bad["xml"] or "")
    assert bad["object"] == "/a of /nested is an object, not a value"
    assert bad["absent"] == "no /a/c in the payload of /nested (missing 'c')"
    assert "not UTF-8" in (bad["binary"] or "")
    assert readings["element"].value == 2 and readings["text"].value == 21.5
    assert readings["cbor_ok"].value == 10


async def test_error_response_from_a_faulty_server_is_bad_quality() -> None:
    port = free_port(udp=True)
    shutdown = await faulty_server(port, {"/broken": Fixed(b"sensor fault", 0, code=160)})  # 5.00
    try:
        async with driver(port, {"x": CoapPoint(path="/broken")}) as d:
            (reading,) = await d.read()
    finally:
        await shutdown()
    assert reading.quality is Quality.BAD
    assert reading.error == "5.00 Internal Server Error (sensor fault) reading /broken"


async def test_one_client_context_is_shared_by_every_device(frozen: CitySensorsSimulator) -> None:
    a = driver(frozen.port, {"pm25": AQ["pm25"]})
    b = driver(frozen.port, {"level": CoapPoint(path="/mh/level", pointer="/level")})
    async with a, b:
        assert shared.users() == 2
        assert a._context is b._context
        await a.read()
        await b.read()
        # the peer's resolved address is kept and reused for every later request
        assert a._remote is not None and a._remote == b._remote
    assert shared.users() == 0


def test_bindings_are_checked_when_the_driver_is_built() -> None:
    models = binding_models("coap")
    conn = models.connection.model_validate({"host": "127.0.0.1"})
    with pytest.raises(BindingError, match="same format"):
        create_driver("coap", conn, {
            "a": models.point.model_validate({"path": "/x", "format": "json"}),
            "b": models.point.model_validate({"path": "/x", "format": "cbor"}),
        })
    with pytest.raises(ValueError, match="must start with '/'"):
        models.point.model_validate({"path": "x"})
    with pytest.raises(ValueError, match="JSON pointer"):
        models.point.model_validate({"path": "/x", "pointer": "a"})
    assert models.writable(models.point.model_validate({"path": "/x", "writable": True}))

