"""The MQTT connection to the city hub: publishes what the gateway produces, receives commands.

No business logic lives here. Acquisition never waits for the hub: ``send`` only appends to
an in-memory queue (bounded in messages and in bytes, oldest dropped and counted when full)
and ``send_state`` keeps the latest retained document per topic, so a reconnect republishes
current state once instead of every stale version, and twin publications coalesce per
device whatever the load. Reports and events do not pass through this queue: they come from
the outbox, whose own bounds slow polling when the hub falls behind (``gateway/outbox.py``). On every (re)connect the link subscribes first, then
publishes the retained state, then drains the queue in order.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiomqtt
import orjson
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from citytwin.gateway.backoff import Backoff
from citytwin.gateway.config import HubSection, TlsSection
from citytwin.gateway.jsonbytes import dumps
from citytwin.gateway.mqtttls import TlsSetupError, client_context
from citytwin.gateway.outbox import Outbox, Row
from citytwin.gateway.topics import Topics

if TYPE_CHECKING:
    from citytwin.gateway.metrics import GatewayMetrics

log = logging.getLogger("citytwin.hub")

PUBLISH_WINDOW = 8  # publishes in flight at once; aiomqtt warns above 10 pending calls
OUTBOX_WINDOW = 32  # reports in flight at once: what one broker round trip carries under load


@dataclass(slots=True)
class Outgoing:
    topic: str
    payload: bytes
    qos: int
    retain: bool = False
    response_correlation: bytes | None = None
    points: int = 0  # properties carried, for the points-published metric
    born: float = 0.0  # time.monotonic() when queued, for the backlog-age metric


@dataclass(slots=True)
class Received:
    topic: str
    payload: bytes
    response_topic: str | None
    correlation: bytes | None
    user: str | None


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _render(data: bytes | Callable[[], bytes]) -> bytes:
    return data if isinstance(data, bytes) else data()


class HubLink:
    def __init__(
        self,
        config: HubSection,
        gateway_id: str,
        on_message: Callable[[Received], Awaitable[None] | None],
        outbox: Outbox | None = None,
    ) -> None:
        self.config = config
        self.gateway_id = gateway_id
        self.topics = Topics(config.prefix, gateway_id)
        self.on_message = on_message
        self.outbox = outbox  # reports and events: durable, replayed after outages
        self.connected = False
        self.dropped = 0
        self.published = 0
        self.points_published = 0
        self.metrics: GatewayMetrics | None = None
        self._queue: collections.deque[Outgoing] = collections.deque()
        self._queue_bytes = 0
        # bytes, or a function that renders them when published (a 100-property twin is ~20 kB:
        # 1,000 kept rendered would hold ~60 MB for a reconnect that may never come)
        self._state: dict[str, bytes | Callable[[], bytes]] = {}
        self._state_pending: dict[str, bytes | Callable[[], bytes]] = {}
        self._wake = asyncio.Event()
        self._v5 = config.protocol == "5"
        self._tried = asyncio.Event()  # the first connect attempt ended (session ready, or failed)
        self._inflight = 0
        self._outbox_inflight = 0

    # --- producer side (never blocks) -------------------------------------------------
    def send(
        self, topic: str, payload: Any, qos: int | None = None, correlation: bytes | None = None, points: int = 0
    ) -> None:
        data = payload if isinstance(payload, bytes) else dumps(payload)
        limit, limit_bytes = self.config.queue_limit, self.config.queue_bytes
        while self._queue and (len(self._queue) >= limit or self._queue_bytes + len(data) > limit_bytes):
            self._queue_bytes -= len(self._queue.popleft().payload)
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 10_000 == 0:
                log.warning("hub queue full (%d messages or %d bytes): dropped %d oldest messages so far",
                            limit, limit_bytes, self.dropped)
        self._queue.append(Outgoing(topic, data, self.config.qos if qos is None else qos, False, correlation,
                                    points, time.monotonic()))
        self._queue_bytes += len(data)
        self._wake.set()

    def congestion(self) -> str | None:
        """Whether the memory queue is nearly full (replies and gateway events would be dropped)."""
        if self._queue_bytes >= 0.9 * self.config.queue_bytes or len(self._queue) >= 0.9 * self.config.queue_limit:
            return (f"hub link memory queue nearly full ({len(self._queue)} messages, {self._queue_bytes} bytes; "
                    f"bounds {self.config.queue_limit}, {self.config.queue_bytes})")
        return None

    def send_state(self, topic: str, payload: Any, rendered: bytes | None = None) -> None:
        """A retained state document; only the latest per topic is kept and sent.

        ``payload`` may be a function returning bytes: it is rendered when published, so the
        hub gets the latest state and large documents are not kept rendered in memory.
        ``rendered``: that function's result now, sent as it is (the caller paces rendering);
        the function is kept for a later reconnect.
        """
        data = payload if isinstance(payload, bytes) or callable(payload) else dumps(payload)
        self._state[topic] = data
        self._state_pending[topic] = data if rendered is None else rendered
        self._wake.set()

    def backlog(self) -> tuple[int, int, float]:
        """(messages waiting, their payload bytes, age in seconds of the oldest); O(n), for scrapes."""
        waiting = len(self._queue) + len(self._state_pending)
        size = self._queue_bytes + sum(len(d) for d in self._state_pending.values() if isinstance(d, bytes))
        age = time.monotonic() - self._queue[0].born if self._queue else 0.0
        return waiting, size, age

    async def wait_first_attempt(self, timeout: float) -> bool:
        """Wait until the first connect attempt has connected or failed (or the timeout);
        True if the link is up."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._tried.wait(), timeout)
        return self.connected

    async def drain(self, timeout: float) -> bool:
        """Wait until everything sent so far is acknowledged by the broker (or the timeout)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (self._queue or self._state_pending or self._inflight or self._outbox_inflight
               or (self.outbox is not None and self.connected and not self.outbox.idle)):
            if loop.time() >= deadline:
                log.warning("%s", self._undelivered())
                return False
            await asyncio.sleep(0.01)
        return True

    def _undelivered(self) -> str:
        """What shutdown leaves behind, said truthfully: what is safe, what comes back, what is lost."""
        parts = []
        if self.outbox is not None and self.outbox.depth:
            parts.append(f"{self.outbox.depth} report(s) and event(s) are safe in the outbox and go out "
                         "after the next start")
        if self._state_pending:
            parts.append(f"{len(self._state_pending)} retained state document(s) (status, twins) were not "
                         "sent; the next start publishes them again")
        if self._queue:
            parts.append(f"{len(self._queue)} command reply(ies) or gateway event(s) could not be sent and are "
                         "not kept (a command sent again with the same id gets its first reply)")
        where = "unreachable" if not self.connected else "too slow to acknowledge everything"
        return f"hub {self.config.url} {where} at shutdown: " + ("; ".join(parts) or "nothing was pending")

    # --- connection ---------------------------------------------------------------------
    def _client(self) -> aiomqtt.Client:
        cfg = self.config
        will = aiomqtt.Will(
            self.topics.gateway_status,
            orjson.dumps({"state": "offline", "ts": now_ms()}),
            qos=1,
            retain=True,
        )
        tls_context = None
        if cfg.use_tls:
            tls = cfg.tls or TlsSection()
            try:
                tls_context = client_context(tls.ca_file, tls.cert_file, tls.key_file, tls.insecure_skip_verify)
            except TlsSetupError as exc:  # logged as a failed attempt and retried, like a refused connection
                raise aiomqtt.MqttError(f"TLS setup failed: {exc}") from None
        return aiomqtt.Client(
            cfg.host,
            cfg.port,
            identifier=cfg.client_id or f"citytwin-{self.gateway_id}",
            username=cfg.username,
            password=cfg.password.get_secret_value() if cfg.password else None,
            protocol=aiomqtt.ProtocolVersion.V5 if self._v5 else aiomqtt.ProtocolVersion.V311,
            will=will,
            keepalive=cfg.keepalive,
            timeout=10,
            # Nagle + delayed ACK cost 40-90 ms per command round trip; paho never sets this
            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
            tls_context=tls_context,
        )

    async def run(self) -> None:
        """Connect, serve and reconnect with backoff until cancelled."""
        backoff = Backoff(self.config.reconnect_min, self.config.reconnect_max)
        failures = 0
        while True:
            try:
                async with self._client() as client:
                    # our own windows bound what is in flight; aiomqtt's warning (one log line
                    # per publish call past 10 pending) would cost more than the publish
                    client.pending_calls_threshold = 2 * (PUBLISH_WINDOW + OUTBOX_WINDOW)
                    backoff.reset()
                    if failures:
                        log.info("hub link restored to %s after %d failed attempts", self.config.url, failures)
                    else:
                        log.info("hub link up: %s (MQTT %s)", self.config.url, self.config.protocol)
                    failures = 0
                    await self._serve(client)
            except aiomqtt.MqttError as exc:
                if self.connected or failures == 0:
                    log.warning("hub link down (%s): %s; retrying", self.config.url, exc)
                failures += 1
            except Exception:  # a bug must not end the hub link for good
                log.exception("hub link failed unexpectedly; reconnecting")
                failures += 1
            finally:
                self.connected = False
                self._tried.set()
            await asyncio.sleep(backoff.next_delay())

    async def _serve(self, client: aiomqtt.Client) -> None:
        for topic in self.topics.subscriptions:
            await client.subscribe(topic, qos=1)
        # subscribe first, then the gateway's status; the current state (device status, meta,
        # twins) goes out with the drain beside the backlog, so neither the first report nor a
        # command's answer waits behind 2,000 state documents of 1,000 devices
        self._state_pending = dict(self._state)
        self.connected = True
        await self._publish_state(client, now_ms())
        tasks = [
            asyncio.create_task(self._receive(client), name="hub-receive"),
            asyncio.create_task(self._drain(client, list(self._state_pending)), name="hub-drain"),
        ]
        if self.outbox is not None:
            await self.outbox.session_started()
            tasks.append(asyncio.create_task(self._drain_outbox(client), name="hub-outbox"))
        self._tried.set()  # the session is ready: what is read from now on goes out live
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.outbox is not None:
                self.outbox.session_ended()
        for task in done:
            task.result()  # re-raise the error that ended the session
        raise aiomqtt.MqttError("message stream ended")

    async def _publish_state(self, client: aiomqtt.Client, ts: int) -> None:
        await client.publish(
            self.topics.gateway_status, orjson.dumps({"state": "online", "ts": ts}), qos=1, retain=True
        )

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            props = getattr(message, "properties", None)
            response_topic = getattr(props, "ResponseTopic", None) if props else None
            correlation = getattr(props, "CorrelationData", None) if props else None
            user = None
            if props is not None:
                for key, value in getattr(props, "UserProperty", []) or []:
                    if key == "operator":
                        user = value
            payload = message.payload if isinstance(message.payload, bytes) else bytes(str(message.payload), "utf-8")
            result = self.on_message(
                Received(str(message.topic), payload, response_topic, correlation, user)
            )
            if result is not None:
                await result

    async def _drain(self, client: aiomqtt.Client, at_connect: list[str]) -> None:
        """Replies and events, then the state as it was at connect (oldest first), then what
        changed since (newest first). The snapshot keeps a busy box from starving documents
        that never change: the twins of 1,000 devices change faster than 0.25 core renders them."""
        snapshot = collections.deque(at_connect)
        while True:
            batch: list[Outgoing] = []
            # replies and gateway events first: a command's answer never waits behind twins
            while self._queue and len(batch) < PUBLISH_WINDOW:
                m = self._queue.popleft()
                self._queue_bytes -= len(m.payload)
                batch.append(m)
            while snapshot and len(batch) < PUBLISH_WINDOW:
                topic = snapshot.popleft()
                if topic in self._state_pending:
                    batch.append(Outgoing(topic, _render(self._state_pending.pop(topic)), 1, True))
            while self._state_pending and len(batch) < PUBLISH_WINDOW:
                topic, data = self._state_pending.popitem()
                data = _render(data)
                batch.append(Outgoing(topic, data, 1, True))
            if not batch:
                self._wake.clear()
                await self._wake.wait()
                continue
            self._inflight = len(batch)
            started = time.perf_counter()
            try:
                await asyncio.gather(*(self._publish(client, m) for m in batch))
            except BaseException:
                self._inflight = 0
                # not acknowledged: put back in order (at least once; seq lets the hub dedupe)
                for m in reversed(batch):
                    if m.retain:
                        self._state_pending.setdefault(m.topic, self._state.get(m.topic, m.payload))
                    else:
                        self._queue.appendleft(m)
                        self._queue_bytes += len(m.payload)
                raise
            self._inflight = 0
            self.published += len(batch)
            self.points_published += sum(m.points for m in batch)
            if self.metrics is not None:
                self.metrics.hub_published(time.perf_counter() - started)

    async def _drain_outbox(self, client: aiomqtt.Client) -> None:
        """Publish stored reports and events; each is deleted from the outbox once acknowledged."""
        assert self.outbox is not None
        outbox = self.outbox
        while True:
            rows = await outbox.take(OUTBOX_WINDOW)
            self._outbox_inflight = len(rows)
            started = time.perf_counter()
            try:
                await asyncio.gather(*(self._publish_row(client, row) for row in rows))
            finally:
                self._outbox_inflight = 0
            # unacknowledged rows stay stored and come back as backlog in the next session
            outbox.ack(rows)
            self.published += len(rows)
            self.points_published += sum(row.points for row in rows)
            if self.metrics is not None:
                self.metrics.hub_published(time.perf_counter() - started)

    async def _publish_row(self, client: aiomqtt.Client, row: Row) -> None:
        await client.publish(row.topic, row.wire_payload(), qos=row.qos)

    async def _publish(self, client: aiomqtt.Client, m: Outgoing) -> None:
        properties = None
        if m.response_correlation is not None and self._v5:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.CorrelationData = m.response_correlation
        await client.publish(m.topic, m.payload, qos=m.qos, retain=m.retain, properties=properties)
