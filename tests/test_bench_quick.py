"""``citytwin bench --quick`` runs every scenario and writes its records (no speed is asserted)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ("throughput", "latency", "commands", "memory", "recovery", "startup")


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_quick_bench_runs_every_scenario_and_writes_records(tmp_path: Path) -> None:
    if shutil.which("gcc") is None or subprocess.run(["pkg-config", "--exists", "libmodbus"], check=False).returncode:
        pytest.fail("gcc and libmodbus-dev are needed to build the bench slave (scripts/test.sh installs them)")
    result = subprocess.run(
        [sys.executable, "-m", "citytwin.gateway.cli", "--log-level", "warning", "bench", "--quick",
         "--output", str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path, timeout=220,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (record_file,) = tmp_path.glob("bench-*-quick.json")
    (summary,) = tmp_path.glob("bench-*-quick.md")
    record = json.loads(record_file.read_text())
    assert record["quick"] is True
    assert record["machine"]["cpus"] >= 1
    assert record["versions"]["pymodbus"]
    assert set(record["results"]) == set(SCENARIOS)
    by: dict[tuple[str, str], dict[str, Any]] = {}
    for name, runs in record["results"].items():
        for run in runs:  # the first run per subject: the libmodbus slave's (the simulator's comes after)
            by.setdefault((name, run["subject"]), run)
    for scenario in SCENARIOS:
        for subject in ("citytwin", "naive"):
            assert "error" not in by[scenario, subject], by[scenario, subject]

    ours = by["throughput", "citytwin"]["steady"]
    assert ours["points_per_s"] > 0 and ours["latency_samples"] > 0
    assert ours["cpu_percent"] > 0 and ours["rss_mb"] > 0
    assert ours["broker_dropped"] == 0
    assert by["throughput", "naive"]["steady"]["points_per_s"] > 0
    (sim,) = [run for run in record["results"]["throughput"] if "pump-station" in run["shape"]]
    assert "steady" in sim, sim  # the run against our simulator says why it has no figures
    assert sim["steady"]["points_per_s"] > 0  # load from our own simulator as well
    commands = by["commands", "citytwin"]["commands"]
    assert commands["count"] == record["settings"]["commands"] and commands["p50_ms"] > 0
    assert by["startup", "citytwin"]["startup"]["first_point_s"] is not None
    recovery = by["recovery", "citytwin"]["recovery"]
    assert recovery["recovered_points"] > 0 and recovery["seq_missing"] == 0
    text = summary.read_text()
    for scenario in SCENARIOS:
        assert f"### {scenario}" in text
    assert "citytwin vs naive" in result.stdout
