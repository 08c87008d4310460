"""The operations endpoint of a running gateway: metrics that move with the devices, health, status.

Real parts only: mosquitto, the pump-station simulator and ``citytwin run`` as a subprocess.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from conftest import GatewayProcess, Hub, Mosquitto, free_port, write_config
from prometheus_client.parser import text_string_to_metric_families

from citytwin.simulators.pump_station.server import PumpStationSimulator

DEV = "pump-station-1"
pytestmark = pytest.mark.slow


@pytest.fixture
def http_port() -> int:
    return free_port()


@pytest.fixture
def gateway_config(tmp_path: Path, mosquitto: Mosquitto, sim: PumpStationSimulator, http_port: int) -> Path:
    """The gateway fixture's config with the operations endpoint on ``http_port``."""
    path = write_config(tmp_path / "gw.yaml", mosquitto.url, sim.port)
    doc = yaml.safe_load(path.read_text())
    doc["http"] = {"host": "127.0.0.1", "port": http_port, "silent_after": 1.0}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


async def fetch(url: str) -> tuple[int, bytes]:
    return await asyncio.to_thread(get, url)


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, frozenset(labels.items())))


def total(text: str, name: str, **labels: str) -> float:
    """Sum over every series of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples(text).items() if n == name and want <= lab)


async def until(port: int, check: Callable[[str], bool], timeout: float = 15.0) -> str:
    deadline = asyncio.get_running_loop().time() + timeout
    text = ""
    while asyncio.get_running_loop().time() < deadline:
        try:
            code, body = await fetch(f"http://127.0.0.1:{port}/metrics")
        except OSError:
            await asyncio.sleep(0.2)
            continue
        text = body.decode()
        if code == 200 and check(text):
            return text
        await asyncio.sleep(0.2)
    raise AssertionError(f"metrics never satisfied the check; last scrape:\n{text}")


async def health_until(port: int, want: int, timeout: float = 15.0) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    last: Any = None
    while asyncio.get_running_loop().time() < deadline:
        try:
            code, body = await fetch(f"http://127.0.0.1:{port}/health")
            last = (code, body)
            if code == want:
                return dict(orjson.loads(body))
        except OSError as exc:
            last = exc
        await asyncio.sleep(0.2)
    raise AssertionError(f"/health never answered {want}; last: {last!r}")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "citytwin.gateway.cli", *args],
                          capture_output=True, text=True, timeout=60)


async def test_metrics_move_with_the_device(
    gateway: GatewayProcess, hub: Hub, sim: PumpStationSimulator, http_port: int
) -> None:
    port = http_port
    first = await until(port, lambda t: value(t, "citytwin_device_online", device=DEV) == 1
                        and (value(t, "citytwin_device_points_read_total", device=DEV) or 0) >= 17)
    assert value(first, "citytwin_hub_connected") == 1
    assert value(first, "citytwin_gateway_devices") == 1
    assert value(first, "citytwin_gateway_info", gateway="ps-north-01", version=value_version(first)) == 1
    assert (value(first, "citytwin_device_last_success_timestamp_seconds", device=DEV) or 0) > 1.7e9
    assert (value(first, "process_resident_memory_bytes") or 0) > 0
    points = value(first, "citytwin_device_points_read_total", device=DEV) or 0
    polls = value(first, "citytwin_device_poll_duration_seconds_count", device=DEV) or 0
    # the figures move as the device is polled (poll period 0.5 s)
    later = await until(port, lambda t: (value(t, "citytwin_device_points_read_total", device=DEV) or 0) >= points + 34
                        and (value(t, "citytwin_hub_points_published_total") or 0) > 0)
    assert (value(later, "citytwin_device_poll_duration_seconds_count", device=DEV) or 0) >= polls + 2
    assert (value(later, "citytwin_hub_messages_published_total") or 0) > 0
    assert (value(later, "citytwin_hub_publish_latency_seconds_count") or 0) > 0
    assert total(later, "citytwin_device_read_errors_total", device=DEV) == 0
    # no per-property series anywhere: cardinality is per device at most
    assert not any("property" in dict(lab) or "point" in dict(lab) for _, lab in samples(later))

    # a command shows up by service and final status
    reply = await hub.invoke(DEV, "start_pump", {"id": "m-1", "input": {"pump": 1}})
    assert reply["status"] == "succeeded", reply
    await hub.client.publish(f"{hub.base}/{DEV}/services/no_such_service/invoke",
                             orjson.dumps({"id": "m-2", "input": {}}), qos=1)
    await hub.wait_for(f"{DEV}/replies", lambda r: r.get("id") == "m-2")
    text = await until(port, lambda t: value(t, "citytwin_commands_total", device=DEV,
                                             service="other", status="rejected") == 1)
    assert value(text, "citytwin_commands_total", device=DEV, service="start_pump", status="succeeded") == 1
    assert value(text, "citytwin_command_duration_seconds_count", device=DEV, service="start_pump") == 1

    code, body = await fetch(f"http://127.0.0.1:{port}/health")
    assert code == 200, body
    status = await asyncio.to_thread(cli, "status", "-c", str(gateway.config))  # the simulator runs in this loop
    assert status.returncode == 0, status.stderr
    assert "healthy" in status.stdout and DEV in status.stdout and "online" in status.stdout

    # the simulator stops: offline, read errors counted, health and status say why
    await sim.stop()
    down = await until(port, lambda t: value(t, "citytwin_device_online", device=DEV) == 0
                       and total(t, "citytwin_device_read_errors_total", device=DEV) >= 2)
    reasons = {dict(lab)["reason"] for n, lab in samples(down) if n == "citytwin_device_read_errors_total"}
    assert reasons and reasons <= {"ConnectError", "ConnectionClosed", "RequestTimeout", "TransportError"}, reasons
    report = await health_until(port, 503)
    assert any(p.startswith(f"device {DEV} offline: ") for p in report["problems"]), report
    status = await asyncio.to_thread(cli, "status", "-c", str(gateway.config))  # the simulator runs in this loop
    assert status.returncode == 1
    assert "NOT HEALTHY" in status.stdout and "OFFLINE" in status.stdout, status.stdout
    as_json = orjson.loads(cli("status", "--url", f"http://127.0.0.1:{port}", "--json").stdout)
    assert as_json["devices"][DEV]["online"] is False and as_json["hub"]["connected"] is True

    # back again
    await sim.start()
    await until(port, lambda t: value(t, "citytwin_device_online", device=DEV) == 1)
    await health_until(port, 200)
    # a failing device logs its state changes, not every failed attempt
    log = gateway.output()
    assert log.count(f"{DEV}: offline") == 1, log
    assert log.count(f"{DEV}: online") == 2, log


def value_version(text: str) -> str:
    for (name, labels) in samples(text):
        if name == "citytwin_gateway_info":
            return dict(labels)["version"]
    raise AssertionError("no citytwin_gateway_info")


async def test_health_fails_when_the_broker_stops(gateway: GatewayProcess, mosquitto: Mosquitto, http_port: int) -> None:
    port = http_port
    assert (await health_until(port, 200))["healthy"] is True
    mosquitto.stop()
    report = await health_until(port, 503)
    assert report["healthy"] is False
    assert any("hub link" in p and "down" in p for p in report["problems"]), report
    text = await until(port, lambda t: value(t, "citytwin_hub_connected") == 0)
    assert value(text, "citytwin_device_online", device=DEV) == 1  # the device is still polled
    mosquitto.start()
    await health_until(port, 200, timeout=20)


async def test_endpoint_basics(gateway: GatewayProcess, http_port: int) -> None:
    port = http_port
    await health_until(port, 200)
    code, _ = await fetch(f"http://127.0.0.1:{port}/nope")
    assert code == 404
    code, _ = await fetch(f"http://127.0.0.1:{port}/metrics?x=1")
    assert code == 200
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"garbage\r\n\r\n")
    await writer.drain()
    answer = await reader.read()
    writer.close()
    assert answer.startswith((b"HTTP/1.1 400 ", b"HTTP/1.0 400 ")), answer
    # reload is a POST; a GET is refused without doing anything
    code, _ = await fetch(f"http://127.0.0.1:{port}/reload")
    assert code == 405
    unreachable = cli("status", "--url", f"http://127.0.0.1:{free_port()}")
    assert unreachable.returncode == 1 and "cannot reach" in unreachable.stderr
