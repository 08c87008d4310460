"""One OPC UA subscription feeding the push sink, and the watchdog that keeps it honest.

asyncua's iterator API delivers into a bounded queue (oldest dropped first when the gateway
falls behind). The consumer drains it without yielding to the loop while it is non-empty and
hands the sink one batch per drain: ``call_soon`` runs the flush only once the consumer
waits again, so a publish response of 1,000 changes becomes one sink call, not 1,000.

The watchdog covers what a transport probe cannot: a session that answers reads while its
subscription has gone quiet (no data, no keep-alive) for ``stale_intervals`` publishing
intervals. Such a subscription is rebuilt in place (same client handles, fresh initial
values); if the rebuild fails the session is reported dead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence

from asyncua import ua
from asyncua.common.subscription import DataChangeEvent, StatusChangeEvent, Subscription
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaError

from citytwin.drivers.base import PushSink, Reading
from citytwin.drivers.opcua.convert import reading, status_text

log = logging.getLogger("citytwin.opcua")

# a subscription status change with one of these means the session itself is gone
_SESSION_LOST = {
    StatusCodes.BadShutdown, StatusCodes.BadServerHalted, StatusCodes.BadSessionClosed,
    StatusCodes.BadSessionIdInvalid, StatusCodes.BadConnectionClosed,
    StatusCodes.BadSecureChannelClosed, StatusCodes.BadCommunicationError,
}


class Feed:
    """Consumes one subscription into ``sink`` and watches it; ``dead`` says why it gave up."""

    def __init__(
        self,
        sub: Subscription,
        handles: Mapping[int, str],
        sink: Callable[[], PushSink | None],
        stale_intervals: int,
        peer: str,
    ) -> None:
        self.sub = sub
        self.handles = dict(handles)
        self._sink = sink
        self.stale_intervals = stale_intervals
        self.peer = peer
        self.dead: str | None = None
        self.notifications = 0
        self.rebuilds = 0
        self._pending: list[Reading] = []
        self._flush_scheduled = False
        self._rebuild_reason: str | None = None
        self._since = time.monotonic()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._consume(), name=f"opcua-feed:{self.peer}"),
            asyncio.create_task(self._watch(), name=f"opcua-watchdog:{self.peer}"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    @property
    def interval(self) -> float:
        """The (server-revised) publishing interval, in seconds."""
        return float(self.sub.parameters.RequestedPublishingInterval) / 1000.0

    def _flush(self) -> None:
        self._flush_scheduled = False
        batch, self._pending = self._pending, []
        sink = self._sink()
        if batch and sink is not None:
            try:
                sink(batch)
            except Exception:  # the sink is the gateway's; it must not kill the feed
                log.exception("%s: the push sink failed on %d readings", self.peer, len(batch))

    async def _consume(self) -> None:
        loop = asyncio.get_running_loop()
        handles = self.handles
        async for event in self.sub:
            if isinstance(event, DataChangeEvent):
                item = event.data.monitored_item
                name = handles.get(item.ClientHandle)
                if name is None:
                    continue
                self.notifications += 1
                self._pending.append(reading(name, item.Value))
                if not self._flush_scheduled:
                    self._flush_scheduled = True
                    loop.call_soon(self._flush)
            elif isinstance(event, StatusChangeEvent):
                self._status_change(event.notification.Status)

    def _status_change(self, status: ua.StatusCode) -> None:
        if status.is_good():
            return
        if status.value in _SESSION_LOST:
            self.dead = f"connection to {self.peer} lost: {status_text(status)}"
        else:  # e.g. BadTimeout: the server dropped the subscription, the session lives
            self._rebuild_reason = f"the server ended the subscription: {status_text(status)}"

    async def _watch(self) -> None:
        while self.dead is None:
            interval = self.interval
            await asyncio.sleep(max(interval, 0.05))
            last = self.sub.last_publish_at or self._since
            silent = time.monotonic() - max(last, self._since)
            reason = self._rebuild_reason
            if reason is None and silent < self.stale_intervals * interval:
                continue
            if reason is None:
                reason = (
                    f"no data and no keep-alive for {silent:.1f} s "
                    f"({self.stale_intervals} publishing intervals of {interval * 1000:g} ms)"
                )
            self._rebuild_reason = None
            self.rebuilds += 1
            log.warning("%s: subscription %s went silent: %s; rebuilding it",
                        self.peer, self.sub.subscription_id, reason)
            try:
                await self.sub.recreate()
            except (OSError, TimeoutError, UaError) as exc:
                self.dead = f"subscription to {self.peer} could not be rebuilt: {exc!r}"
                log.warning("%s: %s", self.peer, self.dead)
                return
            self._since = time.monotonic()
            log.info("%s: subscription rebuilt as %s", self.peer, self.sub.subscription_id)


def monitored_item_request(
    nodeid: ua.NodeId, handle: int, sampling_ms: float, queue_size: int,
    deadband: float, deadband_type: str,
) -> ua.MonitoredItemCreateRequest:
    params = ua.MonitoringParameters()
    params.ClientHandle = handle
    params.SamplingInterval = sampling_ms
    params.QueueSize = queue_size
    params.DiscardOldest = True
    if deadband:
        change = ua.DataChangeFilter()
        change.Trigger = ua.DataChangeTrigger.StatusValue
        change.DeadbandType = 1 if deadband_type == "absolute" else 2
        change.DeadbandValue = deadband
        params.Filter = change
    request = ua.MonitoredItemCreateRequest()
    request.ItemToMonitor = ua.ReadValueId(NodeId=nodeid, AttributeId=AttributeIds.Value)
    request.MonitoringMode = ua.MonitoringMode.Reporting
    request.RequestedParameters = params
    return request


def failed_items(
    results: Sequence[int | ua.StatusCode], names: Sequence[str]
) -> dict[str, str]:
    """Point -> reason for every monitored item the server refused."""
    return {
        name: status_text(result)
        for name, result in zip(names, results, strict=True)
        if isinstance(result, ua.StatusCode)
    }
