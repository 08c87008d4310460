"""The gateway's HTTP endpoint: operations (``/metrics``, ``/health``, ``/status``, ``POST
/reload``) and, in ``gateway/wotapi.py``, every device as a W3C WoT Thing under ``/things``.

It runs on aiohttp's server inside the gateway's own event loop (docs/wot.md says why
aiohttp): no thread, no signal handlers of its own, and handlers that never block the loop
(the metrics text is rendered from in-memory state and procfs; a reload parses the config on
a worker thread). Observability must never stop the data path, so a port that cannot be bound
is logged and retried in the background instead of failing the start. ``/reload`` answers
loopback peers only, whatever address the server listens on.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from citytwin.gateway.config import HttpSection

if TYPE_CHECKING:
    from citytwin.gateway.app import Gateway

log = logging.getLogger("citytwin.http")

RETRY_BIND = 10.0  # s between attempts to bind a port that is taken
MAX_BODY = 256 * 1024  # a write or an action carries a small JSON document


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def health(gateway: Gateway) -> dict[str, Any]:
    """Healthy only while the hub link is up, every device is online and none has been silent
    too long, no gateway task has crashed and the audit log can be written (docs/operations.md).

    An overloaded gateway is ``degraded`` (``"overloaded: <cause>"``), not unhealthy: it sheds
    polls by design and keeps every stored message, and a restart would not make the box faster."""
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
    return {"healthy": not problems, "degraded": gateway.overload.degraded, "problems": problems}


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
            "skipped": runner.skipped,
            "lag": round(runner.behind, 3),
            "failures": runner.failures,
            "poll_period": runner.spec.config.poll_period,
            "link": runner.status()["link"],  # what the driver knows of its link (Driver.health)
        }
    return {
        "gateway": gateway.config.gateway.id,
        "uptime": round((now - gateway.started_ms) / 1000, 1),
        "hub": {"url": gateway.config.hub.url, "connected": hub.connected, "published": hub.published,
                "dropped": hub.dropped, "backlog": {"messages": messages, "bytes": size,
                                                    "oldest_age": round(age, 1)}},
        "devices": devices,
        "load": _load(gateway),
        "health": health(gateway),
        "ts": now,
    }


def _load(gateway: Gateway) -> dict[str, Any]:
    """Overload state and the bounded queues, for /status (issue 13)."""
    box = gateway.outbox
    queued, queued_bytes = box.pending
    live, live_bytes, spilled = box.live
    monitor = gateway.overload
    return {
        "degraded": monitor.degraded,
        "since": int(monitor.since * 1000) if monitor.since is not None else None,
        "polls_skipped": sum(r.skipped for r in gateway.runners.values()),
        "max_lag": round(max((r.behind for r in gateway.runners.values()), default=0.0), 3),
        "polls_in_flight": gateway.gate.in_flight,
        "polls_in_flight_limit": gateway.gate.limit,
        "event_loop_lag": round(gateway.gate.loop_lag, 4),
        "polls_admitted_per_s_limit": round(gateway.gate.rate, 1) if gateway.gate.rate is not None else None,
        "cpu": _cpu(gateway),
        "outbox_write_queue": {"messages": queued, "bytes": queued_bytes,
                               "bound": box.limits.write_queue_bytes},
        "outbox_live_window": {"messages": live, "bytes": live_bytes, "spilled": spilled,
                               "bound": box.limits.live_window_bytes},
    }


def _cpu(gateway: Gateway) -> dict[str, Any]:
    """The CPU budget the poll gate keeps under, and the use measured against it."""
    cpu, gate = gateway.cpu, gateway.gate
    return {
        "budget_cores": cpu.cores,
        "quota_cores": cpu.quota.cores,
        "cgroup": cpu.quota.where,
        "use_cores": round(cpu.use, 3),
        "use_ratio": round(gate.cpu_use, 3),
        "target_ratio": gate.cpu_target,
        "throttled_periods": cpu.throttled,
        "polls_admitted_per_s_cpu_limit": round(gate.cpu_rate, 1) if gate.cpu_rate is not None else None,
    }


class HttpApi:
    def __init__(self, gateway: Gateway, section: HttpSection) -> None:
        self.gateway = gateway
        self.section = section
        self.port: int | None = None  # the bound port (useful with port 0)
        self.app = web.Application(client_max_size=MAX_BODY)
        self.app.router.add_get("/metrics", self._metrics)
        self.app.router.add_get("/health", self._health)
        self.app.router.add_get("/status", self._status)
        self.app.router.add_post("/reload", self._reload)
        if section.things:
            from citytwin.gateway.wotapi import WotApi

            self.wot: WotApi | None = WotApi(gateway, section, self)
            self.wot.register(self.app.router)
        else:
            self.wot = None
        self._runner: web.AppRunner | None = None
        self._retry: asyncio.Task[None] | None = None

    @property
    def base_url(self) -> str:
        host = self.section.public_host or (
            "127.0.0.1" if self.section.host in ("0.0.0.0", "::", "") else self.section.host)
        return f"http://{host}:{self.port or self.section.port}"

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        if not await self._bind(first=True):
            self._retry = self.gateway.tasks.spawn(self._keep_binding(), "http-bind")

    async def _bind(self, first: bool) -> bool:
        assert self._runner is not None
        site = web.TCPSite(self._runner, self.section.host, self.section.port)
        try:
            await site.start()
        except OSError as exc:
            if first:
                log.error("cannot listen on %s:%d (%s); /metrics and /health unavailable, retrying every %.0f s",
                          self.section.host, self.section.port, exc, RETRY_BIND)
            return False
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1]) if sockets else self.section.port
        things = " /things" if self.wot is not None else ""
        log.info("HTTP endpoint on http://%s:%d (/metrics /health /status%s)", self.section.host, self.port, things)
        return True

    async def _keep_binding(self) -> None:
        while True:
            await asyncio.sleep(RETRY_BIND)
            if await self._bind(first=False):
                return

    async def close(self) -> None:
        if self._retry is not None:
            await self.gateway.tasks.cancel([self._retry])
        if self._runner is not None:
            await self._runner.cleanup()

    # -- operations ------------------------------------------------------------------------
    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.gateway.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"})

    async def _health(self, request: web.Request) -> web.Response:
        report = health(self.gateway)
        return json_response(report, 200 if report["healthy"] else 503)

    async def _status(self, request: web.Request) -> web.Response:
        return json_response(status(self.gateway))

    async def _reload(self, request: web.Request) -> web.Response:
        if not _is_loopback(request.remote):
            return json_response({"error": "reload is accepted from loopback only"}, 403)
        result = await self.gateway.reload()
        return json_response(result, {"applied": 200, "refused": 422}.get(result["result"], 409))


def json_response(doc: Any, code: int = 200, content_type: str = "application/json",
                  headers: dict[str, str] | None = None) -> web.Response:
    body = orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"
    return web.Response(body=body, status=code,
                        headers={"Content-Type": content_type, "Cache-Control": "no-store", **(headers or {})})


def _is_loopback(peer: str | None) -> bool:
    try:
        address = ipaddress.ip_address(peer or "")
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback
