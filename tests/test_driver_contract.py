"""One contract, four drivers: what the gateway's runner may rely on from every driver.

Each case puts a driver in front of a real peer over loopback: modbus-tcp against the
libmodbus slave, opcua against our intersection simulator, coap against our city-sensors
simulator, mqtt against our meters simulator through mosquitto. The tests below are the
same for all four; a case only says which points, values and faults its protocol has.
Deviations of a driver from drivers/base.py are marked xfail with the reason, not hidden.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from coap_peers import SilentPeer as SilentUdpPeer
from conftest import Mosquitto, Sink, eventually, free_port
from modbus_peers import HOLDING_FREE, SLAVE_POINTS, LibmodbusSlave, ScriptedPeer

from citytwin.drivers.base import Driver, Invokable, Quality, Reading
from citytwin.drivers.coap.binding import CoapCall, CoapConnection, CoapPoint
from citytwin.drivers.coap.driver import CoapDriver
from citytwin.drivers.errors import (
    BindingError,
    ConnectError,
    ConnectionClosed,
    DeviceError,
    RequestTimeout,
    TransportError,
)
from citytwin.drivers.modbus.binding import ModbusPoint, ModbusTcpConnection
from citytwin.drivers.modbus.tcp import ModbusTcpDriver
from citytwin.drivers.mqtt_device.binding import MqttCall, MqttConnection, MqttPoint
from citytwin.drivers.mqtt_device.driver import MqttDeviceDriver
from citytwin.drivers.opcua.binding import OpcUaCall, OpcUaConnection, OpcUaPoint
from citytwin.drivers.opcua.driver import OpcUaDriver
from citytwin.simulators.city_sensors.server import CitySensorsSimulator
from citytwin.simulators.intersection.server import IntersectionSimulator
from citytwin.simulators.meters.server import MetersSimulator

# one loop for the module, so the OPC UA server (seconds to start) is shared by its cases
pytestmark = [pytest.mark.timeout(60), pytest.mark.asyncio(loop_scope="module")]
DRIVERS = ["modbus-tcp", "opcua", "coap", "mqtt"]


@dataclass
class Case:
    make: Callable[..., Driver]  # make(bad=False, **connection) -> a driver, not connected
    points: list[str]
    subset: list[str]  # points every read requests from the device (none served from a cache)
    write: tuple[str, Any]
    provoke: Callable[[Driver], Awaitable[list[Reading]]]  # on make(bad=True): a device error
    gone: Callable[[], Awaitable[None]]  # the peer goes away
    silent: Callable[[contextlib.AsyncExitStack], Awaitable[tuple[Driver, Callable[[Driver], Awaitable[Any]]]]]
    push: tuple[Callable[[Driver], Awaitable[None]], str, Callable[[Reading], bool]] | None = None
    invoke: tuple[Any, dict[str, Any], dict[str, Any]] | None = None  # call, inputs, output
    ready: Callable[[Driver], Awaitable[None]] | None = None  # until a listening driver has values

    def driver(self, bad: bool = False, **connection: Any) -> tuple[Driver, Sink]:
        d, sink = self.make(bad=bad, **connection), Sink()
        d.set_push_sink(sink)
        return d, sink

    async def settle(self, d: Driver) -> None:
        if self.ready is not None:
            await self.ready(d)


async def connected(d: Driver) -> Driver:
    await d.connect()
    return d


# -- modbus-tcp: the libmodbus slave --------------------------------------------------------


async def modbus_case(stack: contextlib.AsyncExitStack, slave_binary: Path) -> Case:
    slave = LibmodbusSlave(slave_binary)
    slave.start()
    stack.callback(slave.stop)
    spare = HOLDING_FREE.start
    specs = {name: spec for name, (spec, _) in SLAVE_POINTS.items()}
    specs["spare"] = {"table": "holding_register", "address": spare}

    def make(bad: bool = False, port: int = slave.port, points: dict[str, Any] = specs, **conn: Any) -> Driver:
        points = {**points, "beyond": {"table": "input_register", "address": 150}} if bad else points
        return ModbusTcpDriver(ModbusTcpConnection(host="127.0.0.1", port=port, **conn),
                               {n: ModbusPoint.model_validate(p) for n, p in points.items()})

    async def silent(stack: contextlib.AsyncExitStack) -> tuple[Driver, Callable[[Driver], Awaitable[Any]]]:
        peer = await stack.enter_async_context(ScriptedPeer(["silent"]))
        d = await connected(make(port=peer.port, points={"hr0": {"table": "holding_register", "address": 0}},
                                 timeout=0.3))
        stack.push_async_callback(d.close)
        return d, lambda d: d.read()

    async def gone() -> None:
        slave.stop()

    return Case(make, list(specs), ["spare", next(iter(SLAVE_POINTS))], ("spare", 1234),
                provoke=lambda d: d.read(), gone=gone, silent=silent)


# -- opcua: the intersection simulator, a proxy that can go quiet ---------------------------

U = "nsu=urn:citytwin:sim:intersection;s="
OPCUA_POINTS = {
    "phase": {"node": U + "Controller.Phase"},
    "count_north": {"node": U + "Detector.North.Count"},
    "occupancy_north": {"node": U + "Detector.North.Occupancy", "mode": "poll"},
    "green_extension": {"node": U + "Controller.GreenExtension", "type": "Int32", "writable": True, "mode": "poll"},
}


class QuietProxy:
    """Forwards TCP both ways until ``quiet()``; then swallows everything, answering nothing
    (a device whose link stays open while it stops answering)."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.port = 0
        self.silent = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> QuietProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        for task in self._tasks:
            task.cancel()

    def quiet(self) -> None:
        self.silent = True

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(src, dst))
            self._tasks.add(task)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        while data := await src.read(65536):
            if not self.silent:
                dst.write(data)
                await dst.drain()


