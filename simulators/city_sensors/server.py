"""Street sensors served over CoAP (aiocoap): an air-quality station and a manhole level sensor.

Resources are listed in ``resources.md``. Every representation is JSON or CBOR, chosen by
the request's Accept option (JSON when none; 4.06 for anything else); PUT payloads are
read by their Content-Format (4.15 for an unknown one, 4.00 for a malformed one). Observed
resources notify once per reporting interval, and the manhole level at once when its
overflow alarm changes.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import Any

import cbor2
import orjson
from aiocoap import CHANGED, Context, Message, resource
from aiocoap import error as coap_error

from citytwin.simulators.city_sensors.physics import AirQualityStation, ManholeSensor
from citytwin.simulators.lifecycle import MAX_TICK_S, Simulator

log = logging.getLogger(__name__)

JSON, CBOR = 50, 60
INTERVAL_RANGE = (0.0, 3600.0)


def represent(request: Any, document: Any, max_age: int | None = None) -> Message:
    """``document`` in the format the request accepts."""
    accept = request.opt.accept
    if accept in (None, JSON):
        payload, content_format = orjson.dumps(document), JSON
    elif accept == CBOR:
        payload, content_format = cbor2.dumps(document), CBOR
    else:
        raise coap_error.NotAcceptable("JSON (50) or CBOR (60) only")
    message = Message(payload=payload, content_format=content_format)
    if max_age is not None:
        message.opt.max_age = max_age
    return message


def parse(request: Any) -> Any:
    """A request payload by its Content-Format; JSON when it names none."""
    content_format = request.opt.content_format
    if not request.payload:
        return None
    try:
        if content_format in (None, JSON):
            return orjson.loads(request.payload)
        if content_format == CBOR:
            return cbor2.loads(request.payload)
    except (orjson.JSONDecodeError, cbor2.CBORDecodeError, ValueError) as exc:
        raise coap_error.BadRequest(f"malformed payload: {exc}") from None
    raise coap_error.UnsupportedContentFormat("JSON (50) or CBOR (60) only")


class State(resource.ObservableResource):  # type: ignore[misc]  # aiocoap ships no type hints
    """An observable read-only view of part of a sensor's state."""

    def __init__(self, view: Callable[[], dict[str, Any]], interval: Callable[[], float]) -> None:
        super().__init__()
        self.view = view
        self.interval = interval
        self.last_sent = 0.0
        self.observers = 0

    def update_observation_count(self, newcount: int) -> None:
        self.observers = newcount

    async def render_get(self, request: Any) -> Message:
        max_age = max(1, math.ceil(2 * self.interval()))
        return represent(request, self.view(), max_age)


class Config(resource.ObservableResource):  # type: ignore[misc]  # aiocoap ships no type hints
    """Readable and writable settings: PUT merges the fields it carries."""

    def __init__(self, fields: dict[str, tuple[float, float]], target: Any) -> None:
        super().__init__()
        self.fields = fields
        self.target = target

    def document(self) -> dict[str, Any]:
        return {name: getattr(self.target, name) for name in self.fields}

    async def render_get(self, request: Any) -> Message:
        return represent(request, self.document())

    async def render_put(self, request: Any) -> Message:
        patch = parse(request)
        if not isinstance(patch, dict):
            raise coap_error.BadRequest("expected an object of settings")
        for name, value in patch.items():
            if name not in self.fields:
                raise coap_error.BadRequest(f"unknown setting {name!r}")
            lo, hi = self.fields[name]
            if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
                raise coap_error.BadRequest(f"{name} must be a number in {lo:g}..{hi:g}")
        for name, value in patch.items():
            setattr(self.target, name, float(value))
        self.updated_state()
        reply = represent(request, self.document())
        reply.code = CHANGED
        return reply


class Action(resource.Resource):  # type: ignore[misc]  # aiocoap ships no type hints
    """A POST that runs an operation and answers its result."""

    def __init__(self, run: Callable[[Any], dict[str, Any]]) -> None:
        super().__init__()
        self.run = run

    async def render_post(self, request: Any) -> Message:
        reply = represent(request, self.run(parse(request)))
        reply.code = CHANGED
        return reply


