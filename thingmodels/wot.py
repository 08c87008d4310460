"""W3C WoT Thing Model 1.1 and Thing Description 1.1 out (``wot_import`` brings them in).

Properties, events and services map to ``properties``, ``events`` and ``actions`` with
JSON-Schema-style data schemas: ranges become minimum/maximum, bool and enum names become
``oneOf`` of ``const`` with a ``title``, text length ``maxLength``, array size ``maxItems``.
Semantic types become ``@type``; UCUM codes and TSL event types, which WoT has no term for,
become ``citytwin:`` terms under a prefix the ``@context`` declares. What has no place at all
(a float's 32-bit precision, a UI step, a unit's display name, a date's meaning) is listed
in the loss report. A TD also gets forms for the hub contract (MQTT, in the binding
templates' ``mqv`` vocabulary) and a security definition.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from citytwin.thingmodels.checks import INT32_MAX, INT32_MIN
from citytwin.thingmodels.errors import pointer
from citytwin.thingmodels.tsl import Loss
from citytwin.thingmodels.types import (
    AccessMode,
    CallType,
    DataType,
    Kind,
    Param,
    ThingModel,
)

TD_CONTEXT: Final = "https://www.w3.org/2022/wot/td/v1.1"
CITYTWIN_NS: Final = "urn:citytwin:thingmodel#"
MQV_NS: Final = "http://www.example.org/mqtt-binding#"
DATE_PATTERN: Final = "^[0-9]{1,15}$"
_PLACEHOLDER = re.compile(r"\{\{([^{}]+)\}\}")


@dataclass(frozen=True, slots=True)
class HubBinding:
    """Where a device's data lives on the hub: ``{prefix}/{gateway}/{device}/...`` topics."""

    broker: str = "mqtt://127.0.0.1:1883"
    prefix: str = "citytwin/v1"
    gateway: str = "gateway"
    device: str = "device"
    qos: int = 1
    secured: bool = True

    @property
    def base(self) -> str:
        return f"{self.prefix.rstrip('/')}/{self.gateway}/{self.device}"


# -- out --------------------------------------------------------------------------------------


def to_tm(model: ThingModel) -> tuple[dict[str, Any], list[Loss]]:
    """A Thing Model for ``model`` and what it could not say."""
    losses: list[Loss] = []
    doc = _thing(model, losses, None)
    doc["@type"] = ["tm:ThingModel", *_sem(model.ext)]
    doc["version"] = {"model": model.profile.version or "1.0"}
    # TD 1.1 §10: every affordance of a TM is mandatory unless tm:optional names it
    optional = [f"/{section}/{key}" for section, key in _features(model) if (section, key) not in _required(model)]
    if optional:
        doc["tm:optional"] = optional
    return doc, losses


def to_td(model: ThingModel, binding: HubBinding) -> tuple[dict[str, Any], list[Loss]]:
    """A Thing Description for one device of ``model`` on the hub ``binding`` describes."""
    losses: list[Loss] = []
    doc = _thing(model, losses, binding)
    doc["id"] = f"urn:citytwin:{binding.gateway}:{binding.device}"
    if model.ext.get("semanticType"):
        doc["@type"] = _sem(model.ext)
    doc["version"] = {"instance": model.profile.version or "1.0"}
    scheme = ("basic_sc", {"scheme": "basic"}) if binding.secured else ("nosec_sc", {"scheme": "nosec"})
    doc["securityDefinitions"] = {scheme[0]: scheme[1]}
    doc["security"] = [scheme[0]]
    base = binding.base
    doc["forms"] = [
        _form(binding, f"{base}/properties/report", "subscribe", ["observeallproperties", "unobserveallproperties"]),
        _form(binding, f"{base}/properties/set", "publish", ["writemultipleproperties"]),
    ]
    for section, key in _required(model):
        losses.append(Loss(f"/{section}/{key}", "TSL 'required' (standard feature) has no TD term"))
    return doc, losses


def _features(model: ThingModel) -> list[tuple[str, str]]:
    return ([("properties", k) for k in model.properties] + [("events", k) for k in model.events]
            + [("actions", k) for k in model.services])


def _required(model: ThingModel) -> list[tuple[str, str]]:
    found = [("properties", k) for k, p in model.properties.items() if p.required]
    found += [("events", k) for k, e in model.events.items() if e.required]
    found += [("actions", k) for k, s in model.services.items() if s.required]
    return found


def _form(binding: HubBinding, topic: str, packet: str, ops: list[str]) -> dict[str, Any]:
    return {
        "href": binding.broker,
        "op": ops,
        "contentType": "application/json",
        "mqv:topic": topic,
        "mqv:controlPacket": packet,
        "mqv:qos": str(binding.qos),
    }


def _sem(ext: Mapping[str, Any]) -> list[str]:
    value = ext.get("semanticType")
    return [value] if isinstance(value, str) else []


