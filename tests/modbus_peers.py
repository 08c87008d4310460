"""Modbus peers for the driver tests: the real libmodbus slave, and what it holds.

``build_slave`` compiles tests/libmodbus/slave.c (once per session, by the caller's
fixture); ``LibmodbusSlave`` runs it on a loopback port. ``SLAVE_POINTS`` mirrors the map
the C source preloads: keep both in step.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

SOURCE_DIR = Path(__file__).resolve().parent / "libmodbus"

# point name -> (binding, the value the slave holds)
SLAVE_POINTS: dict[str, tuple[dict[str, Any], Any]] = {
    "coil0": ({"table": "coil", "address": 0}, True),
    "coil1": ({"table": "coil", "address": 1}, False),
    "coil2": ({"table": "coil", "address": 2}, True),
    "coil3": ({"table": "coil", "address": 3}, True),
    "coil10": ({"table": "coil", "address": 10}, True),
    "coil63": ({"table": "coil", "address": 63}, True),
    "di0": ({"table": "discrete_input", "address": 0}, False),
    "di1": ({"table": "discrete_input", "address": 1}, True),
    "di5": ({"table": "discrete_input", "address": 5}, True),
    "di7": ({"table": "discrete_input", "address": 7}, True),
    "u16": ({"table": "holding_register", "address": 0}, 1234),
    "i16": ({"table": "holding_register", "address": 1, "type": "int16"}, -2),
    "u16_of_i16": ({"table": "holding_register", "address": 1}, 65534),
    "f32_big": ({"table": "holding_register", "address": 2, "type": "float32"}, 21.75),
    "f32_little": (
        {"table": "holding_register", "address": 4, "type": "float32", "word_order": "little"},
        -1234.5,
    ),
    "i32_big": ({"table": "holding_register", "address": 6, "type": "int32"}, -123456),
    "u32_big": ({"table": "holding_register", "address": 8, "type": "uint32"}, 3_000_000_000),
    "i32_little": (
        {"table": "holding_register", "address": 10, "type": "int32", "word_order": "little"},
        -123456,
    ),
    "f64_big": ({"table": "holding_register", "address": 12, "type": "float64"}, 1234.5678),
    "i64_big": ({"table": "holding_register", "address": 16, "type": "int64"}, -5),
    "u64_little": (
        {"table": "holding_register", "address": 20, "type": "uint64", "word_order": "little"},
        0x0102030405060708,
    ),
    "ir0": ({"table": "input_register", "address": 0}, 1000),
    "ir1": ({"table": "input_register", "address": 1}, 1001),
    "ir_f32_big": ({"table": "input_register", "address": 50, "type": "float32"}, -0.5),
    "ir_f32_little": (
        {"table": "input_register", "address": 52, "type": "float32", "word_order": "little"},
        3.1415927410125732,  # 3.14159274f as a double
    ),
}
# holding registers 30..199 hold 3 * address; input registers 0..99 hold 1000 + address
# (but for 50..53); everything past the map answers exception 2.
HOLDING_PATTERN = range(30, 200)
INPUT_REGISTERS = range(100)
COILS = range(64)


def build_slave(out_dir: Path) -> Path:
    """Compile the slave into ``out_dir``; skips the test when libmodbus-dev is missing."""
    if shutil.which("gcc") is None or shutil.which("pkg-config") is None:
        pytest.skip("gcc and pkg-config are needed to build the libmodbus slave")
    if subprocess.run(["pkg-config", "--exists", "libmodbus"], check=False).returncode != 0:
        pytest.skip("libmodbus-dev is not installed (pkg-config cannot find libmodbus)")
    binary = out_dir / "modbus-slave"
    build = subprocess.run(
        ["sh", str(SOURCE_DIR / "build.sh"), str(binary)],
        check=False,
        capture_output=True,
        text=True,
    )
    if build.returncode != 0:
        pytest.fail(f"building the libmodbus slave failed:\n{build.stderr}")
    return binary


class LibmodbusSlave:
    """The compiled slave as a subprocess; port 0 lets it pick a free one."""

    def __init__(self, binary: Path, port: int = 0) -> None:
        self.binary = binary
        self.port = port
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [str(self.binary), str(self.port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the slave prints it once it listens
        if not line.startswith("listening "):
            self.proc.wait(5)
            stderr = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"libmodbus slave did not start: {line!r} {stderr!r}")
        self.port = int(line.split()[1])

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()
            self.proc = None
