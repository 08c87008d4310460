"""Advice that does not make a model invalid: missing units, ranges and descriptions, keys
nobody defines (usually typos), and TSL methods that no longer match their identifier.

Runs on a parsed model and places each warning with the JSON pointer its node was read from,
so warnings get file:line:col like errors. Features of referenced modules are linted where
their own document is linted, not in every model that uses them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Final

from citytwin.thingmodels.errors import Issue, pointer
from citytwin.thingmodels.types import (
    NUMERIC_KINDS,
    DataType,
    Event,
    Kind,
    Param,
    Property,
    Service,
    ThingModel,
    Written,
)

# keys TSL defines that the model keeps verbatim rather than interprets
_TSL_MODEL: Final = frozenset({"schema", "link", "functionBlocks", "functionBlockId", "functionBlockName"})
_TSL_PROFILE: Final = frozenset({"deviceName"})
_TSL_FEATURE: Final = frozenset({"method"})
_SPEC_KEYS: Final[Mapping[Kind, frozenset[str]]] = {
    Kind.INT: frozenset({"min", "max", "step", "unit", "unitName"}),
    Kind.FLOAT: frozenset({"min", "max", "step", "unit", "unitName"}),
    Kind.DOUBLE: frozenset({"min", "max", "step", "unit", "unitName"}),
    Kind.TEXT: frozenset({"length"}),
    Kind.DATE: frozenset(),
    Kind.ARRAY: frozenset({"size", "item"}),
}


def lint_model(model: ThingModel) -> list[Issue]:
    """Every warning for ``model``: the model, its profile, its features, its modules."""
    issues: list[Issue] = []
    issues.extend(_unknown(model.written, _TSL_MODEL))
    issues.extend(_unknown(model.profile.written, _TSL_PROFILE))
    issues.extend(_module_features(model))
    for module in model.modules.values():
        issues.extend(_unknown(module.written, _TSL_MODEL | {"schema"}))
        if module.ref is None:
            issues.extend(_unknown(module.model.profile.written, _TSL_PROFILE))
            issues.extend(_module_features(module.model, module.identifier))
    return issues


def _module_features(model: ThingModel, module: str = "") -> Iterator[Issue]:
    properties, events, services = model.own()
    for prop in properties.values():
        yield from _property(prop)
    for event in events.values():
        yield from _feature(event, "event", module)
        for param in event.output.values():
            yield from _param(param)
    for service in services.values():
        yield from _feature(service, "service", module)
        for param in (*service.inputs.values(), *service.outputs.values()):
            yield from _param(param)


def _property(prop: Property) -> Iterator[Issue]:
    at = prop.written.at
    yield from _unknown(prop.written, frozenset())
    dt = prop.data_type
    if dt.type in NUMERIC_KINDS:
        type_at = pointer(at, "dataType")
        if not dt.unit and not prop.ext.get("ucum"):
            yield Issue(type_at, f"numeric property {prop.identifier!r} has no unit", "unit-missing")
        elif "ucum" not in prop.ext:
            yield Issue(
                at, f"property {prop.identifier!r} has unit {dt.unit!r} but no UCUM code (x-citytwin.ucum)",
                "ucum-missing",
            )
        if prop.writable and (dt.min is None or dt.max is None):
            yield Issue(type_at, f"writable property {prop.identifier!r} has no min/max range", "range-missing")
    if not prop.description:
        yield Issue(at, f"property {prop.identifier!r} has no description (desc)", "description-missing")
    yield from _data_type(dt)


def _feature(feature: Event | Service, kind: str, module: str) -> Iterator[Issue]:
    at = feature.written.at
    yield from _unknown(feature.written, _TSL_FEATURE)
    if not feature.description:
        yield Issue(at, f"{kind} {feature.identifier!r} has no description (desc)", "description-missing")
    method = feature.written.extra.get("method")
    if method is not None and not module:
        expected = (
            f"thing.event.{feature.identifier}.post" if kind == "event" else f"thing.service.{feature.identifier}"
        )
        if method != expected:
            yield Issue(pointer(at, "method"), f"method {method!r} should be {expected!r}", "method-mismatch")


def _param(param: Param) -> Iterator[Issue]:
    yield from _unknown(param.written, frozenset())
    yield from _data_type(param.data_type)


def _data_type(dt: DataType) -> Iterator[Issue]:
    yield from _unknown(dt.written, frozenset())
    known = _SPEC_KEYS.get(dt.type)
    if known is not None:
        specs_at = pointer(dt.written.at, "specs")
        for key in dt.written.literals:
            if key not in known:
                yield Issue(pointer(specs_at, key), f"{dt.type} specs do not define {key!r}", "unknown-key")
    if dt.item is not None:
        yield from _data_type(dt.item)
    for field in dt.fields:
        yield from _param(field)


def _unknown(shape: Written, allowed: frozenset[str]) -> Iterator[Issue]:
    for key in shape.extra:
        if key not in allowed:
            yield Issue(pointer(shape.at, key), f"unknown key {key!r} (neither TSL nor x-citytwin)", "unknown-key")
