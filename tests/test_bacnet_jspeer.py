"""The BACnet driver against a foreign device: @bacnet-js/client (TypeScript, no bacpypes3).

The peer (tests/bacnet-peer/device.js) runs as a subprocess on its own loopback UDP port;
the driver's shared application takes another. Who-Is is sent to the peer's address, not
broadcast: broadcasts do not reach a peer on 127.0.0.1 at another port.
"""

from __future__ import annotations

import asyncio
import json
import queue
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from citytwin.drivers.bacnet.binding import BacnetCall, BacnetConnection, BacnetPoint
from citytwin.drivers.bacnet.discover import discover_bacnet
from citytwin.drivers.bacnet.driver import BacnetDriver
from citytwin.drivers.base import Quality, Reading
from citytwin.drivers.errors import ConnectError, DeviceError

PEER_DIR = Path(__file__).resolve().parent / "bacnet-peer"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class JsPeer:
    """tests/bacnet-peer/device.js as a subprocess: JSON commands in, JSON events out."""

    def __init__(self, port: int, device_id: int = 2002) -> None:
        node = shutil.which("node")
        if node is None or not (PEER_DIR / "node_modules" / "@bacnet-js" / "client").is_dir():
            pytest.fail("node or @bacnet-js/client missing: run scripts/test.sh (it installs them)")
        self.port = port
        self.proc = subprocess.Popen(
            [node, str(PEER_DIR / "device.js"), str(port), str(device_id)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.events: list[dict[str, Any]] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read_lines, daemon=True).start()
        self.wait_event("listening", timeout=15.0)

    def _read_lines(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def wait_event(self, kind: str, match: Any = lambda event: True, timeout: float = 5.0) -> dict[str, Any]:
        """The next event of ``kind`` that ``match``es (the peer writes one JSON line each)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {kind} event from the JS peer within {timeout} s") from None
            if line is None:
                raise AssertionError(f"the JS peer exited: {self.proc.wait()}")
            event = json.loads(line)
            self.events.append(event)
            if event["event"] == kind and match(event):
                return event

    def command(self, **cmd: Any) -> dict[str, Any]:
        """Sends one command; returns the peer's state after it."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self.wait_event("state")

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def peer() -> Any:
    p = JsPeer(free_udp_port())
    yield p
    p.stop()


POINTS = {
    "temperature": BacnetPoint(object="analog-input,1"),
    "co2": BacnetPoint(object="analog-input,2"),  # the peer refuses COV for it
    "setpoint": BacnetPoint(object="analog-value,1", writable=True, priority=8),
    "lights": BacnetPoint(object="binary-output,1", writable=True, priority=5),
    "mode": BacnetPoint(object="multi-state-value,1", mode="poll", writable=True),
}


@pytest.fixture
async def driver(peer: JsPeer) -> AsyncIterator[tuple[BacnetDriver, list[Reading]]]:
    conn = BacnetConnection(
        address=f"127.0.0.1:{peer.port}", device_id=2002,
        local_address=f"127.0.0.1:{free_udp_port()}", timeout=2.0, cov_lifetime=60,
    )
    drv = BacnetDriver(conn, POINTS)
    pushed: list[Reading] = []
    drv.set_push_sink(pushed.extend)
    await drv.connect()
    yield drv, pushed
    await drv.close()


def _holds(condition: Any) -> bool:
    try:
        return bool(condition())
    except AttributeError:  # last(...) is still None: nothing pushed yet
        return False


async def wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not _holds(condition):
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def last(pushed: list[Reading], point: str) -> Reading | None:
    return next((r for r in reversed(pushed) if r.point == point), None)


async def test_cov_delivers_values_and_refused_objects_are_polled(
    peer: JsPeer, driver: tuple[BacnetDriver, list[Reading]]
) -> None:
    drv, pushed = driver
    # the initial notifications after SubscribeCOV
    await wait_for(lambda: last(pushed, "temperature") is not None and last(pushed, "lights") is not None)
    assert last(pushed, "temperature") == (
        "temperature", 21.5, last(pushed, "temperature").ts, Quality.GOOD, None)  # type: ignore[union-attr]
    assert last(pushed, "lights").value is False  # type: ignore[union-attr]
    # a change on the device arrives unasked
    peer.command(op="set", object="analog-input,1", value=23.25)
    await wait_for(lambda: last(pushed, "temperature").value == 23.25)  # type: ignore[union-attr]
    # co2 was refused COV by the device: the poll reads it (with mode, a poll point)
    health = drv.health.extra
    assert health["subscribed"] == 3 and "analog-input,2" in health["cov_polled_reasons"]
    assert "cov-subscription-failed" in health["cov_polled_reasons"]["analog-input,2"]
    readings = {r.point: r for r in await drv.read()}
    assert set(readings) == {"co2", "mode"}
    assert readings["co2"].value == 450.0 and readings["co2"].quality is Quality.GOOD
    assert readings["mode"].value == 1
    assert not any(r.point == "co2" for r in pushed)


async def test_write_with_priority_and_relinquish(peer: JsPeer, driver: tuple[BacnetDriver, list[Reading]]) -> None:
    drv, pushed = driver
    await drv.write({"setpoint": 19.5, "lights": True})
    state = peer.command(op="dump")["objects"]
    assert state["zone-temp-setpoint"]["priorities"][7] == 19.5  # priority 8
    assert state["zone-temp-setpoint"]["value"] == 19.5
    assert state["zone-lights"]["priorities"][4] == 1  # priority 5, active
    writes = [e for e in peer.events if e["event"] == "write"]
    assert {(w["object"], w["priority"]) for w in writes} == {("zone-temp-setpoint", 8), ("zone-lights", 5)}
    await wait_for(lambda: last(pushed, "setpoint").value == 19.5)  # type: ignore[union-attr]
    # relinquish: Null at the point's priority; the object falls back to its relinquish default
    await drv.invoke(BacnetCall(relinquish="setpoint"), {})
    state = peer.command(op="dump")["objects"]
    assert state["zone-temp-setpoint"]["priorities"][7] is None
    assert state["zone-temp-setpoint"]["value"] == 21.0
    assert [e for e in peer.events if e["event"] == "write"][-1]["value"] is None
    await wait_for(lambda: last(pushed, "setpoint").value == 21.0)  # type: ignore[union-attr]
    # a service call writing at another priority than the point's
    await drv.invoke(BacnetCall(write="setpoint", priority=3), {"value": 18.0})
    assert peer.command(op="dump")["objects"]["zone-temp-setpoint"]["priorities"][2] == 18.0
    # a write without priority to a non-commandable object, read back by the poll
    await drv.write({"mode": 3})
    assert {r.point: r.value for r in await drv.read(["mode"])} == {"mode": 3}


async def test_status_flags_become_quality(peer: JsPeer, driver: tuple[BacnetDriver, list[Reading]]) -> None:
    drv, pushed = driver
    peer.command(op="flags", object="analog-input,1", flags=[0, 1, 0, 0])
    await wait_for(lambda: last(pushed, "temperature").quality is Quality.BAD)  # type: ignore[union-attr]
    assert "fault" in (last(pushed, "temperature").error or "")  # type: ignore[union-attr]
    peer.command(op="flags", object="analog-input,1", flags=[1, 0, 1, 0])
    await wait_for(lambda: last(pushed, "temperature").quality is Quality.UNCERTAIN)  # type: ignore[union-attr]
    reading = last(pushed, "temperature")
    assert reading is not None and reading.value == 21.5
    assert "overridden" in (reading.error or "") and "in-alarm" in (reading.error or "")
    # polled objects carry their flags too (read with present-value in one request)
    peer.command(op="flags", object="analog-input,2", flags=[1, 0, 0, 0])
    co2 = {r.point: r for r in await drv.read()}["co2"]
    assert co2.quality is Quality.GOOD and co2.error is not None and "in-alarm" in co2.error


async def test_out_of_service_object_is_never_written(peer: JsPeer, driver: tuple[BacnetDriver, list[Reading]]) -> None:
    drv, _ = driver
    peer.command(op="flags", object="analog-value,1", flags=[0, 0, 0, 1])
    with pytest.raises(DeviceError, match=r"setpoint \(analog-value,1\) is out of service: not written"):
        await drv.write({"lights": True, "setpoint": 25.0})
    with pytest.raises(DeviceError, match="out of service"):
        await drv.invoke(BacnetCall(relinquish="setpoint"), {})
    assert not [e for e in peer.events if e["event"] == "write"]  # nothing reached the device
    state = peer.command(op="dump")["objects"]
    assert state["zone-temp-setpoint"]["priorities"] == [None] * 16


async def test_unknown_device_id_is_a_connect_error(peer: JsPeer) -> None:
    conn = BacnetConnection(address=f"127.0.0.1:{peer.port}", device_id=7, timeout=0.5,
                            local_address=f"127.0.0.1:{free_udp_port()}")
    drv = BacnetDriver(conn, POINTS)
    with pytest.raises(ConnectError, match=r"no I-Am .* device 7"):
        await drv.connect()
    await drv.close()


async def test_discover_prints_binding_and_model(peer: JsPeer) -> None:
    text = await discover_bacnet(f"bacnet://127.0.0.1:{peer.port}", 3.0)

    binding, model = list(yaml.safe_load_all(text))
    assert binding["driver"] == "bacnet"
    assert binding["connection"]["device_id"] == 2002
    points = binding["points"]
    assert points["zone_temp"] == {"object": "analog-input,1"}
    assert points["zone_temp_setpoint"]["writable"] is True and points["zone_temp_setpoint"]["priority"] == 8
    assert points["zone_lights"]["object"] == "binary-output,1"
    props = {p["identifier"]: p for p in model["properties"]}
    assert props["zone_temp"]["dataType"]["type"] == "float"
    assert props["zone_temp"]["dataType"]["specs"]["unit"] == "°C"
    assert props["zone_lights"]["dataType"]["type"] == "bool"
    assert props["zone_temp_setpoint"]["accessMode"] == "rw"


async def test_confirmed_notifications_are_acknowledged(peer: JsPeer) -> None:
    conn = BacnetConnection(address=f"127.0.0.1:{peer.port}", local_address=f"127.0.0.1:{free_udp_port()}",
                            timeout=2.0, cov_confirmed=True, cov_lifetime=30)
    drv = BacnetDriver(conn, {"temperature": POINTS["temperature"]})
    pushed: list[Reading] = []
    drv.set_push_sink(pushed.extend)
    async with drv:
        peer.command(op="set", object="analog-input,1", value=19.0)
        await wait_for(lambda: last(pushed, "temperature").value == 19.0)  # type: ignore[union-attr]
        peer.command(op="set", object="analog-input,1", value=19.5)
        await wait_for(lambda: last(pushed, "temperature").value == 19.5)  # type: ignore[union-attr]
        await asyncio.to_thread(peer.wait_event, "acked", lambda e: e["value"] == 19.5)
    subscribes = [e for e in peer.events if e["event"] == "subscribe"]
    assert subscribes and all(e["confirmed"] and e["lifetime"] == 30 for e in subscribes)
    assert not [e for e in peer.events if e["event"] == "error"]


async def test_refused_object_is_subscribed_once_the_device_allows_it(peer: JsPeer) -> None:
    conn = BacnetConnection(address=f"127.0.0.1:{peer.port}", local_address=f"127.0.0.1:{free_udp_port()}",
                            timeout=2.0, cov_retry=0.3)
    drv = BacnetDriver(conn, {"co2": POINTS["co2"]})
    pushed: list[Reading] = []
    drv.set_push_sink(pushed.extend)
    async with drv:
        assert drv.health.extra["subscribed"] == 0
        assert [r.point for r in await drv.read()] == ["co2"]  # polled meanwhile
        peer.command(op="cov", object="analog-input,2", allow=True)
        await wait_for(lambda: drv.health.extra["subscribed"] == 1)
        assert await drv.read() == []  # delivered by COV now: nothing left to poll
        peer.command(op="set", object="analog-input,2", value=612.0)
        await wait_for(lambda: last(pushed, "co2").value == 612.0)  # type: ignore[union-attr]
