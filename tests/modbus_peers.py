"""Modbus peers for the driver tests: the real libmodbus slave, and what it holds.

``build_slave`` compiles tests/libmodbus/slave.c (once per session, by the caller's
fixture); ``LibmodbusSlave`` runs it on a loopback port. ``SLAVE_POINTS`` mirrors the map
the C source preloads: keep both in step. The faults a real device cannot be made to
produce on cue (silence, garbage, malformed answers, a peer that hangs up mid-request,
any exception code) come from ``ScriptedPeer``, a small asyncio Modbus TCP server.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import struct
import subprocess
from pathlib import Path
from typing import Any, Self

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
    # the other layouts: bytes swapped inside registers (BADC), and words reversed too (DCBA)
    "f32_badc": (
        {"table": "holding_register", "address": 200, "type": "float32", "byte_order": "little"},
        21.75,
    ),
    "f32_dcba": (
        {"table": "holding_register", "address": 202, "type": "float32",
         "word_order": "little", "byte_order": "little"},
        21.75,
    ),
    "i32_badc": (
        {"table": "holding_register", "address": 204, "type": "int32", "byte_order": "little"},
        -123456,
    ),
    "f64_dcba": (
        {"table": "holding_register", "address": 206, "type": "float64",
         "word_order": "little", "byte_order": "little"},
        1234.5678,
    ),
    "u64_badc": (
        {"table": "holding_register", "address": 210, "type": "uint64", "byte_order": "little"},
        0x0102030405060708,
    ),
    "i16_swapped": (
        {"table": "holding_register", "address": 214, "type": "int16", "byte_order": "little"},
        -2,
    ),
    "u16_swapped": (
        {"table": "holding_register", "address": 215, "byte_order": "little"}, 0x1234
    ),
    "u16_as_sent": ({"table": "holding_register", "address": 215}, 0x3412),
    # register 216 holds 0xA5C3: bits 0 1 6 7 8 10 13 15
    "bit0": ({"table": "holding_register", "address": 216, "type": "bool", "bit": 0}, True),
    "bit2": ({"table": "holding_register", "address": 216, "type": "bool", "bit": 2}, False),
    "bit13": ({"table": "holding_register", "address": 216, "type": "bool", "bit": 13}, True),
    "bit14": ({"table": "holding_register", "address": 216, "type": "bool", "bit": 14}, False),
    "bit15": ({"table": "holding_register", "address": 216, "type": "bool", "bit": 15}, True),
    "name": (
        {"table": "holding_register", "address": 220, "type": "string", "length": 8},
        "CityTwin PS-1",
    ),
    "location": (
        {"table": "holding_register", "address": 228, "type": "string", "length": 6,
         "encoding": "utf-8", "byte_order": "little"},
        "Pumpe Süd",
    ),
    "ir0": ({"table": "input_register", "address": 0}, 1000),
    "ir1": ({"table": "input_register", "address": 1}, 1001),
    "ir_f32_big": ({"table": "input_register", "address": 50, "type": "float32"}, -0.5),
    "ir_f32_little": (
        {"table": "input_register", "address": 52, "type": "float32", "word_order": "little"},
        3.1415927410125732,  # 3.14159274f as a double
    ),
    # input register 60 holds 1060 = 0x0424: bits 2 5 10
    "ir60_bit5": ({"table": "input_register", "address": 60, "type": "bool", "bit": 5}, True),
    "ir60_bit6": ({"table": "input_register", "address": 60, "type": "bool", "bit": 6}, False),
}
# holding registers 30..199 hold 3 * address, 240..299 hold 0; input registers 0..99 hold
# 1000 + address (but for 50..53); everything past the map answers exception 2.
HOLDING_PATTERN = range(30, 200)
HOLDING_FREE = range(240, 300)
INPUT_REGISTERS = range(100)
COILS = range(64)


def build_slave(out_dir: Path) -> Path:
    """Compile the slave into ``out_dir``; skips the test when libmodbus-dev is missing."""
    if shutil.which("gcc") is None or shutil.which("pkg-config") is None:
        pytest.fail("gcc and pkg-config are needed to build the libmodbus slave (scripts/test.sh installs them)")
    if subprocess.run(["pkg-config", "--exists", "libmodbus"], check=False).returncode != 0:
        pytest.fail("libmodbus-dev is not installed (pkg-config cannot find libmodbus; scripts/test.sh installs it)")
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


class ScriptedPeer:
    """A Modbus TCP server that answers function 3 (register i holds its address), echoes
    writes (holding nothing) and misbehaves on cue.

    ``script`` holds one action per request, across connections; "ok" once it runs out.
    ``exception:N`` answers exception code N. ``units`` and ``functions`` record what came.
    """

    def __init__(self, script: list[str]) -> None:
        self.script = script
        self.connections = 0
        self.requests = 0
        self.units: list[int] = []
        self.functions: list[int] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._handlers: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await asyncio.gather(*self._handlers)  # they end on the EOF of their own close
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while True:
                tid, _, length, unit = struct.unpack(">HHHB", await reader.readexactly(7))
                pdu = await reader.readexactly(length - 1)
                self.requests += 1
                self.units.append(unit)
                self.functions.append(pdu[0])
                action = self.script.pop(0) if self.script else "ok"
                if action == "close":
                    writer.close()
                    return
                if action == "silent":
                    continue
                if action == "garbage":
                    writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                    continue
                body = self._answer(action, pdu)
                frame = struct.pack(">HHHB", tid, 0, len(body) + 1, unit) + body
                if action == "split":  # the answer arrives in two TCP segments
                    writer.write(frame[:5])
                    await writer.drain()
                    await asyncio.sleep(0.05)
                    frame = frame[5:]
                writer.write(frame)
                if action == "answer_then_close":
                    await writer.drain()
                    writer.close()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @staticmethod
    def _answer(action: str, pdu: bytes) -> bytes:
        function = pdu[0]
        if action.startswith("exception:"):
            return bytes([function | 0x80, int(action.split(":")[1])])
        if function in (5, 6, 15, 16):
            return pdu[:5]
        if function == 22:
            return pdu[:7]
        address, count = struct.unpack(">HH", pdu[1:5])
        registers = struct.pack(f">{count}H", *range(address, address + count))
        if action == "short":  # well framed, but half the registers
            half = registers[: 2 * (count // 2)]
            return bytes([function, len(half)]) + half
        if action == "bad_count":  # byte count disagrees with the frame length
            return bytes([function, 2 * count + 2]) + registers
        if action == "wrong_function":
            return bytes([4, 2 * count]) + registers
        if action == "exception":
            return bytes([function | 0x80, 4])
        if action == "long_exception":
            return bytes([function | 0x80, 4, 0])
        return bytes([function, 2 * count]) + registers
