"""The hub operator's side of the topic contract, over one MQTT connection to the broker.

Used by ``citytwin hub``. Topics are spelled by ``gateway/topics.py`` (a ``Topics`` whose
gateway id is ``+`` gives the subscription across every gateway). Commands go out with the
operator as MQTT 5 user property ``operator`` and a Response Topic of this session
(``{prefix}/_operators/<client-id>/replies``) with the command id as Correlation Data; replies
are matched by id, also on the device's replies topic, where a 3.1.1 gateway answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import aiomqtt
import orjson
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from citytwin.gateway.mqtttls import TlsSetupError, client_context
from citytwin.gateway.topics import Topics

FINAL = frozenset({"succeeded", "failed", "rejected", "timeout", "unknown"})
BROKER_URL = re.compile(r"^(mqtts?)://([^/:@]+)(?::(\d{1,5}))?/?$")


class HubError(Exception):
    """The broker could not be reached, or refused us; the message says why (never the password)."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class BrokerOptions:
    url: str = "mqtt://127.0.0.1:1883"
    protocol: str = "5"
    prefix: str = "citytwin/v1"
    operator: str | None = None
    operator_in_payload: bool = False
    client_id: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    cafile: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    insecure: bool = False
    connect_timeout: float = 10.0

    def endpoint(self) -> tuple[bool, str, int]:
        match = BROKER_URL.match(self.url)
        if match is None:
            raise ValueError(f"broker must look like mqtt://HOST:PORT or mqtts://HOST:PORT, not {self.url!r}")
        tls = match[1] == "mqtts"
        return tls, match[2], int(match[3]) if match[3] else (8883 if tls else 1883)


@dataclass(slots=True)
class Seen:
    """One message under the prefix, located in the contract."""

    gateway: str
    device: str | None
    kind: str  # status | report | event | twin | meta | config | reply
    name: str | None
    body: Any
    retained: bool
    topic: str


def classify(prefix: str, topic: str, payload: bytes, retained: bool = False) -> Seen | None:
    root = prefix.rstrip("/") + "/"
    if not topic.startswith(root):
        return None
    parts = topic[len(root):].split("/")
    if len(parts) < 2:
        return None
    gw = parts[0]
    t = Topics(prefix, gw)
    try:
        body = orjson.loads(payload) if payload else None
    except orjson.JSONDecodeError:
        body = payload.decode("utf-8", "replace")
    where = _locate(t, parts)
    return None if where is None else Seen(gw, where[0], where[1], where[2], body, retained, topic)


def _locate(t: Topics, parts: list[str]) -> tuple[str | None, str, str | None] | None:
    """(device, kind, name) of a topic split after the prefix, as ``t`` spells it."""
    topic = "/".join([t.base, *parts[1:]])
    if topic == t.gateway_status:
        return None, "status", None
    if len(parts) == 3 and topic == t.gateway_event(parts[2]):
        return None, "event", parts[2]
    if topic == t.config_reported:
        return None, "config", None
    dev = parts[1]
    if topic == t.device_status(dev):
        return dev, "status", None
    if topic == t.report(dev):
        return dev, "report", None
    if len(parts) == 4 and topic == t.event(dev, parts[3]):
        return dev, "event", parts[3]
    if topic == t.twin(dev):
        return dev, "twin", None
    if topic == t.meta(dev):
        return dev, "meta", None
    if topic == t.replies(dev):
        return dev, "reply", None
    return None


def _safe_segment(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:64] or "cli"


