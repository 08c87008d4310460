"""The CPU budget: how much CPU this process may use, and how much it uses (issue 13).

Under a CPU quota the kernel (CFS bandwidth control) lets a process run for ``quota`` µs in
every ``period`` (100 ms by default) and then freezes it, every thread, until the period ends.
A command that arrives then waits up to the rest of the period: at 0.25 core, 75 ms. The
poll gate's lag signal sees that only after the freeze, so it cannot prevent it; keeping the
process's own CPU use below its budget can (``gateway/overload.py``). This module knows the
budget and measures the use:

- **Budget.** The process's CPU quota from its cgroup: cgroup v2 ``cpu.max`` (``"max 100000"``
  or ``"25000 100000"``), cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` under the
  ``cpu`` controller's mount; the cgroup's path comes from ``/proc/self/cgroup`` and its
  mount from ``/proc/self/mountinfo``. Quotas nest (a parent's quota holds its children too),
  so the smallest on the way up to the mount point is the one that counts. Without a quota the
  budget is the number of CPUs this process may run on. ``gateway.cpu_budget`` (cores) caps it
  further for an operator who wants headroom without a cgroup. The cgroup is re-read every few
  seconds, off the hot path (a few small file reads): a benchmark or systemd may move the
  process into its cgroup after it started.
- **Use.** ``time.process_time()`` (all threads: the SQLite writer and the event loop alike)
  per control window, and the cgroup's ``nr_throttled`` (``cpu.stat``): a period in which the
  kernel froze the process is a hard "too much".
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PROC_SELF = Path("/proc/self")
REFRESH = 5.0  # s between re-reads of the cgroup


@dataclass(frozen=True, slots=True)
class Quota:
    cores: float | None  # None: no quota on the way up to the cgroup root
    where: str  # the cgroup directory read (for /status), or why none was
    stat: Path | None  # the cgroup's cpu.stat, for nr_throttled; None: not readable


def _mounts(mountinfo: str) -> list[tuple[str, Path, str, str]]:
    """(fs type, mount point, root within the hierarchy, super options) of each cgroup mount."""
    out = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        after = line.split(" - ", 1)[1].split()
        if len(after) < 3 or after[0] not in ("cgroup", "cgroup2"):
            continue
        out.append((after[0], Path(fields[4].replace("\\040", " ")), fields[3], after[2]))
    return out


def locate(cgroup: str, mountinfo: str) -> tuple[str, Path, Path] | None:
    """The cpu controller's cgroup of this process: ("v1" or "v2", its directory, the mount point).

    ``cgroup`` is the text of /proc/self/cgroup (``"4:cpu,cpuacct:/a/b"``, ``"0::/a/b"``),
    ``mountinfo`` that of /proc/self/mountinfo. A v1 cpu controller wins over v2 (on a hybrid
    machine the v2 tree has no cpu controller)."""
    paths: dict[str, str] = {}
    for line in cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hier, controllers, path = parts
        if hier == "0" and controllers == "":
            paths.setdefault("v2", path)
        elif "cpu" in controllers.split(","):
            paths["v1"] = path
    for kind, fstype in (("v1", "cgroup"), ("v2", "cgroup2")):
        found = paths.get(kind)
        if found is None:
            continue
        path = found
        for mtype, point, root, options in _mounts(mountinfo):
            if mtype != fstype or (kind == "v1" and "cpu" not in options.split(",")):
                continue
            # inside a container the mount's root is the container's cgroup: strip it
            rel = path[len(root):] if root != "/" and path.startswith(root) else path
            directory = point / rel.lstrip("/")
            if kind == "v2" and not (directory / "cpu.max").is_file() and directory != point:
                continue  # the v2 tree without the cpu controller delegated here
            return kind, directory, point
    return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _limit(kind: str, directory: Path) -> float | None:
    """The quota set on this one cgroup directory, in cores; None: none (or unreadable)."""
    if kind == "v2":
        text = _read(directory / "cpu.max")
        if text is None:
            return None
        quota, _, period = text.strip().partition(" ")
        if quota == "max" or not period:
            return None
        return int(quota) / int(period)
    quota_text, period_text = _read(directory / "cpu.cfs_quota_us"), _read(directory / "cpu.cfs_period_us")
    if quota_text is None or period_text is None:
        return None
    quota_us, period_us = int(quota_text), int(period_text)
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def read_quota(proc: Path = PROC_SELF) -> Quota:
    """This process's CPU quota, from its cgroup (the smallest on the way up to the mount)."""
    cgroup, mountinfo = _read(proc / "cgroup"), _read(proc / "mountinfo")
    if cgroup is None or mountinfo is None:
        return Quota(None, f"{proc}/cgroup or mountinfo not readable", None)
    found = locate(cgroup, mountinfo)
    if found is None:
        return Quota(None, "no cgroup cpu controller", None)
    kind, directory, point = found
    cores: float | None = None
    step = directory
    while True:
        try:
            limit = _limit(kind, step)
        except ValueError:  # a file we do not understand: no quota rather than a crash
            limit = None
        if limit is not None and (cores is None or limit < cores):
            cores = limit
        if step == point or point not in step.parents:
            break
        step = step.parent
    stat = directory / "cpu.stat"
    return Quota(cores, f"cgroup {kind} {directory}", stat if stat.is_file() else None)


