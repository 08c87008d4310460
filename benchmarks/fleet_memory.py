"""Memory and time of a fleet's compiled config: one template against devices written out.

What is measured: the gateway's config path in a fresh Python process per case, as
``citytwin run`` takes it before the first device starts (``bootstrap.prepare_file``: parse,
expand templates and inventory, validate, compile against the thing model), then a garbage
collection. Figures: the process's RSS after importing the gateway (the floor), after the
config (its cost is the difference), the peak (VmHWM) and the wall time. No devices run, no
broker is needed: runners, drivers and twins add the same per device in both forms.

Cases, in the same run:

- ``flat``: N devices x K points, each device carrying its whole point map in ``devices``
  (the baseline: what a 1,000-device config looked like before templates);
- ``template``: the same devices from one template, listed in a CSV inventory (one row each);
- ``template-2x``: twice the devices, for the growth per extra device;
- ``inventory``: a 10,000-row inventory, for the time to validate it.

Prints a table and writes a JSON record to ``benchmarks/results/``. Usage::

    python -m benchmarks.fleet_memory [--devices 1000] [--points 100] [--rows 10000]
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _model(k: int) -> dict[str, Any]:
    def prop(name: str, access: str = "r") -> dict[str, Any]:
        return {"identifier": name, "name": name, "accessMode": access, "required": False,
                "dataType": {"type": "int", "specs": {"min": "0", "max": "65535", "step": "1"}}}

    return {
        "schema": "https://iotx-tsl.oss-ap-southeast-1.aliyuncs.com/schema.json",
        "profile": {"productKey": "citytwin.bench.fleet", "version": "1.0"},
        "properties": [*(prop(f"r_{i}") for i in range(k - 1)), prop("setpoint", "rw")],
        "events": [],
        "services": [{
            "identifier": "set_point", "name": "set_point", "callType": "sync", "required": False,
            "method": "thing.service.set_point",
            "inputData": [{"identifier": "value", "name": "value",
                           "dataType": {"type": "int", "specs": {"min": "0", "max": "65535", "step": "1"}}}],
            "outputData": [],
        }],
    }


def _binding(k: int) -> dict[str, Any]:
    points: dict[str, Any] = {f"r_{i}": {"table": "holding_register", "address": i, "type": "uint16", "deadband": 1}
                              for i in range(k - 1)}
    points["setpoint"] = {"table": "holding_register", "address": k, "type": "uint16"}
    return {
        "model": "model.json", "driver": "modbus-tcp", "poll_period": 1.0, "points": points,
        "services": {"set_point": {"writes": [{"point": "setpoint", "value": "$value"}]}},
        "interlocks": [{"services": ["set_point"], "max_change": {"input": "value", "property": "setpoint",
                                                                  "limit": 100}}],
    }


def write_config(work: Path, case: str, devices: int, k: int) -> Path:
    """The config of one case, written to ``work``."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "model.json").write_text(json.dumps(_model(k)))
    doc: dict[str, Any] = {"gateway": {"id": "bench-fleet", "data_dir": str(work / "data")},
                           "http": {"enabled": False}}
    if case == "flat":
        doc["devices"] = [{"id": f"dev-{i:05d}", **_binding(k),
                           "connection": {"host": f"10.0.{i // 250}.{i % 250 + 1}", "port": 502, "unit": 1}}
                          for i in range(devices)]
    else:
        doc["templates"] = {"registers": {**_binding(k), "connection": {"port": 502, "unit": 1}}}
        doc["inventory"] = "inventory.csv"
        rows = ["id,template,host,uid,latitude,longitude,tags"]
        rows += [f"dev-{i:05d},registers,10.0.{i // 250}.{i % 250 + 1},A-{i:08d},39.9{i % 1000:03d},116.3{i % 997:03d},"
                 f"district=d{i % 16}" for i in range(devices)]
        (work / "inventory.csv").write_text("\n".join(rows) + "\n")
    path = work / "gateway.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def child(path: Path) -> dict[str, Any]:
    """In the child process: load the config as the gateway does and measure."""
    from citytwin.gateway.bootstrap import prepare_file

    gc.collect()
    floor = _status_kb("VmRSS")
    started = time.perf_counter()
    _config, specs = prepare_file(path)  # both kept alive while measured
    seconds = time.perf_counter() - started
    gc.collect()
    rss = _status_kb("VmRSS")
    shared_maps = len({id(s.points) for s in specs.values()})
    return {"devices": len(specs), "points": sum(len(s.points) for s in specs.values()),
            "distinct_point_maps": shared_maps, "seconds": round(seconds, 3),
            "rss_floor_mb": round(floor / 1024, 1), "rss_mb": round(rss / 1024, 1),
            "config_mb": round((rss - floor) / 1024, 1), "peak_mb": round(_status_kb("VmHWM") / 1024, 1)}


