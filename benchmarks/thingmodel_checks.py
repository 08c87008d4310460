"""Property values checked per second: the compiled thing-model checkers against pydantic.

The gateway checks every reported value and every command input against the model. Ours are
closures compiled once per data type; the baseline is what one would write with pydantic: a
``TypeAdapter`` per property (range, enum and length constraints, strict types) and, per
device report, one ``BaseModel`` with a field per property. Both run in this process, on one
core, on the same values: every property of the standard library's models, mostly valid, one
value in twenty out of range. Prints a table and writes a JSON record to
``benchmarks/results/``. Usage::

    python -m benchmarks.thingmodel_checks [--values 200000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    create_model,
)

from citytwin.thingmodels.checks import DOUBLE_MAX, FLOAT32_MAX, INT32_MAX, INT32_MIN
from citytwin.thingmodels.library import library_names, load_library_model
from citytwin.thingmodels.types import DataType, Kind, Property, ThingModel

ROOT = Path(__file__).resolve().parent.parent


def pydantic_type(dt: DataType) -> Any:
    """The pydantic annotation enforcing what the thing model enforces."""
    kind = dt.type
    if kind is Kind.INT:
        low = INT32_MIN if dt.min is None else dt.min
        high = INT32_MAX if dt.max is None else dt.max
        return Annotated[StrictInt, Field(ge=low, le=high)]
    if kind is Kind.FLOAT or kind is Kind.DOUBLE:
        limit = FLOAT32_MAX if kind is Kind.FLOAT else DOUBLE_MAX
        low = -limit if dt.min is None else dt.min
        high = limit if dt.max is None else dt.max
        return Annotated[StrictFloat | StrictInt, Field(ge=low, le=high, allow_inf_nan=False)]
    if kind is Kind.BOOL:
        return StrictBool | Literal[0, 1]
    if kind is Kind.ENUM:
        return Literal[tuple(dt.names)]
    if kind is Kind.TEXT:
        return Annotated[StrictStr, Field(max_length=dt.length)]
    if kind is Kind.DATE:
        return Annotated[StrictStr, Field(pattern=r"^[0-9]{1,15}$")] | Annotated[StrictInt, Field(ge=0, le=253402300799999)]
    if kind is Kind.STRUCT:
        fields: dict[str, Any] = {f.identifier: (pydantic_type(f.data_type), ...) for f in dt.fields}
        return create_model("Struct", __config__=ConfigDict(extra="forbid"), **fields)
    assert dt.item is not None
    return Annotated[list[pydantic_type(dt.item)], Field(max_length=dt.size)]  # type: ignore[misc]


def sample(dt: DataType, rng: random.Random, bad: bool) -> Any:
    """A value of ``dt``; out of range when ``bad`` (for types that have a range)."""
    kind = dt.type
    if kind in (Kind.INT, Kind.FLOAT, Kind.DOUBLE):
        low = dt.min if dt.min is not None else (0 if kind is Kind.INT else -1e6)
        high = dt.max if dt.max is not None else (1000 if kind is Kind.INT else 1e6)
        if bad:
            return high + 1
        value = rng.uniform(low, high)
        return round(value) if kind is Kind.INT else value
    if kind is Kind.BOOL:
        return rng.random() < 0.5
    if kind is Kind.ENUM:
        return max(dt.names) + 1 if bad else rng.choice(list(dt.names))
    if kind is Kind.TEXT:
        return "x" * ((dt.length or 0) + 1) if bad else "message text"
    if kind is Kind.DATE:
        return str(1_764_000_000_000 + rng.randrange(10**9))
    if kind is Kind.STRUCT:
        return {f.identifier: sample(f.data_type, rng, False) for f in dt.fields}
    assert dt.item is not None
    return [sample(dt.item, rng, False) for _ in range(min(dt.size or 1, 4))]


def workload(count: int, seed: int) -> list[tuple[ThingModel, Property, Any]]:
    rng = random.Random(seed)
    props = [(m, p) for m in map(load_library_model, library_names()) for p in m.properties.values()]
    return [(m, p, sample(p.data_type, rng, i % 20 == 19)) for i, (m, p) in enumerate(props[i % len(props)] for i in range(count))]


def best_rate(run: Callable[[], int], repeat: int) -> tuple[float, int]:
    """Values per second of the fastest of ``repeat`` runs, and the values each run checked."""
    best, checked = float("inf"), 0
    for _ in range(repeat):
        start = time.perf_counter()
        checked = run()
        best = min(best, time.perf_counter() - start)
    return checked / best, checked


def measure(values: int, repeat: int, seed: int) -> dict[str, Any]:
    work = workload(values, seed)
    # per value: one checker call (ours) or one TypeAdapter validation (pydantic)
    ours = [(p.check, v) for _, p, v in work]
    adapters = {id(p): TypeAdapter(pydantic_type(p.data_type)) for _, p, _ in work}
    theirs = [(adapters[id(p)].validate_python, v) for _, p, v in work]

    def run_ours() -> int:
        rejected = 0
        for check, value in ours:
            if check(value) is not None:
                rejected += 1
        return len(ours)

    def run_pydantic() -> int:
        for validate, value in theirs:
            try:
                validate(value)
            except ValidationError:
                pass
        return len(theirs)

    # per device report: every property of one model at once
    reports: list[tuple[ThingModel, dict[str, Any]]] = []
    current: dict[str, Any] = {}
    last: ThingModel | None = None
    for model, prop, value in work:
        if model is not last and last is not None and current:
            reports.append((last, current))
            current = {}
        current[prop.identifier] = value
        last = model
    if last is not None and current:
        reports.append((last, current))
    classes: dict[str, type[BaseModel]] = {}
    for model in {m.product_key: m for m, _ in reports}.values():
        fields: dict[str, Any] = {
            key.replace(":", "__"): (pydantic_type(p.data_type) | None, None) for key, p in model.properties.items()
        }
        classes[model.product_key] = create_model("Report", __config__=ConfigDict(extra="forbid"), **fields)
    theirs_reports = [
        (classes[m.product_key].model_validate, {k.replace(":", "__"): v for k, v in values.items()}, len(values))
        for m, values in reports
    ]
    ours_reports = [(m.properties, values) for m, values in reports]

    def run_ours_reports() -> int:
        count = 0
        for properties, values in ours_reports:
            for key, value in values.items():
                properties[key].check(value)
            count += len(values)
        return count

    def run_pydantic_reports() -> int:
        count = 0
        for validate, values, size in theirs_reports:
            try:
                validate(values)
            except ValidationError:
                pass
            count += size
        return count

    rejected = sum(1 for check, value in ours if check(value) is not None)
    rates = {
        "ours_per_value": best_rate(run_ours, repeat)[0],
        "pydantic_per_value": best_rate(run_pydantic, repeat)[0],
        "ours_per_report": best_rate(run_ours_reports, repeat)[0],
        "pydantic_per_report": best_rate(run_pydantic_reports, repeat)[0],
    }
    return {"values": len(work), "rejected": rejected, "reports": len(reports), "rates": rates}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--values", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    result = measure(args.values, args.repeat, args.seed)
    rates = result["rates"]
    print(f"{result['values']} values ({result['rejected']} out of range) over {len(library_names())} library models, "
          f"{result['reports']} device reports; best of {args.repeat}, one core")
    print(f"{'checker':<28}{'values/s':>14}{'vs pydantic':>14}")
    for label, key, base in (
        ("ours, per value", "ours_per_value", "pydantic_per_value"),
        ("pydantic, per value", "pydantic_per_value", "pydantic_per_value"),
        ("ours, per report", "ours_per_report", "pydantic_per_report"),
        ("pydantic, per report", "pydantic_per_report", "pydantic_per_report"),
    ):
        print(f"{label:<28}{rates[key]:>14,.0f}{rates[key] / rates[base]:>13.1f}x")
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H%M%SZ")
    record = {
        "benchmark": "thingmodel_checks",
        "time": stamp,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "args": {"values": args.values, "repeat": args.repeat, "seed": args.seed},
        **result,
    }
    args.output.mkdir(parents=True, exist_ok=True)
    out = args.output / f"thingmodel_checks-{stamp}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
