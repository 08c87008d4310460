"""CoAP driver on aiocoap 0.4: GET, Observe, PUT/POST, JSON and CBOR payloads.

aiocoap does the messaging (CON retransmission, tokens, Observe, block-wise transfer);
this module owns everything around it: which resources one poll fetches (each once, however
many properties it holds), the per-request timeout, the observations and their
re-registration, and the translation of every aiocoap outcome into ``drivers.errors`` and
reading qualities. All CoAP devices share one client context (``context.py``); each driver
keeps the resolved address of its peer and sends every later request to it, so the
library's per-peer state (NSTART=1 backlog, message ids) is reused and no name is resolved
again.

Observed resources are read from their last notification while it is younger than
``observe_max_silence``; an observation silent longer than that (the server restarted and
forgot it, or the notifications are lost), ended by the server or failed is registered
anew, and in the meantime ``read()`` fetches the resource with GET.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from aiocoap import DELETE, GET, POST, PUT, Message, TransportTuning
from aiocoap import error as coap_error
from aiocoap.message import UndecidedRemote

from citytwin.drivers.base import Driver, Health, Invokable, Quality, Reading
from citytwin.drivers.coap import context as shared
from citytwin.drivers.coap.binding import CoapCall, CoapConnection, CoapPoint, Format
from citytwin.drivers.coap.payload import (
    CONTENT_FORMAT,
    build,
    decode,
    encode,
    resolve,
    split_pointer,
)
from citytwin.drivers.errors import (
    BindingError,
    ConnectError,
    ConnectionClosed,
    DecodeError,
    DeviceError,
    DriverError,
    RequestTimeout,
)
from citytwin.drivers.templates import substitute

log = logging.getLogger("citytwin.drivers.coap")

_METHODS = {"GET": GET, "POST": POST, "PUT": PUT, "DELETE": DELETE}
_RETRY_AFTER_FAILURE = 1.0  # s before an observation that failed is registered again
_RETRANSMITS = 2


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _tuning(timeout: float) -> Any:
    """CON retransmissions that end within the request timeout.

    With the RFC's defaults a lost exchange retransmits for 93 s, and aiocoap's NSTART=1
    backlog holds every later request to that peer until it ends: a dead peer would
    block its own recovery. Three transmissions spread over at most ``timeout``.
    """
    tuning = TransportTuning()
    tuning.MAX_RETRANSMIT = _RETRANSMITS
    spread = (2 ** (_RETRANSMITS + 1) - 1) * tuning.ACK_RANDOM_FACTOR
    tuning.ACK_TIMEOUT = min(TransportTuning.ACK_TIMEOUT, timeout / spread)
    return tuning


def _split_uri(path: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``/a/b?x=1&y`` -> (("a", "b"), ("x=1", "y")), percent-decoded."""
    path, _, query = path.partition("?")
    segments = tuple(unquote(s) for s in path[1:].split("/")) if path != "/" else ()
    params = tuple(unquote(q) for q in query.split("&") if q) if query else ()
    return segments, params


def _describe(response: Any) -> str:
    """``4.04 Not Found`` plus the server's diagnostic payload when it sent one."""
    code = response.code
    text = f"{code.dotted} {code.name_printable}"
    if response.payload and response.opt.content_format in (None, 0):
        try:
            diagnostic = response.payload.decode("utf-8")[:200]
        except UnicodeDecodeError:
            diagnostic = ""
        if diagnostic:
            text += f" ({diagnostic})"
    return text


@dataclass(slots=True, eq=False)
class _Resource:
    """One resource and the points read from its representation."""

    path: str
    segments: tuple[str, ...]
    query: tuple[str, ...]
    accept: int | None
    observe: bool
    points: list[tuple[str, str, tuple[str, ...]]] = field(default_factory=list)
    cached: list[Reading] = field(default_factory=list)
    observing: bool = False
    last_notification: float = 0.0  # loop time
    task: asyncio.Task[None] | None = None


