"""``citytwin status -c`` / ``reload -c`` on a box with two gateways, and the device lines of ``status``.

Two gateways on one box, the second configured with the first one's HTTP port (it could not
bind it): ``status -c`` of the second must not print the first one's health, and ``reload -c``
of the second must not make the first re-read its file. Real gateway processes on a real
mosquitto; the device is a Modbus port where nothing listens, so it is offline with a reason.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import GatewayProcess, Mosquitto, free_port, write_config


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "citytwin.gateway.cli", *args],
                          capture_output=True, text=True, timeout=60)


def config(path: Path, gateway_id: str, hub_url: str, http_port: int, device_port: int) -> Path:
    write_config(path, hub_url, device_port, reconnect_min=0.1, reconnect_max=0.2)
    doc = yaml.safe_load(path.read_text())
    doc["gateway"]["id"] = gateway_id
    doc["gateway"]["data_dir"] = str(path.parent / f"data-{gateway_id}")
    doc["http"] = {"enabled": True, "port": http_port}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


async def wait_for(condition: object, what: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await asyncio.to_thread(condition)  # type: ignore[arg-type]
        if result is not None:
            return result  # type: ignore[no-any-return]
        assert loop.time() < deadline, f"no {what} within {timeout} s"
        await asyncio.sleep(0.2)


async def test_status_and_reload_refuse_another_gateways_answer(tmp_path: Path, mosquitto: Mosquitto) -> None:
    http_port, dead = free_port(), free_port()  # nothing listens on ``dead``: the device is offline
    first = config(tmp_path / "first.yaml", "soak-gw", mosquitto.url, http_port, dead)
    second = config(tmp_path / "second.yaml", "ps-north-01", mosquitto.url, http_port, dead)
    gateway = GatewayProcess(first)
    gateway.start()
    try:
        def offline_line() -> subprocess.CompletedProcess[str] | None:
            result = cli("status", "-c", str(first))
            return result if "OFFLINE" in result.stdout and "ConnectError" in result.stdout else None

        own = await wait_for(offline_line, "status with the device offline and its reason")
        # each device's state and reason, from /status
        line = next(row for row in own.stdout.splitlines() if row.startswith("device"))
        assert "pump-station-1" in line and "OFFLINE" in line and f"127.0.0.1:{dead}" in line, own.stdout
        assert own.stdout.startswith("gateway soak-gw:"), own.stdout

        other = cli("status", "-c", str(second))
        assert other.returncode == 1, other.stdout + other.stderr
        assert "soak-gw" not in other.stdout and "healthy" not in other.stdout, other.stdout
        assert f"http://127.0.0.1:{http_port} is answered by gateway 'soak-gw', not 'ps-north-01'" in other.stderr
        assert "another gateway holds the port" in other.stderr

        quiet = cli("status", "-q", "-c", str(second))
        assert quiet.returncode == 1 and quiet.stdout == "" and quiet.stderr == ""

        refused = cli("reload", "-c", str(second))
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "is answered by gateway 'soak-gw', not 'ps-north-01'" in refused.stderr
        assert "config reloaded" not in gateway.output()  # the first gateway did not re-read its file

        applied = cli("reload", "-c", str(first))
        assert applied.returncode == 0, applied.stdout + applied.stderr
    finally:
        assert gateway.stop() == 0, gateway.output()
