"""OPC UA driver on asyncua 2.1: subscriptions first, batched reads as the fallback.

Each ``connect()`` builds a fresh ``asyncua.Client`` (its own auto-reconnect off: the
gateway's device runner owns backoff, so a server restart is a ``read()`` that raises, a
``close()`` and a ``connect()`` that subscribes again). After the session is up:

- NodeIds written with ``nsu=`` are resolved against the server's namespace array;
- subscribed points become monitored items of one subscription whose notifications reach
  the push sink (see ``subscription.Feed``); a point the server refuses to monitor (an
  unknown NodeId, say) falls back to the poll, which then reports it BAD with the reason;
- ``read()`` reads the polled points in one batched Read, and checks the session even
  when there is nothing to read, so a dead server is noticed while everything is pushed.

The library's own stale-subscription watchdog is stopped: ours (``Feed``) rebuilds a quiet
subscription, counts it and logs it, and two watchdogs must not rebuild the same one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, TypeVar

from asyncua import ua
from asyncua.client.client import Client
from asyncua.client.ua_client import UaClientState
from asyncua.crypto import security_policies
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaError, UaStatusCodeError

from citytwin.drivers.base import Driver, Health, Invokable, Quality, Reading
from citytwin.drivers.errors import (
    BindingError,
    ConnectError,
    ConnectionClosed,
    DecodeError,
    DeviceError,
    DriverError,
    RequestTimeout,
)
from citytwin.drivers.opcua import convert, security
from citytwin.drivers.opcua.binding import OpcUaCall, OpcUaConnection, OpcUaPoint
from citytwin.drivers.opcua.nodeid import parse_nodeid
from citytwin.drivers.opcua.subscription import Feed, failed_items, monitored_item_request

log = logging.getLogger("citytwin.opcua")
T = TypeVar("T")


class _LostLinkNoise(logging.Filter):
    """asyncua's publish loop logs a traceback every second until a lost session is closed;
    the loss already reaches the gateway as our ConnectionClosed, with its reason."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (record.msg.startswith("Publish iteration crashed") and isinstance(exc, ConnectionError))