async def opcua_case(stack: contextlib.AsyncExitStack, sim: IntersectionSimulator, tmp_path: Path) -> Case:
    stopped = False

    async def gone() -> None:
        nonlocal stopped
        stopped = True
        await sim.stop()

    async def back() -> None:  # the server is shared by the module's cases
        if stopped:
            await sim.start()

    stack.push_async_callback(back)

    def make(bad: bool = False, url: str = sim.url, **conn: Any) -> Driver:
        points = {**OPCUA_POINTS, "ghost": {"node": U + "Controller.Ghost", "mode": "poll"}} if bad else OPCUA_POINTS
        connection = OpcUaConnection(url=url, pki_dir=tmp_path / "pki", publishing_interval=50, **conn)
        return OpcUaDriver(connection, {n: OpcUaPoint(**p) for n, p in points.items()})

    async def silent(stack: contextlib.AsyncExitStack) -> tuple[Driver, Callable[[Driver], Awaitable[Any]]]:
        proxy = await stack.enter_async_context(QuietProxy(sim.port))
        d = await connected(make(url=f"opc.tcp://127.0.0.1:{proxy.port}", timeout=0.5, probe_interval=60))
        stack.push_async_callback(d.close)
        proxy.quiet()
        return d, lambda d: d.read(["occupancy_north"])

    set_plan = OpcUaCall(object=U + "Controller", method=U + "Controller.SetPlan",
                         inputs=[{"name": "plan", "type": "Int32"}], outputs=["active_plan"])

    async def nothing(d: Driver) -> None:
        return None  # the detector counts by itself

    return Case(make, list(OPCUA_POINTS), ["occupancy_north", "green_extension"], ("green_extension", 6),
                provoke=lambda d: d.read(), gone=gone, silent=silent,
                push=(nothing, "count_north", lambda r: isinstance(r.value, int)),
                invoke=(set_plan, {"plan": 3}, {"active_plan": 3}))


# -- coap: the city-sensors simulator, frozen ------------------------------------------------

COAP_POINTS = {
    "pm25": CoapPoint(path="/aq/pm", pointer="/pm25"),
    "no2": CoapPoint(path="/aq/gas", pointer="/no2", format="cbor"),
    "level": CoapPoint(path="/mh/level", pointer="/level", observe=True),
    "interval": CoapPoint(path="/mh/config", pointer="/interval", writable=True),
}


