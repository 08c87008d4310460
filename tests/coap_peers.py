"""CoAP peers for the driver tests: libcoap's server and client, a silent peer, a faulty server."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiocoap import Context, Message, resource
from conftest import free_port


def libcoap_binary(tool: str) -> str:
    """``coap-server``/``coap-client`` from Debian's libcoap3-bin (named with a TLS suffix)."""
    for name in (tool, f"{tool}-notls", f"{tool}-openssl", f"{tool}-gnutls"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(f"{tool} is not installed: run the README's test command (scripts/test.sh)")


class LibcoapServer:
    """libcoap's example server; ``-d`` lets PUT create observable resources."""

    def __init__(self, port: int | None = None) -> None:
        self.binary = libcoap_binary("coap-server")
        self.port = port or free_port(udp=True)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "-A", "127.0.0.1", "-p", str(self.port), "-d", "20", "-v", "0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # ready once it answers a GET
            if coap_client("-B", "1", self.url("/.well-known/core"), check=False).returncode == 0:
                return
            time.sleep(0.05)
        raise TimeoutError("libcoap coap-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def url(self, path: str) -> str:
        return f"coap://127.0.0.1:{self.port}{path}"


def coap_client(*args: str, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess[bytes]:
    """Run libcoap's coap-client; stdout carries the payload (``-o -``)."""
    result = subprocess.run(
        [libcoap_binary("coap-client"), *args], capture_output=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(f"coap-client {args} failed: {result.stdout!r} {result.stderr!r}")
    return result


async def coap_client_async(*args: str) -> bytes:
    """coap-client in a worker thread, so an in-process server on this loop can answer it."""
    result = await asyncio.to_thread(coap_client, *args)
    return result.stdout


class SilentPeer(asyncio.DatagramProtocol):
    """Receives every datagram and never answers: a device that accepts and stays quiet."""

    def __init__(self) -> None:
        self.received = 0
        self.transport: asyncio.DatagramTransport | None = None

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received += 1

    @classmethod
    async def start(cls, port: int) -> tuple[SilentPeer, asyncio.DatagramTransport]:
        loop = asyncio.get_running_loop()
        transport, peer = await loop.create_datagram_endpoint(cls, local_addr=("127.0.0.1", port))
        return peer, transport


class Fixed(resource.Resource):
    """Answers every GET with the same raw payload and Content-Format."""

    def __init__(self, payload: bytes, content_format: int | None, code: Any = None) -> None:
        super().__init__()
        self.payload = payload
        self.content_format = content_format
        self.code = code

    async def render_get(self, request: Any) -> Message:
        message = Message(payload=self.payload, code=self.code)
        if self.content_format is not None:
            message.opt.content_format = self.content_format
        return message


async def faulty_server(port: int, resources: dict[str, resource.Resource]) -> Callable[[], Any]:
    """An aiocoap server with hand-made resources; returns its shutdown coroutine function."""
    site = resource.Site()
    for path, res in resources.items():
        site.add_resource(path.strip("/").split("/"), res)
    context = await Context.create_server_context(site, bind=("127.0.0.1", port), transports=["udp6"])
    return context.shutdown
