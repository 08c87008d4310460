"""Shared fixtures, one copy each: a real mosquitto broker, the pump-station simulator, the
libmodbus slave (built once per session), the gateway as a real subprocess, a hub-side client,
and ``eventually`` for waiting on a condition instead of sleeping."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiomqtt
import orjson
import pytest
import yaml
from modbus_peers import LibmodbusSlave, build_slave

from citytwin.drivers.base import Reading
from citytwin.simulators.pump_station.server import PumpStationSimulator

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "deploy" / "examples" / "pump-station.yaml"
# a lab setting for tests that are not about authorization: commands naming no operator get
# the admin role (deny by default is the product's default and has its own tests)
LAB_ACCESS = {"identity": ["user_property", "payload"], "anonymous": "admin", "grants": []}


class Sink:
    """A driver's push sink as the runner would hand it over; ``wait`` for a matching reading."""

    def __init__(self) -> None:
        self.readings: list[Reading] = []
        self.calls = 0

    def __call__(self, batch: Sequence[Reading]) -> None:
        self.calls += 1
        self.readings.extend(batch)

    def of(self, point: str) -> list[Reading]:
        return [r for r in self.readings if r.point == point]

    async def wait(self, point: str, predicate: Callable[[Reading], bool] = lambda r: True,
                   timeout: float = 15) -> Reading:
        found: list[Reading] = await eventually(lambda: [r for r in self.of(point) if predicate(r)], timeout, 0.01)
        return found[0]


PUMP_DEVICE = "pump-station-1"  # the example's device, as write_config leaves it


def free_port(udp: bool = False) -> int:
    """A loopback port nothing listens on (a connect to it is refused) for peers that need a
    port before they start; prefer port 0 where the peer reports the port it got."""
    with socket.socket(type=socket.SOCK_DGRAM if udp else socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def eventually(check: Callable[[], Awaitable[T] | T], timeout: float = 15.0, step: float = 0.05) -> T:
    """Poll ``check`` until it returns something truthy, and return that; fail at the deadline.

    The deadline is generous on purpose: it only matters when the test fails, and the suite
    shares two cores with other work."""
    deadline = asyncio.get_running_loop().time() + timeout
    last: Any = None
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result  # type: ignore[no-any-return]
        last = result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s (last: {last!r})")
        await asyncio.sleep(step)


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")


class Mosquitto:
    """A real mosquitto on a free loopback port, configured as the docs tell hub operators to."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not os.path.exists(binary):
            pytest.fail("mosquitto is not installed: run the README's test command (scripts/test.sh)")
        self.binary = binary
        self.port = free_port()
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "set_tcp_nodelay true\n"
            "persistence false\n"
            "max_queued_messages 100000\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
async def sim() -> AsyncIterator[PumpStationSimulator]:
    """The pump station on a port of its own (kept across ``stop``/``start``), physics ticking."""
    async with PumpStationSimulator(port=0, seed=3, tick=0.05) as simulator:
        yield simulator


@pytest.fixture(scope="session")
def slave_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """libmodbus's slave (tests/libmodbus/slave.c), compiled once for the whole session."""
    return build_slave(tmp_path_factory.mktemp("libmodbus"))


@pytest.fixture
def slave(slave_binary: Path) -> Iterator[LibmodbusSlave]:
    peer = LibmodbusSlave(slave_binary)
    peer.start()
    yield peer
    peer.stop()


class GatewayProcess:
    """``citytwin run`` as a real subprocess, its log kept for assertions and failures."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.log = config.with_suffix(".log")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._log = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "citytwin.gateway.cli", "run", "-c", str(self.config)],
            stdout=self._log, stderr=subprocess.STDOUT,
        )

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(20)
        finally:
            self._log.close()
            self.proc = None
        return code

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def write_config(path: Path, hub_url: str, sim_port: int, **device: Any) -> Path:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["gateway"]["data_dir"] = str(path.parent / "data")
    doc["hub"].update({"url": hub_url, "reconnect_max": 1.0, "snapshot_interval": 5})
    doc["access"] = LAB_ACCESS
    doc.setdefault("http", {})["enabled"] = False
    dev = doc["devices"][0]
    dev["connection"]["port"] = sim_port
    dev.update({"poll_period": 0.5, "reconnect_max": 0.5, "reconnect_min": 0.1})
    dev.update(device)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


class Hub:
    """The hub side of the contract: records every message under the gateway's prefix."""

    def __init__(self, client: aiomqtt.Client, base: str) -> None:
        self.client = client
        self.base = base
        self.messages: list[tuple[str, Any, bool]] = []
        self._changed = asyncio.Condition()

    async def listen(self) -> None:
        try:
            async for message in self.client.messages:
                assert isinstance(message.payload, bytes)
                try:
                    body = orjson.loads(message.payload) if message.payload else None
                except orjson.JSONDecodeError:  # our own malformed test commands come back to us
                    body = message.payload
                async with self._changed:
                    self.messages.append((str(message.topic), body, bool(message.retain)))
                    self._changed.notify_all()
        except aiomqtt.MqttError:
            pass  # the broker went away (a test stopped it): this hub has heard all it will

    def on(self, suffix: str) -> list[Any]:
        return [body for topic, body, _ in self.messages if topic == f"{self.base}/{suffix}"]

    async def wait_for(self, suffix: str, predicate: Any = lambda body: True, timeout: float = 15.0) -> Any:
        async def found() -> Any:
            async with self._changed:
                while True:
                    for body in self.on(suffix):
                        if predicate(body):
                            return body
                    await self._changed.wait()

        return await asyncio.wait_for(found(), timeout)

    async def invoke(self, device: str, service: str, payload: Any, timeout: float = 10.0) -> Any:
        raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        await self.client.publish(f"{self.base}/{device}/services/{service}/invoke", raw, qos=1)
        command_id = payload.get("id") if isinstance(payload, dict) else None
        return await self.wait_for(f"{device}/replies", lambda r: r.get("id") == command_id, timeout)


@pytest.fixture
async def hub(mosquitto: Mosquitto) -> AsyncIterator[Hub]:
    """A hub subscribed to everything before any gateway starts; ``base`` may be changed."""
    client = aiomqtt.Client("127.0.0.1", mosquitto.port, identifier=f"test-hub-{os.getpid()}",
                            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),))
    await client.__aenter__()
    hub = Hub(client, "citytwin/v1/ps-north-01")
    await client.subscribe("citytwin/v1/#", qos=1)
    task = asyncio.create_task(hub.listen())
    yield hub
    task.cancel()
    with contextlib.suppress(aiomqtt.MqttError):  # a test may have stopped the broker
        await client.__aexit__(None, None, None)


