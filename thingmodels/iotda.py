"""Huawei Cloud IoTDA product models in and out (the ``service_capabilities`` JSON of the
IoTDA product API: ShowProduct / CreateProduct).

A product is a list of services; ours is a default module plus modules, so the default module
is the service marked ``option: Master`` (named after the product key's last part) and each
module is a service of its own. Properties keep ``property_name``, types map as
int <-> int, decimal <-> double, string <-> text, boolean <-> bool, DateTime <-> date,
string list <-> array of text; ``method`` R/RW (+E, reported) gives accessMode. Services
become commands (inputs as ``paras``, outputs as one response); events keep ``event_type``
and ``paras``. What IoTDA cannot say is a loss: display names (it keys by identifier), enum
and bool value names, event types, call types, UCUM codes, semantic types, struct fields.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Final

from citytwin.thingmodels.checks import INT32_MAX, INT32_MIN, number_text
from citytwin.thingmodels.datatypes import MAX_ARRAY_SIZE, MAX_TEXT_LENGTH
from citytwin.thingmodels.errors import pointer
from citytwin.thingmodels.interchange import (
    data_type_losses,
    feature_pointers,
    listing,
    module_identifier,
    product_key,
    tsl_identifier,
    verbatim_losses,
)
from citytwin.thingmodels.tsl import Loss
from citytwin.thingmodels.types import (
    AccessMode,
    CallType,
    DataType,
    EventType,
    Kind,
    Param,
    ThingModel,
)

IOTDA_TYPES: Final = ("int", "long", "decimal", "string", "DateTime", "jsonObject", "enum", "boolean", "string list")


# -- out --------------------------------------------------------------------------------------


def to_iotda(model: ThingModel) -> tuple[dict[str, Any], list[Loss]]:
    """An IoTDA product model for ``model`` and what it could not say."""
    losses: list[Loss] = []
    at = feature_pointers(model)
    doc: dict[str, Any] = {"device_type": model.product_key, "name": model.ext.get("title") or model.product_key}
    if model.ext.get("description"):
        doc["description"] = model.ext["description"]
    if model.profile.version:
        losses.append(Loss("/profile/version", "IoTDA product models carry no version"))
    if model.ext.get("semanticType"):
        losses.append(Loss("/x-citytwin/semanticType", "a semantic type has no IoTDA field"))
    verbatim_losses(model.written, "", "IoTDA", losses)
    services = [_service(model, "", model.product_key.rsplit(".", 1)[-1], "Master", "", at, losses)]
    for index, module in enumerate(model.modules.values()):
        m_at = f"/modules/{index}"
        if module.name != module.identifier:
            losses.append(Loss(pointer(m_at, "name"), f"module name {module.name!r}: an IoTDA service has only its id"))
        if module.ref is not None:
            losses.append(Loss(pointer(m_at, "model"), f"module names model {module.ref!r}; IoTDA gets its features inline"))
        if module.ext:
            losses.append(Loss(pointer(m_at, "x-citytwin"), "a module's semantic type has no IoTDA field"))
        services.append(_service(module.model, module.identifier, module.identifier, "Optional", module.description, at, losses))
    doc["service_capabilities"] = services
    return doc, losses


def _service(
    part: ThingModel, module: str, service_id: str, option: str, description: str,
    at: Mapping[tuple[str, str], str], losses: list[Loss],
) -> dict[str, Any]:
    prefix = f"{module}:" if module else ""
    properties, events, services = part.own()
    out: dict[str, Any] = {"service_id": service_id, "service_type": service_id, "option": option}
    if description:
        out["description"] = description
    props = []
    for key, prop in properties.items():
        p_at = at[("properties", prefix + key)]
        verbatim_losses(prop.written, p_at, "IoTDA", losses)
        entry = {"property_name": key, "required": prop.required}
        entry.update(_fields(prop.data_type, prop.ext, p_at, losses))
        mode = "R" if prop.access_mode is AccessMode.R else "W" if prop.ext.get("writeOnly") else "RW"
        entry["method"] = mode + ("E" if mode != "W" else "")
        if prop.description:
            entry["description"] = prop.description
        if "default" in prop.ext:
            entry["default_value"] = prop.ext["default"]
        _named(prop.name, key, p_at, losses)
        props.append(entry)
    out["properties"] = props
    commands = []
    for key, service in services.items():
        s_at = at[("services", prefix + key)]
        verbatim_losses(service.written, s_at, "IoTDA", losses)
        entry = {"command_name": key, "paras": _paras(service.inputs, pointer(s_at, "inputData"), losses)}
        if service.outputs:
            entry["responses"] = [{"response_name": f"{key}_response",
                                   "paras": _paras(service.outputs, pointer(s_at, "outputData"), losses)}]
        if (service.call_type is CallType.SYNC) != bool(service.outputs):
            losses.append(Loss(pointer(s_at, "callType"),
                               f"IoTDA has no call type ({service.call_type}); a command with a response reads back as sync"))
        if service.description:
            losses.append(Loss(pointer(s_at, "desc"), "an IoTDA command has no description"))
        _named(service.name, key, s_at, losses)
        _feature_ext(service.ext, s_at, losses)
        commands.append(entry)
    out["commands"] = commands
    event_list = []
    for key, event in events.items():
        e_at = at[("events", prefix + key)]
        verbatim_losses(event.written, e_at, "IoTDA", losses)
        event_list.append({"event_type": key, "paras": _paras(event.output, pointer(e_at, "outputData"), losses)})
        if event.type is not EventType.INFO:
            losses.append(Loss(pointer(e_at, "type"), f"IoTDA has no event types ({event.type})"))
        if event.description:
            losses.append(Loss(pointer(e_at, "desc"), "an IoTDA event has no description"))
        _named(event.name, key, e_at, losses)
        _feature_ext(event.ext, e_at, losses)
    out["events"] = event_list
    return out


def _named(name: str, key: str, at: str, losses: list[Loss]) -> None:
    if name != key:
        losses.append(Loss(pointer(at, "name"), f"display name {name!r}: IoTDA keys by identifier only"))


def _feature_ext(ext: Mapping[str, Any], at: str, losses: list[Loss]) -> None:
    if ext.get("semanticType"):
        losses.append(Loss(pointer(pointer(at, "x-citytwin"), "semanticType"), "a semantic type has no IoTDA field"))


def _paras(params: Mapping[str, Param], at: str, losses: list[Loss]) -> list[dict[str, Any]]:
    out = []
    for index, param in enumerate(params.values()):
        p_at = pointer(at, index)
        verbatim_losses(param.written, p_at, "IoTDA", losses)
        entry = {"para_name": param.identifier, "required": True}
        entry.update(_fields(param.data_type, param.ext, p_at, losses))
        _named(param.name, param.identifier, p_at, losses)
        if "default" in param.ext:
            losses.append(Loss(pointer(pointer(p_at, "x-citytwin"), "default"), "an IoTDA parameter has no default"))
        out.append(entry)
    return out


def _fields(dt: DataType, ext: Mapping[str, Any], at: str, losses: list[Loss]) -> dict[str, Any]:
    """data_type and its limits for one property or parameter."""
    type_at = pointer(at, "dataType")
    specs_at = pointer(type_at, "specs")
    data_type_losses(dt, type_at, "IoTDA", losses)
    kind = dt.type
    out: dict[str, Any]
    if kind in (Kind.INT, Kind.FLOAT, Kind.DOUBLE):
        out = {"data_type": "int" if kind is Kind.INT else "decimal"}
        if dt.min is not None:
            out["min"] = number_text(dt.min)
        if dt.max is not None:
            out["max"] = number_text(dt.max)
        if dt.step is not None:
            out["step"] = dt.step
        if dt.unit:
            out["unit"] = dt.unit
        if kind is Kind.FLOAT:
            losses.append(Loss(pointer(type_at, "type"), "float is 32-bit in TSL; IoTDA decimal has no precision"))
        if dt.unit_name:
            losses.append(Loss(pointer(specs_at, "unitName"), f"unit display name {dt.unit_name!r} has no IoTDA field"))
    elif kind is Kind.BOOL:
        out = {"data_type": "boolean"}
        if dt.names != {0: "false", 1: "true"}:
            losses.append(Loss(specs_at, "bool value names have no IoTDA field"))
    elif kind is Kind.ENUM:
        out = {"data_type": "int", "enum_list": [str(v) for v in dt.names]}
        if any(name != str(value) for value, name in dt.names.items()):
            losses.append(Loss(specs_at, "enum value names: IoTDA enum_list holds the values only"))
    elif kind is Kind.TEXT:
        out = {"data_type": "string", "max_length": dt.length}
    elif kind is Kind.DATE:
        out = {"data_type": "DateTime"}
        losses.append(Loss(pointer(type_at, "type"), "date (epoch milliseconds) becomes DateTime (yyyyMMdd'T'HHmmss'Z' text)"))
    elif kind is Kind.ARRAY and dt.item is not None and dt.item.type is Kind.TEXT:
        out = {"data_type": "string list", "max_length": dt.item.length}
        if dt.size != MAX_ARRAY_SIZE:
            losses.append(Loss(pointer(specs_at, "size"), f"array size {dt.size}: an IoTDA string list has no size"))
    else:
        out = {"data_type": "jsonObject"}
        losses.append(Loss(type_at, f"{kind}: IoTDA jsonObject has no schema (fields and items are lost)"))
    if ext.get("ucum"):
        losses.append(Loss(pointer(pointer(at, "x-citytwin"), "ucum"), "a UCUM code has no IoTDA field"))
    if ext.get("semanticType"):
        losses.append(Loss(pointer(pointer(at, "x-citytwin"), "semanticType"), "a semantic type has no IoTDA field"))
    return out


# -- in ---------------------------------------------------------------------------------------


def from_iotda(doc: Mapping[str, Any], product: str | None = None) -> tuple[dict[str, Any], list[Loss]]:
    """Our document for an IoTDA product model, and what TSL could not take from it."""
    losses: list[Loss] = []
    services = [(i, s) for i, s in enumerate(listing(doc.get("service_capabilities") or doc.get("services")))
                if isinstance(s, Mapping)]
    section = "service_capabilities" if "service_capabilities" in doc else "services"
    master = [(i, s) for i, s in services if s.get("option") == "Master"]
    main = master[0] if master else services[0] if len(services) == 1 else None
    key = product or (doc["device_type"] if isinstance(doc.get("device_type"), str) else None)
    out: dict[str, Any] = {"profile": {"productKey": product_key(key or str(doc.get("name") or "imported"))}}
    ext: dict[str, Any] = {}
    if isinstance(doc.get("name"), str) and doc["name"] != out["profile"]["productKey"]:
        ext["title"] = doc["name"]
    if isinstance(doc.get("description"), str) and doc["description"]:
        ext["description"] = doc["description"]
    if ext:
        out["x-citytwin"] = ext
    out.update(properties=[], events=[], services=[])
    if main is not None:
        _features(main[1], f"/{section}/{main[0]}", out, losses)
    modules = []
    taken: set[str] = set()
    for index, service in services:
        if main is not None and index == main[0]:
            continue
        s_at = f"/{section}/{index}"
        name = str(service.get("service_id") or f"service_{index}")
        module: dict[str, Any] = {"identifier": module_identifier(name, pointer(s_at, "service_id"), losses, taken), "name": name}
        if isinstance(service.get("description"), str) and service["description"]:
            module["desc"] = service["description"]
        _features(service, s_at, module, losses)
        modules.append(module)
    if modules:
        out["modules"] = modules
    return out, losses


def _items(node: Mapping[str, Any], key: str) -> Iterator[tuple[int, Mapping[str, Any]]]:
    value = node.get(key)
    for index, entry in enumerate(value if isinstance(value, list) else []):
        if isinstance(entry, Mapping):
            yield index, entry


def _features(service: Mapping[str, Any], at: str, out: dict[str, Any], losses: list[Loss]) -> None:
    taken: set[str] = set()
    out["properties"] = []
    for index, prop in _items(service, "properties"):
        p_at = pointer(pointer(at, "properties"), index)
        name = str(prop.get("property_name", ""))
        ext: dict[str, Any] = {}
        dt = _data_type(prop, p_at, losses, ext)
        if dt is None:
            continue
        method = str(prop.get("method") or "RW").upper()
        entry: dict[str, Any] = {"identifier": tsl_identifier(name, pointer(p_at, "property_name"), losses, taken=taken),
                                 "name": name, "accessMode": "rw" if "W" in method else "r",
                                 "required": prop.get("required") is True}
        if "W" in method and "R" not in method:
            ext["writeOnly"] = True
        if "E" not in method:
            losses.append(Loss(pointer(p_at, "method"), f"method {method!r} without E: TSL properties are always reported"))
        if isinstance(prop.get("description"), str) and prop["description"]:
            entry["desc"] = prop["description"]
        entry["dataType"] = dt
        if prop.get("default_value") is not None:
            ext["default"] = prop["default_value"]
        if ext:
            entry["x-citytwin"] = ext
        out["properties"].append(entry)
    out["services"] = []
    for index, command in _items(service, "commands"):
        c_at = pointer(pointer(at, "commands"), index)
        name = str(command.get("command_name", ""))
        responses = [r for _, r in _items(command, "responses")]
        if len(responses) > 1:
            losses.append(Loss(pointer(c_at, "responses"), "several responses: TSL services have one output list; the first is kept"))
        out["services"].append({
            "identifier": tsl_identifier(name, pointer(c_at, "command_name"), losses, taken=taken), "name": name,
            "callType": "sync" if responses else "async",
            "inputData": _params(command, pointer(c_at, "paras"), losses),
            "outputData": _params(responses[0], pointer(pointer(pointer(c_at, "responses"), 0), "paras"), losses) if responses else [],
        })
    out["events"] = []
    for index, event in _items(service, "events"):
        e_at = pointer(pointer(at, "events"), index)
        name = str(event.get("event_type", ""))
        out["events"].append({"identifier": tsl_identifier(name, pointer(e_at, "event_type"), losses, taken=taken),
                              "name": name, "type": "info", "outputData": _params(event, pointer(e_at, "paras"), losses)})


def _params(node: Mapping[str, Any], at: str, losses: list[Loss]) -> list[dict[str, Any]]:
    params = []
    taken: set[str] = set()
    for index, para in _items(node, "paras"):
        p_at = pointer(at, index)
        ext: dict[str, Any] = {}
        dt = _data_type(para, p_at, losses, ext)
        if dt is None:
            continue
        name = str(para.get("para_name", ""))
        if para.get("required") is False:
            losses.append(Loss(pointer(p_at, "required"), "an optional parameter: TSL parameters are all required"))
        entry: dict[str, Any] = {"identifier": tsl_identifier(name, pointer(p_at, "para_name"), losses, feature=False, taken=taken),
                                 "name": name, "dataType": dt}
        if isinstance(para.get("description"), str) and para["description"]:
            losses.append(Loss(pointer(p_at, "description"), "a parameter description has no TSL place"))
        params.append(entry)
    return params


def _data_type(node: Mapping[str, Any], at: str, losses: list[Loss], ext: dict[str, Any]) -> dict[str, Any] | None:
    kind = node.get("data_type")
    type_at = pointer(at, "data_type")
    enum = node.get("enum_list") if isinstance(node.get("enum_list"), list) else None
    if enum and kind in ("int", "string", "enum"):
        if kind == "int" and all(str(v).lstrip("-").isdigit() for v in enum):
            return {"type": "enum", "specs": {str(int(v)): str(v) for v in enum}}
        losses.append(Loss(pointer(at, "enum_list"), "string enum values: TSL enums are integers; imported as 0..n-1 named by the strings"))
        return {"type": "enum", "specs": {str(i): str(v) for i, v in enumerate(enum)}}
    if kind in ("int", "long", "decimal"):
        tsl = "double" if kind == "decimal" else "int"
        specs: dict[str, Any] = {}
        for key in ("min", "max"):
            value = number_of(node.get(key))
            if value is not None:
                specs[key] = number_text(value)
        if kind == "long" and not all(k in specs and INT32_MIN <= float(specs[k]) <= INT32_MAX for k in ("min", "max")):
            losses.append(Loss(type_at, "long (64-bit) without an int32 range: TSL has no int64; imported as double"))
            tsl = "double"
        step = number_of(node.get("step"))
        if step is not None and step > 0 and not (tsl == "int" and not float(step).is_integer()):
            specs["step"] = number_text(step)
        if isinstance(node.get("unit"), str) and node["unit"]:
            specs["unit"] = node["unit"]
        return {"type": tsl, "specs": specs}
    if kind == "string":
        length = node.get("max_length")
        if not isinstance(length, int) or not 1 <= length <= MAX_TEXT_LENGTH:
            length = MAX_TEXT_LENGTH
        return {"type": "text", "specs": {"length": str(length)}}
    if kind == "boolean":
        return {"type": "bool", "specs": {"0": "false", "1": "true"}}
    if kind == "DateTime":
        losses.append(Loss(type_at, "DateTime (yyyyMMdd'T'HHmmss'Z' text) becomes TSL date (epoch milliseconds)"))
        return {"type": "date", "specs": {}}
    if kind == "string list":
        length = node.get("max_length")
        if not isinstance(length, int) or not 1 <= length <= MAX_TEXT_LENGTH:
            length = MAX_TEXT_LENGTH
        return {"type": "array", "specs": {"size": str(MAX_ARRAY_SIZE), "item": {"type": "text", "specs": {"length": str(length)}}}}
    if kind == "jsonObject":
        losses.append(Loss(type_at, "jsonObject has no schema: imported as text holding the JSON"))
        return {"type": "text", "specs": {"length": str(MAX_TEXT_LENGTH)}}
    losses.append(Loss(type_at, f"data_type {kind!r} is not an IoTDA type ({', '.join(IOTDA_TYPES)}); dropped"))
    return None


def number_of(value: Any) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return int(number) if number.is_integer() and "." not in value and "e" not in value.lower() else number
    return None
