"""Thing Descriptions of the running devices, for WoT consumers (docs/wot.md).

Each TD is generated from the running config: the device's thing model (the data schemas,
from the TD export in ``thingmodels.wot``), its binding (only bound properties and services
appear; a property is writable only if its point is), the gateway's identity and its HTTP
endpoint. Every form's schema describes exactly the payload on the wire:

- HTTP (TD 1.1 HTTP binding): a property read answers the bare value (bad quality: 503), a
  write takes the bare value, observation is a long-poll that answers the next value; an
  action takes its input object and answers its output; an event subscription (long-poll)
  answers the event envelope ``{"ts", "type", "output"}`` the hub also receives.
- MQTT (with ``hub.property_topics``): each property's bare value, retained, on
  ``{p}/{gw}/{dev}/values/{name}`` (topic in the href path, as node-wot's binding reads it, and
  ``mqv:filter`` for subscriptions); events on their contract topic, whose envelope carries a
  ``seq`` too.

A device's ``uid`` and ``location`` (fleet config) appear as ``schema:identifier`` and
``geo:lat``/``geo:long`` (W3C WGS84 vocabulary) and the other annotations of ``devicemeta``.
"""

from __future__ import annotations

import copy
from typing import Any
from urllib.parse import quote

from citytwin.gateway.config import GatewayConfig
from citytwin.gateway.devicemeta import TD_CONTEXT, td_annotations
from citytwin.gateway.devicespec import DeviceSpec
from citytwin.gateway.topics import Topics
from citytwin.thingmodels.wot import HubBinding, to_td

JSON = "application/json"
TD_CONTENT_TYPE = "application/td+json"


def thing_id(gateway: str, device: str) -> str:
    return f"urn:citytwin:{gateway}:{device}"


def event_envelope(output: dict[str, Any] | None, with_seq: bool) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "ts": {"type": "integer", "description": "epoch milliseconds"},
            "type": {"type": "string", "enum": ["info", "alert", "error"]},
            "output": output or {"type": "object"},
        },
        "required": ["ts", "type", "output"],
    }
    if with_seq:
        schema["properties"]["seq"] = {"type": "integer", "minimum": 1}
        schema["properties"]["replay"] = {"type": "boolean"}
    return schema


class ThingDescriptions:
    """Builds (and caches per config) the TD of each device the gateway runs."""

    def __init__(self, config: GatewayConfig, http_base: str) -> None:
        self.config = config
        self.http_base = http_base.rstrip("/")
        self._cache: dict[str, tuple[DeviceSpec, dict[str, Any]]] = {}

    def describe(self, spec: DeviceSpec) -> dict[str, Any]:
        cached = self._cache.get(spec.id)
        if cached is not None and cached[0] is spec:
            return cached[1]
        td = self._build(spec)
        self._cache[spec.id] = (spec, td)
        return td

    def _build(self, spec: DeviceSpec) -> dict[str, Any]:
        config = self.config
        gateway = config.gateway.id
        hub = config.hub
        broker = f"{'mqtts' if hub.use_tls else 'mqtt'}://{hub.host}:{hub.port}"
        model_td, _ = to_td(spec.model, HubBinding(broker, hub.prefix, gateway, spec.id, hub.qos, secured=False))
        topics = Topics(hub.prefix, gateway)
        device = quote(spec.id, safe="")
        base = f"{self.http_base}/things/{device}/"
        td: dict[str, Any] = {
            "@context": model_td["@context"],
            "@type": "Thing",
            "id": thing_id(gateway, spec.id),
            "title": spec.id,
            "description": f"{spec.model.product_key} on gateway {gateway}"
                           f" ({spec.config.driver})",
            "citytwin:productKey": spec.model.product_key,
            "citytwin:gateway": gateway,
            "base": base,
            "version": {"instance": "1.0"},
            **self._security(),
            "properties": {},
            "actions": {},
            "events": {},
            "forms": [{"href": "properties", "op": ["readallproperties", "readmultipleproperties"],
                       "contentType": JSON, "htv:methodName": "GET"}],
        }
        where = td_annotations(spec.config)  # the city's asset id and the device's place
        if where:
            context = list(td["@context"])
            context.append(dict(TD_CONTEXT))
            td["@context"] = context
            td.update(where)
        for name, schema in model_td.get("properties", {}).items():
            point = spec.points.get(name)
            if point is None:
                continue  # not bound on this device: nothing to read or write
            prop = copy.deepcopy(schema)
            prop.pop("forms", None)
            writable = point.writable and spec.model.properties[name].writable
            prop["readOnly"] = not writable
            prop["observable"] = True
            href = f"properties/{quote(name, safe='')}"
            forms: list[dict[str, Any]] = [
                {"href": href, "op": ["readproperty"], "contentType": JSON, "htv:methodName": "GET"},
            ]
            if writable:
                forms.append({"href": href, "op": ["writeproperty"], "contentType": JSON, "htv:methodName": "PUT"})
            # no htv:methodName on long-polls: a consumer's handshake uses HEAD on the same form
            forms.append({"href": f"{href}/observe", "op": ["observeproperty", "unobserveproperty"],
                          "contentType": JSON, "subprotocol": "longpoll"})
            if hub.property_topics:
                topic = topics.value(spec.id, name)
                forms.append({"href": f"{broker}/{topic}", "op": ["readproperty", "observeproperty",
                                                                  "unobserveproperty"],
                              "contentType": JSON, "mqv:filter": topic, "mqv:controlPacket": "subscribe",
                              "mqv:qos": str(hub.qos), "mqv:retain": True})
            prop["forms"] = forms
            td["properties"][name] = prop
        for name, schema in model_td.get("actions", {}).items():
            binding = spec.services.get(name)
            if binding is None:
                continue
            action = copy.deepcopy(schema)
            action["forms"] = [{"href": f"actions/{quote(name, safe='')}", "op": ["invokeaction"],
                                "contentType": JSON, "htv:methodName": "POST"}]
            if binding.call is None:
                action.pop("output", None)  # a service bound to writes answers no output
            td["actions"][name] = action
        for name, schema in model_td.get("events", {}).items():
            event = copy.deepcopy(schema)
            output = event.pop("data", None)
            event["data"] = event_envelope(output, with_seq=True)
            topic = topics.event(spec.id, name)
            event["forms"] = [
                {"href": f"events/{quote(name, safe='')}", "op": ["subscribeevent", "unsubscribeevent"],
                 "contentType": JSON, "subprotocol": "longpoll"},
                {"href": f"{broker}/{topic}", "op": ["subscribeevent", "unsubscribeevent"],
                 "contentType": JSON, "mqv:filter": topic, "mqv:controlPacket": "subscribe",
                 "mqv:qos": "1"},
            ]
            td["events"][name] = event
        return td

    def _security(self) -> dict[str, Any]:
        auth = self.config.http.auth
        if auth == "basic":
            return {"securityDefinitions": {"basic_sc": {"scheme": "basic", "in": "header"}},
                    "security": ["basic_sc"]}
        if auth == "bearer":
            return {"securityDefinitions": {"bearer_sc": {"scheme": "bearer", "in": "header",
                                                          "format": "opaque"}},
                    "security": ["bearer_sc"]}
        return {"securityDefinitions": {"nosec_sc": {"scheme": "nosec"}}, "security": ["nosec_sc"]}