class CitySensorsSimulator(Simulator):
    """Start/stop-able simulator; ``station`` and ``manhole`` are the live models."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 5683,
        tick: float = 0.1,
        speed: float = 1.0,
        seed: int | None = None,
        interval: float = 5.0,
    ) -> None:
        if tick <= 0.0:
            raise ValueError("tick must be positive")
        self.host = host
        self.port = port
        self.tick = tick
        self.speed = speed
        self.station = AirQualityStation(seed=seed, interval=interval)
        self.manhole = ManholeSensor(seed=None if seed is None else seed + 1, interval=interval)
        self.notifications = 0
        self._context: Any = None
        self._physics: asyncio.Task[None] | None = None
        self._observed: list[tuple[State, Callable[[], float]]] = []
        self._site = self._build_site()

    def _build_site(self) -> Any:
        aq, mh = self.station, self.manhole
        site = resource.Site()
        site.add_resource(
            [".well-known", "core"], resource.WKCResource(site.get_resources_as_linkheader)
        )
        aq_interval, mh_interval = (lambda: aq.interval), (lambda: mh.interval)
        observed = {
            ("aq", "pm"): (State(lambda: {"pm25": aq.pm25, "pm10": aq.pm10}, aq_interval), aq_interval),
            ("aq", "gas"): (
                State(lambda: {"no2": aq.no2, "o3": aq.o3, "co": aq.co}, aq_interval), aq_interval
            ),
            ("aq", "climate"): (
                State(lambda: {"temperature": aq.temperature, "humidity": aq.humidity}, aq_interval),
                aq_interval,
            ),
            ("mh", "level"): (
                State(
                    lambda: {"level": mh.level, "fill": mh.fill, "overflow": mh.overflow},
                    mh_interval,
                ),
                mh_interval,
            ),
        }
        for path, (state, interval) in observed.items():
            site.add_resource(list(path), state)
            self._observed.append((state, interval))
        self.level = observed[("mh", "level")][0]
        site.add_resource(["mh", "battery"], _Plain(lambda: {"voltage": round(mh.battery, 3)}))
        site.add_resource(["aq", "config"], Config({"interval": INTERVAL_RANGE}, aq))
        site.add_resource(
            ["mh", "config"],
            Config({"interval": INTERVAL_RANGE, "overflow_level": (0.1, mh.depth)}, mh),
        )
        site.add_resource(["aq", "calibrate"], Action(lambda _: aq.calibrate()))
        site.add_resource(["mh", "selftest"], Action(self._self_test))
        return site

    def _self_test(self, _: Any) -> dict[str, Any]:
        mh = self.manhole
        return {"passed": mh.battery > 3.1, "battery": round(mh.battery, 3), "radar": "ok"}

    async def start(self) -> None:
        if self._context is not None:
            raise RuntimeError("simulator already started")
        try:
            self._context = await Context.create_server_context(
                self._site, bind=(self.host, self.port), transports=["udp6"],
                loggername="citytwin.sim.coap",
            )
        except OSError as exc:
            raise OSError(f"city-sensors simulator cannot listen on {self.host}:{self.port}: {exc}") from exc
        self._physics = asyncio.create_task(self._run_physics(), name="city-sensors physics")

    async def stop(self) -> None:
        task, self._physics = self._physics, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        context, self._context = self._context, None
        if context is not None:
            await context.shutdown()

    def notify_all(self) -> None:
        """Send every observer the current state now (tests; the physics loop does it too)."""
        loop_time = asyncio.get_running_loop().time()
        for state, _ in self._observed:
            self._notify(state, loop_time)

    def _notify(self, state: State, now: float) -> None:
        state.last_sent = now
        if state.observers:
            self.notifications += state.observers
            state.updated_state()

    async def _run_physics(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(self.tick)
            now = loop.time()
            overflow = self.manhole.overflow
            dt = min(now - last, MAX_TICK_S) * self.speed
            self.station.step(dt)
            self.manhole.step(dt)
            last = now
            for state, interval in self._observed:
                if now - state.last_sent >= interval():
                    self._notify(state, now)
            if self.manhole.overflow != overflow:
                log.info("manhole overflow alarm %s", "raised" if self.manhole.overflow else "cleared")
                self._notify(self.level, now)


class _Plain(resource.Resource):  # type: ignore[misc]  # aiocoap ships no type hints
    """A read-only resource that is not observable."""

    def __init__(self, view: Callable[[], dict[str, Any]]) -> None:
        super().__init__()
        self.view = view

    async def render_get(self, request: Any) -> Message:
        return represent(request, self.view())


async def serve(
    host: str = "127.0.0.1",
    port: int = 5683,
    speed: float = 1.0,
    seed: int | None = None,
    interval: float = 5.0,
    tick: float = 0.1,
) -> None:
    """Run the simulator until cancelled (``citytwin sim city-sensors``)."""
    async with CitySensorsSimulator(
        host=host, port=port, speed=speed, seed=seed, interval=interval, tick=tick
    ) as sim:
        log.info("city-sensors simulator listening on coap://%s:%d", sim.host, sim.port)
        await asyncio.Event().wait()
