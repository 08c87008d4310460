"""JSON pointers (RFC 6901), MQTT topic filters and payload timestamps; stdlib only.

Compiled once per binding so that each received message costs one walk per point.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from citytwin.drivers.jsonpointer import MISSING, parse_pointer, place, resolve

__all__ = ["MISSING", "check_filter", "check_name", "parse_pointer", "place", "resolve"]

def check_filter(topic: str) -> str:
    """Raise ``ValueError`` unless ``topic`` is a valid MQTT topic filter."""
    if not topic:
        raise ValueError("a topic must not be empty")
    levels = topic.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            raise ValueError("'#' must be a whole level, and the last one")
        if "+" in level and level != "+":
            raise ValueError("'+' must be a whole level")
    return topic


def check_name(topic: str) -> str:
    """Raise ``ValueError`` unless ``topic`` is a valid topic name to publish to."""
    check_filter(topic)
    if "+" in topic or "#" in topic:
        raise ValueError("a topic to publish to must not contain wildcards")
    return topic


def matches(topic_filter: str, topic: str) -> bool:
    """MQTT matching of a topic name against a filter (``$``-topics only match explicitly)."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    want = topic_filter.split("/")
    have = topic.split("/")
    for index, level in enumerate(want):
        if level == "#":
            return True
        if index >= len(have) or (level != "+" and level != have[index]):
            return False
    return len(want) == len(have)


def covers(wide: str, narrow: str) -> bool:
    """Whether every topic matching filter ``narrow`` also matches filter ``wide``."""
    want = wide.split("/")
    have = narrow.split("/")
    for index, level in enumerate(want):
        if level == "#":
            return not (index == 0 and have[0].startswith("$"))
        if index >= len(have) or have[index] == "#":
            return False
        if level != "+" and level != have[index]:
            return False
        if level == "+" and index == 0 and have[0].startswith("$"):
            return False
    return len(want) == len(have)


def minimal_filters(filters: Iterable[str]) -> list[str]:
    """The filters to subscribe so that no topic matches two of them.

    A broker delivers a message once per matching subscription, so overlapping filters
    (``site/+/telemetry`` and ``site/#``) would deliver every such message twice.
    """
    unique = sorted(set(filters))
    return [f for f in unique if not any(g != f and covers(g, f) for g in unique)]


def timestamp_ms(value: Any) -> int:
    """A payload timestamp as epoch milliseconds: a number of ms, or an ISO 8601 text.

    A text without a zone is taken as UTC. Raises ``ValueError`` otherwise.
    """
    if isinstance(value, bool):
        raise ValueError("a timestamp is not a boolean")
    if isinstance(value, int | float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("a timestamp must be finite")
        return int(value)
    if isinstance(value, str):
        parsed = dt.datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        return int(parsed.timestamp() * 1000)
    raise ValueError(f"a timestamp must be epoch ms or ISO 8601 text, not {type(value).__name__}")