class _ErrorCapture(logging.Handler):
    """Keeps paho's last error line: it names the TLS alert that our connect only sees as a timeout."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.last: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.last = record.getMessage()


class HubSession:
    """One connection to the hub broker; ``async with`` connects and disconnects."""

    def __init__(self, options: BrokerOptions) -> None:
        self.options = options
        self.v5 = options.protocol == "5"
        self.client_id = options.client_id or f"citytwin-hub-{_safe_segment(options.operator or 'cli')}-{secrets.token_hex(4)}"
        self.reply_topic = f"{options.prefix.rstrip('/')}/_operators/{_safe_segment(self.client_id)}/replies"
        self._errors = _ErrorCapture()
        self._mqtt_log = logging.getLogger(f"citytwin.hubcli.mqtt.{id(self)}")
        self._mqtt_log.propagate = False
        self._mqtt_log.addHandler(self._errors)
        self._client: aiomqtt.Client | None = None
        self._queue: asyncio.Queue[aiomqtt.Message | None] = asyncio.Queue()  # None: link lost
        self._reader: asyncio.Task[None] | None = None
        self._subscribed: set[str] = set()

    def topics(self, gateway: str | None) -> Topics:
        return Topics(self.options.prefix, gateway or "+")

    async def __aenter__(self) -> HubSession:
        opts = self.options
        try:
            tls, host, port = opts.endpoint()
        except ValueError as exc:
            raise HubError(str(exc)) from None
        context = None
        if tls:
            try:
                context = client_context(opts.cafile, opts.cert, opts.key, opts.insecure)
            except TlsSetupError as exc:
                raise HubError(str(exc)) from None
        elif opts.cafile or opts.cert or opts.key:
            raise HubError("--cafile/--cert/--key need an mqtts:// broker")
        client = aiomqtt.Client(
            host, port,
            identifier=self.client_id,
            username=opts.username,
            password=opts.password,
            protocol=aiomqtt.ProtocolVersion.V5 if self.v5 else aiomqtt.ProtocolVersion.V311,
            timeout=opts.connect_timeout,
            logger=self._mqtt_log,
            tls_context=context,
            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
        )
        try:
            await client.__aenter__()
        except aiomqtt.MqttError as exc:
            detail = self._errors.last or str(exc)
            raise HubError(f"cannot connect to {opts.url}: {detail}") from None
        self._client = client
        self._reader = asyncio.create_task(self._read(client), name="hub-cli-reader")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await self._client.__aexit__(None, None, None)
        self._mqtt_log.removeHandler(self._errors)

    async def _read(self, client: aiomqtt.Client) -> None:
        try:
            async for message in client.messages:
                self._queue.put_nowait(message)
        except aiomqtt.MqttError:
            self._queue.put_nowait(None)

    @property
    def client(self) -> aiomqtt.Client:
        assert self._client is not None, "use the session in 'async with'"
        return self._client

    async def subscribe(self, *topics: str) -> None:
        for topic in topics:
            if topic not in self._subscribed:
                await self.client.subscribe(topic, qos=1)
                self._subscribed.add(topic)

    async def messages(self, until: float | None = None, quiet: float | None = None) -> AsyncIterator[Seen]:
        """Messages under the prefix until the loop time ``until``, or ``quiet`` s without one."""
        loop = asyncio.get_running_loop()
        while True:
            wait = None if until is None else until - loop.time()
            if quiet is not None:
                wait = quiet if wait is None else min(wait, quiet)
            if wait is not None and wait <= 0:
                return
            try:
                message = await asyncio.wait_for(self._queue.get(), wait)
            except TimeoutError:
                return
            if message is None:
                raise HubError(f"lost the connection to {self.options.url}")
            payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
            if str(message.topic) == self.reply_topic:
                try:
                    body = orjson.loads(payload)
                except orjson.JSONDecodeError:
                    continue
                yield Seen("", None, "reply", None, body, False, self.reply_topic)
                continue
            seen = classify(self.options.prefix, str(message.topic), payload, bool(message.retain))
            if seen is not None:
                yield seen

    async def retained(self, topics: list[str], settle: float, limit: float) -> list[Seen]:
        """The retained messages on ``topics``: collected until ``settle`` s pass without one."""
        await self.subscribe(*topics)
        until = asyncio.get_running_loop().time() + limit
        return [seen async for seen in self.messages(until=until, quiet=settle) if seen.body is not None]

    async def command(
        self, gateway: str, device: str, topic: str, body: dict[str, Any], timeout: float,
    ) -> AsyncIterator[dict[str, Any]]:
        """Publish one command and yield its replies (``accepted``, progress, then the final one)."""
        command_id = str(body["id"])
        replies_topic = Topics(self.options.prefix, gateway).replies(device)
        await self.subscribe(replies_topic, *([self.reply_topic] if self.v5 else []))
        if self.options.operator and self.options.operator_in_payload:
            body = {**body, "operator": self.options.operator}
        properties = None
        if self.v5:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.ResponseTopic = self.reply_topic
            properties.CorrelationData = command_id.encode()
            if self.options.operator:
                properties.UserProperty = [("operator", self.options.operator)]
        await self.client.publish(topic, orjson.dumps(body), qos=1, properties=properties)
        until = asyncio.get_running_loop().time() + timeout
        async for seen in self.messages(until=until):
            if seen.kind != "reply" or not isinstance(seen.body, dict) or seen.body.get("id") != command_id:
                continue
            yield seen.body
            if seen.body.get("status") in FINAL:
                return
