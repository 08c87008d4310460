"""The shadow twin of one device: reported, desired, delta, version, status.

This class is the only writer of a twin. Every accepted change bumps ``version``; the
document it renders is what the hub sees on the ``twin`` topic and what the store persists.

The reported state of the device's bound properties is kept in parallel arrays in the
order of a ``Layout`` that the devices of one point map share, not as a dict and a metadata
list per property: at 1,000 devices x 100 properties that was ~18 kB per device, now ~3.5 kB
(docs/performance.md). Properties outside the layout (restored from an older config, or a
twin without one) keep the same state in a small dict.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, TypeVar


class Layout:
    """Property names in a fixed order, and each one's index; shared, never mutated."""

    __slots__ = ("index", "names")

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names
        self.index = {name: i for i, name in enumerate(names)}


NO_LAYOUT = Layout(())
_V = TypeVar("_V")


def merge_patch(target: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7386 JSON merge patch: ``None`` deletes a key, objects merge, the rest replaces."""
    result = dict(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(result.get(key), dict):
            result[key] = merge_patch(result[key], value)
        elif isinstance(value, Mapping):
            result[key] = merge_patch({}, value)
        else:
            result[key] = value
    return result


class Twin:
    __slots__ = (
        "_changed",
        "_extra",
        "_layout",
        "_quality",
        "_ts",
        "_value",
        "desired",
        "desired_meta",
        "device_id",
        "dirty",
        "online",
        "status_ts",
        "version",
    )

    def __init__(self, device_id: str, layout: Layout = NO_LAYOUT) -> None:
        self.device_id = device_id
        self._reset_arrays(layout)
        self.desired: dict[str, Any] = {}
        self.desired_meta: dict[str, int] = {}
        self.version = 0
        self.online = False
        self.status_ts = 0
        self.dirty = False

    # -- reported state --------------------------------------------------------------------

    def update_reported(self, changes: Mapping[str, tuple[Any, int, str]], now: int) -> None:
        """Apply ``{property: (value, source ts, quality)}``; bumps the version once if anything changed."""
        changed = False
        index = self._layout.index
        values, stamps, qualities, changes_at = self._value, self._ts, self._quality, self._changed
        for prop, (value, ts, quality) in changes.items():
            i = index.get(prop)
            if i is None:
                changed = self._update_extra(prop, value, ts, quality, now) or changed
                continue
            known = qualities[i]
            if known is None or known != quality or values[i] != value:
                values[i] = value
                qualities[i] = quality
                changes_at[i] = now
                changed = True
            stamps[i] = ts
        if changed:
            self.version += 1
            self.dirty = True

    def _update_extra(self, prop: str, value: Any, ts: int, quality: str, now: int) -> bool:
        entry = self._extra.get(prop)
        if entry is None:
            self._extra[prop] = [value, ts, quality, now]
            return True
        entry[1] = ts
        if entry[0] != value or entry[2] != quality:
            entry[0], entry[2], entry[3] = value, quality, now
            return True
        return False

    def value(self, prop: str, default: Any = None) -> Any:
        """The reported value of ``prop`` (``default`` when it was never reported)."""
        i = self._layout.index.get(prop)
        if i is not None:
            return self._value[i] if self._quality[i] is not None else default
        entry = self._extra.get(prop)
        return entry[0] if entry is not None else default

    def meta(self, prop: str) -> tuple[int, str, int] | None:
        """(source ts ms, quality, change ts ms) of ``prop``, or None when never reported."""
        i = self._layout.index.get(prop)
        if i is not None:
            quality = self._quality[i]
            return None if quality is None else (self._ts[i], quality, self._changed[i])
        entry = self._extra.get(prop)
        return None if entry is None else (entry[1], entry[2], entry[3])

    def reported_names(self) -> Iterator[str]:
        qualities = self._quality
        for i, name in enumerate(self._layout.names):
            if qualities[i] is not None:
                yield name
        yield from self._extra

    @property
    def reported(self) -> Mapping[str, Any]:
        """Property -> reported value, read-only (a view: no copy)."""
        return _Reported(self)

    @property
    def reported_meta(self) -> Mapping[str, tuple[int, str, int]]:
        """Property -> (source ts ms, quality, change ts ms), read-only."""
        return _ReportedMeta(self)

    def use_layout(self, layout: Layout) -> None:
        """Keep the reported state in ``layout``'s order (a device's point map changed)."""
        if layout is self._layout:
            return
        entries = [(name, self.value(name), meta) for name in self.reported_names()
                   if (meta := self.meta(name)) is not None]
        self._reset_arrays(layout)
        for name, value, (ts, quality, changed) in entries:
            self._put(name, value, ts, quality, changed)

    def _reset_arrays(self, layout: Layout) -> None:
        n = len(layout.names)
        self._layout = layout
        # per property of the layout: value, source ts ms, quality (None: never reported), change ts ms
        self._value: list[Any] = [None] * n
        self._ts: list[int] = [0] * n
        self._quality: list[str | None] = [None] * n
        self._changed: list[int] = [0] * n
        # properties outside the layout: name -> [value, source ts, quality, change ts]
        self._extra: dict[str, list[Any]] = {}

    def _put(self, name: str, value: Any, ts: int, quality: str, changed: int) -> None:
        i = self._layout.index.get(name)
        if i is None:
            self._extra[name] = [value, ts, quality, changed]
        else:
            self._value[i], self._ts[i], self._quality[i], self._changed[i] = value, ts, quality, changed

    # -- status and desired state ----------------------------------------------------------

    def set_online(self, online: bool, now: int) -> bool:
        if online == self.online and self.status_ts:
            return False
        self.online = online
        self.status_ts = now
        self.version += 1
        self.dirty = True
        return True

    def patch_desired(self, patch: Mapping[str, Any], now: int) -> None:
        self.desired = merge_patch(self.desired, patch)
        for key in patch:
            if key in self.desired:
                self.desired_meta[key] = now
            else:
                self.desired_meta.pop(key, None)
        self.version += 1
        self.dirty = True

    @property
    def delta(self) -> dict[str, Any]:
        return {k: v for k, v in self.desired.items() if self.value(k, _MISSING) != v}

    def document(self) -> dict[str, Any]:
        reported: dict[str, Any] = {}
        meta: dict[str, dict[str, Any]] = {}
        values, stamps, qualities, changes_at = self._value, self._ts, self._quality, self._changed
        for i, name in enumerate(self._layout.names):
            quality = qualities[i]
            if quality is not None:
                reported[name] = values[i]
                meta[name] = {"ts": stamps[i], "quality": quality, "changed": changes_at[i]}
        for name, (value, ts, quality, changed) in self._extra.items():
            reported[name] = value
            meta[name] = {"ts": ts, "quality": quality, "changed": changed}
        return {
            "version": self.version,
            "state": "online" if self.online else "offline",
            "state_ts": self.status_ts,
            "reported": reported,
            "desired": dict(self.desired),
            "delta": self.delta,
            "metadata": {
                "reported": meta,
                "desired": {k: {"changed": ts} for k, ts in self.desired_meta.items()},
            },
        }

    def snapshot(self) -> dict[str, Any]:
        """What the store persists."""
        return self.document()

    @classmethod
    def restore(cls, device_id: str, doc: Mapping[str, Any], layout: Layout = NO_LAYOUT) -> Twin:
        twin = cls(device_id, layout)
        twin.version = int(doc.get("version", 0))
        meta = doc.get("metadata", {})
        reported_meta = meta.get("reported", {})
        for name, value in dict(doc.get("reported", {})).items():
            m = reported_meta.get(name, {})
            twin._put(name, value, m.get("ts", 0), m.get("quality", "good"), m.get("changed", 0))
        twin.desired = dict(doc.get("desired", {}))
        twin.desired_meta = {k: int(m.get("changed", 0)) for k, m in meta.get("desired", {}).items()}
        # a restored twin is offline until its device answers again
        twin.online = False
        twin.status_ts = int(doc.get("state_ts", 0))
        return twin


class _TwinView(Mapping[str, _V]):
    """A read-only view of one side of a twin's reported properties."""

    __slots__ = ("_twin",)

    def __init__(self, twin: Twin) -> None:
        self._twin = twin

    def __iter__(self) -> Iterator[str]:
        return self._twin.reported_names()

    def __len__(self) -> int:
        return sum(1 for _ in self._twin.reported_names())

    def __repr__(self) -> str:
        return repr(dict(self))


class _Reported(_TwinView[Any]):
    __slots__ = ()

    def __getitem__(self, prop: str) -> Any:
        value = self._twin.value(prop, _MISSING)
        if value is _MISSING:
            raise KeyError(prop)
        return value


class _ReportedMeta(_TwinView[tuple[int, str, int]]):
    __slots__ = ()

    def __getitem__(self, prop: str) -> tuple[int, str, int]:
        meta = self._twin.meta(prop)
        if meta is None:
            raise KeyError(prop)
        return meta


_MISSING = object()
