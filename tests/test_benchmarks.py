"""The benchmark harness runs (its figures are not asserted: speed belongs to benchmarks)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_foundation_benchmark_runs_and_writes_a_record(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.foundation", "--devices", "2", "--seconds", "1",
         "--commands", "5", "--output", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (record_file,) = tmp_path.glob("foundation-*.json")
    record = json.loads(record_file.read_text())
    assert record["commands"]["count"] == 5
    assert record["throughput"]["reports_per_s"] > 0
    assert "points/s" in result.stdout
