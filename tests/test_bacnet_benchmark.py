"""The BACnet COV benchmark runs and writes its record (figures are not asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_bacnet_cov_benchmark_runs_and_writes_a_record(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.bacnet_cov", "--objects", "40", "--seconds", "1",
         "--change-period", "1", "--output", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (record_file,) = tmp_path.glob("bacnet_cov-*.json")
    figures = json.loads(record_file.read_text())["figures"]
    assert figures["cov"]["subscribed"] == 40 and figures["poll"]["subscribed"] == 0
    assert figures["cov"]["readings_per_s"] > 0 and figures["cov_into_pipeline"]["readings_per_s"] > 0
    assert "CPU cov / poll" in result.stdout
