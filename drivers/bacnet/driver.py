"""BACnet/IP driver on bacpypes3: COV first, ReadPropertyMultiple as the fallback and the poll.

``connect()`` takes the shared application of the gateway's local BACnet/IP endpoint
(``application.py``), finds the device with a Who-Is sent to its address (directed, not
broadcast: it works across routers that drop broadcasts and on loopback, where a test's
peers share 127.0.0.1 on distinct ports), and subscribes the bound objects' present values
by COV (``cov.py``). Notifications (present-value and status-flags) reach the push sink,
one batch per loop turn. ``read()`` reads everything not delivered by COV — polled points,
objects whose subscription was refused or lapsed — with as few ReadPropertyMultiple
requests as fit, always with each object's status-flags, which become the quality. With
every point subscribed it still reads the device's system-status, so a device that went
away is noticed at the gateway's poll period.

Writes are WriteProperty at the binding's priority; an object whose status-flags say
out-of-service is never written (read fresh before every write, refused with the reason):
its present value is decoupled from the plant, and a command would silently not act.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Mapping, Sequence
from typing import Any

from bacpypes3.basetypes import StatusFlags
from bacpypes3.pdu import Address
from bacpypes3.primitivedata import Atomic, ObjectIdentifier
from bacpypes3.vendor import get_vendor_info

from citytwin.drivers.bacnet import application, convert, notification
from citytwin.drivers.bacnet.binding import (
    BINARY,
    BacnetCall,
    BacnetConnection,
    BacnetPoint,
    split_address,
)
from citytwin.drivers.bacnet.cov import Subscriptions
from citytwin.drivers.bacnet.requests import Requester
from citytwin.drivers.base import Driver, Health, Invokable, Quality, Reading
from citytwin.drivers.errors import (
    BindingError,
    ConnectError,
    ConnectionClosed,
    DeviceError,
)

log = logging.getLogger("citytwin.drivers.bacnet")

PRESENT_VALUE, STATUS_FLAGS = "present-value", "status-flags"
_DEFAULT_PRIORITY = 16  # clause 19.2.1: a command without a priority is taken at 16


class BacnetDriver(Driver, Invokable):
    """One BACnet/IP device; its points are properties of its objects."""

    def __init__(self, connection: BacnetConnection, points: Mapping[str, BacnetPoint]) -> None:
        self._conn = connection
        self._points: dict[str, BacnetPoint] = dict(points)
        self._host, self._port = split_address(connection.address)
        self._label = f"{self._host}:{self._port}"
        self._objects = {name: ObjectIdentifier(p.object) for name, p in points.items()}
        self._by_object: dict[Any, list[str]] = {}
        for name, point in points.items():
            if point.subscribed and connection.cov:
                self._by_object.setdefault(self._objects[name], []).append(name)
        vendor = get_vendor_info(0)
        self._by_code = {(int(obj[0]) << 22) | int(obj[1]): obj for obj in self._by_object}
        self._binary = {obj for obj in self._by_object if str(obj[0]) in BINARY}
        self._pv_types = {
            obj: vendor.get_object_class(obj[0]).get_property_type(PRESENT_VALUE)
            for obj in self._by_object
        }
        self._shared: application.Shared | None = None
        self._peer: Address | None = None
        self._process_id: int | None = None
        self._cov: Subscriptions | None = None
        self._device_id: int | None = None
        self._send = Requester(self._label, connection.timeout)
        self._pending: list[Reading] = []
        self._flush_scheduled = False
        self._notifications = 0
        self._connects = 0

    # -- link -------------------------------------------------------------------------

    async def connect(self) -> None:
        await self.close()
        conn = self._conn
        shared = await application.acquire(conn.local_address, conn.local_device_id)
        self._shared = shared
        try:
            self._peer = Address(f"{await self._resolve()}:{self._port}")
            self._device_id = await self._find_device(shared.app, self._peer)
            if self._by_object:
                self._process_id = shared.register(self._peer, self._notified, self._notified_fast)
                self._cov = Subscriptions(
                    conn, self._peer, list(self._by_object), self._process_id, self._send,
                    shared.app.request,
                )
                await self._cov.start()
        except BaseException:
            await self.close()
            raise
        self._connects += 1
        polled = sum(len(self._by_object[o]) for o in self._cov.polled()) if self._cov else 0
        log.info("%s: connected to device %d (%d points by COV, %d polled)", self._label,
                 self._device_id, sum(map(len, self._by_object.values())) - polled,
                 len(self._points) - sum(map(len, self._by_object.values())) + polled)

    async def _resolve(self) -> str:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                self._host, self._port, family=socket.AF_INET, type=socket.SOCK_DGRAM)
        except OSError as exc:
            raise ConnectError(f"cannot resolve {self._host}: {exc.strerror or exc}") from None
        return str(infos[0][4][0])

    async def _find_device(self, app: Any, peer: Address) -> int:
        """A Who-Is sent to the device's address; its I-Am names the device instance."""
        wanted = self._conn.device_id
        limits = (wanted, wanted) if wanted is not None else (None, None)
        timeout = self._conn.timeout
        try:
            async with asyncio.timeout(timeout + 0.5):
                answers = await app.who_is(*limits, address=peer, timeout=timeout)
        except TimeoutError:
            answers = []
        except OSError as exc:
            raise ConnectError(f"cannot send to {self._label}: {exc.strerror or exc}") from None
        if not answers:
            which = f"device {wanted}" if wanted is not None else "any device"
            reason = f"no I-Am from {self._label} within {timeout} s (Who-Is for {which})"
            self._send.last_error = reason
            raise ConnectError(reason)
        return int(answers[0].iAmDeviceIdentifier[1])

    async def close(self) -> None:
        cov, self._cov = self._cov, None
        if cov is not None:
            await cov.stop()
        shared, self._shared = self._shared, None
        if shared is not None:
            if self._process_id is not None:
                shared.unregister(self._process_id)
                self._process_id = None
            await application.release(shared)
        self._peer = None

    @property
    def health(self) -> Health:
        cov = self._cov
        subscribed = sum(cov.active(o) for o in self._by_object) if cov else 0
        return Health(
            connected=self._peer is not None,
            last_error=self._send.last_error,
            requests=self._send.requests,
            failures=self._send.failures,
            extra={
                "device_id": self._device_id,
                "cov_objects": len(self._by_object),
                "subscribed": subscribed,
                "cov_renewals": cov.renewals if cov else 0,
                "cov_refusals": cov.refusals if cov else 0,
                "cov_polled_reasons": cov.reasons() if cov else {},
                "notifications": self._notifications,
                "connects": self._connects,
            },
        )

    def _alive(self) -> tuple[Any, Address]:
        if self._shared is None or self._peer is None:
            raise ConnectionClosed(f"not connected to {self._label}")
        return self._shared.app, self._peer

    # -- COV notifications ------------------------------------------------------------

    def _notified(self, obj: Any, values: Sequence[Any]) -> None:
        names = self._by_object.get(obj)
        if not names:
            return
        present: Any = None
        bits: tuple[int, ...] = (0, 0, 0, 0)
        for item in values:
            prop = str(item.propertyIdentifier)
            if prop == PRESENT_VALUE:
                pv_type = self._pv_types[obj]
                present = item.value.cast_out(pv_type, null=issubclass(pv_type, Atomic))
            elif prop == STATUS_FLAGS:
                bits = convert.flags(item.value.cast_out(StatusFlags))
        if present is not None:
            self._deliver(names, convert.raw(present), bits)

    def _notified_fast(self, monitored: int, values: dict[int, tuple[int, Any]]) -> bool:
        """An unconfirmed notification as ``notification.decode`` read it; False leaves it to
        bacpypes3 (named enumerations, types the fast decoder does not convert)."""
        obj = self._by_code.get(monitored)
        if obj is None:
            return True
        present = values.get(notification.PRESENT_VALUE)
        if present is None:
            return True
        tag, value = present
        if obj in self._binary:
            if tag != notification.TAG_ENUMERATED:
                return False
            value = value == 1
        elif tag not in notification.PLAIN_TAGS:
            return False
        flag_value = values.get(notification.STATUS_FLAGS)
        bits = convert.flags(flag_value[1]) if flag_value and flag_value[0] == notification.TAG_BIT_STRING else (0, 0, 0, 0)
        self._deliver(self._by_object[obj], value, bits)
        return True

    def _deliver(self, names: list[str], value: Any, bits: tuple[int, ...]) -> None:
        self._notifications += 1
        quality, reason = convert.quality(bits)
        ts = convert.now_ms()
        for name in names:
            self._pending.append(Reading(name, None if quality is Quality.BAD else value, ts, quality, reason))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        batch, self._pending = self._pending, []
        sink = self._push_sink
        if batch and sink is not None:
            try:
                sink(batch)
            except Exception:  # the sink is the gateway's; it must not break the application
                log.exception("%s: the push sink failed on %d readings", self._label, len(batch))

    # -- reads ------------------------------------------------------------------------

    async def read(self, points: Sequence[str] | None = None) -> list[Reading]:
        """Reads every point not delivered by COV (or the named points) by ReadPropertyMultiple."""
        app, peer = self._alive()
        if points is None:
            cov = self._cov
            names = [
                n for n, p in self._points.items()
                if not (cov is not None and p.subscribed and cov.active(self._objects[n]))
            ]
        else:
            if isinstance(points, str):
                raise BindingError("points must be a sequence of point names, not one string")
            unknown = [n for n in points if n not in self._points]
            if unknown:
                raise BindingError(f"unknown points: {', '.join(map(repr, unknown))}")
            names = list(points)
        if not names:
            await self._probe(app, peer)
            return []
        by_object: dict[Any, list[str]] = {}
        for name in names:
            by_object.setdefault(self._objects[name], []).append(name)
        readings: list[Reading] = []
        objects = list(by_object)
        step = self._conn.max_objects_per_request
        for start in range(0, len(objects), step):
            chunk = {obj: by_object[obj] for obj in objects[start:start + step]}
            readings.extend(await self._read_chunk(app, peer, chunk))
        return readings

    async def _probe(self, app: Any, peer: Address) -> None:
        device = ObjectIdentifier(("device", self._device_id or 0))
        try:
            await self._send(app.read_property(peer, device, "system-status"), "reading system-status")
        except DeviceError:
            pass  # it answered: the link is up

    async def _read_chunk(self, app: Any, peer: Address, chunk: dict[Any, list[str]]) -> list[Reading]:
        request: list[Any] = []
        for obj, names in chunk.items():
            props = {self._points[n].property for n in names} | {STATUS_FLAGS}
            request.extend([obj, sorted(props)])
        what = f"reading {len(chunk)} object" + ("s" if len(chunk) != 1 else "")
        ts = convert.now_ms()
        try:
            results = await self._send(app.read_property_multiple(peer, request), what)
        except DeviceError as exc:
            return [Reading(n, None, ts, Quality.BAD, str(exc)) for names in chunk.values() for n in names]
        values: dict[tuple[Any, str], Any] = {}
        for obj, prop, _index, value in results or []:
            values[(obj, str(prop))] = value
        readings = []
        for obj, names in chunk.items():
            flag_value = values.get((obj, STATUS_FLAGS))
            bits = convert.flags(flag_value) if convert.error_text(flag_value) is None else (0, 0, 0, 0)
            quality, reason = convert.quality(bits)
            for name in names:
                prop = self._points[name].property
                if (obj, prop) not in values:
                    readings.append(Reading(name, None, ts, Quality.BAD, f"{obj} {prop}: not in the answer"))
                    continue
                value = values[(obj, prop)]
                error = convert.error_text(value)
                if error is not None:
                    readings.append(Reading(name, None, ts, Quality.BAD, f"{obj} {prop}: {error}"))
                elif quality is Quality.BAD:
                    readings.append(Reading(name, None, ts, quality, reason))
                else:
                    readings.append(Reading(name, convert.raw(value), ts, quality, reason))
        return readings

    # -- writes -----------------------------------------------------------------------

    async def write(self, values: Mapping[str, Any]) -> None:
        """WriteProperty of each value, in order, at its point's priority.

        Every value is checked, and every object's status-flags read, before anything is
        sent: an out-of-service object refuses the whole write (``DeviceError``).
        """
        plan = []
        for name, value in values.items():
            point = self._writable(name)
            try:
                encoded = convert.write_value(point.kind, value)
            except BindingError as exc:
                raise BindingError(f"point {name!r}: {exc}") from None
            plan.append((name, point, encoded, point.priority))
        await self._send_writes(plan)

    def _writable(self, name: str) -> BacnetPoint:
        point = self._points.get(name)
        if point is None:
            raise BindingError(f"unknown point {name!r}")
        if not point.writable:
            raise BindingError(f"point {name!r} ({point.object} {point.property}) is read-only")
        return point

    async def _send_writes(self, plan: list[tuple[str, BacnetPoint, Any, int | None]]) -> None:
        if not plan:
            return
        app, peer = self._alive()
        await self._check_in_service(app, peer, [(name, self._objects[name]) for name, *_ in plan])
        for name, point, encoded, priority in plan:
            what = f"writing {name} ({point.object} {point.property}" + (
                f" at priority {priority})" if priority is not None else ")")
            await self._send(app.write_property(
                peer, self._objects[name], point.property, encoded, priority=priority), what)

    async def _check_in_service(self, app: Any, peer: Address, targets: list[tuple[str, Any]]) -> None:
        objects = list(dict.fromkeys(obj for _, obj in targets))
        request: list[Any] = []
        for obj in objects:
            request.extend([obj, [STATUS_FLAGS]])
        results = await self._send(app.read_property_multiple(peer, request), "reading status-flags before a write")
        bits = {obj: convert.flags(value) for obj, _prop, _index, value in results or []
                if convert.error_text(value) is None}
        for name, obj in targets:
            if convert.out_of_service(bits.get(obj, (0, 0, 0, 0))):
                reason = f"{name} ({obj}) is out of service: not written (its present value is decoupled from the plant)"
                self._send.last_error = reason
                raise DeviceError(reason)

    async def invoke(self, call: Any, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Relinquish (write Null) or write one point at a priority; no outputs."""
        if not isinstance(call, BacnetCall):
            raise BindingError(f"bacnet needs a BacnetCall binding, not {type(call).__name__}")
        point = self._writable(call.point)
        priority = call.priority or point.priority
        if call.relinquish is not None:
            encoded = convert.write_value(point.kind, None)
            priority = priority or _DEFAULT_PRIORITY
        else:
            if call.input not in inputs:
                raise BindingError(f"writing {call.point} needs input {call.input!r}")
            try:
                encoded = convert.write_value(point.kind, inputs[call.input])
            except BindingError as exc:
                raise BindingError(f"input {call.input!r}: {exc}") from None
        await self._send_writes([(call.point, point, encoded, priority)])
        return {}