class _AbandonedAnswer(logging.Filter):
    """asyncua warns when an answer comes for a request whose waiter gave up. In asyncua 2.1
    that only happens after its ``wait_for`` cancelled the answer's future: our task was
    cancelled (the gateway stopping, a device removed) or the request timed out, which already
    reached the gateway as our RequestTimeout. Requests carry ids, so the session stays in
    step; the late answer is dropped, as it should be, and says nothing new."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != "Future for request id %s is already done"


logging.getLogger("asyncua.client.ua_session.UaSession").addFilter(_LostLinkNoise())
logging.getLogger("asyncua.client.ua_client.UASocketProtocol").addFilter(_AbandonedAnswer())
if logging.getLogger("asyncua").level == logging.NOTSET:
    # asyncua logs every publish response at INFO: at the gateway's INFO that floods the log
    logging.getLogger("asyncua").setLevel(logging.WARNING)

# answers that mean the session or channel is gone, not that one operation failed
_LINK_LOST = {
    StatusCodes.BadSessionIdInvalid, StatusCodes.BadSessionClosed,
    StatusCodes.BadSessionNotActivated, StatusCodes.BadSecureChannelIdInvalid,
    StatusCodes.BadSecureChannelClosed, StatusCodes.BadConnectionClosed,
    StatusCodes.BadServerNotConnected, StatusCodes.BadCommunicationError,
    StatusCodes.BadShutdown, StatusCodes.BadServerHalted,
}
_CERT_REFUSED = {
    StatusCodes.BadCertificateUntrusted, StatusCodes.BadCertificateInvalid,
    StatusCodes.BadSecurityChecksFailed, StatusCodes.BadCertificateUriInvalid,
}
_MAX_NODES_PER_READ = 1000
_MODES = {"Sign": ua.MessageSecurityMode.Sign, "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt}


class OpcUaDriver(Driver, Invokable):
    """One session with one OPC UA server."""

    def __init__(self, connection: OpcUaConnection, points: Mapping[str, OpcUaPoint]) -> None:
        self._conn = connection
        self._points: dict[str, OpcUaPoint] = dict(points)
        self._parsed = {name: parse_nodeid(p.node) for name, p in points.items()}
        self._peer = connection.url
        self._client: Client | None = None
        self._feed: Feed | None = None
        self._namespaces: list[str] = []
        self._nodeids: dict[str, ua.NodeId] = {}
        self._unresolved: dict[str, str] = {}
        self._polled: list[str] = []
        self._subscribed: list[str] = []
        self._calls: dict[tuple[str, str], tuple[ua.NodeId, ua.NodeId]] = {}
        self._dead: str | None = None
        self._last_error: str | None = None
        self._requests = 0
        self._failures = 0
        self._connects = 0
        self._rebuilds = 0
        self._notifications = 0

    # -- link -------------------------------------------------------------------------

    async def connect(self) -> None:
        await self.close()
        conn = self._conn
        client = Client(conn.url, timeout=conn.timeout, watchdog_intervall=conn.probe_interval)
        client.application_uri = conn.application_uri
        client.name = client.description = "citytwin-gateway"
        client.product_uri = "urn:citytwin:gateway"
        client.session_timeout = 60_000  # a gateway that died leaves no session behind for an hour
        if conn.username is not None:
            client.set_user(conn.username)
            if conn.password is not None:
                client.set_password(conn.password.get_secret_value())
        try:
            async with asyncio.timeout(conn.connect_timeout):
                if conn.security_mode != "None":
                    await self._secure(client)
                await client.connect()
                self._namespaces = list(await client.get_namespace_array())
        except ConnectError as exc:
            raise self._connect_failed(client, str(exc)) from None
        except TimeoutError:
            raise self._connect_failed(client, f"cannot connect to {self._peer}: no answer within {conn.connect_timeout} s") from None
        except UaStatusCodeError as exc:
            raise self._connect_failed(client, self._refusal(exc)) from None
        except (OSError, UaError) as exc:
            raise self._connect_failed(client, f"cannot connect to {self._peer}: {_reason(exc)}") from None
        self._stop_library_watchdog(client)
        self._client = client
        self._connects += 1
        self._resolve()
        try:
            await self._subscribe(client)
        except DriverError:
            await self.close()
            raise
        log.info("%s: connected (security %s, %d subscribed, %d polled)", self._peer,
                 conn.security_mode, len(self._subscribed), len(self._polled))

    async def _secure(self, client: Client) -> None:
        conn = self._conn
        mode = _MODES[conn.security_mode]
        policy = security_policies.SecurityPolicyBasic256Sha256
        own = await security.own_certificate(conn)
        endpoint = await security.server_endpoint(conn, mode, policy.URI)
        server_cert = security.first_certificate(endpoint.ServerCertificate or b"")
        if not server_cert:
            raise ConnectError(f"{self._peer} sent no certificate with its secured endpoint")
        await security.check_trusted(conn, server_cert)
        await client.set_security(policy, str(own.cert), str(own.key), server_certificate=server_cert, mode=mode)

    def _refusal(self, exc: UaStatusCodeError) -> str:
        status = ua.StatusCode(exc.code)
        text = convert.status_text(status)
        if exc.code in _CERT_REFUSED:
            own = self._conn.pki_dir / "own" / "cert.der"
            return f"{self._peer} refused the gateway's certificate ({text}); add {own} to the server's trust list"
        if exc.code in (StatusCodes.BadUserAccessDenied, StatusCodes.BadIdentityTokenInvalid,
                        StatusCodes.BadIdentityTokenRejected):
            return f"{self._peer} refused the user {self._conn.username or '(anonymous)'}: {text}"
        return f"{self._peer} refused the connection: {text}"

    def _connect_failed(self, client: Client, reason: str) -> ConnectError:
        client.disconnect_socket()
        self._last_error = reason
        return ConnectError(reason)

    @staticmethod
    def _stop_library_watchdog(client: Client) -> None:
        task = getattr(client, "_stale_watchdog_task", None)
        if isinstance(task, asyncio.Task):
            task.cancel()

    def _resolve(self) -> None:
        self._nodeids, self._unresolved = {}, {}
        for name, text in self._parsed.items():
            try:
                self._nodeids[name] = convert.to_nodeid(text, self._namespaces)
            except BindingError as exc:
                self._unresolved[name] = f"{self._points[name].node}: {exc}"
                log.warning("%s/%s: %s", self._peer, name, self._unresolved[name])
        self._calls = {}

    async def _subscribe(self, client: Client) -> None:
        conn = self._conn
        self._subscribed = [
            n for n, p in self._points.items()
            if conn.subscribe and p.mode == "subscribe" and n in self._nodeids
        ]
        self._polled = [n for n in self._points if n in self._nodeids and n not in self._subscribed]
        if not self._subscribed:
            return
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=conn.publishing_interval,
            RequestedLifetimeCount=max(3 * conn.stale_intervals, 3 * conn.keepalive_count, 30),
            RequestedMaxKeepAliveCount=conn.keepalive_count,
            MaxNotificationsPerPublish=0,
            PublishingEnabled=True,
            Priority=0,
        )
        try:
            sub = await self._call(client.create_subscription(params, queue_maxsize=conn.queue_limit), "creating a subscription")
        except DeviceError as exc:  # the server cannot subscribe: poll everything instead
            log.warning("%s: no subscription (%s); reading every point by polling", self._peer, exc)
            self._polled += self._subscribed
            self._subscribed = []
            return
        default_sampling = conn.sampling_interval if conn.sampling_interval is not None else conn.publishing_interval
        requests = []
        for handle, name in enumerate(self._subscribed, start=1):
            point = self._points[name]
            sampling = point.sampling_interval if point.sampling_interval is not None else default_sampling
            requests.append(monitored_item_request(
                self._nodeids[name], handle, sampling, point.queue_size,
                point.server_deadband, point.server_deadband_type,
            ))
        results = await self._call(sub.create_monitored_items(requests), "creating monitored items")
        refused = failed_items(results, self._subscribed)
        for name, reason in refused.items():
            log.warning("%s/%s: cannot monitor %s (%s); reading it by polling",
                        self._peer, name, self._points[name].node, reason)
        handles = {h: n for h, n in enumerate(self._subscribed, start=1) if n not in refused}
        self._polled += list(refused)
        self._subscribed = [n for n in self._subscribed if n not in refused]
        self._feed = Feed(sub, handles, lambda: self._push_sink, conn.stale_intervals, self._peer)
        self._feed.start()

    async def close(self) -> None:
        feed, self._feed = self._feed, None
        client, self._client = self._client, None
        self._dead = None
        if feed is not None:
            self._rebuilds += feed.rebuilds
            self._notifications += feed.notifications
            await feed.stop()
        if client is not None:
            try:
                async with asyncio.timeout(min(self._conn.timeout, 2.0)):
                    await client.disconnect()
            except (TimeoutError, OSError, UaError):
                pass
            finally:
                client.disconnect_socket()

    def _alive(self) -> Client:
        """The client, or ConnectionClosed with the reason the session is unusable."""
        client = self._client
        if client is None:
            raise ConnectionClosed(f"not connected to {self._peer}")
        reason = self._dead or (self._feed.dead if self._feed is not None else None)
        if reason is None and client.state is not UaClientState.CONNECTED:
            reason = f"connection to {self._peer} lost ({client.state.value})"
        if reason is not None:
            self._last_error = reason
            raise ConnectionClosed(reason)
        return client

    @property
    def health(self) -> Health:
        feed = self._feed
        connected = False
        with contextlib.suppress(ConnectionClosed):
            connected = self._client is not None and self._alive() is not None
        return Health(
            connected=connected,
            last_error=self._last_error,
            requests=self._requests,
            failures=self._failures,
            extra={
                "security": self._conn.security_mode,
                "subscribed": len(self._subscribed),
                "polled": len(self._polled),
                "notifications": self._notifications + (feed.notifications if feed else 0),
                "subscription_rebuilds": self._rebuilds + (feed.rebuilds if feed else 0),
                "connects": self._connects,
            },
        )

    # -- requests ---------------------------------------------------------------------

    async def _call(self, request: Awaitable[T], what: str) -> T:
        """Await one service call; every failure leaves as a ``DriverError``."""
        self._requests += 1
        try:
            return await request
        except TimeoutError:
            error: DriverError = RequestTimeout(f"no answer from {self._peer} within {self._conn.timeout} s {what}")
        except UaStatusCodeError as exc:
            text = f"{convert.status_text(ua.StatusCode(exc.code))} {what}"
            if exc.code in _LINK_LOST:
                error = ConnectionClosed(f"connection to {self._peer} lost: {text}")
            else:
                error = DeviceError(text, exc.code)
        except (ConnectionError, OSError) as exc:
            error = ConnectionClosed(f"connection to {self._peer} lost {what}: {_reason(exc)}")
        except UaError as exc:
            error = DecodeError(f"bad answer {what}: {exc!r}")
        self._failures += 1
        self._last_error = str(error)
        if isinstance(error, ConnectionClosed):
            self._dead = str(error)
        raise error

    async def read(self, points: Sequence[str] | None = None) -> list[Reading]:
        """Reads the polled points (all named points when ``points`` is given) in one request.

        With every point subscribed this sends nothing and returns [] — but still raises
        ``ConnectionClosed`` when the session is gone, so the gateway notices.
        """
        client = self._alive()
        if points is None:
            names: Sequence[str] = self._polled
            scope: Sequence[str] = list(self._points)
        else:
            if isinstance(points, str):
                raise BindingError("points must be a sequence of point names, not one string")
            unknown = [n for n in points if n not in self._points]
            if unknown:
                raise BindingError(f"unknown points: {', '.join(map(repr, unknown))}")
            names = [n for n in points if n in self._nodeids]
            scope = points
        readings = [self._bad(n, self._unresolved[n]) for n in scope if n in self._unresolved]
        for start in range(0, len(names), _MAX_NODES_PER_READ):
            chunk = names[start:start + _MAX_NODES_PER_READ]
            params = ua.ReadParameters()
            params.TimestampsToReturn = ua.TimestampsToReturn.Both
            params.NodesToRead = [
                ua.ReadValueId(NodeId=self._nodeids[n], AttributeId=AttributeIds.Value) for n in chunk
            ]
            values = await self._call(client.uaclient.read(params), f"reading {len(chunk)} nodes")
            if len(values) != len(chunk):
                raise DecodeError(f"{self._peer} answered {len(values)} values for {len(chunk)} nodes")
            readings.extend(map(convert.reading, chunk, values))
        return readings

    @staticmethod
    def _bad(name: str, reason: str) -> Reading:
        return Reading(name, None, convert.epoch_ms(None), Quality.BAD, reason)

    async def write(self, values: Mapping[str, Any]) -> None:
        """Writes every value in one Write request, each as its binding's Variant type.

        Every value is checked before anything is sent; a value the server refuses raises
        ``DeviceError`` naming the first such point (the others in the request may have
        been written).
        """
        items: list[ua.WriteValue] = []
        for name, value in values.items():
            point = self._points.get(name)
            if point is None:
                raise BindingError(f"unknown point {name!r}")
            if not point.writable or point.type is None:
                raise BindingError(f"point {name!r} ({point.node}) is read-only")
            nodeid = self._nodeids.get(name)
            if nodeid is None:
                raise BindingError(self._unresolved.get(name, f"point {name!r} is not resolved"))
            try:
                typed = convert.variant(value, point.type)
            except BindingError as exc:
                raise BindingError(f"point {name!r}: {exc}") from None
            items.append(ua.WriteValue(
                NodeId=nodeid, AttributeId=AttributeIds.Value, Value=ua.DataValue(Value=typed)
            ))
        if not items:
            return
        client = self._alive()
        params = ua.WriteParameters()
        params.NodesToWrite = items
        names = list(values)
        results = await self._call(client.uaclient.write(params), f"writing {', '.join(names)}")
        for name, status in zip(names, results, strict=False):
            if not status.is_good():
                self._failures += 1
                self._last_error = f"writing {name} ({self._points[name].node}): {convert.status_text(status)}"
                raise DeviceError(self._last_error, status.value)

    async def invoke(self, call: Any, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Calls the bound method with typed input arguments; returns the named outputs."""
        if not isinstance(call, OpcUaCall):
            raise BindingError(f"opcua needs an OpcUaCall binding, not {type(call).__name__}")
        arguments = []
        for arg in call.inputs:
            if arg.name not in inputs:
                raise BindingError(f"method {call.method} needs input {arg.name!r}")
            try:
                arguments.append(convert.variant(inputs[arg.name], arg.type))
            except BindingError as exc:
                raise BindingError(f"input {arg.name!r}: {exc}") from None
        client = self._alive()
        obj, method = self._call_nodes(call)
        request = ua.CallMethodRequest(ObjectId=obj, MethodId=method, InputArguments=arguments)
        what = f"calling {call.method}"
        (result,) = await self._call(client.uaclient.call([request]), what)
        if not result.StatusCode.is_good():
            detail = [
                f"input {arg.name!r} ({arg.type}): {convert.status_text(status)}"
                for arg, status in zip(call.inputs, result.InputArgumentResults or [], strict=False)
                if not status.is_good()
            ]
            self._failures += 1
            self._last_error = f"{what}: {convert.status_text(result.StatusCode)}" + (
                "; " + "; ".join(detail) if detail else "")
            raise DeviceError(self._last_error, result.StatusCode.value)
        outputs = [v.Value for v in result.OutputArguments or []]
        return dict(zip(call.outputs, outputs, strict=False))

    def _call_nodes(self, call: OpcUaCall) -> tuple[ua.NodeId, ua.NodeId]:
        key = (call.object, call.method)
        nodes = self._calls.get(key)
        if nodes is None:
            nodes = (
                convert.to_nodeid(parse_nodeid(call.object), self._namespaces),
                convert.to_nodeid(parse_nodeid(call.method), self._namespaces),
            )
            self._calls[key] = nodes
        return nodes


def _reason(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, OSError) and exc.errno and not text.startswith("["):
        return text
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return text or type(exc).__name__
