"""Hub commands back to devices: validate against the thing model, then write, then answer.

Nothing touches a device before the command has passed every check: a malformed message,
an unknown device or service, a missing or out-of-range input, a read-only property or an
unbound service is answered ``rejected`` with the reason and no write happens. Accepted
commands run one at a time per device, in arrival order, through the device's driver with
a timeout, and are answered ``succeeded`` (with output), ``failed`` or ``timeout``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from citytwin.drivers.errors import DriverError, RequestTimeout
from citytwin.gateway.hublink import HubLink, Received, now_ms
from citytwin.gateway.supervisor import DeviceRunner
from citytwin.gateway.topics import Incoming

if TYPE_CHECKING:
    from citytwin.gateway.metrics import GatewayMetrics

log = logging.getLogger("citytwin.commands")

CommandId = Field(min_length=1, max_length=256)


class InvokeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = CommandId
    input: dict[str, Any] = {}


class SetRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = CommandId
    properties: dict[str, Any] = Field(min_length=1)


class DesiredRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = CommandId
    desired: dict[str, Any]


class Rejected(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


REQUESTS: dict[str, type[BaseModel]] = {"invoke": InvokeRequest, "set": SetRequest, "desired": DesiredRequest}
_KIND_LABEL = {"invoke": "other", "set": "properties/set", "desired": "twin/desired"}  # metric label per kind


class CommandRelay:
    def __init__(self, hub: HubLink, runners: Mapping[str, DeviceRunner], on_desired: Any) -> None:
        self.hub = hub
        self.runners = runners
        self.on_desired = on_desired  # (device, patch) -> new twin version
        self._queues: dict[str, asyncio.Queue[tuple[Incoming, Received]]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self.counts: dict[str, int] = {}
        self.metrics: GatewayMetrics | None = None

    def handle(self, message: Received) -> None:
        """Called by the hub link for every incoming message; never blocks."""
        incoming = self.hub.topics.parse(message.topic)
        if incoming is None:
            return
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
                await self._execute(incoming, message)
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

    async def _execute(self, incoming: Incoming, message: Received) -> None:
        command_id: str | None = None
        started = asyncio.get_running_loop().time()
        try:
            try:
                raw = orjson.loads(message.payload)
            except orjson.JSONDecodeError as exc:
                raise Rejected("malformed", f"payload is not JSON: {exc}") from None
            if isinstance(raw, dict) and isinstance(raw.get("id"), str):
                command_id = raw["id"]
            try:
                request = REQUESTS[incoming.kind].model_validate(raw)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "payload"
                raise Rejected("malformed", f"{where}: {first['msg']}") from None
            runner = self.runners.get(incoming.device)
            if runner is None:
                raise Rejected("unknown_device", f"no device {incoming.device!r} on this gateway")
            if isinstance(request, InvokeRequest):
                assert incoming.service is not None
                reply = await self._invoke(runner, incoming.service, request)
            elif isinstance(request, SetRequest):
                reply = await self._set(runner, request)
            else:
                assert isinstance(request, DesiredRequest)
                version = self.on_desired(incoming.device, request.desired)
                reply = {"status": "succeeded", "output": {"version": version}}
        except Rejected as exc:
            reply = {"status": "rejected", "error": {"code": exc.code, "message": str(exc)}}
        status = reply["status"]
        self.counts[status] = self.counts.get(status, 0) + 1
        elapsed = (asyncio.get_running_loop().time() - started) * 1000
        if self.metrics is not None:
            self.metrics.command(incoming.device, incoming.service or _KIND_LABEL[incoming.kind], status, elapsed / 1000)
        log.info(
            "command %s %s/%s -> %s (%.1f ms)%s",
            command_id, incoming.device, incoming.service or incoming.kind, status, elapsed,
            f": {reply['error']['message']}" if "error" in reply else "",
        )
        self._reply(incoming, message, {"id": command_id, **reply, "ts": now_ms()})

    def _reply(self, incoming: Incoming, message: Received, reply: dict[str, Any]) -> None:
        if message.response_topic:
            self.hub.send(message.response_topic, reply, qos=1, correlation=message.correlation)
        else:
            self.hub.send(self.hub.topics.replies(incoming.device), reply, qos=1)

    async def _invoke(self, runner: DeviceRunner, service_id: str, request: InvokeRequest) -> dict[str, Any]:
        spec = runner.spec
        problems = spec.model.check_service_input(service_id, request.input)
        if problems:
            code = "unknown_service" if service_id not in spec.model.services else "invalid_input"
            raise Rejected(code, "; ".join(problems))
        binding = spec.services.get(service_id)
        if binding is None:
            raise Rejected("not_bound", f"service {service_id!r} has no binding on device {spec.id!r}")
        service = spec.model.services[service_id]
        inputs = {k: service.inputs[k].normalize(v) for k, v in request.input.items()}
        if binding.call is not None:
            return await self._call(runner, binding.call, inputs, binding.timeout)
        writes: dict[str, Any] = {}
        for step in binding.writes:
            point = step.point.format(**inputs) if "{" in step.point else step.point
            value = step.value
            if isinstance(value, str) and value.startswith("$"):
                value = inputs[value[1:]]
            writes[point] = value
        return await self._write(runner, writes, binding.timeout)

    async def _set(self, runner: DeviceRunner, request: SetRequest) -> dict[str, Any]:
        spec = runner.spec
        problems = spec.model.check_property_set(request.properties)
        if problems:
            raise Rejected("invalid_input", "; ".join(problems))
        writes = {}
        for name, value in request.properties.items():
            point = spec.points.get(name)
            if point is None or not point.writable:
                raise Rejected("not_bound", f"property {name!r} is not bound to a writable point")
            writes[name] = spec.model.properties[name].normalize(value)
        return await self._write(runner, writes, 5.0)

    async def _call(
        self, runner: DeviceRunner, call: Any, inputs: Mapping[str, Any], timeout: float
    ) -> dict[str, Any]:
        offline = _offline(runner)
        if offline is not None:
            return offline
        try:
            async with asyncio.timeout(timeout):
                async with runner.lock:
                    output = await runner.driver.invoke(call, inputs)
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
