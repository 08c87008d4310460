"""``discover_opcua`` prints a binding that the driver and the config accept as they are."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import free_port
from opcua_peers import NodeOpcua, ensure_node_opcua

from citytwin.drivers.base import Quality
from citytwin.drivers.errors import ConnectError
from citytwin.drivers.opcua.binding import OpcUaCall, OpcUaConnection, OpcUaPoint
from citytwin.drivers.opcua.discover import discover_opcua
from citytwin.drivers.opcua.driver import OpcUaDriver
from citytwin.simulators.intersection.server import IntersectionSimulator


async def check_round_trip(url: str, tmp: Path) -> dict[str, object]:
    doc = yaml.safe_load(await discover_opcua(url.replace("opc.tcp://", "opcua://")))
    assert doc["driver"] == "opcua" and doc["connection"]["url"].startswith("opc.tcp://")
    points = {name: OpcUaPoint(**p) for name, p in doc["points"].items()}
    d = OpcUaDriver(OpcUaConnection(url=url, pki_dir=tmp / "pki", subscribe=False), points)
    async with d:
        readings = await d.read()
    assert len(readings) == len(points)
    assert all(r.quality is Quality.GOOD for r in readings), [r for r in readings if r.quality is not Quality.GOOD]
    for service in doc.get("services", {}).values():
        OpcUaCall(**service["call"])
    return doc  # type: ignore[no-any-return]


async def test_discover_the_intersection_simulator(tmp_path: Path) -> None:
    async with IntersectionSimulator(port=free_port()) as sim:
        doc = await check_round_trip(sim.url, tmp_path)
    points = doc["points"]
    assert points["controller_green_extension"] == {  # type: ignore[index]
        "node": "nsu=urn:citytwin:sim:intersection;s=Controller.GreenExtension", "type": "Int32", "writable": True}
    assert points["detector_north_count"]["type"] == "UInt32"  # type: ignore[index]
    assert doc["services"]["set_plan"]["call"]["inputs"] == [{"name": "plan", "type": "Int32"}]  # type: ignore[index]


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeOpcua]:
    ensure_node_opcua()
    server = NodeOpcua(free_port(), tmp_path_factory.mktemp("node-pki"))
    server.start()
    yield server
    server.stop()


async def test_discover_node_opcua(peer: NodeOpcua, tmp_path: Path) -> None:
    doc = await check_round_trip(peer.url, tmp_path)
    assert doc["points"]["setpoint"]["writable"] is True  # type: ignore[index]
    assert doc["services"]["add"]["call"]["outputs"] == ["sum"]  # type: ignore[index]


async def test_discover_refuses_nothing_listening() -> None:
    with pytest.raises(ConnectError, match="cannot browse"):
        await discover_opcua(f"opcua://127.0.0.1:{free_port()}", timeout=1.0)
    with pytest.raises(ValueError, match="expected opcua://"):
        await discover_opcua("http://x")