def run_case(case: str, devices: int, k: int, work: Path) -> dict[str, Any]:
    path = write_config(work / case, case.removesuffix("-2x"), devices, k)
    out = subprocess.run([sys.executable, "-m", "benchmarks.fleet_memory", "--child", str(path)],
                         capture_output=True, text=True, cwd=ROOT, timeout=900, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{case}: {out.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return {"case": case, "config_bytes": path.stat().st_size + sum(
        p.stat().st_size for p in path.parent.glob("*.csv")), **result}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--points", type=int, default=100)
    parser.add_argument("--rows", type=int, default=10_000, help="rows of the inventory timing case (0: skip)")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args.child)))
        return 0
    n, k = args.devices, args.points
    with tempfile.TemporaryDirectory(prefix="fleet-memory-") as tmp:
        work = Path(tmp)
        cases = [run_case("flat", n, k, work), run_case("template", n, k, work),
                 run_case("template-2x", 2 * n, k, work)]
        if args.rows:
            cases.append(run_case("inventory", args.rows, k, work))
    by = {c["case"]: c for c in cases}
    flat, tpl, tpl2 = by["flat"], by["template"], by["template-2x"]
    per_device_kb = (tpl2["rss_mb"] - tpl["rss_mb"]) * 1024 / n
    ratios = {"rss": round(tpl["rss_mb"] / flat["rss_mb"], 2), "config_mb": round(tpl["config_mb"] / flat["config_mb"], 3)
              if flat["config_mb"] else None, "seconds": round(tpl["seconds"] / flat["seconds"], 3)}
    print(f"compiled config, {n} devices x {k} points (fresh process per case; RSS after gc)")
    print(f"{'case':<14}{'devices':>9}{'file kB':>10}{'load s':>9}{'RSS MB':>9}{'config MB':>11}{'peak MB':>9}"
          f"{'point maps':>12}")
    for c in cases:
        print(f"{c['case']:<14}{c['devices']:>9}{c['config_bytes'] / 1024:>10.0f}{c['seconds']:>9.2f}{c['rss_mb']:>9.1f}"
              f"{c['config_mb']:>11.1f}{c['peak_mb']:>9.1f}{c['distinct_point_maps']:>12}")
    print(f"template vs flat: RSS {ratios['rss']}x, config memory {ratios['config_mb']}x, load time {ratios['seconds']}x; "
          f"growth per extra templated device {per_device_kb:.1f} kB")
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H%M%SZ")
    record = {"benchmark": "fleet_memory", "time": stamp, "python": sys.version.split()[0],
              "platform": platform.platform(), "cpus": os.cpu_count(),
              "measured": "bootstrap.prepare_file in a fresh process per case, RSS after gc.collect()",
              "args": {"devices": n, "points": k, "rows": args.rows}, "cases": cases, "ratios": ratios,
              "growth_per_device_kb": round(per_device_kb, 2)}
    args.output.mkdir(parents=True, exist_ok=True)
    out = args.output / f"fleet_memory-{stamp}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
