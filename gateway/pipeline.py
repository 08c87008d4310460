"""Raw readings to model values, reports by exception and events: one device's data path.

Per poll: scale and round each raw value, check it against the model (an out-of-range
value is kept and marked ``uncertain`` with the reason), keep only what moved beyond its
deadband (or everything when a full snapshot is due), update the twin, and emit one report
message carrying every changed property. Event rules fire on the rising edge of their
condition and re-arm when it falls (or when their ``clear`` condition holds).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from citytwin.drivers.base import Quality, Reading
from citytwin.gateway.devicespec import DeviceSpec
from citytwin.gateway.twins import Twin

log = logging.getLogger("citytwin.pipeline")

# (kind: "report" | "event:<id>", payload); the outbox adds the per-device "seq"
Emit = Callable[[str, dict[str, Any]], None]

GOOD, UNCERTAIN, BAD = Quality.GOOD.value, Quality.UNCERTAIN.value, Quality.BAD.value


class DevicePipeline:
    def __init__(self, spec: DeviceSpec, twin: Twin, emit: Emit) -> None:
        self.spec = spec
        self.twin = twin
        self.emit = emit
        # last value and quality sent to the hub, for report-by-exception
        self._sent: dict[str, tuple[Any, str]] = {}
        self.values: dict[str, Any] = {}  # current good/uncertain values, for event rules
        self._armed = [True] * len(spec.events)
        self._bad_reasons: dict[str, str] = {}
        self.points_read = 0

    def process(self, readings: Sequence[Reading], now: int, full: bool = False) -> int:
        """Returns the number of properties reported."""
        points = self.spec.points
        sent = self._sent
        out: dict[str, dict[str, Any]] = {}
        twin_changes: dict[str, tuple[Any, int, str]] = {}
        for reading in readings:
            point = points.get(reading.point)
            if point is None:  # an output point read back, not a property
                continue
            name = reading.point
            if reading.quality is Quality.BAD:
                self._note_bad(name, reading.error or "bad reading")
                previous = sent.get(name)
                if full or previous is None or previous[1] != BAD:
                    out[name] = {"value": None, "ts": reading.ts, "quality": BAD, "error": reading.error}
                    sent[name] = (None, BAD)
                twin_changes[name] = (self.twin.reported.get(name), reading.ts, BAD)
                continue
            try:
                value = point.to_value(reading.value)
            except (TypeError, ValueError, OverflowError) as exc:
                self._note_bad(name, f"cannot convert {reading.value!r}: {exc}")
                continue
            reason = point.check(value)
            quality = UNCERTAIN if reason is not None else GOOD
            if reason is not None:
                self._note_bad(name, f"value {value!r} outside the model: {reason}")
            elif name in self._bad_reasons:
                log.info("%s/%s: good again", self.spec.id, name)
                del self._bad_reasons[name]
            self.values[name] = value
            twin_changes[name] = (value, reading.ts, quality)
            previous = sent.get(name)
            if not full and previous is not None and previous[1] == quality:
                last = previous[0]
                if last == value:
                    continue
                if point.deadband and last is not None and not isinstance(value, bool):
                    if abs(value - last) < point.deadband:
                        continue
            entry: dict[str, Any] = {"value": value, "ts": reading.ts, "quality": quality}
            if reason is not None:
                entry["error"] = reason
            out[name] = entry
            sent[name] = (value, quality)
        self.points_read += len(readings)
        if twin_changes:
            self.twin.update_reported(twin_changes, now)
        if full:
            self._complete_snapshot(out)
        if out:
            self.emit("report", {"ts": now, "properties": out})
        self._evaluate_events(now)
        return len(out)

    def _complete_snapshot(self, out: dict[str, dict[str, Any]]) -> None:
        """A full snapshot also repeats what was pushed (subscriptions) rather than polled."""
        reported, meta = self.twin.reported, self.twin.reported_meta
        for name in self.spec.points:
            if name not in out and name in meta:
                ts, quality, _ = meta[name]
                out[name] = {"value": reported.get(name), "ts": ts, "quality": quality}

    def push(self, readings: Sequence[Reading]) -> None:
        """Readings a driver received unasked (subscriptions, observe)."""
        self.process(readings, time.time_ns() // 1_000_000)

    def _note_bad(self, name: str, reason: str) -> None:
        # log once per change of reason, never once per poll
        if self._bad_reasons.get(name) != reason:
            self._bad_reasons[name] = reason
            log.warning("%s/%s: %s", self.spec.id, name, reason)

    def _evaluate_events(self, now: int) -> None:
        values = self.values
        for index, rule in enumerate(self.spec.events):
            if self._armed[index]:
                if rule.when.holds(values):
                    self._armed[index] = False
                    output = {
                        name: values.get(ref) if is_ref else ref
                        for name, (is_ref, ref) in rule.output.items()
                    }
                    log.info("%s: event %s (%s) %s", self.spec.id, rule.event, rule.type, output)
                    self.emit(
                        f"event:{rule.event}",
                        {"ts": now, "type": rule.type, "output": output},
                    )
            else:
                rearm = rule.clear.holds(values) if rule.clear else not rule.when.holds(values)
                if rearm:
                    self._armed[index] = True

    def resend_all(self) -> None:
        """Forget what was sent so the next poll reports every property (full snapshot)."""
        self._sent.clear()
