"""Shared fixtures: a real mosquitto broker, the gateway as a real subprocess, a hub-side client."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "deploy" / "examples" / "pump-station.yaml"
# a lab setting for tests that are not about authorization: commands naming no operator get
# the admin role (deny by default is the product's default and has its own tests)
LAB_ACCESS = {"identity": ["user_property", "payload"], "anonymous": "admin", "grants": []}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
        async for message in self.client.messages:
            assert isinstance(message.payload, bytes)
            try:
                body = orjson.loads(message.payload) if message.payload else None
            except orjson.JSONDecodeError:  # our own malformed test commands come back to us
                body = message.payload
            async with self._changed:
                self.messages.append((str(message.topic), body, bool(message.retain)))
                self._changed.notify_all()

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
    client = aiomqtt.Client("127.0.0.1", mosquitto.port, identifier=f"test-hub-{os.getpid()}",
                            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),))
    async with client:
        hub = Hub(client, "citytwin/v1/ps-north-01")
        await client.subscribe("citytwin/v1/#", qos=1)
        task = asyncio.create_task(hub.listen())
        yield hub
        task.cancel()
