"""The operations endpoint: ``/metrics``, ``/health``, ``/status`` and ``POST /reload``.

A few lines of HTTP/1.1 on ``asyncio.start_server`` are all four routes need (one request
per connection, bodies ignored), so the gateway carries no web framework. Nothing here blocks
the loop: the metrics text is rendered from in-memory state and procfs, and a reload parses
the config file on a worker thread. Observability must never stop the data path, so a port
that cannot be bound is logged and retried in the background instead of failing the start.
``/reload`` answers loopback peers only, whatever address the server listens on.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from citytwin.gateway.config import HttpSection

if TYPE_CHECKING:
    from citytwin.gateway.app import Gateway

log = logging.getLogger("citytwin.http")

RETRY_BIND = 10.0  # s between attempts to bind a port that is taken
READ_TIMEOUT = 10.0  # s for a client to send its request head
MAX_HEAD = 16 * 1024
REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 409: "Conflict", 422: "Unprocessable Content",
           500: "Internal Server Error", 503: "Service Unavailable"}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def health(gateway: Gateway) -> dict[str, Any]:
    """Healthy only while the hub link is up, every device is online and none has been silent
    too long, no gateway task has crashed and the audit log can be written (docs/operations.md)."""
    section = gateway.config.http
    problems: list[str] = []
    if not gateway.hub.connected:
        problems.append(f"hub link to {gateway.config.hub.url} is down")
    now = now_ms()
    for device_id, runner in gateway.runners.items():
        if runner.online is False:
            problems.append(f"device {device_id} offline: {runner.last_error or 'no reason given'}")
            continue
        limit = max(section.silent_after, 3 * runner.spec.config.poll_period)
        silent = (now - (runner.last_seen_ms or runner.started_ms)) / 1000
        if silent > limit:
            why = f": {runner.last_error}" if runner.last_error else ""
            problems.append(f"device {device_id} silent for {silent:.0f} s (limit {limit:g} s){why}")
    for name, error in gateway.tasks.crashes:
        problems.append(f"task {name} crashed: {error}")
    if gateway.audit.last_error is not None:
        problems.append(f"audit log cannot be written: {gateway.audit.last_error}")
    return {"healthy": not problems, "problems": problems}


def status(gateway: Gateway) -> dict[str, Any]:
    now = now_ms()
    hub = gateway.hub
    messages, size, age = hub.backlog()
    devices = {}
    for device_id, runner in gateway.runners.items():
        seen = runner.last_seen_ms
        state = {None: "connecting", True: "online", False: "offline"}[runner.online]
        devices[device_id] = {
            "state": state,
            "online": bool(runner.online),
            "last_error": runner.last_error,
            "last_poll": runner.last_poll_ms or None,
            "last_seen": seen or None,
            "silent_for": round((now - (seen or runner.started_ms)) / 1000, 1),
            "polls": runner.polls,
            "failures": runner.failures,
            "poll_period": runner.spec.config.poll_period,
        }
    return {
        "gateway": gateway.config.gateway.id,
        "uptime": round((now - gateway.started_ms) / 1000, 1),
        "hub": {"url": gateway.config.hub.url, "connected": hub.connected, "published": hub.published,
                "dropped": hub.dropped, "backlog": {"messages": messages, "bytes": size,
                                                    "oldest_age": round(age, 1)}},
        "devices": devices,
        "health": health(gateway),
        "ts": now,
    }


class HttpApi:
    def __init__(self, gateway: Gateway, section: HttpSection) -> None:
        self.gateway = gateway
        self.section = section
        self.port: int | None = None  # the bound port (useful with port 0)
        self._server: asyncio.Server | None = None
        self._retry: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if not await self._bind(first=True):
            self._retry = asyncio.create_task(self._keep_binding(), name="http-bind")

    async def _bind(self, first: bool) -> bool:
        try:
            self._server = await asyncio.start_server(
                self._serve, self.section.host, self.section.port, limit=MAX_HEAD
            )
        except OSError as exc:
            if first:
                log.error("cannot listen on %s:%d (%s); /metrics and /health unavailable, retrying every %.0f s",
                          self.section.host, self.section.port, exc, RETRY_BIND)
            return False
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("operations endpoint on http://%s:%d (/metrics /health /status)", self.section.host, self.port)
        return True

    async def _keep_binding(self) -> None:
        while True:
            await asyncio.sleep(RETRY_BIND)
            if await self._bind(first=False):
                return

    async def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            await asyncio.gather(self._retry, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                method, path = await asyncio.wait_for(_read_head(reader), READ_TIMEOUT)
            except (TimeoutError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                await _respond(writer, 400, b"bad request\n", "text/plain")
                return
            code, body, ctype = await self._route(method, path, writer.get_extra_info("peername"))
            await _respond(writer, code, body, ctype, head_only=method == "HEAD")
        except ConnectionError:
            pass
        except Exception:  # a bug here must not take the endpoint down
            log.exception("operations endpoint: error while answering")
            with contextlib.suppress(Exception):
                await _respond(writer, 500, b"internal error\n", "text/plain")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _route(self, method: str, path: str, peer: Any) -> tuple[int, bytes, str]:
        path = path.split("?", 1)[0]
        routes = {"/metrics": ("GET", "HEAD"), "/health": ("GET", "HEAD"), "/status": ("GET", "HEAD"),
                  "/reload": ("POST",)}
        if path not in routes:
            return 404, b"not found: try /metrics, /health, /status\n", "text/plain"
        if method not in routes[path]:
            return 405, f"{path} takes {' or '.join(routes[path])}\n".encode(), "text/plain"
        if path == "/metrics":
            return 200, generate_latest(self.gateway.metrics.registry), CONTENT_TYPE_LATEST
        if path == "/health":
            report = health(self.gateway)
            return (200 if report["healthy"] else 503), _json(report), "application/json"
        if path == "/status":
            return 200, _json(status(self.gateway)), "application/json"
        if not _is_loopback(peer):
            return 403, _json({"error": "reload is accepted from loopback only"}), "application/json"
        result = await self.gateway.reload()
        code = {"applied": 200, "refused": 422}.get(result["result"], 409)
        return code, _json(result), "application/json"


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, str]:
    line = (await reader.readuntil(b"\r\n")).decode("latin-1").strip()
    parts = line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise ValueError(line)
    while (await reader.readuntil(b"\r\n")) != b"\r\n":  # headers: none are needed
        pass
    return parts[0].upper(), parts[1]


async def _respond(writer: asyncio.StreamWriter, code: int, body: bytes, ctype: str, head_only: bool = False) -> None:
    head = (f"HTTP/1.1 {code} {REASONS.get(code, 'Unknown')}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n")
    writer.write(head.encode("latin-1") + (b"" if head_only else body))
    await writer.drain()


def _json(doc: Any) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"


def _is_loopback(peer: Any) -> bool:
    try:
        address = ipaddress.ip_address(peer[0])
    except (TypeError, ValueError, IndexError):
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback
