"""MQTT device bindings: JSON pointers (RFC 6901), topic filters, timestamps, config errors."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from citytwin.drivers.mqtt_device.binding import MqttCall, MqttConnection, MqttPoint
from citytwin.drivers.mqtt_device.pointer import (
    MISSING,
    matches,
    parse_pointer,
    place,
    resolve,
    timestamp_ms,
)

# the example document of RFC 6901, section 5
RFC_DOC: dict[str, Any] = {
    "foo": ["bar", "baz"], "": 0, "a/b": 1, "c%d": 2, "e^f": 3, "g|h": 4,
    "i\\j": 5, 'k"l': 6, " ": 7, "m~n": 8,
}


@pytest.mark.parametrize(
    ("pointer", "expected"),
    [
        ("", RFC_DOC), ("/foo", ["bar", "baz"]), ("/foo/0", "bar"), ("/", 0), ("/a~1b", 1),
        ("/c%d", 2), ("/e^f", 3), ("/g|h", 4), ("/i\\j", 5), ('/k"l', 6), ("/ ", 7), ("/m~0n", 8),
    ],
)
def test_rfc6901_examples(pointer: str, expected: Any) -> None:
    assert resolve(RFC_DOC, parse_pointer(pointer)) == expected


@pytest.mark.parametrize("pointer", ["/foo/2", "/foo/01", "/foo/-", "/nope", "/foo/0/x"])
def test_pointer_to_nothing_is_missing(pointer: str) -> None:
    assert resolve(RFC_DOC, parse_pointer(pointer)) is MISSING


@pytest.mark.parametrize("pointer", ["foo", "/a~2b", "/~"])
def test_invalid_pointers(pointer: str) -> None:
    with pytest.raises(ValueError):
        parse_pointer(pointer)


def test_place_creates_objects() -> None:
    doc: dict[str, Any] = {"a": 1}
    place(doc, parse_pointer("/meta/id"), "x")
    assert doc == {"a": 1, "meta": {"id": "x"}}


@pytest.mark.parametrize(
    ("filter_", "topic", "expected"),
    [
        ("a/b", "a/b", True), ("a/+", "a/b", True), ("a/+", "a/b/c", False),
        ("a/#", "a", True), ("a/#", "a/b/c", True), ("+/+", "a/b", True), ("#", "$SYS/x", False),
        ("a/+/c", "a//c", True), ("a/b", "a/c", False),
    ],
)
def test_topic_matching(filter_: str, topic: str, expected: bool) -> None:
    assert matches(filter_, topic) is expected


def test_timestamps() -> None:
    assert timestamp_ms(1_700_000_000_123) == 1_700_000_000_123
    assert timestamp_ms("2023-11-14T22:13:20.123Z") == 1_700_000_000_123
    assert timestamp_ms("2023-11-14T23:13:20.123+01:00") == 1_700_000_000_123
    assert timestamp_ms("2023-11-14T22:13:20.123") == 1_700_000_000_123  # no zone: UTC
    for bad in ("yesterday", True, None, [1]):
        with pytest.raises(ValueError):
            timestamp_ms(bad)


def test_binding_errors_are_clear() -> None:
    with pytest.raises(ValidationError, match="'#' must be a whole level"):
        MqttPoint(topic="a/#/b")
    with pytest.raises(ValidationError, match="starts with '/'"):
        MqttPoint(topic="a", pointer="flow")
    with pytest.raises(ValidationError, match="needs a 'topic'"):
        MqttPoint()
    with pytest.raises(ValidationError, match="must not contain wildcards"):
        MqttCall(topic="a/+/cmd")
    with pytest.raises(ValidationError, match="mqtt://HOST:PORT"):
        MqttConnection(url="tcp://x:1")
    with pytest.raises(ValidationError, match="must name a member"):
        MqttConnection(url="mqtt://x:1", correlation="")
    conn = MqttConnection(url="mqtt://broker.local:1884")
    assert (conn.host, conn.port) == ("broker.local", 1884)


def test_overlapping_filters_are_subscribed_once() -> None:
    from citytwin.drivers.mqtt_device.pointer import minimal_filters

    assert minimal_filters(["site/+/telemetry", "site/#", "other/a", "other/a"]) == ["other/a", "site/#"]
    assert minimal_filters(["a/+", "a/b", "a/+/c"]) == ["a/+", "a/+/c"]
    assert minimal_filters(["#", "$SYS/x"]) == ["#", "$SYS/x"]
