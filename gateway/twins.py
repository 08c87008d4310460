"""The shadow twin of one device: reported, desired, delta, version, status.

This class is the only writer of a twin. Every accepted change bumps ``version``; the
document it renders is what the hub sees on the ``twin`` topic and what the store persists.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


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
        "desired",
        "desired_meta",
        "device_id",
        "dirty",
        "online",
        "reported",
        "reported_meta",
        "status_ts",
        "version",
    )

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self.reported: dict[str, Any] = {}
        # property -> [source ts ms, quality, change ts ms]
        self.reported_meta: dict[str, list[Any]] = {}
        self.desired: dict[str, Any] = {}
        self.desired_meta: dict[str, int] = {}
        self.version = 0
        self.online = False
        self.status_ts = 0
        self.dirty = False

    def update_reported(self, changes: Mapping[str, tuple[Any, int, str]], now: int) -> None:
        """Apply ``{property: (value, source ts, quality)}``; bumps the version once if anything changed."""
        changed = False
        reported, meta = self.reported, self.reported_meta
        for prop, (value, ts, quality) in changes.items():
            entry = meta.get(prop)
            if entry is None:
                meta[prop] = [ts, quality, now]
                reported[prop] = value
                changed = True
                continue
            if reported.get(prop) != value or entry[1] != quality:
                reported[prop] = value
                entry[1] = quality
                entry[2] = now
                changed = True
            entry[0] = ts
        if changed:
            self.version += 1
            self.dirty = True

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
        return {k: v for k, v in self.desired.items() if self.reported.get(k, _MISSING) != v}

    def document(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "state": "online" if self.online else "offline",
            "state_ts": self.status_ts,
            "reported": dict(self.reported),
            "desired": dict(self.desired),
            "delta": self.delta,
            "metadata": {
                "reported": {
                    k: {"ts": m[0], "quality": m[1], "changed": m[2]}
                    for k, m in self.reported_meta.items()
                },
                "desired": {k: {"changed": ts} for k, ts in self.desired_meta.items()},
            },
        }

    def snapshot(self) -> dict[str, Any]:
        """What the store persists."""
        return self.document()

    @classmethod
    def restore(cls, device_id: str, doc: Mapping[str, Any]) -> Twin:
        twin = cls(device_id)
        twin.version = int(doc.get("version", 0))
        twin.reported = dict(doc.get("reported", {}))
        meta = doc.get("metadata", {})
        twin.reported_meta = {
            k: [m.get("ts", 0), m.get("quality", "good"), m.get("changed", 0)]
            for k, m in meta.get("reported", {}).items()
        }
        twin.desired = dict(doc.get("desired", {}))
        twin.desired_meta = {k: int(m.get("changed", 0)) for k, m in meta.get("desired", {}).items()}
        # a restored twin is offline until its device answers again
        twin.online = False
        twin.status_ts = int(doc.get("state_ts", 0))
        return twin


_MISSING = object()