async def coap_case(stack: contextlib.AsyncExitStack) -> Case:
    sim = await stack.enter_async_context(
        CitySensorsSimulator(port=free_port(udp=True), tick=3600, seed=5, interval=3600))

    def make(bad: bool = False, port: int = sim.port, **conn: Any) -> Driver:
        points = {**COAP_POINTS, "lead": CoapPoint(path="/aq/lead", pointer="/pb")} if bad else COAP_POINTS
        return CoapDriver(CoapConnection(host="127.0.0.1", port=port, **{"timeout": 1.0, **conn}), points)

    async def silent(stack: contextlib.AsyncExitStack) -> tuple[Driver, Callable[[Driver], Awaitable[Any]]]:
        port = free_port(udp=True)
        _, transport = await SilentUdpPeer.start(port)
        stack.callback(transport.close)
        d = await connected(make(port=port, timeout=0.5))
        stack.push_async_callback(d.close)
        return d, lambda d: d.read(["pm25"])

    async def notify(d: Driver) -> None:
        await eventually(lambda: d.health.extra["observing"] == 1)
        sim.manhole.level = 1.234
        sim.notify_all()

    return Case(make, list(COAP_POINTS), ["pm25", "no2"], ("interval", 2.5),
                provoke=lambda d: d.read(), gone=sim.stop, silent=silent,
                push=(notify, "level", lambda r: r.value == 1.234),
                invoke=(CoapCall(path="/aq/calibrate", payload={"kind": "zero"}), {}, {"calibrations": 1}))


# -- mqtt: the meters simulator through mosquitto --------------------------------------------

METER = "meters/wm-0001"
MQTT_POINTS: dict[str, dict[str, Any]] = {
    "flow_rate": {"topic": f"{METER}/telemetry", "pointer": "/flow", "timestamp": "/ts"},
    "battery": {"topic": f"{METER}/status", "pointer": "/battery", "timestamp": "/time"},
    "report_interval": {"topic": f"{METER}/status", "pointer": "/interval", "timestamp": "/time",
                        "set": {"payload": {"cmd": "config", "report_interval": "$value"}}},
}
VALVE = MqttCall(payload={"cmd": "valve", "open": "$open"}, output={"valve_open": "/open"})


async def mqtt_case(stack: contextlib.AsyncExitStack, mosquitto: Mosquitto) -> Case:
    meters = await stack.enter_async_context(MetersSimulator(mosquitto.url, count=1, seed=7, reconnect_delay=0.1))
    await asyncio.wait_for(meters.connected.wait(), 10)

    def make(bad: bool = False, meter: str = METER, **conn: Any) -> Driver:
        connection = MqttConnection.model_validate(
            {"url": mosquitto.url, "command_topic": f"{meter}/cmd", "reply_topic": f"{meter}/reply", "timeout": 3, **conn})
        return MqttDeviceDriver(connection, {n: MqttPoint.model_validate(p) for n, p in MQTT_POINTS.items()})

    async def ready(d: Driver) -> None:  # a listening driver: values arrive, reads serve the latest
        async def have_all() -> bool:
            return {r.point for r in await d.read(list(MQTT_POINTS))} == set(MQTT_POINTS)

        await eventually(have_all)

    async def provoke(d: Driver) -> list[Reading]:
        await d.invoke(VALVE, {"open": "maybe"})  # the meter answers with an error
        return []

    async def silent(stack: contextlib.AsyncExitStack) -> tuple[Driver, Callable[[Driver], Awaitable[Any]]]:
        d = await connected(make(meter="meters/wm-0099", timeout=0.3))  # no such meter: nobody answers
        stack.push_async_callback(d.close)
        return d, lambda d: d.invoke(VALVE, {"open": False})

    async def nothing(d: Driver) -> None:
        return None  # the meter reports by itself

    async def gone() -> None:
        mosquitto.stop()

    return Case(make, list(MQTT_POINTS), list(MQTT_POINTS), ("report_interval", 7),
                provoke=provoke, gone=gone, silent=silent, ready=ready,
                push=(nothing, "flow_rate", lambda r: isinstance(r.value, float)),
                invoke=(VALVE, {"open": False}, {"valve_open": False}))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def intersection() -> AsyncIterator[IntersectionSimulator]:
    async with IntersectionSimulator(port=free_port(), tick=0.05, speed=20.0, seed=2) as sim:
        yield sim


@pytest_asyncio.fixture(params=DRIVERS, loop_scope="module")
async def case(request: pytest.FixtureRequest, tmp_path: Path, intersection: IntersectionSimulator) -> AsyncIterator[Case]:
    async with contextlib.AsyncExitStack() as stack:
        if request.param == "modbus-tcp":
            yield await modbus_case(stack, request.getfixturevalue("slave_binary"))
        elif request.param == "opcua":
            yield await opcua_case(stack, intersection, tmp_path)
        elif request.param == "coap":
            yield await coap_case(stack)
        else:
            yield await mqtt_case(stack, request.getfixturevalue("mosquitto"))


def fresh(readings: list[Reading]) -> bool:
    return all(isinstance(r.ts, int) and r.ts > 1_600_000_000_000 for r in readings)


