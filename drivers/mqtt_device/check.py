"""Does a device MQTT point fit what the thing model asks of it? (the registry's ``check`` hook)

A writable property needs a ``set`` command whose payload carries the written ``$value``; a
property the model reports needs a ``topic`` to read it from; a ``map`` must translate
published values into values of the property's type (and, for an enum, into its values).
Imports pydantic only, never the MQTT client.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from citytwin.drivers.mqtt_device.binding import MqttPoint
from citytwin.drivers.registry import NUMERIC, BindingFinding, PropertyUse, kind_with_article
from citytwin.thingmodels.types import Kind


def _uses_value(template: Any) -> bool:
    if isinstance(template, str):
        return template == "$value"
    if isinstance(template, dict):
        return any(_uses_value(v) for v in template.values())
    if isinstance(template, list):
        return any(_uses_value(v) for v in template)
    return False


def _map_problem(value: Any, use: PropertyUse) -> tuple[str, str] | None:
    """(rule, message) when a mapped raw value cannot be a value of the property."""
    kind, dt = use.kind, use.data_type
    if kind is Kind.BOOL:
        ok = isinstance(value, bool) or value in (0, 1)
    elif kind in NUMERIC:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif kind is Kind.TEXT:
        ok = isinstance(value, str)
    else:
        return None
    if not ok:
        return "binding-type", f"maps to {value!r}, which is not {kind_with_article(kind)} value"
    if kind is Kind.ENUM and dt.names:
        scaled = value * use.scale + use.offset
        if scaled not in dt.names:
            known = ", ".join(str(v) for v in dt.names)
            return "binding-range", f"maps to {value!r}, which is not one of the model's values ({known})"
    elif kind in NUMERIC:
        scaled = value * use.scale + use.offset
        if (dt.min is not None and scaled < dt.min) or (dt.max is not None and scaled > dt.max):
            return "binding-range", f"maps to {value!r}, outside the model's range {dt.min}..{dt.max}"
    return None


def check_point(point: BaseModel, use: PropertyUse) -> list[BindingFinding]:
    if not isinstance(point, MqttPoint):
        return []
    found: list[BindingFinding] = []
    if use.writable and point.set is None:
        found.append(BindingFinding(
            "binding-writable", "writable in the model, but the point has no 'set' command to write it"
        ))
    if use.writable and point.set is not None and not _uses_value(point.set.payload):
        found.append(BindingFinding(
            "binding-write-value",
            "the 'set' payload never sends the written value (put \"$value\" in it)",
            ("set", "payload"),
        ))
    if use.readable and point.topic is None:
        found.append(BindingFinding(
            "binding-readable", "the model reports it, but the point has no 'topic' to read it from"
        ))
    for key, value in (point.map or {}).items():
        problem = _map_problem(value, use)
        if problem is not None:
            found.append(BindingFinding(problem[0], problem[1], ("map", key)))
    return found