def throttled_count(stat: Path | None) -> int | None:
    """``nr_throttled`` from a cgroup's cpu.stat (v1 and v2 both have it); None: unreadable."""
    text = _read(stat) if stat is not None else None
    if text is None:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "nr_throttled":
            with contextlib.suppress(ValueError):
                return int(value)
    return None


def cpus() -> int:
    """CPUs this process may run on (its affinity mask, which a cpuset narrows)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class CpuBudget:
    """The budget in cores and the use measured against it, sampled by the poll gate's loop.

    ``configured``: ``gateway.cpu_budget``: "auto" (the quota, else the CPUs), "none" (measure
    and report, but do not hold polls back for CPU) or a number of cores (capped by the
    quota). ``clock`` and ``proc`` are for tests (synthetic CPU time, fixture cgroups)."""

    def __init__(self, configured: float | str = "auto", proc: Path = PROC_SELF,
                 clock: Callable[[], float] = time.process_time,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.configured = configured
        self.proc = proc
        self._clock = clock
        self._now = now
        self.quota: Quota = Quota(None, "not read yet", None)
        self.cores: float | None = None  # the budget the gate keeps under; None: not controlled
        self.throttled = 0  # periods in which the kernel froze this process, since it started here
        self.use = 0.0  # cores used over the last window
        self._read_at = -REFRESH
        self._last_cpu = clock()
        self._last_at = now()
        self._last_nr: int | None = None
        self.refresh()

    def refresh(self) -> None:
        """Re-read the cgroup (it may have changed since the process started)."""
        self.quota = read_quota(self.proc)
        self._read_at = self._now()
        limit = self.quota.cores if self.quota.cores is not None else float(cpus())
        if self.configured == "none":
            self.cores = None
        elif isinstance(self.configured, int | float):
            self.cores = min(float(self.configured), limit)
        else:
            self.cores = limit

    def sample(self) -> tuple[float, int]:
        """(cores used since the last sample, periods throttled since the last sample)."""
        if self._now() - self._read_at >= REFRESH:
            self.refresh()
        cpu, at = self._clock(), self._now()
        elapsed = at - self._last_at
        self.use = (cpu - self._last_cpu) / elapsed if elapsed > 0 else 0.0
        self._last_cpu, self._last_at = cpu, at
        nr = throttled_count(self.quota.stat)
        fresh = 0
        if nr is not None:
            # a new cgroup (moved, or re-created) starts its count again: only growth counts
            if self._last_nr is not None and nr > self._last_nr:
                fresh = nr - self._last_nr
            self._last_nr = nr
        self.throttled += fresh
        return self.use, fresh