def _thing(model: ThingModel, losses: list[Loss], binding: HubBinding | None) -> dict[str, Any]:
    context: dict[str, str] = {"citytwin": CITYTWIN_NS}
    if binding is not None:
        context["mqv"] = MQV_NS
    doc: dict[str, Any] = {
        "@context": [TD_CONTEXT, context],
        "title": model.ext.get("title") or model.product_key,
    }
    if model.ext.get("description"):
        doc["description"] = model.ext["description"]
    doc["citytwin:productKey"] = model.product_key
    properties: dict[str, Any] = {}
    for key, prop in model.properties.items():
        at = prop.written.at
        aff: dict[str, Any] = {"title": prop.name}
        if prop.description:
            aff["description"] = prop.description
        aff.update(data_schema(prop.data_type, pointer(at, "dataType"), losses))
        aff.update(_annotations(prop.ext))
        if prop.access_mode is AccessMode.R:
            aff["readOnly"] = True
        elif prop.ext.get("writeOnly"):
            aff["writeOnly"] = True
        if "default" in prop.ext:
            aff["default"] = prop.ext["default"]
        aff["observable"] = not prop.ext.get("writeOnly", False)
        if binding is not None:
            forms = []
            if aff["observable"]:
                forms.append(_form(binding, f"{binding.base}/properties/report", "subscribe", ["observeproperty", "unobserveproperty"]))
            if prop.access_mode is AccessMode.RW:
                forms.append(_form(binding, f"{binding.base}/properties/set", "publish", ["writeproperty"]))
            aff["forms"] = forms
        properties[key] = aff
    actions: dict[str, Any] = {}
    for key, service in model.services.items():
        at = service.written.at
        aff = {"title": service.name}
        if service.description:
            aff["description"] = service.description
        aff.update(_annotations(service.ext))
        if service.inputs:
            aff["input"] = _object(service.inputs, pointer(at, "inputData"), losses)
        if service.outputs:
            aff["output"] = _object(service.outputs, pointer(at, "outputData"), losses)
        aff["synchronous"] = service.call_type is CallType.SYNC
        if binding is not None:
            aff["forms"] = [_form(binding, f"{binding.base}/services/{key}/invoke", "publish", ["invokeaction"])]
        actions[key] = aff
    events: dict[str, Any] = {}
    for key, event in model.events.items():
        at = event.written.at
        aff = {"title": event.name}
        if event.description:
            aff["description"] = event.description
        aff.update(_annotations(event.ext))
        aff["citytwin:eventType"] = event.type.value
        if event.output:
            aff["data"] = _object(event.output, pointer(at, "outputData"), losses)
        if binding is not None:
            aff["forms"] = [_form(binding, f"{binding.base}/events/{key}", "subscribe", ["subscribeevent", "unsubscribeevent"])]
        events[key] = aff
    doc["properties"] = properties
    doc["actions"] = actions
    doc["events"] = events
    return doc


def _annotations(ext: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if ext.get("semanticType"):
        out["@type"] = ext["semanticType"]
    if "ucum" in ext and ext["ucum"] is not None:
        out["citytwin:ucum"] = ext["ucum"]
    return out


def _object(params: Mapping[str, Param], at: str, losses: list[Loss]) -> dict[str, Any]:
    properties = {}
    for index, (key, param) in enumerate(params.items()):
        schema: dict[str, Any] = {"title": param.name}
        schema.update(data_schema(param.data_type, pointer(pointer(at, index), "dataType"), losses))
        schema.update(_annotations(param.ext))
        if "default" in param.ext:
            schema["default"] = param.ext["default"]
        properties[key] = schema
    return {"type": "object", "properties": properties, "required": list(params)}


def data_schema(dt: DataType, at: str, losses: list[Loss]) -> dict[str, Any]:
    """A WoT data schema for a TSL data type."""
    kind = dt.type
    specs_at = pointer(at, "specs")
    if kind in (Kind.INT, Kind.FLOAT, Kind.DOUBLE):
        schema: dict[str, Any] = {"type": "integer" if kind is Kind.INT else "number"}
        low, high = dt.min, dt.max
        if kind is Kind.INT:
            low = INT32_MIN if low is None else low
            high = INT32_MAX if high is None else high
        if low is not None:
            schema["minimum"] = low
        if high is not None:
            schema["maximum"] = high
        if dt.unit:
            schema["unit"] = dt.unit
        if kind is Kind.FLOAT:
            losses.append(Loss(pointer(at, "type"), "float is 32-bit in TSL; WoT numbers have no precision"))
        if dt.step is not None:
            losses.append(Loss(pointer(specs_at, "step"), f"step {dt.step:g} (a UI increment) has no WoT term"))
        if dt.unit_name:
            losses.append(Loss(pointer(specs_at, "unitName"), f"unit display name {dt.unit_name!r} has no WoT term"))
        return schema
    if kind is Kind.BOOL:
        return {"type": "boolean", "oneOf": [{"const": value == 1, "title": name} for value, name in sorted(dt.names.items())]}
    if kind is Kind.ENUM:
        return {"type": "integer", "oneOf": [{"const": value, "title": name} for value, name in dt.names.items()]}
    if kind is Kind.TEXT:
        return {"type": "string", "maxLength": dt.length}
    if kind is Kind.DATE:
        losses.append(Loss(pointer(at, "type"), "date (UTC epoch milliseconds as a string) is only a digit pattern in WoT"))
        return {"type": "string", "pattern": DATE_PATTERN}
    if kind is Kind.STRUCT:
        return _object({f.identifier: f for f in dt.fields}, specs_at, losses)
    assert dt.item is not None
    return {"type": "array", "maxItems": dt.size, "items": data_schema(dt.item, pointer(specs_at, "item"), losses)}
