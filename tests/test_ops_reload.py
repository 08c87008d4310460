"""Living configuration: SIGHUP and ``citytwin reload`` against a running gateway subprocess.

Added devices start, removed ones stop with their twin kept (offline), changed ones restart
alone, unchanged ones keep running untouched, and a broken file changes nothing.
"""

from __future__ import annotations

import asyncio
import copy
import signal
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from conftest import Gateways, Hub, Mosquitto, eventually, free_port, write_config
from test_ops_http import cli, fetch, samples

from citytwin.simulators.pump_station.server import PumpStationSimulator

pytestmark = pytest.mark.slow


def device(template: dict[str, Any], device_id: str, **changes: Any) -> dict[str, Any]:
    dev = copy.deepcopy(template)
    dev["id"] = device_id
    dev.update(changes)
    return dev


async def status(port: int) -> dict[str, Any]:
    code, body = await fetch(f"http://127.0.0.1:{port}/status")
    assert code == 200, body
    return dict(orjson.loads(body))


async def wait_status(port: int, check: Any, timeout: float = 15.0) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    doc: dict[str, Any] = {}
    while asyncio.get_running_loop().time() < deadline:
        try:
            doc = await status(port)
            if check(doc):
                return doc
        except OSError:
            pass
        await asyncio.sleep(0.2)
    raise AssertionError(f"status never satisfied the check: {doc}")


def all_online(*ids: str) -> Any:
    return lambda s: set(s["devices"]) == set(ids) and all(s["devices"][d]["online"] for d in ids)


async def test_sighup_adds_removes_and_restarts_devices(
    tmp_path: Path, mosquitto: Mosquitto, hub: Hub, sim: PumpStationSimulator, gateways: Gateways
) -> None:
    path = write_config(tmp_path / "gw.yaml", mosquitto.url, sim.port)
    doc = yaml.safe_load(path.read_text())
    port = free_port()
    doc["http"] = {"port": port}
    base = doc["devices"][0]
    doc["devices"] = [device(base, "keep"), device(base, "change"), device(base, "drop")]
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    gateway = gateways(path)
    before = await wait_status(port, all_online("keep", "change", "drop"))
    await hub.wait_for("drop/twin", lambda t: "level" in t["reported"])

    # a broken file first: refused with file:line, nothing changes
    good_text = path.read_text()
    broken = good_text.replace("unit: 1", "unit: 999", 1)
    path.write_text(broken)
    line = next(i for i, text in enumerate(broken.splitlines(), 1) if "unit: 999" in text)
    gateway.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    await eventually(lambda: "reload refused" in gateway.output())
    assert f"reload refused: {path}:{line}: devices[0].connection.unit: must be 0..255" in gateway.output()
    result = await asyncio.to_thread(cli, "reload", "-c", str(path))  # the simulator runs in this loop
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{path}:{line}: devices[0].connection.unit: must be 0..255" in result.stderr
    assert "left as they were" in result.stderr
    after_broken = await status(port)
    assert set(after_broken["devices"]) == {"keep", "change", "drop"}
    assert all(after_broken["devices"][d]["online"] for d in after_broken["devices"])

    # now a good file: change one device, drop one, add one; "keep" is untouched
    doc["devices"] = [device(base, "keep"), device(base, "change", poll_period=0.25), device(base, "added")]
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    keep_polls = (await status(port))["devices"]["keep"]["polls"]
    gateway.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    after = await wait_status(port, all_online("keep", "change", "added"))
    assert after["devices"]["change"]["poll_period"] == 0.25
    # an unchanged device was not restarted: its poll count carried on
    assert after["devices"]["keep"]["polls"] >= keep_polls >= before["devices"]["keep"]["polls"]
    # the removed device is offline on the hub and its twin is still there, offline
    # (the hub saw it offline once before, at start-up: devices are built once the hub is up)
    gone = await hub.wait_for("drop/status", lambda s: s["state"] == "offline" and "reason" in s)
    assert gone["reason"] == "removed from the config"
    twin = await hub.wait_for("drop/twin", lambda t: t["state"] == "offline")
    assert "level" in twin["reported"]
    # the changed device restarted alone (its retained status is coalesced to the latest)
    log = gateway.output()
    assert log.count("change: online") == 2 and log.count("keep: online") == 1, log
    await hub.wait_for("added/status", lambda s: s["state"] == "online")
    # a command to the removed device is rejected; the added one takes commands
    reply = await hub.invoke("drop", "start_pump", {"id": "x-1", "input": {"pump": 1}})
    assert reply["status"] == "rejected" and reply["error"]["code"] == "unknown_device", reply
    reply = await hub.invoke("added", "start_pump", {"id": "x-2", "input": {"pump": 2}})
    assert reply["status"] == "succeeded", reply
    # the removed device's series left /metrics; the others are there
    code, body = await fetch(f"http://127.0.0.1:{port}/metrics")
    assert code == 200
    devices = {dict(lab).get("device") for name, lab in samples(body.decode())
               if name == "citytwin_device_online"}
    assert devices == {"keep", "change", "added"}
    log = gateway.output()
    assert "config reloaded" in log and "'added'" in log and "'drop'" in log and "'change'" in log

    # citytwin reload with nothing changed
    result = await asyncio.to_thread(cli, "reload", "-c", str(path))  # the simulator runs in this loop
    assert result.returncode == 0, result.stderr
    assert "no device changed" in result.stdout
