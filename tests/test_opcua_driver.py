"""The OPC UA driver against our intersection simulator (asyncua server), over loopback."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Sink, eventually, free_port
from opcua_peers import SilentPeer

from citytwin.drivers.base import Quality
from citytwin.drivers.errors import BindingError, ConnectError, ConnectionClosed, DeviceError
from citytwin.drivers.opcua.binding import OpcUaCall, OpcUaConnection, OpcUaPoint
from citytwin.drivers.opcua.driver import OpcUaDriver
from citytwin.simulators.intersection.controller import FAULT_LAMP, Mode
from citytwin.simulators.intersection.server import IntersectionSimulator

U = "nsu=urn:citytwin:sim:intersection;s="


@pytest.fixture
async def sim() -> AsyncIterator[IntersectionSimulator]:
    simulator = IntersectionSimulator(port=free_port(), tick=0.05, speed=20.0, seed=2)
    async with simulator:
        yield simulator


def driver(url: str, tmp: Path, points: dict[str, Any], **conn: Any) -> tuple[OpcUaDriver, Sink]:
    connection = OpcUaConnection(url=url, pki_dir=tmp / "pki", publishing_interval=50, **conn)
    d = OpcUaDriver(connection, {n: OpcUaPoint(**p) for n, p in points.items()})
    sink = Sink()
    d.set_push_sink(sink)
    return d, sink


POINTS = {
    "phase": {"node": U + "Controller.Phase"},
    "count_north": {"node": U + "Detector.North.Count"},
    "mode": {"node": U + "Controller.Mode"},
    "occupancy_north": {"node": U + "Detector.North.Occupancy", "mode": "poll"},
    "green_extension": {"node": U + "Controller.GreenExtension", "type": "Int32", "writable": True, "mode": "poll"},
}


async def test_subscribed_points_arrive_through_the_sink_with_source_timestamps(
    sim: IntersectionSimulator, tmp_path: Path
) -> None:
    d, sink = driver(sim.url, tmp_path, POINTS)
    async with d:
        await eventually(lambda: len(sink.of("count_north")) >= 3)
        first = sink.of("phase")[0]
        assert first.quality is Quality.GOOD and first.value == 1 and first.error is None
        counts = [r.value for r in sink.of("count_north")]
        assert counts == sorted(counts) and counts[-1] > 0  # north is green first: it counts
        assert all(r.ts > 1_600_000_000_000 for r in sink.readings)
        assert sink.calls < len(sink.readings)  # notifications arrive in batches
        assert d.health.extra["subscribed"] == 3 and d.health.extra["notifications"] >= 3


async def test_read_returns_the_polled_points_in_one_batch(sim: IntersectionSimulator, tmp_path: Path) -> None:
    d, _ = driver(sim.url, tmp_path, POINTS)
    async with d:
        before = d.health.requests
        readings = await d.read()
        assert {r.point for r in readings} == {"occupancy_north", "green_extension"}
        assert all(r.quality is Quality.GOOD for r in readings)
        assert d.health.requests == before + 1
        # asking for named points reads them now, subscribed or not
        named = await d.read(["phase", "mode"])
        assert [(r.point, r.value) for r in named] == [("phase", sim.controller.phase + 1), ("mode", 0)]
        with pytest.raises(BindingError):
            await d.read(["nope"])


async def test_without_subscriptions_every_point_is_polled(sim: IntersectionSimulator, tmp_path: Path) -> None:
    d, sink = driver(sim.url, tmp_path, POINTS, subscribe=False)
    async with d:
        readings = await d.read()
        assert {r.point for r in readings} == set(POINTS)
        assert (d.health.extra["subscribed"], d.health.extra["polled"]) == (0, len(POINTS))
        await d.read()  # a second round trip on the session: no publish response came with it
        assert sink.readings == [] and d.health.extra["notifications"] == 0


async def test_everything_subscribed_reads_nothing_but_still_notices_a_dead_server(
    sim: IntersectionSimulator, tmp_path: Path
) -> None:
    d, _ = driver(sim.url, tmp_path, {"phase": POINTS["phase"]}, probe_interval=0.2)
    async with d:
        before = d.health.requests
        assert await d.read() == []
        assert d.health.requests == before
        await sim.stop()
        error = await eventually(lambda: _read_error(d), timeout=5)
        assert isinstance(error, ConnectionClosed) and sim.url in str(error)


async def _read_error(d: OpcUaDriver) -> Exception | None:
    try:
        await d.read()
    except ConnectionClosed as exc:
        return exc
    return None


async def test_a_typed_write_reaches_the_controller(sim: IntersectionSimulator, tmp_path: Path) -> None:
    d, _ = driver(sim.url, tmp_path, POINTS)
    async with d:
        await d.write({"green_extension": 12})
        await eventually(lambda: sim.controller.green_extension == 12)
        # the server checks the type: an Int32 node takes only an Int32 (12.0 is sent as one)
        await d.write({"green_extension": 7.0})
        await eventually(lambda: sim.controller.green_extension == 7)
        with pytest.raises(BindingError, match="not an integer"):
            await d.write({"green_extension": 2.5})
        with pytest.raises(BindingError, match="read-only"):
            await d.write({"phase": 2})
        with pytest.raises(BindingError, match="does not fit Int32"):
            await d.write({"green_extension": 2**31})


async def test_method_call_round_trip_with_typed_inputs(sim: IntersectionSimulator, tmp_path: Path) -> None:
    d, _ = driver(sim.url, tmp_path, POINTS)
    set_plan = OpcUaCall(object=U + "Controller", method=U + "Controller.SetPlan",
                         inputs=[{"name": "plan", "type": "Int32"}], outputs=["active_plan"])
    set_mode = OpcUaCall.model_validate({"object": U + "Controller", "method": U + "Controller.SetMode",
                                         "inputs": [{"mode": "Int32"}], "outputs": ["mode"]})
    async with d:
        assert await d.invoke(set_plan, {"plan": 3}) == {"active_plan": 3}
        assert sim.calls[-1] == ("SetPlan", (3,))
        assert await d.invoke(set_mode, {"mode": 1}) == {"mode": 1}
        assert sim.controller.mode is Mode.FLASH
        with pytest.raises(DeviceError, match="BadOutOfRange"):
            await d.invoke(set_plan, {"plan": 9})
        # the same call sending an Int64 is refused by the simulator's type check
        wrong = set_plan.model_copy(update={"inputs": [set_plan.inputs[0].model_copy(update={"type": "Int64"})]})
        with pytest.raises(DeviceError, match=r"BadInvalidArgument.*input 'plan' \(Int64\): BadTypeMismatch"):
            await d.invoke(wrong, {"plan": 2})
        with pytest.raises(BindingError, match="needs input 'plan'"):
            await d.invoke(set_plan, {})
        assert d.health.connected  # a refused call leaves the session up


async def test_a_missing_node_is_bad_with_its_reason_and_the_others_stay_good(
    sim: IntersectionSimulator, tmp_path: Path
) -> None:
    points = {**POINTS, "ghost": {"node": U + "Controller.Ghost"},
              "elsewhere": {"node": "nsu=urn:not-on-this-server;s=X"}, "polled_ghost": {"node": "ns=2;i=999999", "mode": "poll"}}
    d, sink = driver(sim.url, tmp_path, points)
    async with d:
        readings = {r.point: r for r in await d.read()}
        for name in ("ghost", "polled_ghost"):
            assert readings[name].quality is Quality.BAD
            assert readings[name].error is not None and "BadNodeIdUnknown" in readings[name].error
        assert readings["elsewhere"].quality is Quality.BAD
        assert "namespace 'urn:not-on-this-server' is not on the server" in str(readings["elsewhere"].error)
        assert readings["occupancy_north"].quality is Quality.GOOD
        await eventually(lambda: sink.of("count_north"))
        assert all(r.quality is Quality.GOOD for r in sink.readings)


async def test_server_restart_mid_subscription_resubscribes_and_data_flows(
    sim: IntersectionSimulator, tmp_path: Path
) -> None:
    d, sink = driver(sim.url, tmp_path, POINTS, probe_interval=0.2)
    await d.connect()
    try:
        await eventually(lambda: sink.of("count_north"))
        await sim.stop()
        await eventually(lambda: _read_error(d), timeout=5)
        assert not d.health.connected
        await sim.start()  # same port, a fresh server: no session, no subscription
        # what the gateway's device runner does: close, then connect again (with backoff)
        await d.close()
        await d.connect()
        sink.readings.clear()
        await eventually(lambda: len(sink.of("count_north")) >= 2)
        assert d.health.extra["connects"] == 2
        assert await d.read()
    finally:
        await d.close()


async def test_a_silent_subscription_is_rebuilt_by_the_watchdog(sim: IntersectionSimulator, tmp_path: Path) -> None:
    d, sink = driver(sim.url, tmp_path, POINTS, keepalive_count=2, watchdog_intervals=4)
    async with d:
        await eventually(lambda: sink.of("count_north"))
        assert await sim.stall_subscriptions() == 1  # the session still answers; publishing stops
        await eventually(lambda: d.health.extra["subscription_rebuilds"] >= 1, timeout=5)
        sink.readings.clear()  # what comes now comes from the rebuilt subscription
        await eventually(lambda: len(sink.of("count_north")) >= 2)  # fresh initial values, then changes
        assert d.health.connected


async def test_a_peer_that_never_answers_fails_the_connect_in_time(tmp_path: Path) -> None:
    async with SilentPeer() as peer:
        d, _ = driver(f"opc.tcp://127.0.0.1:{peer.port}", tmp_path, POINTS, connect_timeout=0.5, timeout=0.3)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ConnectError) as info:
            await d.connect()
        assert loop.time() - started < 2.0
        assert f"127.0.0.1:{peer.port}" in str(info.value)
        assert peer.connections == 1
        assert not d.health.connected and d.health.last_error == str(info.value)
        with pytest.raises(ConnectionClosed):
            await d.read()


async def test_nothing_listening_is_a_connect_error(tmp_path: Path) -> None:
    d, _ = driver(f"opc.tcp://127.0.0.1:{free_port()}", tmp_path, POINTS)
    with pytest.raises(ConnectError, match="cannot connect"):
        await d.connect()


@pytest.fixture
async def secure_sim(tmp_path: Path) -> AsyncIterator[IntersectionSimulator]:
    simulator = IntersectionSimulator(port=free_port(), tick=0.05, speed=20.0, seed=2,
                                      pki_dir=tmp_path / "server-pki", users={"operator": "s3cret"})
    async with simulator:
        yield simulator


async def test_an_untrusted_server_certificate_is_refused_until_trusted(
    secure_sim: IntersectionSimulator, tmp_path: Path
) -> None:
    d, sink = driver(secure_sim.url, tmp_path, POINTS, security_mode="SignAndEncrypt")
    with pytest.raises(ConnectError) as info:
        await d.connect()
    message = str(info.value)
    assert "is not trusted" in message and "CN=" in message and "pki/trusted" in message
    rejected = list((tmp_path / "pki" / "rejected").glob("*.der"))
    assert len(rejected) == 1
    assert rejected[0].read_bytes() == secure_sim.certificate.read_bytes()  # type: ignore[union-attr]
    # the gateway made its own certificate on this first start, with a private key
    assert (tmp_path / "pki" / "own" / "cert.der").stat().st_size > 0
    assert (tmp_path / "pki" / "own" / "key.pem").stat().st_mode & 0o077 == 0
    # trusting it explicitly: move the rejected certificate into trusted/
    shutil.move(rejected[0], tmp_path / "pki" / "trusted" / rejected[0].name)
    async with d:
        assert d.health.extra["security"] == "SignAndEncrypt"
        await eventually(lambda: sink.of("count_north"))
        await d.write({"green_extension": 4})
        await eventually(lambda: secure_sim.controller.green_extension == 4)


@pytest.mark.parametrize("mode", ["Sign", "SignAndEncrypt"])
async def test_secured_endpoint_with_a_named_server_certificate_and_a_user(
    secure_sim: IntersectionSimulator, tmp_path: Path, mode: str
) -> None:
    d, sink = driver(secure_sim.url, tmp_path, POINTS, security_mode=mode,
                     server_certificate=secure_sim.certificate, username="operator", password="s3cret")
    async with d:
        await eventually(lambda: sink.of("phase"))
        assert {r.point for r in await d.read()} == {"occupancy_north", "green_extension"}
    wrong, _ = driver(secure_sim.url, tmp_path, POINTS, security_mode=mode,
                      server_certificate=secure_sim.certificate, username="operator", password="guess")
    with pytest.raises(ConnectError, match="refused"):
        await wrong.connect()


async def test_fault_events_and_mode_changes_are_visible(sim: IntersectionSimulator, tmp_path: Path) -> None:
    d, sink = driver(sim.url, tmp_path, {"fault": {"node": U + "Controller.Fault"},
                                         "fault_code": {"node": U + "Controller.FaultCode"}})
    async with d:
        await eventually(lambda: sink.of("fault"))
        sim.inject_fault(FAULT_LAMP)
        await eventually(lambda: any(r.value is True for r in sink.of("fault")))
        assert sink.of("fault_code")[-1].value == FAULT_LAMP
