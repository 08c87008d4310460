"""Raw readings to model values, reports by exception and events: one device's data path.

Per poll: scale and round each raw value, check it against the model (an out-of-range
value is kept and marked ``uncertain`` with the reason), keep only what moved beyond its
deadband (or everything when a full snapshot is due), update the twin, and emit one report
message carrying every changed property. Event rules fire on the rising edge of their
condition and re-arm when it falls (or when their ``clear`` condition holds).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
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
        # per property, in the order of the point map's shared layout (arrays, not a dict and
        # a tuple per property: docs/performance.md): the last value and quality sent to the
        # hub, for report-by-exception (quality None: nothing sent yet), and the current
        # good/uncertain value (_MISSING: none yet), for event rules and interlocks
        layout = spec.points.layout
        self._index = layout.index
        n = len(layout.names)
        self._sent_value: list[Any] = [None] * n
        self._sent_quality: list[str | None] = [None] * n
        self._current: list[Any] = [_MISSING] * n
        self.values: Mapping[str, Any] = _Values(self._index, self._current)
        # the properties that are not good now: (quality, reason); with ``values`` this says what
        # each property is, for interlocks (kept only for the few that are not good: no per-poll
        # tuple for every point)
        self.not_good: dict[str, tuple[str, str]] = {}
        self._armed = [True] * len(spec.events)
        self._bad_reasons: dict[str, str] = {}
        self.points_read = 0
        # integer properties with no scale or offset: an int raw value is the model value as is
        self._plain = spec.points.plain

    def process(self, readings: Sequence[Reading], now: int, full: bool = False) -> int:
        """Returns the number of properties reported."""
        points = self.spec.points
        plain = self._plain
        index = self._index
        sent_value, sent_quality, current = self._sent_value, self._sent_quality, self._current
        not_good = self.not_good
        bad_reasons = self._bad_reasons
        out: dict[str, dict[str, Any]] = {}
        twin_changes: dict[str, tuple[Any, int, str]] = {}
        for name, raw, ts, quality, error in readings:  # unpacked: attribute access costs per point
            point = points.get(name)
            if point is None:  # an output point read back, not a property
                continue
            i = index[name]
            if quality is Quality.BAD:
                not_good[name] = (BAD, error or "bad reading")
                self._note_bad(name, error or "bad reading")
                if full or sent_quality[i] != BAD:
                    out[name] = {"value": None, "ts": ts, "quality": BAD, "error": error}
                    sent_value[i], sent_quality[i] = None, BAD
                twin_changes[name] = (self.twin.value(name), ts, BAD)
                continue
            if type(raw) is int and name in plain:  # what to_value would return, without the call
                value = raw
            else:
                try:
                    value = point.to_value(raw)
                except (TypeError, ValueError, OverflowError) as exc:
                    not_good[name] = (BAD, f"cannot convert {raw!r}: {exc}")
                    self._note_bad(name, f"cannot convert {raw!r}: {exc}", "convert")
                    continue
            reason = point.check(value)
            if reason is None and quality is Quality.UNCERTAIN:  # the device itself doubts it
                reason = error or "the device reported it uncertain"
                quality_text = UNCERTAIN
                self._note_bad(name, reason)
            elif reason is None:
                quality_text = GOOD
                if bad_reasons and name in bad_reasons:
                    log.info("%s/%s: good again", self.spec.id, name)
                    del bad_reasons[name]
            else:
                quality_text = UNCERTAIN
                # keyed by kind: a value moving outside the range is one log line, not one per poll
                self._note_bad(name, f"value {value!r} outside the model: {reason}", "range")
            current[i] = value
            if reason is not None:
                not_good[name] = (UNCERTAIN, reason)
            elif not_good and name in not_good:
                del not_good[name]
            twin_changes[name] = (value, ts, quality_text)
            if not full and sent_quality[i] == quality_text:
                last = sent_value[i]
                if last == value:
                    continue
                if point.deadband and last is not None and not isinstance(value, bool):
                    if abs(value - last) < point.deadband:
                        continue
            if reason is None:
                out[name] = {"value": value, "ts": ts, "quality": quality_text}
            else:
                out[name] = {"value": value, "ts": ts, "quality": quality_text, "error": reason}
            sent_value[i], sent_quality[i] = value, quality_text
        self.points_read += len(readings)
        if twin_changes:
            self.twin.update_reported(twin_changes, now)
        if full:
            self._complete_snapshot(out)
        if out:
            self.emit("report", {"ts": now, "properties": out})
        if self.spec.events:
            self._evaluate_events(now)
        return len(out)

    def _complete_snapshot(self, out: dict[str, dict[str, Any]]) -> None:
        """A full snapshot also repeats what was pushed (subscriptions) rather than polled."""
        twin = self.twin
        for name in self.spec.points:
            if name not in out:
                meta = twin.meta(name)
                if meta is not None:
                    out[name] = {"value": twin.value(name), "ts": meta[0], "quality": meta[1]}

    def _note_bad(self, name: str, reason: str, kind: str | None = None) -> None:
        # log once per change of reason (or of kind, when the reason quotes a changing value),
        # never once per poll
        key = kind or reason
        if self._bad_reasons.get(name) != key:
            self._bad_reasons[name] = key
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
        n = len(self._sent_quality)
        self._sent_value, self._sent_quality = [None] * n, [None] * n


class _Values(Mapping[str, Any]):
    """Property -> current good/uncertain value, read-only, over the pipeline's array."""

    __slots__ = ("_current", "_index")

    def __init__(self, index: Mapping[str, int], current: list[Any]) -> None:
        self._index, self._current = index, current

    def __getitem__(self, prop: str) -> Any:
        value = self.get(prop, _MISSING)
        if value is _MISSING:
            raise KeyError(prop)
        return value

    def get(self, prop: str, default: Any = None) -> Any:  # the common call: no exception
        i = self._index.get(prop)
        value = _MISSING if i is None else self._current[i]
        return default if value is _MISSING else value

    def __contains__(self, prop: object) -> bool:
        i = self._index.get(prop) if isinstance(prop, str) else None
        return i is not None and self._current[i] is not _MISSING

    def __iter__(self) -> Iterator[str]:
        current = self._current
        return (name for name, i in self._index.items() if current[i] is not _MISSING)

    def __len__(self) -> int:
        return sum(1 for value in self._current if value is not _MISSING)


_MISSING = object()
