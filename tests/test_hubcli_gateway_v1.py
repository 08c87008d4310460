"""``citytwin hub`` against the gateway side of the v1 contract extensions (issue 6):
dry run, expiry, desired versions and twin/get."""

from __future__ import annotations

import pytest
from conftest import GatewayProcess, Hub, Mosquitto, later_write_done
from hubcli_support import hub_cli

from citytwin.simulators.pump_station.server import PumpStationSimulator

DEV = "pump-station-1"
pytestmark = pytest.mark.slow


async def test_dry_run_reports_the_writes_and_writes_nothing(
    gateway: GatewayProcess, mosquitto: Mosquitto, sim: PumpStationSimulator, hub: Hub
) -> None:
    before = sim.station.write_count
    result = await hub_cli("invoke", DEV, "start_pump", "pump=1", "--dry-run", "--broker", mosquitto.url, "--json")
    await later_write_done(hub, sim)
    assert sim.station.write_count == before + 1 and sim.station.pump(1).run_cmd is False
    assert result.code == 0, result.out + result.err
    assert result.json()["output"]["dry_run"] is True and result.json()["output"]["writes"]


async def test_an_expired_command_is_rejected_and_not_executed(
    gateway: GatewayProcess, mosquitto: Mosquitto, sim: PumpStationSimulator, hub: Hub
) -> None:
    before = sim.station.write_count
    result = await hub_cli("invoke", DEV, "start_pump", "pump=1", "--expires", "0s", "--broker", mosquitto.url, "--json")
    await later_write_done(hub, sim)
    assert sim.station.write_count == before + 1 and sim.station.pump(1).run_cmd is False
    assert result.code == 3 and result.json()["error"]["code"] == "expired", result.out


async def test_a_stale_desired_version_is_refused(gateway: GatewayProcess, mosquitto: Mosquitto) -> None:
    twin = (await hub_cli("twin", DEV, "--broker", mosquitto.url, "--json")).json()
    result = await hub_cli("desired", DEV, "--patch", '{"pump1_frequency_setpoint": 40}', "--version",
                           str(twin["version"] - 1), "--broker", mosquitto.url, "--json")
    assert result.code == 3, result.out + result.err
    assert result.json()["error"]["code"] == "version_conflict"


async def test_twin_get_asks_the_gateway(gateway: GatewayProcess, mosquitto: Mosquitto) -> None:
    result = await hub_cli("twin", DEV, "--get", "--timeout", "3s", "--broker", mosquitto.url, "--json")
    assert result.code == 0, result.out + result.err
    twin = result.json()
    assert twin["state"] == "online" and "level" in twin["reported"]
