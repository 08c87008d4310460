"""Devices that publish on their own (southbound) MQTT broker: meters, sensors.

The device pushes; this driver subscribes once per connection and delivers every message
through the push sink as readings (value by JSON pointer, source time from the payload when
bound). Every point is pushed, so ``read()`` returns nothing and the gateway's poll keeps its
one job: noticing a dead link (a ``TransportError`` once the broker connection is gone);
``read(points)`` returns the latest reading of the named points. The read does not vouch
for the device (``read_vouches_for_push = False``): the broker stays up while a device goes
quiet, so a value counts as confirmed when the device sent it, and goes stale with its silence.
Commands (service calls and property writes) are published to the device's command topic
with a fresh correlation id and matched to the reply carrying the same id, within a timeout.

aiomqtt on paho, the client the gateway's hub link uses, with TCP_NODELAY on its socket
(Nagle plus delayed ACK cost 40-90 ms per command round trip). The driver has no reconnect
loop of its own: a lost link fails the next ``read()`` and the gateway's device runner
reconnects with its backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiomqtt
import orjson
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from citytwin.drivers.base import Driver, Health, Invokable, Quality, Reading
from citytwin.drivers.errors import (
    BindingError,
    ConnectError,
    ConnectionClosed,
    DecodeError,
    DeviceError,
    RequestTimeout,
)
from citytwin.drivers.mqtt_device.binding import MqttCall, MqttConnection, MqttPoint
from citytwin.drivers.mqtt_device.pointer import (
    MISSING,
    covers,
    matches,
    minimal_filters,
    parse_pointer,
    place,
    resolve,
    timestamp_ms,
)
from citytwin.drivers.templates import substitute

log = logging.getLogger("citytwin.drivers.mqtt")

_ROUTE_CACHE_SIZE = 4096


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class _Route:
    """How one point is taken from a message on a matching topic."""

    point: str
    topic: str
    tokens: tuple[str, ...]
    ts_tokens: tuple[str, ...] | None
    mapping: dict[str, Any] | None

    def reading(self, doc: Any, received: int) -> Reading:
        value = resolve(doc, self.tokens)
        if value is MISSING:
            return Reading(self.point, None, received, Quality.BAD, "no value at the point's pointer")
        ts, quality, error = received, Quality.GOOD, None
        if self.ts_tokens is not None:
            stamp = resolve(doc, self.ts_tokens)
            if stamp is not MISSING:
                try:
                    ts = timestamp_ms(stamp)
                except ValueError as exc:
                    quality, error = Quality.UNCERTAIN, f"bad timestamp {stamp!r}: {exc}"
        if self.mapping is not None:
            key = value if isinstance(value, str) else orjson.dumps(value).decode()
            if key not in self.mapping:
                return Reading(self.point, None, ts, Quality.BAD, f"unmapped value {value!r}")
            value = self.mapping[key]
        elif isinstance(value, dict | list | str) or value is None:
            return Reading(self.point, None, ts, Quality.BAD, f"not a number or boolean: {value!r}")
        return Reading(self.point, value, ts, quality, error)


class MqttDeviceDriver(Driver, Invokable):
    """One device on one southbound broker connection."""

    read_vouches_for_push = False

    def __init__(self, connection: MqttConnection, points: Mapping[str, MqttPoint]) -> None:
        self._conn = connection
        self._points = dict(points)
        self._peer = f"{connection.host}:{connection.port}"
        self._routes = tuple(
            _Route(
                name,
                point.topic,
                parse_pointer(point.pointer),
                None if point.timestamp is None else parse_pointer(point.timestamp),
                point.map,
            )
            for name, point in self._points.items()
            if point.topic is not None
        )
        self._filters = list(connection.subscribe) or sorted({r.topic for r in self._routes})
        self._route_cache: dict[str, tuple[_Route, ...]] = {}
        self._correlation = parse_pointer(connection.correlation)
        self._reply_filters: set[str] = {
            topic
            for topic in [connection.reply_topic]
            + [p.set.reply_topic for p in self._points.values() if p.set is not None]
            if topic is not None
        }
        self._latest: dict[str, Reading] = {}
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._client: aiomqtt.Client | None = None
        self._receiver: asyncio.Task[None] | None = None
        self._subscribed: set[str] = set()
        self._down: str | None = "not connected"
        self._last_error: str | None = None
        self._messages = 0
        self._malformed = 0
        self._requests = 0
        self._failures = 0
        self._late_replies = 0
        self._connects = 0

    # -- link -------------------------------------------------------------------------

    async def connect(self) -> None:
        await self.close()
        conn = self._conn
        client = aiomqtt.Client(
            conn.host,
            conn.port,
            identifier=conn.client_id,
            username=conn.username,
            password=conn.password.get_secret_value() if conn.password else None,
            protocol=(
                aiomqtt.ProtocolVersion.V5 if conn.protocol == "5" else aiomqtt.ProtocolVersion.V311
            ),
            keepalive=conn.keepalive,
            # no wait of aiomqtt's own: ours (asyncio.timeout around every call) governs. Given
            # a timeout, aiomqtt awaits each acknowledgement in asyncio.wait_for, which on
            # Python 3.11 loses a cancellation meeting the acknowledgement (CPython gh-86296):
            # a command cancelled as its PUBACK came went on to wait for its reply
            timeout=math.inf,
            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
        )
        try:
            async with asyncio.timeout(conn.connect_timeout):
                await client.__aenter__()
        except TimeoutError:
            raise self._connect_failed(f"no answer within {conn.connect_timeout} s") from None
        except aiomqtt.MqttError as exc:
            raise self._connect_failed(str(exc)) from None
        try:
            async with asyncio.timeout(conn.connect_timeout):
                for topic in minimal_filters([*self._filters, *self._reply_filters]):
                    await client.subscribe(topic, qos=conn.qos)
        except (TimeoutError, aiomqtt.MqttError) as exc:
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                async with asyncio.timeout(conn.connect_timeout):
                    await client.__aexit__(None, None, None)
            raise self._connect_failed(f"subscribing failed: {exc or 'timeout'}") from None
        self._client = client
        self._subscribed = set(minimal_filters([*self._filters, *self._reply_filters]))
        self._down = None
        self._connects += 1
        self._receiver = asyncio.create_task(self._receive(client), name=f"mqtt-device:{self._peer}")

    def _connect_failed(self, reason: str) -> ConnectError:
        self._last_error = f"cannot connect to broker {self._peer}: {reason}"
        return ConnectError(self._last_error)

    async def close(self) -> None:
        receiver, self._receiver = self._receiver, None
        client, self._client = self._client, None
        if receiver is not None:
            receiver.cancel()
            await asyncio.wait([receiver])
        if self._down is None:
            self._down = "the driver closed the connection"
        self._fail_pending(ConnectionClosed(self._down))
        if client is not None:
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                async with asyncio.timeout(self._conn.connect_timeout):
                    await client.__aexit__(None, None, None)

    async def _receive(self, client: aiomqtt.Client) -> None:
        try:
            async for message in client.messages:
                payload = message.payload
                data = payload if isinstance(payload, bytes) else str(payload).encode()
                props = message.properties
                correlation = getattr(props, "CorrelationData", None) if props else None
                self._on_message(str(message.topic), data, correlation)
        except aiomqtt.MqttError as exc:
            reason = f"link to broker {self._peer} lost: {exc}"
        else:
            reason = f"link to broker {self._peer} ended"
        self._down = self._last_error = reason
        log.warning("%s", reason)
        self._fail_pending(ConnectionClosed(reason))

    def _fail_pending(self, error: Exception) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)

    @property
    def health(self) -> Health:
        return Health(
            connected=self._down is None,
            last_error=self._last_error,
            requests=self._requests,
            failures=self._failures,
            extra={
                "messages": self._messages,
                "malformed": self._malformed,
                "late_replies": self._late_replies,
                "connects": self._connects,
            },
        )

    # -- incoming ---------------------------------------------------------------------

    def _on_message(self, topic: str, payload: bytes, correlation: bytes | None) -> None:
        self._messages += 1
        received = _now_ms()
        try:
            doc: Any = orjson.loads(payload)
            problem = None
        except orjson.JSONDecodeError as exc:
            doc, problem = MISSING, f"payload on {topic} is not JSON: {exc}"
        if self._pending and any(matches(f, topic) for f in self._reply_filters):
            self._on_reply(doc, problem, correlation)
        routes = self._routes_for(topic)
        if not routes:
            return
        if problem is not None:
            self._malformed += 1
            self._last_error = problem
            readings = [Reading(r.point, None, received, Quality.BAD, problem) for r in routes]
        else:
            readings = [route.reading(doc, received) for route in routes]
        latest = self._latest
        for reading in readings:
            latest[reading.point] = reading
        sink = self._push_sink
        if sink is not None:
            sink(readings)

    def _routes_for(self, topic: str) -> tuple[_Route, ...]:
        routes = self._route_cache.get(topic)
        if routes is None:
            routes = tuple(r for r in self._routes if matches(r.topic, topic))
            if len(self._route_cache) >= _ROUTE_CACHE_SIZE:
                del self._route_cache[next(iter(self._route_cache))]
            self._route_cache[topic] = routes
        return routes

    def _on_reply(self, doc: Any, problem: str | None, correlation: bytes | None) -> None:
        key: Any = None
        if correlation:
            key = correlation.decode(errors="replace")
        elif problem is None:
            key = resolve(doc, self._correlation)
        if not isinstance(key, str):
            return
        future = self._pending.get(key)
        if future is None:
            self._late_replies += 1
            return
        if future.done():
            return
        if problem is not None:
            future.set_exception(DecodeError(problem))
        else:
            future.set_result(doc)

    # -- the driver interface ---------------------------------------------------------

    def _require_link(self) -> aiomqtt.Client:
        if self._down is not None or self._client is None:
            raise ConnectionClosed(self._down or f"not connected to broker {self._peer}")
        return self._client

    async def read(self, points: Sequence[str] | None = None) -> list[Reading]:
        self._require_link()
        if points is None:  # every point is pushed; the runner tracks when each one arrived
            return []
        latest = self._latest
        if isinstance(points, str):
            raise BindingError("points must be a sequence of point names, not one string")
        unknown = [name for name in points if name not in self._points]
        if unknown:
            raise BindingError(f"unknown points: {', '.join(map(repr, unknown))}")
        return [latest[name] for name in points if name in latest]

    async def write(self, values: Mapping[str, Any]) -> None:
        """One command per point, in order, each awaiting its reply (when it has one)."""
        calls: list[tuple[str, MqttCall, Any]] = []
        for name, value in values.items():
            point = self._points.get(name)
            if point is None:
                raise BindingError(f"unknown point {name!r}")
            if point.set is None:
                raise BindingError(f"point {name!r} has no 'set' command: it is read-only")
            calls.append((name, point.set, value))
        for name, call, value in calls:
            await self._command(call, {"value": value, "point": name}, f"writing {name}")

    async def invoke(self, call: Any, inputs: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(call, MqttCall):
            raise BindingError(f"an mqtt call binding is needed, not {type(call).__name__}")
        return await self._command(call, inputs, "calling")

    async def _command(self, call: MqttCall, inputs: Mapping[str, Any], what: str) -> dict[str, Any]:
        conn = self._conn
        topic = call.topic or conn.command_topic
        if topic is None:
            raise BindingError("no command topic: set 'topic' on the call or 'command_topic'")
        reply_topic = call.reply_topic or conn.reply_topic
        timeout = call.timeout or conn.timeout
        payload = substitute(call.payload, inputs)
        client = self._require_link()
        cid = uuid.uuid4().hex
        what = f"{what} {topic} (correlation {cid})"
        properties = None
        if reply_topic is not None:
            if not isinstance(payload, dict):
                raise BindingError("a call awaiting a reply needs an object payload for its id")
            place(payload, self._correlation, cid)
            if conn.protocol == "5":
                properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                properties.CorrelationData = cid.encode()
                if "+" not in reply_topic and "#" not in reply_topic:
                    properties.ResponseTopic = reply_topic
        try:
            data = orjson.dumps(payload)
        except TypeError as exc:
            raise BindingError(f"cannot encode the command payload: {exc}") from None
        self._requests += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[cid] = future
        try:
            async with asyncio.timeout(timeout):
                if reply_topic is not None and reply_topic not in self._reply_filters:
                    self._reply_filters.add(reply_topic)
                    if not any(covers(f, reply_topic) for f in self._subscribed):
                        await client.subscribe(reply_topic, qos=conn.qos)
                        self._subscribed.add(reply_topic)
                await client.publish(topic, data, qos=conn.qos, properties=properties)
                if reply_topic is None:
                    return {}
                reply = await future
        except TimeoutError:
            self._failures += 1
            self._last_error = f"no reply within {timeout:g} s {what}"
            raise RequestTimeout(self._last_error) from None
        except aiomqtt.MqttError as exc:
            self._failures += 1
            self._last_error = f"link to broker {self._peer} lost {what}: {exc}"
            raise ConnectionClosed(self._last_error) from None
        except (ConnectionClosed, DecodeError) as exc:
            self._failures += 1
            self._last_error = f"{exc} ({what})"
            raise type(exc)(self._last_error) from None
        finally:
            self._pending.pop(cid, None)
        return self._outputs(call, reply, what)

    def _outputs(self, call: MqttCall, reply: Any, what: str) -> dict[str, Any]:
        if call.error is not None:
            error = resolve(reply, parse_pointer(call.error))
            if error is not MISSING and error is not None and error is not False:
                self._failures += 1
                self._last_error = f"the device refused {what}: {error}"
                raise DeviceError(self._last_error)
        outputs: dict[str, Any] = {}
        for name, pointer in call.output.items():
            value = resolve(reply, parse_pointer(pointer))
            if value is MISSING:
                self._failures += 1
                self._last_error = f"the reply {what} has nothing at {pointer!r} for {name!r}"
                raise DecodeError(self._last_error)
            outputs[name] = value
        return outputs
