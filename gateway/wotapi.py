"""Every running device as a W3C WoT Thing over HTTP (docs/wot.md).

- ``GET /things`` and ``GET /things/{id}``: the Thing Description Directory's listing and
  retrieval (W3C WoT Discovery), listing only the Things the caller may view; ``{id}`` is the
  device id or the TD's ``urn:citytwin:…`` id. ``GET /.well-known/wot``: the directory's own TD.
- Property reads come from the twin (bad or missing: 503 with the reason); observation and
  events are long-polls that answer the next value or event.
- Writes and actions go **through the same command relay as the hub**: model validation,
  deny-by-default access, interlocks, expiry, audit; an ``Idempotency-Key`` header is the
  command id (a repeated key gets the first answer and never runs twice).

The caller is identified by ``http.auth`` (basic or bearer; none: anonymous), and may read a
device only with a grant of at least the viewer role on it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from citytwin.gateway.commandreplies import Context
from citytwin.gateway.config import HttpSection
from citytwin.gateway.httpapi import json_response
from citytwin.gateway.httpauth import BadCredentials, HttpAuth
from citytwin.gateway.things import TD_CONTENT_TYPE, ThingDescriptions, thing_id

if TYPE_CHECKING:
    from citytwin.gateway.app import Gateway
    from citytwin.gateway.httpapi import HttpApi
    from citytwin.gateway.runner import DeviceRunner

# the relay's answer → the HTTP status a WoT consumer acts on
STATUS_FOR_ERROR = {
    "malformed": 400, "invalid_input": 400, "unknown_service": 404, "not_bound": 404,
    "unknown_device": 404, "unauthorized": 403, "interlock": 409, "version_conflict": 409,
    "expired": 410, "too_large": 413, "device_offline": 503, "timeout": 504,
}


class WotApi:
    def __init__(self, gateway: Gateway, section: HttpSection, http: HttpApi) -> None:
        self.gateway = gateway
        self.section = section
        self.http = http
        self.auth = HttpAuth(section)
        self._tds: ThingDescriptions | None = None

    def register(self, router: web.UrlDispatcher) -> None:
        router.add_get("/.well-known/wot", self.directory_td)
        router.add_get("/things", self.listing)
        router.add_get("/things/{thing}", self.thing)
        router.add_get("/things/{thing}/properties", self.read_all)
        router.add_get("/things/{thing}/properties/{name}", self.read)
        router.add_put("/things/{thing}/properties/{name}", self.write)
        router.add_get("/things/{thing}/properties/{name}/observe", self.observe)
        router.add_post("/things/{thing}/actions/{name}", self.invoke)
        router.add_get("/things/{thing}/events/{name}", self.subscribe)

    @property
    def tds(self) -> ThingDescriptions:
        # the config changes with reloads; descriptions are cached per compiled device spec
        if self._tds is None or self._tds.config is not self.gateway.config:
            self._tds = ThingDescriptions(self.gateway.config, self.http.base_url)
        return self._tds

    # -- who asks, and what they may see ----------------------------------------------------
    def _caller(self, request: web.Request) -> str | None:
        try:
            return self.auth.identify(request.headers.get("Authorization"))
        except BadCredentials as exc:
            raise self._unauthorized(str(exc)) from None

    def _unauthorized(self, why: str) -> web.HTTPException:
        headers = {"WWW-Authenticate": self.auth.challenge} if self.auth.scheme != "none" else {}
        return web.HTTPUnauthorized(text=orjson.dumps({"error": why}).decode(), headers=headers,
                                    content_type="application/json")

    def _may_view(self, operator: str | None, device: str) -> bool:
        return self.gateway.access.check(operator, device, "get", ["twin"]) is None

    def _runner(self, request: web.Request, operator: str | None) -> DeviceRunner:
        thing = request.match_info["thing"]
        gateway = self.gateway.config.gateway.id
        device = thing.removeprefix(f"urn:citytwin:{gateway}:")
        runner = self.gateway.runners.get(device)
        if runner is None:
            raise web.HTTPNotFound(text=orjson.dumps({"error": f"no thing {thing!r} on this gateway"}).decode(),
                                   content_type="application/json")
        if not self._may_view(operator, device):
            why = f"{operator or 'an anonymous caller'} may not view {device!r} (deny by default)"
            if operator is None and self.auth.scheme != "none":
                raise self._unauthorized(why)
            raise web.HTTPForbidden(text=orjson.dumps({"error": why}).decode(), content_type="application/json")
        return runner

    # -- the directory ------------------------------------------------------------------------
    async def listing(self, request: web.Request) -> web.Response:
        operator = self._caller(request)
        tds = [self.tds.describe(r.spec) for d, r in sorted(self.gateway.runners.items())
               if self._may_view(operator, d)]
        return json_response(tds, content_type="application/ld+json")

    async def thing(self, request: web.Request) -> web.Response:
        runner = self._runner(request, self._caller(request))
        return json_response(self.tds.describe(runner.spec), content_type=TD_CONTENT_TYPE)

    async def directory_td(self, request: web.Request) -> web.Response:
        base = self.http.base_url
        gateway = self.gateway.config.gateway.id
        td = {
            "@context": ["https://www.w3.org/2022/wot/td/v1.1", "https://www.w3.org/2022/wot/discovery"],
            "@type": "ThingDirectory",
            "id": thing_id(gateway, "directory"),
            "title": f"Thing Description Directory of gateway {gateway}",
            "base": base,
            **self.tds._security(),
            "properties": {"things": {
                "description": "The Thing Descriptions of the devices this gateway runs",
                "type": "array", "items": {"type": "object"}, "readOnly": True,
                "forms": [{"href": "/things", "op": ["readproperty"], "contentType": "application/ld+json"}],
            }},
        }
        return json_response(td, content_type=TD_CONTENT_TYPE)

    # -- properties ---------------------------------------------------------------------------
    async def read_all(self, request: web.Request) -> web.Response:
        runner = self._runner(request, self._caller(request))
        wanted = request.query.get("names")
        names = wanted.split(",") if wanted else list(runner.spec.points)
        values = {}
        for name in names:
            current = runner.current(name)
            if current is not None and current.quality != "bad" and current.value is not None:
                values[name] = current.value
        return json_response(values)

    async def read(self, request: web.Request) -> web.Response:
        runner = self._runner(request, self._caller(request))
        name = request.match_info["name"]
        if name not in runner.spec.points:
            raise web.HTTPNotFound(text=f"{runner.spec.id} has no readable property {name!r}")
        current = runner.current(name)
        if current is None or current.value is None or current.quality == "bad":
            why = current.reason if current is not None else "no value reported yet"
            return json_response({"error": f"{name} is unavailable: {why}"}, 503)
        headers = {"X-Citytwin-Quality": current.quality}
        if current.reason:
            headers["X-Citytwin-Reason"] = current.reason.encode("ascii", "replace").decode()
        meta = self.gateway.twins[runner.spec.id].meta(name)
        if meta:
            headers["X-Citytwin-Timestamp"] = str(meta[0])
        return json_response(current.value, headers=headers)

    async def observe(self, request: web.Request) -> web.Response:
        runner = self._runner(request, self._caller(request))
        name = request.match_info["name"]
        if name not in runner.spec.points:
            raise web.HTTPNotFound(text=f"{runner.spec.id} has no observable property {name!r}")
        if request.method == "HEAD":  # node-wot's long-poll handshake
            return web.Response(status=200)
        try:
            value = await self.gateway.watchers.next(runner.spec.id, "property", name, self.section.longpoll_timeout)
        except TimeoutError:
            return await self.read(request)  # no change within the window: the current value
        return json_response(value)

    async def write(self, request: web.Request) -> web.Response:
        operator = self._caller(request)
        runner = self._runner(request, operator)
        name = request.match_info["name"]
        value = await _json_body(request)
        return await self._command(request, runner, operator, "set", None, {"properties": {name: value}})

    # -- actions and events -------------------------------------------------------------------
    async def invoke(self, request: web.Request) -> web.Response:
        operator = self._caller(request)
        runner = self._runner(request, operator)
        name = request.match_info["name"]
        body = await _json_body(request) if request.can_read_body else {}
        if body is None:
            body = {}
        return await self._command(request, runner, operator, "invoke", name, {"input": body})

    async def subscribe(self, request: web.Request) -> web.Response:
        runner = self._runner(request, self._caller(request))
        name = request.match_info["name"]
        if name not in runner.spec.model.events:
            raise web.HTTPNotFound(text=f"{runner.spec.id} has no event {name!r}")
        if request.method == "HEAD":
            return web.Response(status=200)
        while True:  # an event has no current value: wait until one happens or the caller leaves
            try:
                payload = await self.gateway.watchers.next(runner.spec.id, "event", name, self.section.longpoll_timeout)
            except TimeoutError:
                if request.transport is None or request.transport.is_closing():
                    raise web.HTTPRequestTimeout() from None
                continue
            return json_response(payload)

    async def _command(self, request: web.Request, runner: DeviceRunner, operator: str | None, kind: str,
                       service: str | None, body: dict[str, Any]) -> web.Response:
        command_id = request.headers.get("Idempotency-Key") or f"http-{uuid.uuid4().hex}"
        payload = orjson.dumps({"id": command_id, **body})
        replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.gateway.relay.submit(Context(kind, runner.spec.id, service, payload, operator, replies.put_nowait,
                                          authenticated=True))
        timeout = runner.spec.config.command_timeout + 30.0
        if service is not None and service in runner.spec.services:
            timeout = runner.spec.services[service].timeout + 30.0
        deadline = time.monotonic() + timeout
        while True:
            reply = await asyncio.wait_for(replies.get(), max(0.1, deadline - time.monotonic()))
            if reply["status"] != "accepted":
                break
        headers = {"X-Citytwin-Command": command_id, "X-Citytwin-Status": reply["status"]}
        if reply["status"] == "succeeded":
            output = reply.get("output") or {}
            if kind == "set" or not output:
                return web.Response(status=204, headers=headers)
            return json_response(output, headers=headers)
        error = reply.get("error", {})
        code = STATUS_FOR_ERROR.get(error.get("code", ""), 502 if reply["status"] == "failed" else 500)
        if reply["status"] == "timeout":
            code = 504
        if code == 403 and operator is None and self.auth.scheme != "none":
            code = 401
            headers["WWW-Authenticate"] = self.auth.challenge
        return json_response(reply, code, headers=headers)


async def _json_body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise web.HTTPBadRequest(text=orjson.dumps({"error": f"the body is not JSON: {exc}"}).decode(),
                                 content_type="application/json") from None