# -- the contract ----------------------------------------------------------------------------


async def test_connect_and_close_are_idempotent_and_a_closed_driver_connects_again(case: Case) -> None:
    d, _ = case.driver()
    await d.close()  # never connected: nothing to do
    await d.connect()
    assert d.health.connected
    await d.close()
    await d.close()
    assert not d.health.connected
    await d.connect()  # what the runner does after a failure: close, then connect again
    try:
        await case.settle(d)
        assert {r.point for r in await d.read(case.subset)} == set(case.subset)
    finally:
        await d.close()


async def test_a_batched_read_returns_one_good_reading_per_point_with_a_source_timestamp(
    case: Case, request: pytest.FixtureRequest
) -> None:
    d, _ = case.driver()
    async with d:
        await case.settle(d)
        readings = await d.read()
        if request.node.callspec.params["case"] == "opcua":
            # drivers/base.py: subscribed points may be left out of a read (they arrive by push);
            # here phase and count_north are subscribed; occupancy and green_extension are polled
            assert {r.point for r in readings} == {"occupancy_north", "green_extension"}
        elif request.node.callspec.params["case"] == "mqtt":
            # every device MQTT point is pushed: the read only checks the broker link
            assert readings == [] and not d.read_vouches_for_push
        else:
            assert sorted(r.point for r in readings) == sorted(case.points)
        assert all(r.quality is Quality.GOOD and r.error is None for r in readings), readings
        assert fresh(readings)


async def test_a_read_of_a_subset_returns_those_points_only(case: Case) -> None:
    d, _ = case.driver()
    async with d:
        await case.settle(d)
        readings = await d.read(case.subset)
        assert sorted(r.point for r in readings) == sorted(case.subset)
        assert all(r.quality is Quality.GOOD for r in readings) and fresh(readings)
        with pytest.raises(BindingError):
            await d.read(["no-such-point"])


async def test_a_write_reads_back(case: Case) -> None:
    point, value = case.write
    d, _ = case.driver()
    async with d:
        await case.settle(d)
        await d.write({point: value})

        async def read_back() -> bool:
            (reading,) = await d.read([point])
            return reading.quality is Quality.GOOD and reading.value == value

        await eventually(read_back)  # at once, or once a listening device reported it


async def test_pushed_readings_reach_the_sink(case: Case) -> None:
    d, sink = case.driver()
    if case.push is None:
        assert d.polled, "a driver that pushes nothing must be polled"
        return
    cause, point, expected = case.push
    async with d:
        await cause(d)
        pushed = await eventually(lambda: [r for r in sink.of(point) if expected(r)])
        assert all(r.quality is Quality.GOOD for r in pushed) and fresh(pushed)


async def test_invoke_where_the_driver_is_invokable(case: Case) -> None:
    d, _ = case.driver()
    if case.invoke is None:
        assert not isinstance(d, Invokable)  # its services are bound to writes
        return
    assert isinstance(d, Invokable)
    call, inputs, output = case.invoke
    async with d:
        result = await d.invoke(call, inputs)
        assert result.items() >= output.items(), result


async def test_a_peer_that_stops_answering_is_a_request_timeout(case: Case) -> None:
    async with contextlib.AsyncExitStack() as stack:
        d, operation = await case.silent(stack)
        with pytest.raises(RequestTimeout):
            await asyncio.wait_for(operation(d), 20)


async def test_a_peer_that_is_gone_is_a_transport_error(case: Case) -> None:
    d, _ = case.driver()
    async with d:
        await case.settle(d)
        await case.gone()

        async def failed() -> TransportError | None:
            try:
                await d.read(case.subset)
            except TransportError as exc:
                return exc
            return None

        error = await eventually(failed, timeout=20, step=0.1)
        assert isinstance(error, ConnectError | RequestTimeout | ConnectionClosed), repr(error)


async def test_a_device_error_is_reported_with_its_reason_and_the_link_stays_up(case: Case) -> None:
    d, _ = case.driver(bad=True)
    async with d:
        await case.settle(d)
        try:
            readings = await case.provoke(d)
        except DeviceError as exc:
            assert str(exc)
        else:
            bad = [r for r in readings if r.quality is Quality.BAD]
            assert bad and all(r.error for r in bad), readings
            assert any(r.quality is Quality.GOOD for r in readings)  # the others stay good
        assert d.health.connected
        assert all(r.quality is Quality.GOOD for r in await d.read(case.subset))
