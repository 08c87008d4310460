"""``citytwin bench edgebox``: each subject inside a fixed CPU quota, against offered load.

The edge-box profile of issue 13. For each quota (1.0, 0.5, 0.25 core, ``cpuquota.py``) and
each offered load, from well under the box's capacity to about 10× over it, every subject runs
on the same slave, broker and subscriber as the other scenarios (``runner.measure``), one
after another at the same load, so each ratio compares runs minutes apart. Per run: points/s
delivered, polls kept (done/due), poll→hub latency p50/p99 (also in poll periods), RSS,
command round trips under that load (back to back, or ``--command-interval``), seq gaps and broker drops, the CPU used (which the
quota caps) and how often the kernel throttled it, and the machine's load average before and
after (the machine is shared: absolute figures drift, ratios to the naive baseline of the
same run much less).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from benchmarks.cpuquota import CpuQuota, available
from benchmarks.runner import Plan, measure
from benchmarks.subjects import Shape, Subject

QUOTAS = (1.0, 0.5, 0.25)


@dataclass(frozen=True, slots=True)
class Profile:
    loads: tuple[Shape, ...]
    quotas: tuple[float, ...] = QUOTAS
    seconds: float = 10.0
    warmup: float = 3.0
    commands: int = 100
    commands_budget: float = 20.0
    # seconds between command sends; 0 (the default): back to back, each sent when the previous
    # one is answered, as the full-machine ``commands`` scenario and earlier runs do;
    # ``--command-interval 0.05``: 20 a second, an operator's rate under the telemetry load
    command_interval: float = 0.0
    start_timeout: float = 60.0
    # then commands at an operator's rate (20 a second): one command's latency under the
    # telemetry load, rather than the box's command throughput; 300 of them, so that the p99
    # is not the slowest one or two
    paced_commands: int = 300
    paced_interval: float = 0.05

    def describe(self) -> dict[str, Any]:
        return {"loads": [s.label for s in self.loads], "quotas": list(self.quotas), "seconds": self.seconds,
                "warmup": self.warmup, "commands": self.commands, "commands_budget_s": self.commands_budget,
                "command_interval_s": self.command_interval, "paced_commands": self.paced_commands,
                "paced_interval_s": self.paced_interval}


# 100 registers per device, polled every second: 1 k to 100 k points/s offered
FULL = Profile(loads=tuple(Shape(n, 98, 1.0) for n in (10, 30, 100, 300, 1000)))
QUICK = Profile(loads=(Shape(5, 18, 0.1), Shape(40, 18, 0.1)), seconds=1.5, warmup=0.5, commands=10,
                commands_budget=5.0, start_timeout=20.0, paced_commands=10)


def select(profile: Profile, quotas: str | None, loads: str | None, interval: float | None = None) -> Profile:
    """The profile restricted to ``--quotas 0.25,0.5`` and ``--loads 100,1000`` (device counts, in
    the profile's shape), so a change can be measured where it matters in minutes, not 20."""
    if quotas:
        try:
            cores = tuple(float(q) for q in quotas.split(","))
        except ValueError:
            raise ValueError(f"--quotas {quotas!r}: expected cores separated by commas, e.g. 0.25,0.5") from None
        if any(not 0.01 <= c <= 64 for c in cores):
            raise ValueError(f"--quotas {quotas!r}: each quota must be 0.01..64 cores")
        profile = replace(profile, quotas=cores)
    if loads:
        try:
            devices = tuple(int(n) for n in loads.split(","))
        except ValueError:
            raise ValueError(f"--loads {loads!r}: expected device counts separated by commas, e.g. 100,1000") from None
        if any(n < 1 for n in devices):
            raise ValueError(f"--loads {loads!r}: each device count must be at least 1")
        shape = profile.loads[-1]
        profile = replace(profile, loads=tuple(replace(shape, devices=n) for n in devices))
    if interval is not None:
        if not 0 <= interval <= 10:
            raise ValueError(f"--command-interval {interval!r}: must be 0..10 seconds")
        profile = replace(profile, command_interval=interval)
    return profile


async def run(profile: Profile, subjects: list[Subject], work: Path, log: Callable[[str], None]) -> list[dict[str, Any]]:
    why = available()
    if why is not None:
        return [{"subject": s.name, "shape": "edgebox", "error": f"no CPU quota: {why}"} for s in subjects]
    runs: list[dict[str, Any]] = []
    n = 0
    for cores in profile.quotas:
        with CpuQuota(cores) as quota:
            for shape in profile.loads:
                for subject in subjects:
                    n += 1
                    log(f"  {subject.name} {shape.label} at {cores:g} core …")
                    plan = Plan(seconds=profile.seconds, warmup=profile.warmup, start_timeout=profile.start_timeout,
                                commands=profile.commands, commands_budget=profile.commands_budget,
                                command_interval=profile.command_interval,
                                paced_commands=profile.paced_commands, paced_interval=profile.paced_interval)
                    load_before = os.getloadavg()
                    throttled_before = quota.throttled()
                    started = time.monotonic()
                    try:
                        result = await measure(subject, shape, plan, work / f"edgebox{n}", quota)
                    except Exception as exc:  # one failed run must not lose the others' figures
                        result = {"subject": subject.name, "shape": shape.label, "error": f"{type(exc).__name__}: {exc}"}
                    throttled = quota.throttled()
                    result.update({
                        "quota_cores": cores, "wall_s": round(time.monotonic() - started, 1),
                        "offered_points_per_s": round(shape.devices * shape.points_per_poll / shape.period),
                        "load_avg": {"before": [round(x, 2) for x in load_before],
                                     "after": [round(x, 2) for x in os.getloadavg()]},
                        "throttled_periods": {k: throttled.get(k, 0) - throttled_before.get(k, 0)
                                              for k in ("nr_periods", "nr_throttled")},
                    })
                    steady = result.get("steady")
                    p99 = steady.get("latency_p99_ms") if steady else None
                    if p99 is not None:
                        steady["latency_p99_periods"] = round(p99 / (shape.period * 1000), 2)
                    runs.append(result)
    return runs


def _f(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.{digits}g}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _bar(fraction: Any, width: int = 20) -> str:
    if not isinstance(fraction, int | float):
        return ""
    full = max(0, min(width, round(fraction * width)))
    return "█" * full + "·" * (width - full)


def _share(periods: dict[str, int]) -> str:
    """The share of a phase's CFS periods in which the kernel throttled the subject."""
    return f"{periods['nr_throttled'] / periods['nr_periods']:.0%}" if periods.get("nr_periods") else "—"


def table(runs: list[dict[str, Any]]) -> list[str]:
    """The curves as Markdown: one table per quota, a row per offered load and subject."""
    lines: list[str] = []
    errors = [r for r in runs if "quota_cores" not in r]
    for run in errors:
        lines.append(f"- {run['subject']}: {run['error']}")
    quotas = list(dict.fromkeys(r["quota_cores"] for r in runs if "quota_cores" in r))
    for cores in quotas:
        at = [r for r in runs if r.get("quota_cores") == cores]
        lines += ["", f"#### CPU quota {cores:g} core", "",
                  "| offered pts/s | subject | delivered pts/s | vs naive | polls kept | curve (kept) | p50 ms | p99 ms "
                  "| p99 periods | RSS MB | cmd p50 ms | cmd p99 ms | cmds ok/sent | paced cmd p50 / p99 ms "
                  "| seq missing | broker dropped | CPU % | throttled: run / steady / flood / paced | load avg |",
                  "|" + "---|" * 19]
        for offered in dict.fromkeys(r["offered_points_per_s"] for r in at):
            row = [r for r in at if r["offered_points_per_s"] == offered]
            naive = next((r.get("steady", {}).get("points_per_s") for r in row if r["subject"] == "naive"), None)
            for r in row:
                if "error" in r:
                    lines.append(f"| {offered:,} | {r['subject']} | error: {r['error'][:80]} |" + " |" * 16)
                    continue
                st, cm, paced = r.get("steady", {}), r.get("commands", {}), r.get("commands_paced", {})
                delivered = st.get("points_per_s")
                ratio = f"{delivered / naive:.1f}×" if delivered and naive and r["subject"] != "naive" else "—"
                sent = (cm.get("count") or 0) + (cm.get("failed") or 0)
                throttled = " / ".join(_share(part.get("throttled_periods", {}))
                                       for part in (r, st, cm, paced))
                lines.append("| " + " | ".join([
                    f"{offered:,}", r["subject"], _f(delivered), ratio, _f(st.get("polls_kept")),
                    _bar(st.get("polls_kept")), _f(st.get("latency_p50_ms")), _f(st.get("latency_p99_ms")),
                    _f(st.get("latency_p99_periods")), _f(st.get("rss_mb")), _f(cm.get("p50_ms")),
                    _f(cm.get("p99_ms")), f"{cm.get('count', 0)}/{sent}",
                    f"{_f(paced.get('p50_ms'))} / {_f(paced.get('p99_ms'))}", _f(st.get("seq_missing")),
                    _f(st.get("broker_dropped")), _f(st.get("cpu_percent")), throttled,
                    f"{r['load_avg']['before'][0]:.1f}→{r['load_avg']['after'][0]:.1f}",
                ]) + " |")
    lines.append("")
    return lines
