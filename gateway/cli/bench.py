"""``citytwin bench``: the benchmark harness, from a source checkout.

The harness lives in the repository's ``benchmarks/`` folder, not in the wheel: it compiles
a C libmodbus slave, starts mosquitto and installs ThingsBoard IoT Gateway into a virtual
environment of its own, which are tools for developers and release checks, not for an edge
box. From an editable install (``pip install -e .``) this command finds the checkout next to
the package; from a wheel it says so and exits 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

SCENARIOS = ("throughput", "latency", "commands", "memory", "recovery", "startup")
# run only when named: every subject at three CPU quotas and five offered loads (issue 13)
PROFILES = ("edgebox",)


def checkout() -> Path | None:
    """The source checkout this package runs from, if it has the harness."""
    root = Path(__file__).resolve().parents[2]  # gateway/cli/bench.py -> the checkout
    return root if (root / "benchmarks" / "harness.py").is_file() else None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    root = checkout()
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                        help=f"any of {', '.join(SCENARIOS)} (default: all of these), or {', '.join(PROFILES)}: "
                             "each subject inside a CPU quota of 1, 0.5 and 0.25 core against offered load")
    parser.add_argument("--quick", action="store_true", help="small shapes and short windows: every scenario in under a minute")
    parser.add_argument("--subjects", default=None,
                        help="comma-separated from citytwin,naive,thingsboard (default: all three; --quick: citytwin,naive)")
    parser.add_argument("--quotas", default=None, metavar="CORES,…",
                        help="edgebox only: the CPU quotas to run, e.g. 0.25,0.5 (default: 1,0.5,0.25)")
    parser.add_argument("--loads", default=None, metavar="DEVICES,…",
                        help="edgebox only: the offered loads to run, as device counts of the profile's shape, "
                             "e.g. 100,1000 (default: 10,30,100,300,1000 devices × 100 registers every second)")
    parser.add_argument("--command-interval", type=float, default=None, metavar="SECONDS",
                        help="edgebox only: seconds between command sends (default: 0, back to back, each sent "
                             "when the previous one is answered; 0.05: 20 a second)")
    parser.add_argument("--output", type=Path, default=(root / "benchmarks" / "results") if root else Path("bench-results"),
                        help="where the JSON record and the Markdown summary go")


def cmd_bench(args: argparse.Namespace) -> int:
    root = checkout()
    if root is None:
        print("citytwin bench needs a source checkout (benchmarks/ is not part of the wheel): "
              "pip install -e . from a clone of the repository", file=sys.stderr)
        return 2
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    harness: Any = importlib.import_module("benchmarks.harness")
    return int(harness.run(args))


def add_bench_commands(sub: Any) -> None:
    bench = sub.add_parser("bench", help="measure throughput, latency, commands, memory, recovery and start-up "
                                         "against a naive baseline and ThingsBoard IoT Gateway")
    add_arguments(bench)
    bench.set_defaults(func=cmd_bench)
