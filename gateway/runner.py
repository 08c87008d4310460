"""The device runner: the one door to a device.

Every interaction with a device goes through its runner: scheduled polls, readings the
driver receives unasked (subscriptions, observe, devices that call in), property writes,
service calls and desired-state sync. The runner owns what the driver must not: the lock
that serializes requests on the one link, time (polls keep their period without drift and
never overlap; missed ticks are skipped rather than bunched; commands get their timeouts from
the config), health and its error classes (as EdgeX's device service does, and Home
Assistant's coordinator, where push and poll meet in one place):

- transport errors (link lost, timeout): the link is re-opened with backoff, and the device
  goes offline only after ``allowed_failures`` consecutive failures, not on the first;
- device errors (an exception code, a refused request, an undecodable answer): the points
  involved turn bad with the reason, or the command fails; the link stays up;
- pushed readings count as contact: they update last-seen, online state and metrics.

Under overload (issue 13) the runner sheds load at the source instead of queueing it: a poll
is admitted by the gateway's ``PollGate`` (a bound on polls in flight, and room in the queues
downstream: a full queue slows polling, it never grows the heap); a poll that ends after its
successor was due makes the next one due on the device's next tick at least one period after
it completed (polls stretch, and the devices stay spread over the period), and the ticks
missed are counted as skipped. Readings go from the driver through the pipeline in
the same step, so no reading ever waits behind an older one of the same device. The link lock
is a ``PriorityLock``: a waiting command gets the link before the next poll.

What each property is now, with its quality and the age of its last confirmation, is asked of
the runner (``current``): interlocks read it, and refuse values they cannot trust.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from citytwin.drivers.base import Driver, Invokable, Quality, Reading
from citytwin.drivers.errors import (
    BindingError,
    DecodeError,
    DeviceError,
    DriverError,
    RequestTimeout,
    TransportError,
)
from citytwin.gateway.backoff import Backoff
from citytwin.gateway.devicespec import DeviceSpec
from citytwin.gateway.interlocks import Current
from citytwin.gateway.pipeline import DevicePipeline
from citytwin.gateway.prioritylock import PriorityLock

if TYPE_CHECKING:
    from citytwin.gateway.devicemetrics import DeviceMetrics
    from citytwin.gateway.overload import PollGate

# a refresh (the read-back after a write) polls at once, but at most once this many seconds after
# the last poll started
REFRESH_GAP = 0.05


log = logging.getLogger("citytwin.device")

StatusSink = Callable[[DeviceSpec, bool, "str | None"], None]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class DeviceOffline(Exception):
    """A request for a device that is offline: nothing was sent."""


class DeviceTimeout(Exception):
    """The device did not answer within the request's time; the effect is unknown."""


