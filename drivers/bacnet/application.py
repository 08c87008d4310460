"""One bacpypes3 application per local BACnet/IP endpoint, shared by every BACnet device.

A BACnet/IP client is itself a device on the network: it has a device object and one UDP
port, and peers answer requests and send COV notifications to the port a request came
from. bacpypes3 binds its socket with SO_REUSEPORT, so a second application on the same
port would not fail: the kernel would split the peers' datagrams between the two sockets.
Hence one application per (loop, local address), created on first use and closed when its
last driver releases it; its users must agree on the gateway's device instance.

COV notifications reach the driver that subscribed through the subscriber process
identifier: the application hands out identifiers unique among its users and routes each
notification (confirmed or not) to the handler registered under it, checking it came from
the device that was subscribed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bacpypes3.apdu import (
    ConfirmedCOVNotificationRequest,
    SimpleAckPDU,
    UnconfirmedCOVNotificationRequest,
)
from bacpypes3.app import Application
from bacpypes3.appservice import ApplicationServiceAccessPoint
from bacpypes3.errors import ServicesError
from bacpypes3.local.device import DeviceObject
from bacpypes3.local.networkport import NetworkPortObject
from bacpypes3.pdu import PDU, Address

from citytwin.drivers.bacnet import notification
from citytwin.drivers.errors import BindingError

log = logging.getLogger("citytwin.drivers.bacnet")

CovHandler = Callable[[Any, Sequence[Any]], None]
"""Called with (monitored object identifier, list of PropertyValue) for one notification."""

FastCovHandler = Callable[[int, dict[int, tuple[int, Any]]], bool]
"""Called with (monitored object as its 32-bit identifier, {property id: (application tag,
value)}) for an unconfirmed notification decoded by ``notification.decode``; returns False
to have it decoded by bacpypes3 and passed to the ``CovHandler`` instead."""

_APDU_TIMEOUT_MS = 1000  # one lost datagram costs a second, not the default three
_APDU_RETRIES = 2
_VENDOR_ID = 999  # bacpypes3's own vendor identifier for sample and local applications


class GatewayApplication(Application):  # type: ignore[misc]
    """bacpypes3's application with COV notifications routed by subscriber process id."""

    cov_handlers: dict[int, tuple[Address, CovHandler]]
    fast_handlers: dict[int, FastCovHandler]

    async def do_ConfirmedCOVNotificationRequest(self, apdu: ConfirmedCOVNotificationRequest) -> None:
        if not self._route(apdu):
            raise ServicesError(errorCode="unknownSubscription")
        await self.response(SimpleAckPDU(context=apdu))

    async def do_UnconfirmedCOVNotificationRequest(self, apdu: UnconfirmedCOVNotificationRequest) -> None:
        self._route(apdu)

    def _route(self, apdu: Any) -> bool:
        entry = self.cov_handlers.get(int(apdu.subscriberProcessIdentifier))
        if entry is None or entry[0] != apdu.pduSource:
            return False
        try:
            entry[1](apdu.monitoredObjectIdentifier, list(apdu.listOfValues))
        except Exception:  # a driver's handler must not break the shared application
            log.exception("COV notification from %s could not be handled", apdu.pduSource)
        return True


class FastCovAccessPoint(ApplicationServiceAccessPoint):  # type: ignore[misc]
    """bacpypes3's access point with unconfirmed COV notifications decoded by
    ``notification.decode`` before the generic decoder sees them."""

    fast_app: GatewayApplication

    async def confirmation(self, pdu: PDU) -> None:
        data = pdu.pduData
        if len(data) > 1 and data[0] == notification.UNCONFIRMED_REQUEST and data[1] == notification.COV_NOTIFICATION:
            decoded = notification.decode(bytes(data))
            if decoded is not None:
                process_id, monitored, values = decoded
                app = self.fast_app
                entry = app.cov_handlers.get(process_id)
                handler = app.fast_handlers.get(process_id)
                if entry is None or entry[0] != pdu.pduSource:
                    return  # not ours (or no longer): dropped, as bacpypes3 would
                if handler is not None:
                    try:
                        if handler(monitored, values):
                            return
                    except Exception:
                        log.exception("COV notification from %s could not be handled", pdu.pduSource)
                        return
        await super().confirmation(pdu)