class CoapDriver(Driver, Invokable):
    """One CoAP server (host and port); its points are values inside its resources."""

    def __init__(self, connection: CoapConnection, points: Mapping[str, CoapPoint]) -> None:
        self._conn = connection
        self._points: dict[str, CoapPoint] = dict(points)
        self._tokens = {name: split_pointer(p.pointer) for name, p in self._points.items()}
        host = connection.host
        hostinfo = f"[{host}]" if ":" in host and not host.startswith("[") else host
        self._peer = f"coap://{hostinfo}:{connection.port}"
        self._unresolved = UndecidedRemote("coap", f"{hostinfo}:{connection.port}")
        self._tuning = _tuning(connection.timeout)
        self._resources = self._group(self._points)
        self._by_point = {name: r for r in self._resources for name, _, _ in r.points}
        self._by_path = {r.path: r for r in self._resources}
        # a resource's format: the one its points name (checked to agree), else JSON
        self._formats: dict[str, Format] = {r.path: "json" for r in self._resources}
        for point in self._points.values():
            if point.format is not None:
                self._formats[point.path] = point.format
        self._context: Any = None
        self._remote: Any = None
        self._last_error: str | None = None
        self._requests = 0
        self._failures = 0
        self._timeouts = 0
        self._notifications = 0
        self._registrations = 0

    @staticmethod
    def _group(points: Mapping[str, CoapPoint]) -> list[_Resource]:
        resources: dict[str, _Resource] = {}
        for name, point in points.items():
            accept = CONTENT_FORMAT[point.format] if point.format else None
            resource = resources.get(point.path)
            if resource is None:
                segments, query = _split_uri(point.path)
                resource = resources[point.path] = _Resource(
                    point.path, segments, query, accept, point.observe
                )
            elif accept is not None and resource.accept not in (None, accept):
                raise BindingError(
                    f"point {name!r}: every point of {point.path} must ask for the same format"
                )
            resource.accept = resource.accept if accept is None else accept
            resource.observe = resource.observe or point.observe
            resource.points.append((name, point.pointer, split_pointer(point.pointer)))
        return list(resources.values())

    # -- link -------------------------------------------------------------------------

    async def connect(self) -> None:
        """Take the shared context and start observing; CoAP itself has no connection."""
        await self.close()
        self._context = await shared.acquire()
        self._remote = None
        for resource in self._resources:
            if resource.observe:
                resource.task = asyncio.create_task(
                    self._observe(resource), name=f"coap-observe:{self._peer}{resource.path}"
                )

    async def close(self) -> None:
        tasks = [r.task for r in self._resources if r.task is not None]
        for resource in self._resources:
            resource.task = None
            resource.observing = False
            resource.cached = []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        context, self._context, self._remote = self._context, None, None
        if context is not None:
            await shared.release(context)

    @property
    def health(self) -> Health:
        return Health(
            connected=self._context is not None,
            last_error=self._last_error,
            requests=self._requests,
            failures=self._failures,
            extra={
                "resources": len(self._resources),
                "observing": sum(r.observing for r in self._resources),
                "notifications": self._notifications,
                "registrations": self._registrations,
                "timeouts": self._timeouts,
            },
        )

    # -- requests ---------------------------------------------------------------------

    def _message(
        self,
        code: Any,
        resource: _Resource,
        *,
        payload: bytes = b"",
        content_format: int | None = None,
        accept: int | None = None,
        observe: bool = False,
    ) -> Any:
        message = Message(code=code, payload=payload, transport_tuning=self._tuning)
        message.opt.uri_path = resource.segments
        if resource.query:
            message.opt.uri_query = resource.query
        if content_format is not None:
            message.opt.content_format = content_format
        if accept is not None:
            message.opt.accept = accept
        if observe:
            message.opt.observe = 0
        message.remote = self._remote if self._remote is not None else self._unresolved
        return message

    def _fail(self, error: DriverError) -> DriverError:
        self._failures += 1
        self._last_error = str(error)
        return error

    async def _response(self, request: Any, what: str) -> Any:
        """Wait for ``request``'s first answer; every failure leaves as a ``DriverError``.

        The wait is shielded: our task cancelled (the gateway stopping, a device removed, a
        command's time up) ends at once and leaves aiocoap's exchange to finish on its own, its
        retransmissions ending within the timeout (``_tuning``) and a late answer settling a
        future nobody awaits. Cancelling aiocoap's response future instead lets it be told of
        the cancellation only a loop step or two later (a done-callback, and for blockwise
        requests a task's cancellation in between): an answer arriving meanwhile makes aiocoap
        set the result of the cancelled future, and it logs "Exception raised through
        dispatch_message: invalid state" with a traceback. Our own timeout still cancels the
        exchange, so that the peer's next request need not queue behind it (NSTART 1); an
        observation is cancelled explicitly by its own loop (``_observe_once``).
        """
        timeout = self._conn.timeout
        answer = request.response
        try:
            async with asyncio.timeout(timeout):
                response = await asyncio.shield(answer)
        except (TimeoutError, coap_error.TimeoutError):
            answer.cancel()
            self._timeouts += 1
            raise self._fail(
                RequestTimeout(f"no answer from {self._peer} within {timeout:g} s {what}")
            ) from None
        except coap_error.ResolutionError as exc:
            raise self._fail(ConnectError(f"cannot resolve {self._peer}: {exc}")) from None
        except coap_error.LibraryShutdown:
            raise self._fail(ConnectionClosed(f"the CoAP context was shut down {what}")) from None
        except coap_error.NetworkError as exc:
            raise self._fail(ConnectError(f"cannot reach {self._peer} {what}: {exc}")) from None
        except coap_error.Error as exc:
            raise self._fail(DecodeError(f"bad answer from {self._peer} {what}: {exc}")) from None
        if self._remote is None and response.remote is not None:
            self._remote = response.remote  # later requests skip resolution, reuse peer state
        return response

    async def _exchange(self, message: Any, what: str) -> Any:
        context = self._context
        if context is None:
            raise ConnectionClosed(f"not connected to {self._peer}")
        self._requests += 1
        try:
            request = context.request(message)
        except (ValueError, TypeError, coap_error.Error) as exc:
            raise self._fail(BindingError(f"cannot build the request {what}: {exc}")) from None
        return await self._response(request, what)

    def _document(self, response: Any, what: str) -> Any:
        if not response.code.is_successful():
            raise self._fail(
                DeviceError(f"{_describe(response)} {what}", int(response.code))
            )
        try:
            return decode(response.payload, response.opt.content_format)
        except DecodeError as exc:
            raise self._fail(DecodeError(f"{exc} {what}")) from None

    # -- reads ------------------------------------------------------------------------

    async def read(self, points: Sequence[str] | None = None) -> list[Reading]:
        if points is None:
            resources = self._resources
        else:
            if isinstance(points, str):
                raise BindingError("points must be a sequence of point names, not one string")
            unknown = [name for name in points if name not in self._by_point]
            if unknown:
                raise BindingError(f"unknown points: {', '.join(map(repr, unknown))}")
            resources = list({id(r): r for r in map(self._by_point.__getitem__, points)}.values())
        now = asyncio.get_running_loop().time()
        if len(resources) == 1:
            readings = await self._read_resource(resources[0], now)
        else:
            results = await asyncio.gather(
                *(self._read_resource(r, now) for r in resources), return_exceptions=True
            )
            readings = []
            for result in results:
                if isinstance(result, BaseException):
                    raise result
                readings.extend(result)
        if points is not None:
            wanted = set(points)
            readings = [r for r in readings if r.point in wanted]
        return readings

    async def _read_resource(self, resource: _Resource, now: float) -> list[Reading]:
        if (
            resource.observing
            and resource.cached
            and now - resource.last_notification < self._conn.observe_max_silence
        ):
            return resource.cached
        what = f"reading {resource.path}"
        message = self._message(GET, resource, accept=resource.accept)
        response = await self._exchange(message, what)
        return self._readings(resource, response, what)

    def _readings(self, resource: _Resource, response: Any, what: str) -> list[Reading]:
        ts = _now_ms()
        try:
            document = self._document(response, what)
        except (DeviceError, DecodeError) as exc:
            return [Reading(name, None, ts, Quality.BAD, str(exc)) for name, _, _ in resource.points]
        readings: list[Reading] = []
        for name, pointer, tokens in resource.points:
            try:
                value = resolve(document, tokens)
            except KeyError as exc:
                reason = f"no {pointer} in the payload of {resource.path} (missing {exc})"
                readings.append(Reading(name, None, ts, Quality.BAD, reason))
                continue
            if isinstance(value, dict | list):
                kind = "an object" if isinstance(value, dict) else "an array"
                reason = f"{pointer or 'the payload'} of {resource.path} is {kind}, not a value"
                readings.append(Reading(name, None, ts, Quality.BAD, reason))
                continue
            readings.append(Reading(name, value, ts, Quality.GOOD))
        return readings

    # -- observe ----------------------------------------------------------------------

    async def _observe(self, resource: _Resource) -> None:
        """Keep ``resource`` observed for as long as the driver is connected."""
        while True:
            delay = _RETRY_AFTER_FAILURE
            try:
                if not await self._observe_once(resource):
                    delay = self._conn.observe_max_silence  # the server will not notify
            except DriverError as exc:
                log.info("%s%s: observation failed: %s", self._peer, resource.path, exc)
            finally:
                resource.observing = False
            await asyncio.sleep(min(delay, self._conn.observe_max_silence))

    async def _observe_once(self, resource: _Resource) -> bool:
        """One registration and its notifications; False if the resource is not observable."""
        what = f"observing {resource.path}"
        message = self._message(GET, resource, accept=resource.accept, observe=True)
        context = self._context
        if context is None:
            raise ConnectionClosed(f"not connected to {self._peer}")
        self._requests += 1
        self._registrations += 1
        request = context.request(message)
        observation = request.observation
        try:
            response = await self._response(request, what)
            self._notified(resource, response, what)
            if response.opt.observe is None or not response.code.is_successful():
                log.info("%s%s: not observable (%s)", self._peer, resource.path, _describe(response))
                return bool(response.code.is_successful())
            resource.observing = True
            silence = self._conn.observe_max_silence
            notifications = aiter(observation)
            while True:
                try:
                    async with asyncio.timeout(silence):
                        notification = await anext(notifications)
                except StopAsyncIteration:
                    log.info("%s%s: the server ended the observation", self._peer, resource.path)
                    return True
                except TimeoutError:
                    log.info(
                        "%s%s: no notification for %g s, observing anew",
                        self._peer, resource.path, silence,
                    )
                    return True
                except coap_error.Error as exc:
                    raise self._fail(ConnectionClosed(f"{what}: {exc}")) from None
                self._notified(resource, notification, what)
        finally:
            if observation is not None and not observation.cancelled:
                observation.cancel()

    def _notified(self, resource: _Resource, response: Any, what: str) -> None:
        readings = self._readings(resource, response, what)
        resource.cached = readings
        resource.last_notification = asyncio.get_running_loop().time()
        self._notifications += 1
        sink = self._push_sink
        if sink is not None:
            sink(readings)

    # -- writes and calls -------------------------------------------------------------

    async def write(self, values: Mapping[str, Any]) -> None:
        """One request per resource written: its points' values merged into one document,
        in the resource's format.

        Every value is checked before the first request; a failure stops there, and the
        resources before it have been written.
        """
        groups: dict[tuple[str, str], dict[tuple[str, ...], Any]] = {}
        for name, value in values.items():
            point = self._points.get(name)
            if point is None:
                raise BindingError(f"unknown point {name!r}")
            if not point.writable:
                raise BindingError(f"point {name!r} is not writable")
            groups.setdefault((point.path, point.method), {})[self._tokens[name]] = value
        requests = []
        for (path, method), document in groups.items():
            resource = self._by_path[path]
            fmt = self._formats[path]
            requests.append((resource, method, fmt, encode(build(document), fmt)))
        for resource, method, fmt, payload in requests:
            what = f"writing {resource.path}"
            message = self._message(
                _METHODS[method], resource, payload=payload,
                content_format=CONTENT_FORMAT[fmt],
            )
            response = await self._exchange(message, what)
            if not response.code.is_successful():
                raise self._fail(DeviceError(f"{_describe(response)} {what}", int(response.code)))

    async def invoke(self, call: Any, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Send one request built from ``call`` (a ``CoapCall``) and the service inputs."""
        if not isinstance(call, CoapCall):
            call = CoapCall.model_validate(call)
        what = f"calling {call.method} {call.path}"
        if call.payload is None and call.method in ("GET", "DELETE"):
            payload, content_format = b"", None
        else:
            document = dict(inputs) if call.payload is None else substitute(call.payload, inputs)
            payload, content_format = encode(document, call.format), CONTENT_FORMAT[call.format]
        resource = _Resource(call.path, *_split_uri(call.path), None, False)
        message = self._message(
            _METHODS[call.method], resource, payload=payload, content_format=content_format,
            accept=CONTENT_FORMAT[call.accept] if call.accept else None,
        )
        response = await self._exchange(message, what)
        if not response.code.is_successful():
            raise self._fail(DeviceError(f"{_describe(response)} {what}", int(response.code)))
        document = self._document(response, what) if response.payload else None
        if call.output:
            output: dict[str, Any] = {}
            for name, pointer in call.output.items():
                try:
                    output[name] = resolve(document, split_pointer(pointer))
                except KeyError:
                    raise self._fail(
                        DecodeError(f"no {pointer} in the answer {what} (for output {name!r})")
                    ) from None
            return output
        if document is None or document == "":
            return {}
        if isinstance(document, dict):
            return {str(k): v for k, v in document.items()}
        return {"result": document}
