"""The edge-box profile's parts: a real CPU quota on a real process, and the curves it prints
(no speed is asserted; ``citytwin bench edgebox`` measures)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import edgebox  # noqa: E402
from benchmarks.cpuquota import CpuQuota, available  # noqa: E402


def test_a_quota_holds_the_process_it_is_given() -> None:
    why = available()
    if why is not None:
        pytest.skip(f"no CPU quota on this machine: {why}")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with CpuQuota(0.25, f"citytwin-test-{proc.pid}") as quota:
            quota.add(proc.pid)
            members = (quota.path / "cgroup.procs").read_text().split()
            assert str(proc.pid) in members
            if quota.kind == "v1":
                assert (quota.path / "cpu.cfs_quota_us").read_text().strip() == "25000"
            else:
                assert (quota.path / "cpu.max").read_text().split()[0] == "25000"
            assert set(quota.throttled()) == {"nr_periods", "nr_throttled"}
            proc.kill()
            proc.wait(5)
        assert not quota.path.exists()  # removed once its process ended
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def run(subject: str, offered: int, delivered: float, kept: float, cores: float = 0.25) -> dict[str, object]:
    return {"subject": subject, "shape": "x", "quota_cores": cores, "offered_points_per_s": offered,
            "load_avg": {"before": [1.0, 1.0, 1.0], "after": [2.0, 1.0, 1.0]},
            "throttled_periods": {"nr_periods": 100, "nr_throttled": 25},
            "steady": {"points_per_s": delivered, "polls_kept": kept, "latency_p50_ms": 5.0,
                       "latency_p99_ms": 50.0, "latency_p99_periods": 0.05, "rss_mb": 60.0,
                       "seq_missing": 0, "broker_dropped": 0, "cpu_percent": 24.0,
                       "throttled_periods": {"nr_periods": 100, "nr_throttled": 7}},
            "commands": {"count": 10, "failed": 0, "p50_ms": 3.0, "p99_ms": 9.0,
                         "throttled_periods": {"nr_periods": 10, "nr_throttled": 9}},
            "commands_paced": {"count": 10, "failed": 0, "p50_ms": 2.5, "p99_ms": 4.5, "interval_s": 0.05}}


def test_the_summary_draws_one_curve_per_quota_with_ratios_to_the_naive_baseline() -> None:
    runs = [run("citytwin", 1000, 1000.0, 1.0), run("naive", 1000, 500.0, 0.5),
            run("citytwin", 10000, 4000.0, 0.4), run("naive", 10000, 400.0, 0.04),
            run("citytwin", 1000, 1000.0, 1.0, 1.0),
            {"subject": "naive", "shape": "y", "error": "RuntimeError: boom", "quota_cores": 1.0,
             "offered_points_per_s": 1000, "load_avg": {"before": [1.0], "after": [1.0]}}]
    text = "\n".join(edgebox.table(runs))
    assert "#### CPU quota 0.25 core" in text and "#### CPU quota 1 core" in text
    lines = [line for line in text.splitlines() if line.startswith("| 10,000 | citytwin")]
    assert len(lines) == 1 and "| 10.0× |" in lines[0] and "████████" in lines[0]
    assert "| 25% / 7% / 90% / — |" in lines[0]  # throttled periods: the run, steady, flood, paced (unknown)
    assert "| 2.5 / 4.5 |" in lines[0]  # the paced commands
    assert "error: RuntimeError: boom" in text
    assert text.index("| 1,000 | citytwin") < text.index("| 10,000 | citytwin")  # load increases down


def test_quotas_and_loads_select_a_part_of_the_profile() -> None:
    part = edgebox.select(edgebox.FULL, "0.25,0.5", "100,1000")
    assert part.quotas == (0.25, 0.5)
    assert [(s.devices, s.k, s.period) for s in part.loads] == [(100, 98, 1.0), (1000, 98, 1.0)]
    assert edgebox.select(edgebox.FULL, None, None) == edgebox.FULL
    with pytest.raises(ValueError, match=r"--quotas 'x': expected cores separated by commas"):
        edgebox.select(edgebox.FULL, "x", None)
    with pytest.raises(ValueError, match=r"--loads '0': each device count must be at least 1"):
        edgebox.select(edgebox.FULL, None, "0")
