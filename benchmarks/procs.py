"""The real processes a benchmark runs: mosquitto, the libmodbus slave, the counting subscriber,
and /proc probes (CPU % of one core, RSS) for whatever process is under test."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CACHE = Path(os.environ.get("CITYTWIN_BENCH_CACHE", Path.home() / ".cache" / "citytwin-bench"))


def byte_compile() -> None:
    """Compile our packages' bytecode before any subject starts, as installing a wheel does (pip
    compiles at install, and ThingsBoard's venv has it). An editable install run with
    PYTHONDONTWRITEBYTECODE (as on these machines) compiles every module from source at each
    start instead: ~0.2 s of CPU before the first poll, 0.8 s of wall time at a quarter core."""
    import compileall
    import importlib

    for name in ("citytwin.gateway", "citytwin.thingmodels", "citytwin.drivers"):
        for path in importlib.import_module(name).__path__:
            compileall.compile_dir(path, quiet=1)


def port_block(count: int = 1) -> int:
    """The first of ``count`` consecutive loopback TCP ports that are free now, for peers that
    must be told their port before they start (mosquitto, N simulated stations on PORT…).

    Why not ``free_port() + 1000``: that lands in the kernel's ephemeral range, where any
    outgoing connection of a test running beside us may take the port before our peer binds
    it ("address already in use"). Ports below the range are never handed out that way, so
    only another listener told the same number could collide, and the block is checked first."""
    low = 32768
    with contextlib.suppress(OSError, ValueError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    rng = random.Random()
    for _ in range(100):
        first = rng.randrange(max(1024, low - 12000), low - count)
        try:
            for port in range(first, first + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    raise RuntimeError(f"no block of {count} free ports below {low}")


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port}")


def stop(proc: subprocess.Popen[Any] | None, timeout: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class ProcStats:
    """CPU (% of one core, children included) and RSS (MB, sampled: peak and last) from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.tick = os.sysconf("SC_CLK_TCK")
        self.rss_peak = 0.0
        self.rss_last = 0.0
        self.start = (self._cpu(), time.monotonic())
        self._sampler: asyncio.Task[None] | None = None

    def _cpu(self) -> float:
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return sum(int(f) for f in fields[11:15]) / self.tick

    def rss_mb(self) -> float:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def reset(self) -> None:
        self.start = (self._cpu(), time.monotonic())
        self.rss_peak = self.rss_last = self.rss_mb()

    def sample(self) -> None:
        self.rss_last = self.rss_mb()
        self.rss_peak = max(self.rss_peak, self.rss_last)

    def cpu_percent(self) -> float:
        cpu0, t0 = self.start
        return 100 * (self._cpu() - cpu0) / max(time.monotonic() - t0, 1e-6)

    def figures(self) -> dict[str, float]:
        self.sample()
        return {"cpu_percent": round(self.cpu_percent(), 1), "rss_mb": round(self.rss_last, 1),
                "rss_peak_mb": round(self.rss_peak, 1)}

    async def run_sampler(self, every: float = 0.25) -> None:
        while True:
            self.sample()
            await asyncio.sleep(every)


class Mosquitto:
    """The hub broker: Nagle off, no persistence, a deep queue (drops are still checked via $SYS)."""

    def __init__(self, work: Path) -> None:
        self.port = port_block()
        work.mkdir(parents=True, exist_ok=True)
        self.conf = work / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n"
            "persistence false\nmax_queued_messages 1000000\nmax_inflight_messages 1000\nsys_interval 1\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([binary, "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def stop(self) -> None:
        stop(self.proc)
        self.proc = None

    @staticmethod
    def version() -> str:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        out = subprocess.run([binary, "-h"], capture_output=True, text=True, check=False).stdout
        return out.splitlines()[0] if out else "unknown"


def build_slave() -> Path:
    """Compile benchmarks/bench_slave.c (once, cached by source mtime); needs gcc and libmodbus-dev."""
    source = HERE / "bench_slave.c"
    binary = CACHE / "bench_slave"
    if binary.exists() and binary.stat().st_mtime >= source.stat().st_mtime:
        return binary
    CACHE.mkdir(parents=True, exist_ok=True)
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "libmodbus"], capture_output=True, text=True, check=False)
    if flags.returncode != 0:
        raise RuntimeError("libmodbus-dev is not installed (pkg-config cannot find libmodbus)")
    build = subprocess.run(["gcc", "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-D_DEFAULT_SOURCE",
                            "-o", str(binary), str(source), *flags.stdout.split()],
                           capture_output=True, text=True, check=False)
    if build.returncode != 0:
        raise RuntimeError(f"building the bench slave failed:\n{build.stderr}")
    return binary


class Slave:
    """The libmodbus bench slave: K changing registers, the sentinel, a command register."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.proc = subprocess.Popen([str(build_slave()), "0", str(k)], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("listening "):
            raise RuntimeError(f"bench slave did not start: {line!r}")
        self.port = int(line.split()[1])

    def stop(self) -> None:
        stop(self.proc)


class Subscriber:
    """benchmarks/subscriber.py as a process; ``mark()`` returns its counters since the last mark."""

    def __init__(self, port: int, topics: list[str], sentinel_words: int = 0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.subscriber", str(port), *topics, "--sentinel-words", str(sentinel_words)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the counting subscriber did not start")

    def mark(self) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("mark\n")
        self.proc.stdin.flush()
        result: dict[str, Any] = orjson.loads(self.proc.stdout.readline())
        return result

    async def amark(self) -> dict[str, Any]:
        return await asyncio.to_thread(self.mark)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                assert self.proc.stdin is not None
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                stop(self.proc)
