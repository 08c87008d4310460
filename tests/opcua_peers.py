"""Peers for the OPC UA tests: the node-opcua server (a foreign implementation) and a
TCP peer that accepts connections and never answers."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path
from typing import Any, TypeVar

import pytest

NODE_DIR = Path(__file__).resolve().parent / "node-opcua"
NODE_NS = "urn:citytwin:test:node-opcua"
T = TypeVar("T")


def ensure_node_opcua() -> None:
    """Installs the pinned node-opcua when node_modules is missing (as scripts/test.sh does)."""
    if (NODE_DIR / "node_modules" / "node-opcua").is_dir():
        return
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is not installed: run the README's test command (scripts/test.sh)")
    command = "ci" if (NODE_DIR / "package-lock.json").exists() else "install"
    subprocess.run([npm, command, "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True,
                   stdout=subprocess.DEVNULL, timeout=600)


class NodeOpcua:
    """``node server.js PORT PKI``: None, Basic256Sha256 Sign and SignAndEncrypt on one URL."""

    def __init__(self, port: int, pki: Path) -> None:
        self.port = port
        self.pki = pki
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}/UA/Peer"

    @property
    def certificate(self) -> Path:
        return self.pki / "own" / "certs" / "certificate.pem"

    def start(self, timeout: float = 60.0) -> None:
        node = shutil.which("node")
        if node is None:
            pytest.fail("node is not installed: run the README's test command (scripts/test.sh)")
        self.proc = subprocess.Popen(
            [node, "server.js", str(self.port), str(self.pki)], cwd=NODE_DIR,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        assert self.proc.stdout is not None
        import selectors
        import time

        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if sel.select(0.5) and "READY" in self.proc.stdout.readline():
                    return
                if self.proc.poll() is not None:
                    break
        self.stop()
        pytest.fail("the node-opcua peer did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None


class SilentPeer:
    """Accepts TCP connections, reads everything, answers nothing."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0
        self.connections = 0

    async def __aenter__(self) -> SilentPeer:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            while await reader.read(4096):
                pass
            writer.close()

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self.server is not None
        self.server.close()
