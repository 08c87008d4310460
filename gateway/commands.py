"""The command relay: hub (or HTTP) commands back to devices; nothing runs unchecked, twice,
late, or unrecorded.

Every command passes, in order: shape (malformed → ``rejected``), device, durable id record
(a repeated id gets its first reply back and never runs again, also after a restart),
expiry, authorization (deny by default), the thing model (service exists, inputs present and
in range, property writable), and the device's interlocks (which fail closed on values they
cannot trust). Only then does anything touch the device, one command at a time per device, in
arrival order, through the device's runner. A dry run stops before the write and says what it
would have written. Every outcome is answered and audited by one function.

The pieces: ``commandrequests`` (shapes), ``commandchecks`` (expiry, model, plan),
``interlocks``, ``commandexec`` (through the runner), ``commandreplies`` (reply + audit).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from citytwin.gateway.access import Access
from citytwin.gateway.audit import AuditLog
from citytwin.gateway.commandchecks import check_expiry, plan_service, property_writes
from citytwin.gateway.commandexec import dry, failure, run_call, run_writes
from citytwin.gateway.commandlog import CommandLog, Interrupted
from citytwin.gateway.commandreplies import Context, now_ms, outcome, rejection
from citytwin.gateway.commandrequests import (
    DesiredRequest,
    GetRequest,
    InvokeRequest,
    Rejected,
    Request,
    SetRequest,
    command_id_of,
    depth,
    parse_request,
)
from citytwin.gateway.config import CommandsSection
from citytwin.gateway.hublink import HubLink, Received
from citytwin.gateway.interlocks import check_interlocks
from citytwin.gateway.runner import DeviceOffline, DeviceRunner
from citytwin.gateway.tasks import Tasks
from citytwin.gateway.twins import Twin

if TYPE_CHECKING:
    from citytwin.gateway.metrics import GatewayMetrics

log = logging.getLogger("citytwin.commands")

_SYNC = "sync"  # an internal job: re-apply the desired state of a device back online


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
        tasks: Tasks | None = None,
    ) -> None:
        self.hub = hub
        self.runners = runners
        self.twins = twins
        self.publish_twin = publish_twin
        self.log = commands
        self.access = access
        self.audit = audit
        self.settings = settings
        self.tasks = tasks or Tasks()
        # a device's commands run one after another, in arrival order, on a worker task that
        # exists only while the device has commands queued (not one idle task per device)
        self._queues: dict[str, collections.deque[Context]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self.counts: dict[str, int] = {}
        # devices in the config whose runners are still being built (start-up streams: the hub
        # link is up before the last of 1,000 devices is): their commands wait for it, they are
        # not refused as unknown
        self.starting: frozenset[str] = frozenset()
        self.started = asyncio.Event()
        self.metrics: GatewayMetrics | None = None

    # -- where commands come in --------------------------------------------------------
    def handle(self, message: Received) -> None:
        """Called by the hub link for every incoming message; never blocks."""
        incoming = self.hub.topics.parse(message.topic)
        if incoming is None:
            return
        reply_to = message.response_topic
        correlation = message.correlation
        device = incoming.device

        def respond(body: dict[str, Any]) -> None:
            if reply_to:
                self.hub.send(reply_to, body, qos=1, correlation=correlation)
            else:
                self.hub.send(self.hub.topics.replies(device), body, qos=1)

        self.submit(Context(incoming.kind, device, incoming.service, message.payload, message.user,
                            respond, reply_to=reply_to, correlation=correlation))

    def submit(self, ctx: Context) -> None:
        """Queue one command behind the device's earlier ones (any transport: hub, HTTP)."""
        queue = self._queues.get(ctx.device)
        if queue is None:
            queue = self._queues[ctx.device] = collections.deque()
            self._workers[ctx.device] = self.tasks.spawn(self._worker(ctx.device, queue), f"commands:{ctx.device}")
        queue.append(ctx)

    def sync_desired(self, device: str) -> None:
        """Apply the twin's delta for writable properties (queued behind the device's commands)."""
        self.submit(Context(_SYNC, device, None, b"", None, lambda body: None))

    async def _worker(self, device: str, queue: collections.deque[Context]) -> None:
        try:
            while queue:
                ctx = queue[0]
                try:
                    if ctx.kind == _SYNC:
                        await self._sync(ctx.device)
                    else:
                        await self._execute(ctx)
                except Exception:  # one bad command must not stop this device's queue
                    log.exception("command on %s failed unexpectedly", ctx.device)
                finally:
                    queue.popleft()
        finally:  # nothing left (or cancelled): the next command starts a new worker
            if self._queues.get(device) is queue:
                del self._queues[device]
                del self._workers[device]

    async def close(self, timeout: float = 10.0) -> None:
        """Answer the commands already received, then stop."""
        workers = list(self._workers.values())
        if workers:
            _, running = await asyncio.wait(workers, timeout=timeout)
            if running:
                log.warning("commands still running after %.0f s at shutdown", timeout)
        await self.tasks.cancel(list(self._workers.values()))

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
            self.tasks.spawn(self.log.finish(cmd.device, cmd.id, reply), f"commandlog:{cmd.id}")
            self.audit.append({"ts": reply["ts"], "device": cmd.device, "id": cmd.id, "target": cmd.target,
                               "operator": None, "checks": [], "status": "unknown", "error": reply["error"]})
            if cmd.reply_to:
                self.hub.send(cmd.reply_to, reply, qos=1, correlation=cmd.correlation)
            else:
                self.hub.send(self.hub.topics.replies(cmd.device), reply, qos=1)

    # -- the pipeline of checks ---------------------------------------------------------
    async def _execute(self, ctx: Context) -> None:
        recorded = False
        try:
            ctx.command_id = command_id_of(ctx.payload)
            request = parse_request(ctx.kind, ctx.payload)
            ctx.command_id = request.id
            ctx.operator = ctx.user if ctx.authenticated else self.access.identify(ctx.user, request.operator)
            runner = self.runners.get(ctx.device)
            if runner is None and ctx.device in self.starting:
                await self.started.wait()
                runner = self.runners.get(ctx.device)
            if runner is None:
                raise Rejected("unknown_device", f"no device {ctx.device!r} on this gateway")
            ctx.target = ctx.label
            if not isinstance(request, GetRequest):
                prior = await self.log.begin(ctx.device, request.id, ctx.kind, ctx.target, request.inputs(),
                                             ctx.reply_to, ctx.correlation)
                if prior is not None:
                    ctx.checks.append("duplicate id: first reply returned, not executed again")
                    self._answer(ctx, {**prior, "duplicate": True}, audit_status="duplicate")
                    return
                recorded = True
            reply = await self._checked(ctx, request, runner)
        except Rejected as exc:
            reply = rejection(exc.code, str(exc), exc.output)
        if recorded and ctx.command_id is not None:
            await self.log.finish(ctx.device, ctx.command_id, {"id": ctx.command_id, **reply})
        self._answer(ctx, reply)

    async def _checked(self, ctx: Context, request: Request, runner: DeviceRunner) -> dict[str, Any]:
        check_expiry(request)
        ctx.checks.append("expiry: ok")
        denied = self.access.check(ctx.operator, ctx.device, ctx.kind, request.targets(ctx.service))
        if denied is not None:
            raise Rejected("unauthorized", denied)
        ctx.checks.append(f"access: {ctx.operator or 'anonymous'} ok")
        if isinstance(request, GetRequest):
            return {"status": "succeeded", "output": self.twins[ctx.device].document()}
        if isinstance(request, DesiredRequest):
            return await self._desired(ctx, request, runner)
        if isinstance(request, InvokeRequest):
            return await self._invoke(ctx, request, runner)
        assert isinstance(request, SetRequest)
        writes = property_writes(runner.spec, request.properties)
        ctx.checks.append("model: ok")
        if request.dry_run:
            return dry({"writes": writes})
        return await run_writes(runner, writes, None)

    async def _invoke(self, ctx: Context, request: InvokeRequest, runner: DeviceRunner) -> dict[str, Any]:
        spec = runner.spec
        service = ctx.service or ""
        plan = plan_service(spec, service, request.input)
        if plan.call is not None and not runner.callable:
            raise Rejected("not_bound", f"driver {spec.config.driver!r} has no callable operations")
        ctx.checks.append("model: ok")
        if not runner.online and not request.dry_run:
            return failure(DeviceOffline(f"device {spec.id!r} is offline: {runner.last_error or 'not connected yet'}"))
        violated = await check_interlocks(spec.interlocks, spec.id, service, plan.inputs, runner, self.log)
        if violated is not None:
            raise Rejected("interlock", violated)
        ctx.checks.append("interlocks: ok")
        if request.dry_run:
            return dry(plan.describe())
        if plan.asynchronous:
            self._answer(ctx, {"status": "accepted"}, audit_status="accepted")
        if plan.call is not None:
            return await run_call(runner, plan.call, plan.inputs, plan.timeout)
        return await run_writes(runner, plan.writes, plan.timeout)

    async def _desired(self, ctx: Context, request: DesiredRequest, runner: DeviceRunner) -> dict[str, Any]:
        twin = self.twins[runner.spec.id]
        size = len(orjson.dumps(request.desired))
        nesting = depth(request.desired)
        if size > self.settings.max_desired_bytes or nesting > self.settings.max_desired_depth:
            raise Rejected("too_large", f"desired document of {size} bytes and depth {nesting} exceeds the limits "
                           f"({self.settings.max_desired_bytes} bytes, depth {self.settings.max_desired_depth})")
        if request.version is not None and request.version != twin.version:
            raise Rejected("version_conflict",
                           f"expected version {request.version}, the twin is at version {twin.version}; nothing changed",
                           {"version": twin.version})
        model = runner.spec.model
        # desired values for writable properties go to the device through the property-set path
        apply = {k: v for k, v in request.desired.items()
                 if v is not None and k in model.properties and model.properties[k].writable}
        writes = property_writes(runner.spec, apply) if apply else {}
        ctx.checks.append("model: ok")
        if request.dry_run:
            return dry({"writes": writes, "version": twin.version})
        twin.patch_desired(request.desired, now_ms())
        self.publish_twin(runner.spec.id)
        output: dict[str, Any] = {"version": twin.version}
        if not writes:
            return {"status": "succeeded", "output": output}
        applied = await run_writes(runner, writes, None)
        output["applied"] = sorted(writes)
        return {**applied, "output": output}

    async def _sync(self, device: str) -> None:
        runner = self.runners.get(device)
        twin = self.twins.get(device)
        if runner is None or twin is None or not runner.online:
            return
        spec = runner.spec
        delta = {k: v for k, v in twin.delta.items()
                 if k in spec.model.properties and spec.model.properties[k].writable and k in spec.points}
        if not delta:
            return
        started = time.monotonic()
        try:
            reply = await run_writes(runner, property_writes(spec, delta), None)
        except Rejected as exc:
            reply = rejection(exc.code, str(exc))
        log.info("%s: desired state re-applied on reconnect (%s) -> %s (%.1f ms)", device,
                 ", ".join(sorted(delta)), reply["status"], (time.monotonic() - started) * 1000)
        record: dict[str, Any] = {"ts": now_ms(), "device": device, "id": None, "kind": "desired-sync",
                                  "target": ",".join(sorted(delta)), "operator": "twin",
                                  "checks": ["model: ok"], "status": reply["status"], "output": {"writes": delta}}
        if "error" in reply:
            record["error"] = reply["error"]
        self.audit.append(record)

    # -- answers -------------------------------------------------------------------------
    def _answer(self, ctx: Context, reply: dict[str, Any], audit_status: str | None = None) -> None:
        body, record = outcome(ctx, reply, audit_status)
        status = reply["status"]
        elapsed = time.monotonic() - ctx.started
        self.counts[status] = self.counts.get(status, 0) + 1
        log.info("command %s %s/%s by %s -> %s (%.1f ms)%s", ctx.command_id, ctx.device,
                 ctx.service or ctx.kind, ctx.operator or "anonymous", status, elapsed * 1000,
                 f": {reply['error']['message']}" if "error" in reply else "")
        if self.metrics is not None and status != "accepted":
            self.metrics.command(ctx.device, ctx.label, status, elapsed)
        if record is not None:
            self.audit.append(record)
        ctx.respond(body)