class DeviceRunner:
    def __init__(
        self,
        spec: DeviceSpec,
        driver: Driver,
        pipeline: DevicePipeline,
        on_status: StatusSink,
        snapshot_interval: float,
        metrics: DeviceMetrics | None = None,
        gate: PollGate | None = None,
    ) -> None:
        self.spec = spec
        self._driver = driver
        self._pipeline = pipeline
        self._on_status = on_status
        self._snapshot_interval = snapshot_interval
        self.metrics = metrics
        self._gate = gate
        self.online: bool | None = None  # None until the first attempt ends
        self.last_error: str | None = None
        self.last_poll_ms = 0
        self.last_seen_ms = 0  # last contact of any kind: a poll that answered, or a push
        self.polls = 0
        self.failures = 0  # consecutive transport failures
        self.skipped = 0  # poll ticks missed because a poll ended after its successor was due
        self.late = 0  # polls that started a period or more after they were due (the runtime was behind)
        self.lag = 0.0  # seconds the last poll started after it was due
        self._due: float | None = None  # loop time a poll waiting for admission was due
        self.started_ms = now_ms()  # for health: a device that never answered is silent since then
        self._lock = PriorityLock()  # one request at a time on the one link; commands first
        # the poll loop sleeps on one future between polls, woken early by a refresh or a lost
        # link (two asyncio.Events and two tasks per wait cost ~1.5 kB per device and CPU per poll)
        self._link_lost = False
        self._wake: asyncio.Future[None] | None = None
        self._holding = False  # within REFRESH_GAP of the last poll: refreshes wait for its end
        # when each value was last confirmed (monotonic): a read that succeeded confirms every
        # value if the driver's read vouches for its pushes (a live subscription), else only the
        # readings it returned; a push confirms what it delivered
        self._vouches = driver.read_vouches_for_push
        self._confirmed_at = 0.0  # the last read that succeeded, if it vouches for pushes
        self._seen_at: dict[str, float] = {}  # each property's last push (or read, if not vouching)
        driver.set_push_sink(self.push)
        driver.set_link_sink(self.link_changed)

    # -- what the rest of the gateway may ask ------------------------------------------
    @property
    def callable(self) -> bool:
        """Whether the device has callable operations (services bound to ``call``)."""
        return isinstance(self._driver, Invokable)

    def current(self, prop: str) -> Current | None:
        """The property's value now, with quality, reason and age; None if never reported."""
        pipeline = self._pipeline
        flagged = pipeline.not_good.get(prop)
        if flagged is None:
            if prop not in pipeline.values:
                return None
            value, quality, reason = pipeline.values[prop], "good", None
        else:
            quality, reason = flagged
            value = None if quality == "bad" else pipeline.values.get(prop)
        confirmed = max(self._confirmed_at, self._seen_at.get(prop, 0.0))
        age = time.monotonic() - confirmed if confirmed else float("inf")
        if not self.online:
            # nothing from an offline device is current, whatever its last reading said
            return Current(value, "bad", f"device offline: {self.last_error or 'not connected'}", age)
        return Current(value, quality, reason, age)

    def request_refresh(self) -> None:
        """Poll as soon as possible (after a write), without waiting for the next tick.

        A refresh asked for while a poll is waiting for the link or running is answered by
        that poll (commands go first: it reads what they wrote); one asked for within
        ``REFRESH_GAP`` of the last poll's start waits for the rest of it, so commands sent back
        to back share a read-back instead of each costing a full poll."""
        if not self._holding:
            self._wake_up()

    def _lose_link(self) -> None:
        """The poll loop re-opens the link (and counts the failure) as soon as it can."""
        self._link_lost = True
        self._wake_up()

    def _wake_up(self) -> None:
        if self._wake is not None:
            _resolve(self._wake)

    def status(self) -> dict[str, Any]:
        health = self._driver.health
        return {
            "online": bool(self.online),
            "last_error": self.last_error,
            "last_poll": self.last_poll_ms,
            "last_seen": self.last_seen_ms,
            "polls": self.polls,
            "skipped": self.skipped,
            "lag": round(self.behind, 3),
            "failures": self.failures,
            "link": {"connected": health.connected, "requests": health.requests,
                     "failures": health.failures, "last_error": health.last_error},
        }

    async def close(self, wait: float = 5.0) -> None:
        """Close the link (after the device task was stopped); waits for a request in flight,
        but not forever: a request that never ends must not keep the link (or a shutdown) open."""
        try:
            async with asyncio.timeout(wait):
                await self._lock.acquire(urgent=True)
        except TimeoutError:
            log.warning("%s: a request still holds the link after %g s; closing it anyway", self.spec.id, wait)
            await self._driver.close()
            return
        try:
            await self._driver.close()
        finally:
            self._lock.release()

    # -- requests on behalf of commands ------------------------------------------------
    async def read(self, points: Sequence[str] | None = None, timeout: float | None = None) -> list[Reading]:
        self._require_online()
        return await self._request(lambda: self._driver.read(points), timeout)  # type: ignore[no-any-return]

    async def write(self, raw: Mapping[str, Any], timeout: float | None = None) -> None:
        """Write raw values in order; raises DeviceOffline, DeviceTimeout or a DriverError."""
        self._require_online()
        await self._request(lambda: self._driver.write(raw), timeout)
        self.request_refresh()  # read the effect back instead of waiting for the next tick

    async def invoke(self, call: Any, inputs: Mapping[str, Any], timeout: float | None = None) -> dict[str, Any]:
        driver = self._driver
        if not isinstance(driver, Invokable):
            raise BindingError(f"driver {self.spec.config.driver!r} has no callable operations")
        self._require_online()
        output: dict[str, Any] = await self._request(lambda: driver.invoke(call, inputs), timeout)
        self.request_refresh()
        return output

    def _require_online(self) -> None:
        if not self.online:
            raise DeviceOffline(f"device {self.spec.id!r} is offline: {self.last_error or 'not connected yet'}")

    async def _request(self, work: Callable[[], Awaitable[Any]], timeout: float | None) -> Any:
        """One request under the link's lock; the timeout covers the wait for the lock too."""
        timeout = timeout or self.spec.config.command_timeout
        try:
            async with asyncio.timeout(timeout):
                async with self._lock.command():  # before any poll waiting for the link
                    return await work()
        except (TimeoutError, RequestTimeout):
            raise DeviceTimeout(f"no answer from the device within {timeout:g} s") from None
        except TransportError:
            self._lose_link()  # the poll loop re-opens the link and counts the failure
            raise

    # -- readings from the driver ------------------------------------------------------
    def push(self, readings: Sequence[Reading]) -> None:
        """Readings the driver received unasked: the same path as polled ones, and contact."""
        if not readings:
            return
        self._mark_seen(readings)
        ts = now_ms()
        self.last_seen_ms = ts
        if self.metrics is not None:
            self.metrics.pushed(readings)
        full = False
        if not self._driver.polled and self.online is not True:
            self.failures = 0
            self._set_online(True, None)
            full = True
        reported = self._pipeline.process(readings, ts, full)
        if self.metrics is not None:
            self.metrics.reported(reported)

    def link_changed(self, up: bool, reason: str | None) -> None:
        """The driver's word that its link came up or went down between calls."""
        if up:
            if not self._driver.polled and self.online is not True:
                self.failures = 0
                self._set_online(True, None)
            return
        if not self._driver.polled:
            self._set_online(False, reason or "disconnected")
        else:
            self._lose_link()

    # -- the device task -----------------------------------------------------------------
    async def run(self) -> None:
        cfg = self.spec.config
        backoff = Backoff(cfg.reconnect_min, cfg.reconnect_max)
        while True:
            try:
                async with self._lock.poll():
                    await self._driver.connect()
                if self._driver.polled:
                    await self._poll_loop(backoff)
                else:
                    backoff.reset()
                    await self._watch_reports()
            except DriverError as exc:
                self._failed(type(exc).__name__, f"{type(exc).__name__}: {exc}")
            except Exception as exc:  # a bug must not stop the device for good, nor the gateway
                reason = f"internal error: {exc!r}"
                if self.last_error != reason:  # once per distinct failure, not per retry
                    log.exception("%s: unexpected error in device task", self.spec.id)
                self._failed("internal", reason)
            try:
                async with self._lock.poll():
                    await self._driver.close()
            except DriverError:
                pass
            await asyncio.sleep(backoff.next_delay())

    def _failed(self, kind: str, reason: str) -> None:
        """A transport failure: offline only after ``allowed_failures`` of them in a row."""
        self.failures += 1
        if self.metrics is not None:
            self.metrics.read_error(kind)
        if self.online is not False and self.failures >= self.spec.config.allowed_failures:
            self._set_online(False, reason)
        elif self.online is not False:
            log.info("%s: %s (failure %d of %d allowed)", self.spec.id, reason,
                     self.failures, self.spec.config.allowed_failures)
            self.last_error = reason

    async def _poll_loop(self, backoff: Backoff) -> None:
        loop = asyncio.get_running_loop()
        period = self.spec.config.poll_period
        deadline = loop.time()
        next_snapshot = loop.time()
        first = True
        self._link_lost = False
        while True:
            # admitted once there is room downstream and a slot in flight (no gate: at once)
            self._due = deadline
            async with self._gate.admit(first) if self._gate is not None else contextlib.nullcontext():
                started = self._started(loop.time() - deadline, period)
                full = started >= next_snapshot
                if full:
                    next_snapshot = started + self._snapshot_interval
                await self.poll(full)
            backoff.reset()
            if first:  # spread devices over the period: 1,000 polls at one instant queue up as latency
                first = False
                deadline += period * (zlib.crc32(self.spec.id.encode()) % 1000) / 1000
            deadline += period
            now = loop.time()
            if deadline <= now:
                # fell behind: the next poll is due at least one period after this one completed,
                # so polls stretch instead of queueing; the ticks missed are counted, never made
                # up. It stays on the device's own grid of ticks: restarting the grid at "now"
                # gathered every device that fell behind together into one phase, and a burst
                # of polls each second got the process throttled under a CPU quota
                missed = math.ceil((now + period - deadline) / period)
                self.skipped += missed
                if self.metrics is not None:
                    self.metrics.skipped(missed)
                deadline += missed * period
            if not self._link_lost:
                await self._sleep_until(deadline)
                soon = started + REFRESH_GAP
                if not self._link_lost and loop.time() < soon < deadline:  # woken by a refresh, early
                    self._holding = True
                    try:
                        await self._sleep_until(soon)
                    finally:
                        self._holding = False
            if self._link_lost:
                raise _LinkLost(self.last_error or "the link went down")

    def _mark_seen(self, readings: Sequence[Reading]) -> None:
        """These readings' properties were confirmed now (a push, or a read that does not vouch)."""
        at = time.monotonic()
        seen = self._seen_at
        for reading in readings:
            seen[reading.point] = at

    async def _sleep_until(self, when: float) -> None:
        """Until loop time ``when``, or until woken (a refresh, a lost link)."""
        loop = asyncio.get_running_loop()
        wake = self._wake = loop.create_future()
        timer = loop.call_at(when, _resolve, wake)
        try:
            await wake
        finally:
            timer.cancel()
            self._wake = None

    @property
    def behind(self) -> float:
        """Seconds the due poll has been waiting to start (now), or how late the last one started."""
        if self._due is None:
            return self.lag
        return max(self.lag, asyncio.get_running_loop().time() - self._due)

    def _started(self, lag: float, period: float) -> float:
        """Note how late this poll starts; returns the loop time now."""
        self._due = None
        self.lag = lag = max(0.0, lag)
        if lag >= period:
            self.late += 1
        if self.metrics is not None:
            self.metrics.lag(lag)
        return asyncio.get_running_loop().time()

    async def poll(self, full: bool = False) -> None:
        try:
            async with self._lock.poll():
                started = time.perf_counter()
                readings = await self._driver.read()
                elapsed = time.perf_counter() - started
        except (DeviceError, DecodeError, BindingError) as exc:
            # the device answered (or the binding is wrong): its points are bad, the link is up
            reason = f"{type(exc).__name__}: {exc}"
            ts = now_ms()
            readings = [Reading(name, None, ts, Quality.BAD, reason) for name in self.spec.points]
            elapsed = 0.0
        if self.metrics is not None:
            self.metrics.polled(elapsed, readings)
        if self._vouches:
            self._confirmed_at = time.monotonic()
        else:  # the link being up says nothing of the device: only what the read returned is new
            self._mark_seen(readings)
        ts = now_ms()
        self.last_poll_ms = ts
        if self._vouches or readings:  # a broker that answered is not the device: no contact
            self.last_seen_ms = ts
        self.polls += 1
        self.failures = 0
        if self.online is not True:
            self._set_online(True, None)
            full = True
        if self._gate is not None:
            await self._gate.turns.take()  # not in the same loop iteration as a batch of others
        reported = self._pipeline.process(readings, ts, full)
        if self.metrics is not None:
            self.metrics.reported(reported)

    async def _watch_reports(self) -> None:
        """A device that calls in: offline after ``allowed_failures`` report intervals of silence."""
        cfg = self.spec.config
        while True:
            await asyncio.sleep(cfg.poll_period)
            if self.online and self.last_seen_ms:
                silent = (now_ms() - self.last_seen_ms) / 1000
                if silent > cfg.allowed_failures * cfg.poll_period:
                    self._set_online(False, f"no report for {silent:.0f} s (expected every {cfg.poll_period:g} s)")

    def _set_online(self, online: bool, reason: str | None) -> None:
        changed = online != self.online
        self.online = online
        self.last_error = reason
        if self.metrics is not None:
            self.metrics.set_online(online)
        if changed:
            if online:
                log.info("%s: online", self.spec.id)
            else:
                log.warning("%s: offline: %s", self.spec.id, reason)
            self._on_status(self.spec, online, reason)


class _LinkLost(TransportError):
    """The driver said its link went down between polls (or a command found it down)."""


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
