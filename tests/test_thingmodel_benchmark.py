"""The checker benchmark runs end to end on a small workload (figures are not asserted)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from pydantic import TypeAdapter, ValidationError

ROOT = Path(__file__).resolve().parent.parent


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("thingmodel_checks", ROOT / "benchmarks" / "thingmodel_checks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_runs_and_writes_a_record(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.thingmodel_checks", "--values", "3000", "--repeat", "1",
         "--output", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (record_path,) = tmp_path.glob("thingmodel_checks-*.json")
    record = json.loads(record_path.read_text())
    assert record["values"] == 3000 and 0 < record["rejected"] < 3000
    assert set(record["rates"]) == {"ours_per_value", "pydantic_per_value", "ours_per_report", "pydantic_per_report"}
    assert all(rate > 0 for rate in record["rates"].values())
    assert "ours, per value" in result.stdout and "pydantic, per value" in result.stdout


def test_baseline_agrees_with_our_checkers() -> None:
    # the comparison is fair only if both accept and reject the same values
    bench = _bench()
    for _model, prop, value in bench.workload(3000, seed=11):
        try:
            TypeAdapter(bench.pydantic_type(prop.data_type)).validate_python(value)
            theirs = True
        except ValidationError:
            theirs = False
        assert (prop.check(value) is None) == theirs, (prop.identifier, value)
