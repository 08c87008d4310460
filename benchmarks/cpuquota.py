"""A fixed CPU quota for the process under test: the edge-box profile (issue 13).

Figures measured on a shared machine drift with its load; a process held to a fixed quota of
CPU time per period (the kernel's CFS bandwidth control) gets the same CPU budget on any day,
so its figures compare across runs, and 0.25 core is what a modest edge box gives a gateway.
One cgroup per quota, whichever interface this machine has:

- cgroup v2: ``cpu.max`` ("QUOTA PERIOD") in a child of the unified hierarchy;
- cgroup v1: ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` under the ``cpu`` controller
  (what the machines here use);
- neither writable (no root, no delegation): ``systemd-run --user --scope -p CPUQuota=`` is
  the alternative where systemd runs the machine; here ``available()`` says why not, and the
  harness records the reason instead of a figure.

The process is moved into the cgroup right after it is spawned (its threads and children
follow); the cgroup is removed once the process has exited.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PERIOD_US = 100_000
V1 = Path("/sys/fs/cgroup/cpu")
V2 = Path("/sys/fs/cgroup")


def _interface() -> tuple[str, Path] | None:
    if (V2 / "cgroup.controllers").is_file():
        if "cpu" in (V2 / "cgroup.controllers").read_text().split():
            return "v2", V2
        return None
    if (V1 / "cpu.cfs_quota_us").is_file():
        return "v1", V1
    return None


def available() -> str | None:
    """None when quotas can be set here, else why not."""
    found = _interface()
    if found is None:
        return "no cgroup cpu controller (neither cgroup v2 cpu.max nor v1 cpu.cfs_quota_us)"
    kind, root = found
    if not os.access(root, os.W_OK):
        return f"cgroup {kind} at {root} is not writable (needs root or a delegated subtree)"
    return None


class CpuQuota:
    """``with CpuQuota(0.25) as quota: quota.add(pid)``: at most 0.25 core for that process."""

    def __init__(self, cores: float, name: str | None = None) -> None:
        found = _interface()
        if found is None:
            raise RuntimeError(available() or "no cgroup")
        self.kind, root = found
        self.cores = cores
        self.path = root / (name or f"citytwin-bench-{os.getpid()}-{int(cores * 1000)}")
        self.quota_us = max(1000, int(cores * PERIOD_US))

    def __enter__(self) -> CpuQuota:
        self.path.mkdir(exist_ok=True)
        if self.kind == "v2":
            (self.path / "cpu.max").write_text(f"{self.quota_us} {PERIOD_US}\n")
        else:
            (self.path / "cpu.cfs_period_us").write_text(f"{PERIOD_US}\n")
            (self.path / "cpu.cfs_quota_us").write_text(f"{self.quota_us}\n")
        return self

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(f"{pid}\n")

    def throttled(self) -> dict[str, int]:
        """The kernel's count of periods and of those in which the quota ran out."""
        out: dict[str, int] = {}
        with contextlib.suppress(OSError):
            for line in (self.path / "cpu.stat").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key in ("nr_periods", "nr_throttled"):
                    out[key] = int(value)
        return out

    def __exit__(self, *exc: object) -> None:
        # the processes have exited by now; a cgroup with members cannot be removed, so leave it
        # rather than fail the run (it is empty and harmless, and the name is per harness run)
        with contextlib.suppress(OSError):
            self.path.rmdir()
