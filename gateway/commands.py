"""Hub commands back to devices: nothing runs unchecked, twice, late, or unrecorded.

Every command passes, in order: shape (malformed → ``rejected``), device, durable id record
(a repeated id gets its first reply back and never runs again, also after a restart),
expiry, authorization (deny by default), the thing model (service exists, inputs present and
in range, property writable), and the device's interlocks. Only then does anything touch
the device, one command at a time per device, in arrival order, through the driver with a
timeout; the answer is ``succeeded`` (with output), ``failed`` or ``timeout``. A dry run stops
before the write and says what it would have written. Every outcome is audited.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from citytwin.drivers.base import Invokable
from citytwin.drivers.errors import DriverError, RequestTimeout
from citytwin.gateway.access import Access
from citytwin.gateway.audit import AuditLog
from citytwin.gateway.commandlog import CommandLog, Interrupted
from citytwin.gateway.config import CommandsSection
from citytwin.gateway.hublink import HubLink, Received, now_ms
from citytwin.gateway.interlocks import check_interlocks
from citytwin.gateway.runner import DeviceRunner
from citytwin.gateway.topics import Incoming
from citytwin.gateway.twins import Twin
from citytwin.thingmodels.types import CallType

if TYPE_CHECKING:
    from citytwin.gateway.metrics import GatewayMetrics

log = logging.getLogger("citytwin.commands")

CommandId = Field(min_length=1, max_length=256)


class Request(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = CommandId
    expires_at: int | None = None  # epoch ms
    dry_run: bool = False
    operator: str | None = None  # trusted only when access.identity includes "payload"


class InvokeRequest(Request):
    input: dict[str, Any] = {}


class SetRequest(Request):
    properties: dict[str, Any] = Field(min_length=1)


class DesiredRequest(Request):
    desired: dict[str, Any]
    version: int | None = None  # expected current version (optimistic concurrency)


class GetRequest(Request):
    pass


class Rejected(Exception):
    def __init__(self, code: str, message: str, output: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.output = output


REQUESTS: dict[str, type[Request]] = {
    "invoke": InvokeRequest, "set": SetRequest, "desired": DesiredRequest, "get": GetRequest,
}
_KIND_LABEL = {"invoke": "other", "set": "properties/set", "desired": "twin/desired", "get": "twin/get"}


@dataclass(slots=True)
class Context:
    """What one command carries through the checks, for the reply and the audit record."""

    incoming: Incoming
    message: Received
    command_id: str | None = None
    operator: str | None = None
    target: str = ""
    checks: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)


def _depth(value: Any, level: int = 0) -> int:
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


class CommandRelay:
    def __init__(
        self,
        hub: HubLink,
        runners: Mapping[str, DeviceRunner],
        twins: Mapping[str, Twin],
        publish_twin: Callable[[str], None],
        commands: CommandLog,
        access: Access,
        audit: AuditLog,
        settings: CommandsSection,
    ) -> None:
        self.hub = hub
        self.runners = runners
        self.twins = twins
        self.publish_twin = publish_twin
        self.log = commands
        self.access = access
        self.audit = audit
        self.settings = settings
        self._queues: dict[str, asyncio.Queue[tuple[Incoming, Received]]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self.counts: dict[str, int] = {}
        self.metrics: GatewayMetrics | None = None

    def handle(self, message: Received) -> None:
        """Called by the hub link for every incoming message; never blocks."""
        incoming = self.hub.topics.parse(message.topic)
        if incoming is None:
            return
        self._enqueue(incoming, message)

    def _enqueue(self, incoming: Incoming, message: Received) -> None:
        queue = self._queues.get(incoming.device)
        if queue is None:
            queue = self._queues[incoming.device] = asyncio.Queue()
            self._workers[incoming.device] = asyncio.create_task(
                self._worker(queue), name=f"commands:{incoming.device}"
            )
        queue.put_nowait((incoming, message))

    async def _worker(self, queue: asyncio.Queue[tuple[Incoming, Received]]) -> None:
        while True:
            incoming, message = await queue.get()
            try:
                if incoming.kind == "sync":
                    await self._sync(incoming.device)
                else:
                    await self._execute(Context(incoming, message))
            except Exception:  # one bad command must not stop this device's queue
                log.exception("command on %s failed unexpectedly", incoming.device)
            finally:
                queue.task_done()

    async def close(self, timeout: float = 10.0) -> None:
        """Answer the commands already received, then stop."""
        try:
            await asyncio.wait_for(asyncio.gather(*(q.join() for q in self._queues.values())), timeout)
        except TimeoutError:
            log.warning("commands still running after %.0f s at shutdown", timeout)
        for task in self._workers.values():
            task.cancel()
        await asyncio.gather(*self._workers.values(), return_exceptions=True)

    def sync_desired(self, device: str) -> None:
        """Apply the twin's delta for writable properties (queued behind the device's commands)."""
        self.handle_internal(Incoming("sync", device, None))

    def handle_internal(self, incoming: Incoming) -> None:
        self._enqueue(incoming, Received("", b"", None, None, None))

    async def _sync(self, device: str) -> None:
        runner = self.runners.get(device)
        twin = self.twins.get(device)
        if runner is None or twin is None or not runner.online:
            return
        model = runner.spec.model
        delta = {k: v for k, v in twin.delta.items()
                 if k in model.properties and model.properties[k].writable and k in runner.spec.points}
        if not delta:
            return
        started = time.monotonic()
        try:
            writes = self._property_writes(runner, delta)
            reply = await self._write(runner, writes, 5.0)
        except Rejected as exc:
            reply = {"status": "rejected", "error": {"code": exc.code, "message": str(exc)}}
        log.info("%s: desired state re-applied on reconnect (%s) -> %s (%.1f ms)", device,
                 ", ".join(sorted(delta)), reply["status"], (time.monotonic() - started) * 1000)
        record: dict[str, Any] = {"ts": now_ms(), "device": device, "id": None, "kind": "desired-sync",
                                  "target": ",".join(sorted(delta)), "operator": "twin",
                                  "checks": ["model: ok"], "status": reply["status"], "output": {"writes": delta}}
        if "error" in reply:
            record["error"] = reply["error"]
        self.audit.append(record)

    def report_interrupted(self, interrupted: list[Interrupted]) -> None:
        """Commands that were executing when the last run died: their effect is unknown."""
        for cmd in interrupted:
            reply = {"id": cmd.id, "status": "unknown", "ts": now_ms(), "error": {
                "code": "interrupted",
                "message": "the gateway restarted while this command was executing; its effect on the "
                           "device is unknown and it was not executed again",
            }}
            log.warning("command %s on %s (%s) was interrupted by a restart: reported unknown",
                        cmd.id, cmd.device, cmd.target)
            asyncio.get_running_loop().create_task(self.log.finish(cmd.device, cmd.id, reply))
            self.audit.append({"ts": reply["ts"], "device": cmd.device, "id": cmd.id, "target": cmd.target,
                               "operator": None, "checks": [], "status": "unknown", "error": reply["error"]})
            if cmd.reply_to:
                self.hub.send(cmd.reply_to, reply, qos=1, correlation=cmd.correlation)
            else:
                self.hub.send(self.hub.topics.replies(cmd.device), reply, qos=1)

    # --- the pipeline of checks ---------------------------------------------------------
    async def _execute(self, ctx: Context) -> None:
        recorded = False
        try:
            request = self._parse(ctx)
            runner = self.runners.get(ctx.incoming.device)
            if runner is None:
                raise Rejected("unknown_device", f"no device {ctx.incoming.device!r} on this gateway")
            ctx.target = ctx.incoming.service or _KIND_LABEL[ctx.incoming.kind]
            if not isinstance(request, GetRequest):
                prior = await self.log.begin(
                    ctx.incoming.device, request.id, ctx.incoming.kind, ctx.target, _inputs(request),
                    ctx.message.response_topic, ctx.message.correlation,
                )
                if prior is not None:
                    ctx.checks.append("duplicate id: first reply returned, not executed again")
                    self._answer(ctx, {**prior, "duplicate": True}, audit_status="duplicate")
                    return
                recorded = True
            reply = await self._checked(ctx, request, runner)
        except Rejected as exc:
            reply = {"status": "rejected", "error": {"code": exc.code, "message": str(exc)}}
            if exc.output is not None:
                reply["output"] = exc.output
        if recorded and ctx.command_id is not None:
            await self.log.finish(ctx.incoming.device, ctx.command_id, {"id": ctx.command_id, **reply})
        self._answer(ctx, reply)

    def _parse(self, ctx: Context) -> Request:
        try:
            raw = orjson.loads(ctx.message.payload)
        except orjson.JSONDecodeError as exc:
            raise Rejected("malformed", f"payload is not JSON: {exc}") from None
        if isinstance(raw, dict) and isinstance(raw.get("id"), str):
            ctx.command_id = raw["id"]
        try:
            request = REQUESTS[ctx.incoming.kind].model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "payload"
            raise Rejected("malformed", f"{where}: {first['msg']}") from None
        ctx.operator = self.access.identify(ctx.message.user, request.operator)
        return request

    async def _checked(self, ctx: Context, request: Request, runner: DeviceRunner) -> dict[str, Any]:
        device = ctx.incoming.device
        if request.expires_at is not None and now_ms() > request.expires_at:
            late = (now_ms() - request.expires_at) / 1000
            raise Rejected("expired", f"expired {late:.1f} s ago (expires_at {request.expires_at}); not executed")
        ctx.checks.append("expiry: ok")
        targets = _targets(ctx, request)
        denied = self.access.check(ctx.operator, device, ctx.incoming.kind, targets)
        if denied is not None:
            raise Rejected("unauthorized", denied)
        ctx.checks.append(f"access: {ctx.operator or 'anonymous'} ok")
        if isinstance(request, GetRequest):
            return {"status": "succeeded", "output": self.twins[device].document()}
        if isinstance(request, DesiredRequest):
            return await self._desired(ctx, request, runner)
        if isinstance(request, InvokeRequest):
            return await self._invoke(ctx, request, runner)
        assert isinstance(request, SetRequest)
        return await self._set(ctx, request, runner)

    async def _invoke(self, ctx: Context, request: InvokeRequest, runner: DeviceRunner) -> dict[str, Any]:
        spec = runner.spec
        service_id = ctx.incoming.service or ""
        problems = spec.model.check_service_input(service_id, request.input)
        if problems:
            code = "unknown_service" if service_id not in spec.model.services else "invalid_input"
            raise Rejected(code, "; ".join(problems))
        binding = spec.services.get(service_id)
        if binding is None:
            raise Rejected("not_bound", f"service {service_id!r} has no binding on device {spec.id!r}")
        ctx.checks.append("model: ok")
        service = spec.model.services[service_id]
        inputs = {k: service.inputs[k].normalize(v) for k, v in request.input.items()}
        violated = await check_interlocks(
            spec.config.interlocks, spec.id, service_id, inputs, runner.pipeline.values, self.log
        )
        if violated is not None:
            raise Rejected("interlock", violated)
        ctx.checks.append("interlocks: ok")
        if binding.call is not None:
            if request.dry_run:
                return _dry({"call": binding.call.model_dump(mode="json"), "inputs": inputs})
            if service.call_type is CallType.ASYNC:
                self._answer(ctx, {"status": "accepted"}, audit_status="accepted")
            return await self._call(runner, binding.call, inputs, binding.timeout)
        writes: dict[str, Any] = {}
        for step in binding.writes:
            point = step.point.format(**inputs) if "{" in step.point else step.point
            value = step.value
            if isinstance(value, str) and value.startswith("$"):
                value = inputs[value[1:]]
            writes[point] = value
        if request.dry_run:
            return _dry({"writes": writes})
        if service.call_type is CallType.ASYNC:
            self._answer(ctx, {"status": "accepted"}, audit_status="accepted")
        return await self._write(runner, writes, binding.timeout)

    def _property_writes(self, runner: DeviceRunner, values: Mapping[str, Any]) -> dict[str, Any]:
        spec = runner.spec
        problems = spec.model.check_property_set(values)
        if problems:
            raise Rejected("invalid_input", "; ".join(problems))
        writes = {}
        for name, value in values.items():
            point = spec.points.get(name)
            if point is None or not point.writable:
                raise Rejected("not_bound", f"property {name!r} is not bound to a writable point")
            writes[name] = spec.model.properties[name].normalize(value)
        return writes

    async def _set(self, ctx: Context, request: SetRequest, runner: DeviceRunner) -> dict[str, Any]:
        writes = self._property_writes(runner, request.properties)
        ctx.checks.append("model: ok")
        if request.dry_run:
            return _dry({"writes": writes})
        return await self._write(runner, writes, 5.0)

    async def _desired(self, ctx: Context, request: DesiredRequest, runner: DeviceRunner) -> dict[str, Any]:
        twin = self.twins[runner.spec.id]
        size = len(orjson.dumps(request.desired))
        depth = _depth(request.desired)
        if size > self.settings.max_desired_bytes or depth > self.settings.max_desired_depth:
            raise Rejected("too_large", f"desired document of {size} bytes and depth {depth} exceeds the limits "
                           f"({self.settings.max_desired_bytes} bytes, depth {self.settings.max_desired_depth})")
        if request.version is not None and request.version != twin.version:
            raise Rejected("version_conflict",
                           f"expected version {request.version}, the twin is at version {twin.version}; nothing changed",
                           {"version": twin.version})
        spec = runner.spec
        # desired values for writable properties go to the device through the property-set path
        apply = {k: v for k, v in request.desired.items()
                 if v is not None and k in spec.model.properties and spec.model.properties[k].writable}
        writes = self._property_writes(runner, apply) if apply else {}
        ctx.checks.append("model: ok")
        if request.dry_run:
            return _dry({"writes": writes, "version": twin.version})
        twin.patch_desired(request.desired, now_ms())
        self.publish_twin(spec.id)
        output: dict[str, Any] = {"version": twin.version}
        if not writes:
            return {"status": "succeeded", "output": output}
        applied = await self._write(runner, writes, 5.0)
        output["applied"] = sorted(writes)
        return {**applied, "output": output}

    async def _call(self, runner: DeviceRunner, call: Any, inputs: Mapping[str, Any], timeout: float) -> dict[str, Any]:
        offline = _offline(runner)
        if offline is not None:
            return offline
        driver = runner.driver
        if not isinstance(driver, Invokable):
            return {"status": "failed", "error": {"code": "BindingError", "message": "the driver has no callable operations"}}
        try:
            async with asyncio.timeout(timeout):
                async with runner.lock:
                    output = await driver.invoke(call, inputs)
        except (TimeoutError, RequestTimeout):
            return _timed_out(timeout)
        except DriverError as exc:
            return {"status": "failed", "error": {"code": type(exc).__name__, "message": str(exc)}}
        runner.request_refresh()
        return {"status": "succeeded", "output": output}

    async def _write(self, runner: DeviceRunner, writes: Mapping[str, Any], timeout: float) -> dict[str, Any]:
        spec = runner.spec
        raw: dict[str, Any] = {}
        for name, value in writes.items():
            point = spec.points.get(name)
            if point is not None:
                raw[name] = point.to_raw(value)
            elif name in spec.outputs:
                raw[name] = value
            else:
                raise Rejected("not_bound", f"no point {name!r} on device {spec.id!r}")
        offline = _offline(runner)
        if offline is not None:
            return offline
        try:
            async with asyncio.timeout(timeout):
                async with runner.lock:
                    await runner.driver.write(raw)
        except (TimeoutError, RequestTimeout):
            return _timed_out(timeout)
        except DriverError as exc:
            return {"status": "failed", "error": {"code": type(exc).__name__, "message": str(exc)}}
        runner.request_refresh()
        return {"status": "succeeded", "output": {}}

    # --- answers ------------------------------------------------------------------------
    def _answer(self, ctx: Context, reply: dict[str, Any], audit_status: str | None = None) -> None:
        incoming, message = ctx.incoming, ctx.message
        status = reply["status"]
        body = {"id": ctx.command_id, **{k: v for k, v in reply.items() if k != "id"}, "ts": now_ms()}
        elapsed = time.monotonic() - ctx.started
        self.counts[status] = self.counts.get(status, 0) + 1
        log.info(
            "command %s %s/%s by %s -> %s (%.1f ms)%s",
            ctx.command_id, incoming.device, incoming.service or incoming.kind, ctx.operator or "anonymous",
            status, elapsed * 1000, f": {reply['error']['message']}" if "error" in reply else "",
        )
        if self.metrics is not None and status != "accepted":
            self.metrics.command(incoming.device, incoming.service or _KIND_LABEL[incoming.kind], status, elapsed)
        if incoming.kind != "get":
            record: dict[str, Any] = {
                "ts": body["ts"], "device": incoming.device, "id": ctx.command_id,
                "kind": incoming.kind, "target": ctx.target or incoming.service or incoming.kind,
                "operator": ctx.operator, "checks": ctx.checks, "status": audit_status or status,
            }
            if "error" in reply:
                record["error"] = reply["error"]
            if "output" in reply and reply.get("output"):
                record["output"] = reply["output"]
            self.audit.append(record)
        if message.response_topic:
            self.hub.send(message.response_topic, body, qos=1, correlation=message.correlation)
        else:
            self.hub.send(self.hub.topics.replies(incoming.device), body, qos=1)


def _inputs(request: Request) -> dict[str, Any]:
    if isinstance(request, InvokeRequest):
        return request.input
    if isinstance(request, SetRequest):
        return request.properties
    if isinstance(request, DesiredRequest):
        return request.desired
    return {}


def _targets(ctx: Context, request: Request) -> list[str]:
    if isinstance(request, InvokeRequest):
        return [ctx.incoming.service or ""]
    if isinstance(request, SetRequest):
        return sorted(request.properties)
    if isinstance(request, DesiredRequest):
        return sorted(request.desired) or ["twin"]
    return ["twin"]


def _dry(would: dict[str, Any]) -> dict[str, Any]:
    return {"status": "succeeded", "output": {"dry_run": True, **would}}


def _offline(runner: DeviceRunner) -> dict[str, Any] | None:
    if runner.online:
        return None
    return {"status": "failed", "error": {
        "code": "device_offline",
        "message": f"device {runner.spec.id!r} is offline: {runner.last_error}; nothing was sent",
    }}


def _timed_out(timeout: float) -> dict[str, Any]:
    return {"status": "timeout", "error": {
        "code": "timeout",
        "message": f"no answer from the device within {timeout:g} s; it may or may not have taken effect",
    }}
