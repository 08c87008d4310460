"""The OPC UA driver against node-opcua, a server that shares no code with asyncua or us.

node-opcua checks the built-in type of written values and method arguments, so these
tests also prove the driver sends exactly the Variant type its binding names.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Sink, eventually, free_port
from opcua_peers import NODE_NS, NodeOpcua, ensure_node_opcua

from citytwin.drivers.base import Quality
from citytwin.drivers.errors import ConnectError, DeviceError
from citytwin.drivers.opcua.binding import OpcUaCall, OpcUaConnection, OpcUaPoint
from citytwin.drivers.opcua.driver import OpcUaDriver

U = f"nsu={NODE_NS};s="
POINTS: dict[str, dict[str, Any]] = {
    "counter": {"node": U + "Counter", "sampling_interval": 50},
    "temperature": {"node": U + "Temperature", "mode": "poll"},
    "total": {"node": f"nsu={NODE_NS};i=1001", "mode": "poll"},
    "setpoint": {"node": "ns=2;s=Setpoint", "type": "Int32", "writable": True, "mode": "poll"},
    "enabled": {"node": U + "Enabled", "type": "Boolean", "writable": True},
}
ADD = OpcUaCall(object=U + "Peer", method=U + "Add",
                inputs=[{"name": "a", "type": "Int32"}, {"name": "b", "type": "Int32"}], outputs=["sum"])


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeOpcua]:
    ensure_node_opcua()
    server = NodeOpcua(free_port(), tmp_path_factory.mktemp("node-pki"))
    server.start()
    yield server
    server.stop()


def make(peer: NodeOpcua, tmp: Path, **conn: Any) -> tuple[OpcUaDriver, Sink]:
    connection = OpcUaConnection(url=peer.url, pki_dir=tmp / "pki", publishing_interval=100, **conn)
    d = OpcUaDriver(connection, {n: OpcUaPoint(**p) for n, p in POINTS.items()})
    sink = Sink()
    d.set_push_sink(sink)
    return d, sink


async def test_subscription_and_batched_read(peer: NodeOpcua, tmp_path: Path) -> None:
    d, sink = make(peer, tmp_path)
    async with d:
        await eventually(lambda: len(sink.of("counter")) >= 3)
        values = [r.value for r in sink.of("counter")]
        assert values == sorted(values) and all(r.quality is Quality.GOOD for r in sink.readings)
        readings = {r.point: r for r in await d.read()}
        assert set(readings) == {"temperature", "total", "setpoint"}
        assert readings["temperature"].value == 21.5
        assert readings["temperature"].quality is Quality.GOOD


async def test_typed_write_and_method_call(peer: NodeOpcua, tmp_path: Path) -> None:
    d, _ = make(peer, tmp_path)
    async with d:
        await d.write({"setpoint": 42, "enabled": False})
        readings = {r.point: r.value for r in await d.read(["setpoint", "enabled"])}
        assert readings == {"setpoint": 42, "enabled": False}
        # node-opcua refuses an Add whose arguments are not Int32: ours are
        assert await d.invoke(ADD, {"a": 2, "b": 40}) == {"sum": 42}
        assert {r.point: r.value for r in await d.read(["total"])} == {"total": 42}
        as_int64 = ADD.model_copy(update={"inputs": [i.model_copy(update={"type": "Int64"}) for i in ADD.inputs]})
        with pytest.raises(DeviceError, match="BadInvalidArgument"):
            await d.invoke(as_int64, {"a": 1, "b": 1})
        with pytest.raises(DeviceError, match=r"BadNotWritable|BadUserAccessDenied"):
            bad = OpcUaDriver(d._conn, {"temperature": OpcUaPoint(node=U + "Temperature", type="Double", writable=True)})
            async with bad:
                await bad.write({"temperature": 1.0})


async def test_unknown_node_is_bad_and_others_good(peer: NodeOpcua, tmp_path: Path) -> None:
    connection = OpcUaConnection(url=peer.url, pki_dir=tmp_path / "pki", publishing_interval=100)
    d = OpcUaDriver(connection, {
        "counter": OpcUaPoint(node=U + "Counter"),
        "ghost": OpcUaPoint(node=U + "Ghost"),
        "temperature": OpcUaPoint(node=U + "Temperature", mode="poll"),
    })
    sink = Sink()
    d.set_push_sink(sink)
    async with d:
        readings = {r.point: r for r in await d.read()}
        assert readings["ghost"].quality is Quality.BAD and "BadNodeIdUnknown" in str(readings["ghost"].error)
        assert readings["temperature"].quality is Quality.GOOD
        await eventually(lambda: sink.of("counter"))


async def test_secured_endpoint_needs_trust_then_works_with_a_user(peer: NodeOpcua, tmp_path: Path) -> None:
    d, sink = make(peer, tmp_path, security_mode="SignAndEncrypt", username="operator", password="secret")
    with pytest.raises(ConnectError, match="is not trusted"):
        await d.connect()
    (rejected,) = (tmp_path / "pki" / "rejected").glob("*.der")
    shutil.move(rejected, tmp_path / "pki" / "trusted" / rejected.name)
    async with d:
        await eventually(lambda: sink.of("counter"))
        assert await d.invoke(ADD, {"a": 1, "b": 2}) == {"sum": 3}
    wrong, _ = make(peer, tmp_path, security_mode="Sign", username="operator", password="nope")
    with pytest.raises(ConnectError, match="refused the user operator"):
        await wrong.connect()
