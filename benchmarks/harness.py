"""``citytwin bench [SCENARIO…] [--quick]``: the six scenarios of issue 7, side by side, and
the edge-box profile of issue 13 (``edgebox``, named explicitly: every subject inside a fixed
CPU quota against offered load; see ``edgebox.py``).

Every figure comes from real processes over loopback (see ``runner.py``) and carries the
gateway process's CPU (% of one core) and RSS. Subjects run one after another on the same
machine in the same invocation, so their ratios are comparable even where absolute numbers
drift. Writes ``benchmarks/results/bench-<time>.json`` (machine, versions, parameters,
figures) and ``.md`` (the tables), and prints the table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib.metadata import version as pkg_version
from pathlib import Path
from typing import Any

import orjson

from benchmarks import edgebox, thingsboard
from benchmarks.procs import Mosquitto, byte_compile
from benchmarks.runner import Plan, measure
from benchmarks.subjects import Citytwin, CitytwinFleet, Naive, PumpStations, Shape, Subject
from benchmarks.thingsboard import ThingsBoard
from citytwin.gateway.cli.bench import PROFILES, SCENARIOS, add_arguments


@dataclass(frozen=True, slots=True)
class Settings:
    throughput: tuple[Shape, ...]
    sim: Shape  # citytwin on our pump-station simulators
    latency: Shape  # ~10 k points/s; commands run under the same load
    big: Shape  # memory and start-up: 1,000 devices × 100 points
    recovery: Shape
    seconds: float
    warmup: float
    commands: int
    outage: float
    edgebox: edgebox.Profile
    # how long a subject may take to bring every device up, and to drain after an outage (not
    # told by identity with FULL: ``--quotas``/``--loads`` make a new Settings)
    start_timeout: float = 60.0
    drain_timeout: float = 90.0


FULL = Settings(
    throughput=(Shape(50, 20, 0.1), Shape(100, 100, 0.1), Shape(1000, 100, 1.0)), sim=Shape(50, 17, 0.1, "sim"),
    latency=Shape(50, 18, 0.1), big=Shape(1000, 100, 1.0), recovery=Shape(100, 98, 1.0),
    seconds=10.0, warmup=3.0, commands=1000, outage=60.0, edgebox=edgebox.FULL,
)
QUICK = Settings(
    throughput=(Shape(10, 20, 0.1),), sim=Shape(3, 17, 0.1, "sim"), latency=Shape(10, 18, 0.1), big=Shape(100, 100, 1.0),
    recovery=Shape(10, 20, 0.2), seconds=1.5, warmup=0.5, commands=20, outage=1.5, edgebox=edgebox.QUICK,
    start_timeout=20.0, drain_timeout=15.0,
)


def versions() -> dict[str, Any]:
    out: dict[str, Any] = {"python": platform.python_version(), "mosquitto": Mosquitto.version()}
    for name in ("citytwin-gateway", "pymodbus", "aiomqtt", "paho-mqtt", "orjson", "uvloop"):
        try:
            out[name] = pkg_version(name)
        except Exception:  # importlib's PackageNotFoundError, or a broken dist-info
            out[name] = None
    out["thingsboard-gateway"] = thingsboard.version()
    return out


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu": model, "platform": platform.platform(),
            "load_avg_at_start": os.getloadavg(), "load_avg_now": os.getloadavg()}


class Bench:
    def __init__(self, settings: Settings, subjects: list[Subject], work: Path, log: Callable[[str], None]) -> None:
        self.settings = settings
        self.subjects = subjects
        self.work = work
        self.log = log
        self.runs: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.n = 0

    async def run(self, subject: Subject, shape: Shape, plan: Plan, kind: str) -> dict[str, Any]:
        key = (subject.name, shape.label, kind)
        if key not in self.runs:
            self.n += 1
            self.log(f"  {subject.name} {shape.label} ({kind}) …")
            started = time.monotonic()
            try:
                result = await measure(subject, shape, plan, self.work / f"run{self.n}")
            except Exception as exc:  # one failed run must not lose the others' figures
                result = {"subject": subject.name, "shape": shape.label, "error": f"{type(exc).__name__}: {exc}"}
            result["wall_s"] = round(time.monotonic() - started, 1)
            self.runs[key] = result
        return self.runs[key]

    def plan(self, **changes: Any) -> Plan:
        s = self.settings
        return replace(Plan(seconds=s.seconds, warmup=s.warmup, start_timeout=s.start_timeout,
                            drain_timeout=s.drain_timeout), **changes)

    async def scenario(self, name: str) -> list[dict[str, Any]]:
        s = self.settings
        if name == "edgebox":
            return await edgebox.run(s.edgebox, self.subjects, self.work, self.log)
        out = []
        for subject in self.subjects:
            if name == "throughput":
                for shape in s.throughput:
                    out.append(await self.run(subject, shape, self.plan(), "steady"))
                if subject.name == "citytwin":
                    out.append(await self.run(PumpStations(), s.sim, self.plan(), "steady"))
            elif name in ("latency", "commands"):
                out.append(await self.run(subject, s.latency, self.plan(commands=s.commands), "latency"))
            elif name in ("memory", "startup"):
                kind = "steady" if s.big in s.throughput else "big"
                out.append(await self.run(subject, s.big, self.plan(), kind))
            elif name == "recovery":
                out.append(await self.run(subject, s.recovery, self.plan(outage=s.outage), "recovery"))
        return out


# --- reporting ---------------------------------------------------------------------------

def _get(run: dict[str, Any], path: str) -> Any:
    value: Any = run
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


ROWS: dict[str, list[tuple[str, str, bool]]] = {
    # (label, path in the run, higher is better)
    "throughput": [("points/s delivered", "steady.points_per_s", True), ("polls kept (done/due)", "steady.polls_kept", True),
                   ("CPU % of a core", "steady.cpu_percent", False), ("RSS MB", "steady.rss_mb", False),
                   ("p50 poll→hub ms", "steady.latency_p50_ms", False), ("broker dropped", "steady.broker_dropped", False)],
    "latency": [("p50 poll→hub ms", "steady.latency_p50_ms", False), ("p99 poll→hub ms", "steady.latency_p99_ms", False),
                ("points/s delivered", "steady.points_per_s", True), ("CPU % of a core", "steady.cpu_percent", False),
                ("RSS MB", "steady.rss_mb", False)],
    "commands": [("round trip p50 ms", "commands.p50_ms", False), ("round trip p99 ms", "commands.p99_ms", False),
                 ("answered", "commands.count", True), ("CPU % of a core", "commands.cpu_percent", False),
                 ("RSS MB", "commands.rss_mb", False)],
    "memory": [("RSS MB (steady)", "steady.rss_mb", False), ("RSS MB (peak)", "steady.rss_peak_mb", False),
               ("points/s delivered", "steady.points_per_s", True), ("CPU % of a core", "steady.cpu_percent", False)],
    "recovery": [("recovered fraction", "recovery.recovered_fraction", True),
                 ("drain points/s (replay lane)", "recovery.drain_points_per_s", True),
                 ("broker up → back to live s", "recovery.catch_up_s", False),
                 ("backlog points/s while catching up", "recovery.catch_up_points_per_s", True),
                 ("live points/s while draining", "recovery.live_points_per_s_during_drain", True),
                 ("seq missing", "recovery.seq_missing", False), ("CPU % of a core", "recovery.cpu_percent", False),
                 ("RSS MB", "recovery.rss_peak_mb", False)],
    "startup": [("spawn → first point s", "startup.first_point_s", False),
                ("spawn → every device s", "startup.all_devices_s", False), ("RSS MB", "startup.rss_mb", False)],
}


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _ratio(ours: Any, other: Any, higher_better: bool) -> str:
    """How many times better citytwin is (>1: citytwin ahead)."""
    if not isinstance(ours, int | float) or not isinstance(other, int | float) or not ours or not other:
        return "—"
    return f"{(ours / other) if higher_better else (other / ours):.1f}×"


def tables(results: dict[str, list[dict[str, Any]]], subjects: list[str]) -> str:
    others = [s for s in subjects if s != "citytwin"]
    lines: list[str] = []
    for scenario, runs in results.items():
        if scenario == "edgebox":
            lines += ["### edgebox (CPU quota per subject; ratios against the naive baseline at the same "
                      "quota and load, same run)", *edgebox.table(runs)]
            continue
        shapes = list(dict.fromkeys(r["shape"] for r in runs))
        header = ["shape", "figure", "citytwin", *(x for o in others for x in (o, f"citytwin vs {o}"))]
        lines += [f"### {scenario}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for shape in shapes:
            by = {r["subject"]: r for r in runs if r["shape"] == shape}
            for label, path, higher in ROWS[scenario]:
                ours = _get(by.get("citytwin", {}), path)
                cells = [shape, label, _fmt(ours)]
                for other in others:
                    run = by.get(other, {})
                    value = _get(run, path) if "error" not in run else run["error"][:60]
                    cells += [_fmt(value), _ratio(ours, value, higher)]
                lines.append("| " + " | ".join(cells) + " |")
            for subject, run in by.items():
                if "error" in run:
                    lines.append(f"| {shape} | error ({subject}) | {run['error']} |" + " |" * (len(header) - 3))
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="citytwin bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


def record(args: argparse.Namespace, settings: Settings, started: str, names: list[str], scenarios: list[str],
           notes: list[str], results: dict[str, list[dict[str, Any]]], machine_: dict[str, Any]) -> dict[str, Any]:
    machine_["load_avg_now"] = os.getloadavg()
    return {
        "benchmark": "bench", "when": started, "quick": args.quick, "machine": machine_, "versions": versions(),
        "subjects": names, "scenarios": scenarios, "notes": notes,
        "settings": {"throughput": [s.label for s in settings.throughput], "sim": settings.sim.label,
                     "latency": settings.latency.label, "big": settings.big.label,
                     "recovery": settings.recovery.label, "seconds": settings.seconds,
                     "warmup": settings.warmup, "commands": settings.commands, "outage_s": settings.outage,
                     "edgebox": settings.edgebox.describe()},
        "results": results,
    }


def write(stem: Path, rec: dict[str, Any], notes: list[str]) -> str:
    """Write the JSON record and the Markdown summary; returns the tables."""
    stem.with_suffix(".json").write_bytes(orjson.dumps(rec, option=orjson.OPT_INDENT_2))
    text = tables(rec["results"], rec["subjects"])
    machine_, quick = rec["machine"], " (quick)" if rec["quick"] else ""
    summary = [f"# citytwin bench {rec['when']}{quick}", "",
               f"Machine: {machine_['cpus']} CPUs, {machine_['cpu']}; load average "
               f"{' '.join(f'{x:.1f}' for x in machine_['load_avg_at_start'])} at the start, "
               f"{' '.join(f'{x:.1f}' for x in machine_['load_avg_now'])} at the end; "
               f"versions: {', '.join(f'{k} {v}' for k, v in rec['versions'].items())}.", "",
               "Ratios are citytwin's advantage (>1× means citytwin is better), measured in the same run.", "",
               *[f"> {n}" for n in notes], "", text]
    stem.with_suffix(".md").write_text("\n".join(summary))
    return text


def run(args: argparse.Namespace) -> int:
    unknown = [s for s in args.scenarios if s not in SCENARIOS + PROFILES]
    if unknown:
        print(f"unknown scenario(s): {', '.join(unknown)}; choose from {', '.join(SCENARIOS + PROFILES)}",
              file=sys.stderr)
        return 2
    scenarios = args.scenarios or list(SCENARIOS)
    settings = QUICK if args.quick else FULL
    try:
        settings = replace(settings, edgebox=edgebox.select(settings.edgebox, getattr(args, "quotas", None),
                                                            getattr(args, "loads", None),
                                                            getattr(args, "command_interval", None)))
    except ValueError as exc:
        print(f"citytwin bench: {exc}", file=sys.stderr)
        return 2
    names = (args.subjects or ("citytwin,naive" if args.quick else "citytwin,naive,thingsboard")).split(",")
    available: dict[str, Subject] = {"citytwin": Citytwin(), "citytwin-fleet": CitytwinFleet(), "naive": Naive(),
                                     "thingsboard": ThingsBoard()}
    notes: list[str] = []
    if "thingsboard" in names:
        why = thingsboard.ensure_venv(install=not args.quick)
        if why is not None:
            names.remove("thingsboard")
            notes.append(f"ThingsBoard IoT Gateway was not measured: {why}")
            print(notes[-1], file=sys.stderr)
    subjects = [available[n] for n in names]
    byte_compile()
    notes.append("our packages were byte-compiled before the runs, as a wheel install is")
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    stem = args.output / f"bench-{started.replace(':', '')}{'-quick' if args.quick else ''}"
    args.output.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict[str, Any]]] = {}
    machine_ = machine()
    with tempfile.TemporaryDirectory(prefix="citytwin-bench-") as tmp:
        bench = Bench(settings, subjects, Path(tmp), lambda text: print(text, flush=True))
        for scenario in scenarios:
            print(f"{scenario}:", flush=True)
            results[scenario] = asyncio.run(bench.scenario(scenario))
            write(stem, record(args, settings, started, names, scenarios, notes, results, machine_), notes)  # partial
    text = write(stem, record(args, settings, started, names, scenarios, notes, results, machine_), notes)
    print(text)
    for note in notes:
        print(note)
    print(f"record: {stem.with_suffix('.json')}\nsummary: {stem.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
