"""Test harness: a fake driver and an in-process gateway.

In the spirit of httpx's ``MockTransport`` and starlette's ``TestClient``: ``FakeDriver`` meets
the driver contract with a handler function (a dict-backed device by default, or any callable
that answers or raises a ``drivers.errors`` type), and ``InProcessGateway`` runs the real
``Gateway`` — runners, pipeline, twins, outbox, relay, audit — in the test's event loop with
fake drivers, so runner and relay behaviour is tested without subprocesses. Use real peers
(our simulators, libmodbus, mosquitto) wherever a subprocess adds something; use this for
faults a real device cannot be made to produce on cue.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
from pydantic import BaseModel

from citytwin.drivers.base import Driver, Health, Invokable, Quality, Reading
from citytwin.drivers.registry import create_driver
from citytwin.gateway.app import Gateway
from citytwin.gateway.bootstrap import prepare_file
from citytwin.gateway.commandreplies import Context


@dataclass
class Call:
    """One request the gateway made of a fake driver."""

    op: str  # connect | close | read | write | invoke
    device: str
    points: Sequence[str] | None = None
    values: Mapping[str, Any] = field(default_factory=dict)
    call: Any = None
    inputs: Mapping[str, Any] = field(default_factory=dict)


Handler = Callable[[Call], Any]


class FakeDevice:
    """A dict-backed device: reads return ``values``, writes store into it, calls are recorded.

    Set ``values[point]`` to an exception instance to make that point's reading BAD with the
    exception's text, or set ``fail`` to an exception to make every request raise it.
    """

    def __init__(self, values: Mapping[str, Any] | None = None) -> None:
        self.values: dict[str, Any] = dict(values or {})
        self.fail: BaseException | None = None
        self.calls: list[Call] = []
        self.writes: list[dict[str, Any]] = []

    def __call__(self, call: Call) -> Any:
        self.calls.append(call)
        if self.fail is not None and call.op != "close":
            raise self.fail
        if call.op == "write":
            self.writes.append(dict(call.values))
            self.values.update(call.values)
        if call.op == "read":
            names = call.points if call.points is not None else list(self.values)
            return {name: self.values[name] for name in names if name in self.values}
        if call.op == "invoke":
            return {"called": True}
        return None


class FakeDriver(Driver, Invokable):
    """A driver whose every request is answered by ``handler`` (sync or async)."""

    def __init__(self, handler: Handler, device: str = "", points: Mapping[str, BaseModel] | None = None) -> None:
        self.handler = handler
        self.device = device
        self.points = dict(points or {})
        self.connected = False
        self._health = Health()

    async def _ask(self, call: Call) -> Any:
        self._health.requests += 1
        try:
            answer = self.handler(call)
            if isinstance(answer, Awaitable):
                answer = await answer
        except Exception as exc:
            self._health.failures += 1
            self._health.last_error = str(exc)
            raise
        return answer

    async def connect(self) -> None:
        await self._ask(Call("connect", self.device))
        self.connected = True
        self._health.connected = True

    async def close(self) -> None:
        self.connected = False
        self._health.connected = False
        await self._ask(Call("close", self.device))

    async def read(self, points: Sequence[str] | None = None) -> list[Reading]:
        answer = await self._ask(Call("read", self.device, points))
        if isinstance(answer, list):
            return answer
        ts = time.time_ns() // 1_000_000
        readings = []
        for name, value in (answer or {}).items():
            if isinstance(value, BaseException):
                readings.append(Reading(name, None, ts, Quality.BAD, str(value)))
            else:
                readings.append(Reading(name, value, ts, Quality.GOOD))
        return readings

    async def write(self, values: Mapping[str, Any]) -> None:
        await self._ask(Call("write", self.device, values=dict(values)))

    async def invoke(self, call: Any, inputs: Mapping[str, Any]) -> dict[str, Any]:
        answer = await self._ask(Call("invoke", self.device, call=call, inputs=dict(inputs)))
        return dict(answer or {})

    def push(self, readings: Sequence[Reading]) -> None:
        """Deliver readings unasked, as a subscription would."""
        assert self._push_sink is not None, "the gateway has not handed over its push sink"
        self._push_sink(readings)

    @property
    def health(self) -> Health:
        return self._health


class InProcessGateway:
    """``async with InProcessGateway(config_yaml, tmp_path, handler) as gw``: the real gateway
    with fake drivers (``gw.drivers[device_id]``), driven by ``gw.command(...)``. With
    ``handler=None`` the devices get their real drivers from the registry (a real peer).

    The hub URL in the config may point at nothing: replies are collected from the relay
    directly, and the outbox keeps what the hub link cannot publish.
    """

    def __init__(self, config_yaml: str, data_dir: Path, handler: Handler | Mapping[str, Handler] | None) -> None:
        text = config_yaml.replace("DATA_DIR", str(data_dir))
        path = data_dir / "test.yaml"
        path.write_text(text)
        # as `citytwin run` prepares a file (paths, each driver's files), minus the environment
        self.config, self.specs = prepare_file(path, overrides=())
        self.handlers = handler
        self.drivers: dict[str, FakeDriver] = {}
        self.gateway: Gateway | None = None

    def _make_driver(self, name: str, connection: BaseModel, points: Mapping[str, BaseModel]) -> Driver:
        device = next(d for d, s in self.specs.items() if s.config.connection is connection)
        assert self.handlers is not None
        handler = self.handlers[device] if isinstance(self.handlers, Mapping) else self.handlers
        driver = self.drivers[device] = FakeDriver(handler, device, points)
        return driver

    async def __aenter__(self) -> InProcessGateway:
        factory = create_driver if self.handlers is None else self._make_driver
        self.gateway = Gateway(self.config, self.specs, driver_factory=factory)
        self.gateway.drain_timeout = 0.1  # the hub is usually absent here: do not wait for it
        await self.gateway.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self.gateway is not None
        await self.gateway.__aexit__(exc_type, exc, tb)

    @property
    def gw(self) -> Gateway:
        assert self.gateway is not None
        return self.gateway

    async def command(
        self, device: str, kind: str, service: str | None = None, payload: Mapping[str, Any] | None = None,
        operator: str | None = "tester", timeout: float = 10.0,
    ) -> dict[str, Any]:
        """Send one command through the relay as the hub would; returns its final reply."""
        replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        body = orjson.dumps(dict(payload or {"id": f"t-{time.monotonic_ns()}"}))
        self.gw.relay.submit(Context(kind, device, service, body, operator, replies.put_nowait))
        async with asyncio.timeout(timeout):
            while True:
                reply = await replies.get()
                if reply["status"] != "accepted":
                    return reply

    async def wait_for(self, condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
        """Wait until ``condition()`` is truthy (checked every 10 ms); its value is returned."""
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
            await asyncio.sleep(0.01)