Gateways = Callable[[Path], GatewayProcess]


@pytest.fixture
def gateways() -> Iterator[Gateways]:
    """Start ``citytwin run`` on a config; every gateway still running at the end must stop
    cleanly on SIGTERM (exit 0), which each test thereby checks for free."""
    started: list[GatewayProcess] = []

    def start(config: Path) -> GatewayProcess:
        proc = GatewayProcess(config)
        proc.start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.proc is not None:
            assert proc.stop() == 0, proc.output()


@pytest.fixture
def gateway_config(tmp_path: Path, mosquitto: Mosquitto, sim: PumpStationSimulator) -> Path:
    """The pump-station example against ``sim`` and ``mosquitto``; a test file overrides this
    fixture to change the config the ``gateway`` fixture runs."""
    return write_config(tmp_path / "gw.yaml", mosquitto.url, sim.port)


@pytest.fixture
async def gateway(gateway_config: Path, hub: Hub, gateways: Gateways) -> GatewayProcess:
    """A running gateway whose device is online and whose twin holds the first poll; ``hub``
    has heard everything it published."""
    proc = gateways(gateway_config)
    await hub.wait_for(f"{PUMP_DEVICE}/status", lambda s: s["state"] == "online", timeout=30)
    await hub.wait_for(f"{PUMP_DEVICE}/twin", lambda t: "level" in t["reported"], timeout=30)
    return proc


async def later_write_done(hub: Hub, sim: PumpStationSimulator, device: str = PUMP_DEVICE) -> None:
    """The positive marker for "nothing was written": a later command that writes (pump 2's
    setpoint, to the value it holds) has been executed. The device's writes go one at a time in
    arrival order, so a write the earlier input made would have come first; the caller then
    asserts the write count moved by exactly this one."""
    hz = sim.station.pump(2).setpoint
    marker = f"marker-{len(hub.messages)}"
    reply = await hub.invoke(device, "set_frequency", {"id": marker, "input": {"pump": 2, "hz": hz}})
    assert reply["status"] == "succeeded", reply