@dataclass(eq=False)
class Shared:
    """One application and its users on one loop."""

    app: GatewayApplication
    local_address: str
    device_id: int
    users: int = 0
    next_process_id: int = 1
    process_ids: set[int] = field(default_factory=set)

    def register(self, peer: Address, handler: CovHandler, fast: FastCovHandler | None = None) -> int:
        """A fresh subscriber process identifier routed to ``handler`` (and ``fast``)."""
        while self.next_process_id in self.app.cov_handlers:
            self.next_process_id = self.next_process_id % 4_194_303 + 1
        process_id = self.next_process_id
        self.next_process_id = process_id % 4_194_303 + 1
        self.app.cov_handlers[process_id] = (peer, handler)
        if fast is not None:
            self.app.fast_handlers[process_id] = fast
        return process_id

    def unregister(self, process_id: int) -> None:
        self.app.cov_handlers.pop(process_id, None)
        self.app.fast_handlers.pop(process_id, None)


_shared: dict[tuple[asyncio.AbstractEventLoop, str], Shared] = {}
_lock: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}


def _create(local_address: str, device_id: int) -> GatewayApplication:
    device = DeviceObject(
        objectIdentifier=("device", device_id),
        objectName=f"citytwin-gateway-{device_id}",
        vendorIdentifier=_VENDOR_ID,
        modelName="citytwin-gateway",
        apduTimeout=_APDU_TIMEOUT_MS,
        numberOfApduRetries=_APDU_RETRIES,
    )
    port = NetworkPortObject(
        local_address,
        objectIdentifier=("network-port", 1),
        objectName="NetworkPort-1",
        networkNumber=0,
        networkNumberQuality="unknown",
    )
    app: GatewayApplication = GatewayApplication.from_object_list([device, port])
    app.cov_handlers = {}
    app.fast_handlers = {}
    app.asap.__class__ = FastCovAccessPoint  # built by from_object_list; only the class changes
    app.asap.fast_app = app
    return app


async def acquire(local_address: str, device_id: int) -> Shared:
    """The application on ``local_address``; every ``acquire`` needs one ``release``."""
    loop = asyncio.get_running_loop()
    for key in [k for k in _shared if k[0] is not loop and k[0].is_closed()]:
        del _shared[key]  # a previous loop's application (tests run one loop per test)
    lock = _lock.setdefault(loop, asyncio.Lock())
    async with lock:
        shared = _shared.get((loop, local_address))
        if shared is None:
            try:
                app = _create(local_address, device_id)
            except (ValueError, OSError, RuntimeError) as exc:
                raise BindingError(f"cannot use local BACnet/IP address {local_address}: {exc}") from None
            shared = Shared(app, local_address, device_id)
            _shared[(loop, local_address)] = shared
            log.debug("BACnet/IP application on %s created (device %d)", local_address, device_id)
        elif shared.device_id != device_id:
            raise BindingError(
                f"local_address {local_address} is already the gateway's device {shared.device_id}; "
                f"every BACnet device sharing it must name the same local_device_id, not {device_id}"
            )
        shared.users += 1
        return shared


async def release(shared: Shared) -> None:
    """Give the application back; the last user's release closes its socket."""
    loop = asyncio.get_running_loop()
    async with _lock.setdefault(loop, asyncio.Lock()):
        shared.users -= 1
        if shared.users > 0:
            return
        if _shared.get((loop, shared.local_address)) is shared:
            del _shared[(loop, shared.local_address)]
    shared.app.close()
    log.debug("BACnet/IP application on %s closed", shared.local_address)
