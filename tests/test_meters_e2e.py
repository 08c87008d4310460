"""End to end: DL/T 645 and CJ/T 188 meters on simulated lines (pty and TCP) through
``citytwin run`` (a real subprocess) to the hub, and valve and trip commands back; the two
example configs pass ``citytwin config check``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import LAB_ACCESS, GatewayProcess, Hub, Mosquitto

from citytwin.simulators.meters_188.server import Meters188Simulator
from citytwin.simulators.meters_188.server import make_meters as make_188
from citytwin.simulators.meters_645.server import Meters645Simulator
from citytwin.simulators.meters_645.server import make_meters as make_645

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "deploy" / "examples"


@pytest.mark.parametrize("name", ["energy-meters.yaml", "water-heat-meters.yaml"])
def test_example_config_checks(name: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "citytwin.gateway.cli", "config", "check", str(EXAMPLES / name)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout and "3 device(s)" in result.stdout


def meters_config(tmp_path: Path, broker: Mosquitto, line_645: str, tcp_645: int, line_188: str) -> Path:
    energy = yaml.safe_load((EXAMPLES / "energy-meters.yaml").read_text())
    water = yaml.safe_load((EXAMPLES / "water-heat-meters.yaml").read_text())
    doc: dict[str, Any] = energy
    doc["gateway"].update(id="ps-north-01", data_dir=str(tmp_path / "data"))  # the hub fixture's id
    doc["hub"].update(url=broker.url, reconnect_max=1.0, snapshot_interval=5)
    doc["access"] = LAB_ACCESS
    doc.setdefault("http", {})["enabled"] = False
    secret = tmp_path / "meter-main.pw"
    secret.write_text("02123456\n")
    doc["devices"] = energy["devices"] + water["devices"]
    for device in doc["devices"]:
        connection = device["connection"]
        if "serial" in connection:
            # Linux ptys refuse parity: 8N1 on the simulated lines
            connection.update(serial=line_645 if device["driver"] == "dlt645" else line_188, parity="N")
        else:
            connection["port"] = tcp_645
        if "password_file" in connection:
            connection["password_file"] = str(secret)
        device.update(poll_period=0.5, reconnect_min=0.1, reconnect_max=0.5)
    path = tmp_path / "meters.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_meters_report_and_take_commands_through_the_hub(
    tmp_path: Path, mosquitto: Mosquitto, hub: Hub
) -> None:
    async with (
        Meters645Simulator(make_645(3, seed=11), host="127.0.0.1") as sim645,
        Meters188Simulator(make_188(2, 1, seed=12)) as sim188,
    ):
        assert sim645.device and sim645.tcp_port and sim188.device
        config = meters_config(tmp_path, mosquitto, sim645.device, sim645.tcp_port, sim188.device)
        gateway = GatewayProcess(config)
        gateway.start()
        try:
            report = await hub.wait_for(
                "meter-main/properties/report", lambda r: "energy_import" in r["properties"]
            )
            energy = report["properties"]["energy_import"]
            assert energy["quality"] == "good"
            assert energy["value"] == pytest.approx(sim645.meters["000000000001"].energy[0], abs=1.0)
            await hub.wait_for("meter-chiller/properties/report", lambda r: "active_power" in r["properties"])
            heat = await hub.wait_for(
                "heat-main/properties/report", lambda r: "supply_temperature" in r["properties"]
            )
            assert 40 < heat["properties"]["supply_temperature"]["value"] < 70
            await hub.wait_for(
                "water-101/twin", lambda t: {"valve_open", "volume", "battery_low"} <= set(t["reported"])
            )

            reply = await hub.invoke("water-101", "set_valve", {"id": "v-1", "input": {"open": False}})
            assert reply["status"] == "succeeded", reply
            assert sim188.meters["00000000000001"].valve_open is False
            assert sim188.meters["00000000000002"].valve_open is True
            await hub.wait_for(
                "water-101/properties/report",
                lambda r: r["properties"].get("valve_open", {}).get("value") is False,
            )

            trip = await hub.invoke("meter-main", "remote_trip", {"id": "t-1", "input": {}})
            assert trip["status"] == "succeeded", trip
            assert sim645.meters["000000000001"].relay_closed is False
            assert sim645.meters["000000000002"].relay_closed is True
        finally:
            code = gateway.stop()
        assert code == 0, gateway.output()
        assert "123456" not in gateway.output()  # the meter password never reaches the log


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_line_benchmark_runs_and_writes_a_record(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.meters_line", "--meters", "3", "--dis", "4", "--cycles", "1",
         "--baud", "115200", "--output", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=50,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (record_file,) = tmp_path.glob("meters_line-*.json")
    figures = yaml.safe_load(record_file.read_text())["figures"]
    (cycle,) = figures["cycles"]
    assert cycle["exchanges"] == 12 and cycle["good_readings"] == 12
    assert cycle["ratio"] >= 1.0  # nothing beats the wire: the simulator paces it
    assert "ratio cycle / physical limit" in result.stdout
