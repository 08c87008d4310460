"""W3C WoT Thing Model 1.1 and Thing Description 1.1 out, Thing Models in.

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

import copy
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from citytwin.thingmodels.checks import INT32_MAX, INT32_MIN
from citytwin.thingmodels.datatypes import IDENTIFIER, MAX_ARRAY_SIZE, MAX_TEXT_LENGTH
from citytwin.thingmodels.errors import pointer, split_pointer
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
    required = [f"#/{section}/{key}" for section, key in _required(model)]
    if required:
        doc["tm:required"] = required
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


# -- in ---------------------------------------------------------------------------------------


class TmImportError(ValueError):
    """A Thing Model that cannot be turned into a thing model at all (unresolved refs...)."""


TmResolver = Callable[[str], Mapping[str, Any]]
"""Turns a ``tm:ref`` / ``tm:extends`` href (without fragment) into its document."""


def from_tm(
    doc: Mapping[str, Any],
    resolve: TmResolver | None = None,
    placeholders: Mapping[str, str] | None = None,
    product_key: str | None = None,
) -> tuple[dict[str, Any], list[Loss]]:
    """Our document for a Thing Model, and what TSL could not take from it."""
    losses: list[Loss] = []
    tm = _expand(dict(doc), resolve, set())
    tm = _fill(tm, placeholders or {})
    missing = sorted(set(_PLACEHOLDER.findall(repr(tm))))
    if missing:
        raise TmImportError(f"placeholders without a value: {', '.join(missing)} (give them with --set NAME=VALUE)")
    required = _required_pointers(tm)
    title = tm.get("title") if isinstance(tm.get("title"), str) else None
    key = product_key or re.sub(r"[^A-Za-z0-9._-]", "_", title or "imported.model")[:64].lstrip("._-") or "imported"
    out: dict[str, Any] = {"profile": {"productKey": key}}
    ext: dict[str, Any] = {}
    if title:
        ext["title"] = title
    if isinstance(tm.get("description"), str):
        ext["description"] = tm["description"]
    sem = [t for t in _types(tm) if t != "tm:ThingModel"]
    if sem:
        ext["semanticType"] = sem[0]
    if ext:
        out["x-citytwin"] = ext
    if isinstance(tm.get("version"), Mapping) and isinstance(tm["version"].get("model"), str):
        out["profile"]["version"] = tm["version"]["model"]
    out["properties"] = []
    for name, aff in _affordances(tm, "properties"):
        at = f"/properties/{name}"
        ident = _identifier(name, at, losses)
        dt = tm_data_type(aff, at, losses)
        if dt is None:
            continue
        entry: dict[str, Any] = {
            "identifier": ident,
            "name": aff.get("title") or name,
            "accessMode": "r" if aff.get("readOnly") else "rw",
            "required": f"#/properties/{name}" in required,
        }
        if isinstance(aff.get("description"), str):
            entry["desc"] = aff["description"]
        entry["dataType"] = dt
        entry_ext = _ext_from(aff)
        if aff.get("writeOnly") and not aff.get("readOnly"):
            entry_ext["writeOnly"] = True
        if "default" in aff:
            entry_ext["default"] = aff["default"]
        if entry_ext:
            entry["x-citytwin"] = entry_ext
        out["properties"].append(entry)
    out["events"] = []
    for name, aff in _affordances(tm, "events"):
        at = f"/events/{name}"
        kind = aff.get("citytwin:eventType")
        if kind not in ("info", "alert", "error"):
            losses.append(Loss(at, "WoT events have no severity; imported as TSL type 'info'"))
            kind = "info"
        entry = {"identifier": _identifier(name, at, losses), "name": aff.get("title") or name, "type": kind,
                 "required": f"#/events/{name}" in required}
        if isinstance(aff.get("description"), str):
            entry["desc"] = aff["description"]
        entry["outputData"] = _params(aff.get("data"), f"{at}/data", "data", losses)
        if _ext_from(aff):
            entry["x-citytwin"] = {k: v for k, v in _ext_from(aff).items() if k == "semanticType"}
        out["events"].append(entry)
    out["services"] = []
    for name, aff in _affordances(tm, "actions"):
        at = f"/actions/{name}"
        entry = {"identifier": _identifier(name, at, losses), "name": aff.get("title") or name,
                 "callType": "sync" if aff.get("synchronous") else "async",
                 "required": f"#/actions/{name}" in required}
        if isinstance(aff.get("description"), str):
            entry["desc"] = aff["description"]
        entry["inputData"] = _params(aff.get("input"), f"{at}/input", "input", losses)
        entry["outputData"] = _params(aff.get("output"), f"{at}/output", "output", losses)
        if _ext_from(aff):
            entry["x-citytwin"] = {k: v for k, v in _ext_from(aff).items() if k == "semanticType"}
        out["services"].append(entry)
    return out, losses


def _expand(node: Any, resolve: TmResolver | None, seen: set[str]) -> Any:
    """Resolve ``tm:extends`` links and ``tm:ref`` (local or in other documents)."""
    if isinstance(node, list):
        return [_expand(item, resolve, seen) for item in node]
    if not isinstance(node, Mapping):
        return node
    out: dict[str, Any] = {}
    for link in node.get("links", []) if isinstance(node.get("links"), list) else []:
        if isinstance(link, Mapping) and link.get("rel") == "tm:extends" and isinstance(link.get("href"), str):
            base = _expand(_fetch(link["href"], resolve, seen), resolve, seen | {link["href"]})
            for section in ("properties", "actions", "events"):
                if isinstance(base.get(section), Mapping):
                    out.setdefault(section, {}).update(base[section])
    ref = node.get("tm:ref")
    if isinstance(ref, str):
        target = _fetch(ref, resolve, seen)
        out.update(copy.deepcopy(dict(_expand(target, resolve, seen | {ref}))))
    for key, value in node.items():
        if key == "tm:ref":
            continue
        if key == "links" and isinstance(value, list):
            value = [v for v in value if not (isinstance(v, Mapping) and v.get("rel") == "tm:extends")]
            if not value:
                continue
        expanded = _expand(value, resolve, seen)
        if key in ("properties", "actions", "events") and isinstance(out.get(key), dict) and isinstance(expanded, Mapping):
            out[key].update(expanded)
        else:
            out[key] = expanded
    return out


def _fetch(href: str, resolve: TmResolver | None, seen: set[str]) -> Any:
    if href in seen:
        raise TmImportError(f"{href}: tm:ref/tm:extends loop")
    location, _, fragment = href.partition("#")
    if not location:
        raise TmImportError(f"{href}: local tm:ref is resolved against the document itself; write it as FILE#POINTER")
    if resolve is None:
        raise TmImportError(f"{href}: no resolver for referenced Thing Models")
    try:
        target: Any = resolve(location)
    except LookupError as exc:
        raise TmImportError(f"{href}: {exc}") from None
    for token in split_pointer(fragment):
        if isinstance(target, Mapping) and token in target:
            target = target[token]
        elif isinstance(target, list) and token.isdigit() and int(token) < len(target):
            target = target[int(token)]
        else:
            raise TmImportError(f"{href}: no {fragment!r} in {location}")
    return target


def _fill(node: Any, values: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        whole = _PLACEHOLDER.fullmatch(node)
        if whole and whole.group(1) in values:
            return values[whole.group(1)]
        return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), node)
    if isinstance(node, list):
        return [_fill(item, values) for item in node]
    if isinstance(node, Mapping):
        return {_fill(k, values): _fill(v, values) for k, v in node.items()}
    return node


def _required_pointers(tm: Mapping[str, Any]) -> set[str]:
    required = tm.get("tm:required")
    found = {p for p in required if isinstance(p, str)} if isinstance(required, list) else set()
    optional = tm.get("tm:optional")
    if isinstance(optional, list):  # TD 1.1 final: everything not optional is mandatory
        every = {f"#/{s}/{n}" for s in ("properties", "actions", "events") for n, _ in _affordances(tm, s)}
        found |= every - {p for p in optional if isinstance(p, str)}
    return found


def _types(node: Mapping[str, Any]) -> list[str]:
    value = node.get("@type")
    values = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    return [v for v in values if isinstance(v, str)]


def _ext_from(aff: Mapping[str, Any]) -> dict[str, Any]:
    ext: dict[str, Any] = {}
    sem = [t for t in _types(aff) if re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", t) and not t.startswith("tm:")]
    if sem:
        ext["semanticType"] = sem[0]
    if "citytwin:ucum" in aff:
        ext["ucum"] = aff["citytwin:ucum"]
    return ext


def _affordances(tm: Mapping[str, Any], section: str) -> list[tuple[str, Mapping[str, Any]]]:
    raw = tm.get(section)
    if not isinstance(raw, Mapping):
        return []
    return [(str(k), v) for k, v in raw.items() if isinstance(v, Mapping)]


def _identifier(name: str, at: str, losses: list[Loss]) -> str:
    if IDENTIFIER.fullmatch(name):
        return name
    fixed = re.sub(r"[^A-Za-z0-9_]", "_", name)
    if not fixed[:1].isalpha():
        fixed = "p_" + fixed
    fixed = fixed[:50]
    losses.append(Loss(at, f"name {name!r} is not a TSL identifier; imported as {fixed!r}"))
    return fixed


def _params(schema: Any, at: str, single: str, losses: list[Loss]) -> list[dict[str, Any]]:
    if not isinstance(schema, Mapping):
        return []
    if schema.get("type") == "object" and isinstance(schema.get("properties"), Mapping):
        params = []
        for name, sub in schema["properties"].items():
            sub_at = f"{at}/properties/{name}"
            dt = tm_data_type(sub, sub_at, losses) if isinstance(sub, Mapping) else None
            if dt is not None:
                param = {"identifier": _identifier(str(name), sub_at, losses), "name": sub.get("title") or name, "dataType": dt}
                if _ext_from(sub):
                    param["x-citytwin"] = {k: v for k, v in _ext_from(sub).items() if k in ("semanticType", "ucum")}
                params.append(param)
        return params
    dt = tm_data_type(schema, at, losses)
    if dt is None:
        return []
    losses.append(Loss(at, f"a non-object {single} becomes one TSL parameter named {single!r}"))
    return [{"identifier": single, "name": schema.get("title") or single, "dataType": dt}]


def tm_data_type(schema: Mapping[str, Any], at: str, losses: list[Loss], role: str = "param") -> dict[str, Any] | None:
    """The TSL data type for a WoT data schema, or None (with a loss) when TSL has none."""
    kind = schema.get("type")
    one_of = schema.get("oneOf") if isinstance(schema.get("oneOf"), list) else None
    consts = [s for s in one_of or [] if isinstance(s, Mapping) and "const" in s]
    if kind == "boolean":
        names = {"0": "false", "1": "true"}
        for s in consts:
            if isinstance(s["const"], bool) and isinstance(s.get("title"), str):
                names["1" if s["const"] else "0"] = s["title"]
        return {"type": "bool", "specs": names}
    if kind == "integer" and (consts or isinstance(schema.get("enum"), list)):
        values = [(s["const"], s.get("title")) for s in consts] or [(v, None) for v in schema["enum"]]
        if all(isinstance(v, int) and not isinstance(v, bool) for v, _ in values):
            return {"type": "enum", "specs": {str(v): t if isinstance(t, str) and t else str(v) for v, t in values}}
    if kind in ("integer", "number"):
        tsl = "int" if kind == "integer" else "double"
        specs: dict[str, Any] = {}
        for key, name in (("minimum", "min"), ("maximum", "max")):
            if isinstance(schema.get(key), (int, float)) and not isinstance(schema.get(key), bool):
                value = schema[key]
                if tsl == "int" and not INT32_MIN <= value <= INT32_MAX:
                    losses.append(Loss(f"{at}/{key}", f"{key} {value} is outside int32; TSL int cannot hold it"))
                    tsl = "double"
                specs[name] = str(value)
        if isinstance(schema.get("unit"), str):
            specs["unit"] = schema["unit"]
        return {"type": tsl, "specs": specs}
    if kind == "string":
        if schema.get("pattern") == DATE_PATTERN:
            return {"type": "date", "specs": {}}
        if "enum" in schema:
            losses.append(Loss(f"{at}/enum", "TSL enums are integers: the allowed strings are dropped"))
        length = schema.get("maxLength")
        if not isinstance(length, int) or not 1 <= length <= MAX_TEXT_LENGTH:
            if length is not None:
                losses.append(Loss(f"{at}/maxLength", f"maxLength {length} does not fit TSL text (1..{MAX_TEXT_LENGTH})"))
            length = MAX_TEXT_LENGTH
        return {"type": "text", "specs": {"length": str(length)}}
    if kind == "object" and role != "field":
        fields = []
        for name, sub in (schema.get("properties") or {}).items():
            if not isinstance(sub, Mapping):
                continue
            dt = tm_data_type(sub, f"{at}/properties/{name}", losses, "field")
            if dt is not None:
                fields.append({"identifier": _identifier(str(name), f"{at}/properties/{name}", losses), "name": sub.get("title") or name, "dataType": dt})
        if fields:
            return {"type": "struct", "specs": fields}
        losses.append(Loss(at, "an object without properties has no TSL type; dropped"))
        return None
    if kind == "array" and role == "param" and isinstance(schema.get("items"), Mapping):
        item = tm_data_type(schema["items"], f"{at}/items", losses, "item")
        if item is None or item["type"] not in ("int", "float", "double", "text", "struct"):
            losses.append(Loss(f"{at}/items", "TSL arrays hold int, float, double, text or struct only; dropped"))
            return None
        size = schema.get("maxItems")
        if not isinstance(size, int) or not 1 <= size <= MAX_ARRAY_SIZE:
            losses.append(Loss(f"{at}/maxItems", f"array size {size} does not fit TSL (1..{MAX_ARRAY_SIZE}); {MAX_ARRAY_SIZE} used"))
            size = MAX_ARRAY_SIZE
        return {"type": "array", "specs": {"size": str(size), "item": item}}
    losses.append(Loss(at, f"a {kind or 'untyped'} schema here has no TSL type; dropped"))
    return None
