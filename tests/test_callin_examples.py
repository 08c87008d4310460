"""The call-in example configs pass ``citytwin config check``, and the simulators' CLI runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["air-station.yaml", "hydro-station.yaml"])
def test_example_config_checks(name: str) -> None:
    path = ROOT / "deploy" / "examples" / name
    done = subprocess.run([sys.executable, "-m", "citytwin.gateway.cli", "config", "check", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 device(s)" in done.stdout


def test_a_wrong_station_address_is_named(tmp_path: Path) -> None:
    text = (ROOT / "deploy" / "examples" / "hydro-station.yaml").read_text().replace('"0012345679"', '"00123"')
    path = tmp_path / "hydro.yaml"
    path.write_text(text)
    done = subprocess.run([sys.executable, "-m", "citytwin.gateway.cli", "config", "check", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "devices[0].connection.station" in done.stdout + done.stderr
