"""China Mobile OneNET thing models in and out (the OneNET Studio thing-model JSON: each
feature has ``identifier``, ``name``, ``functionType`` u/s, ``functionMode`` and ``dataType``).

OneNET is TSL-shaped, so most of a model maps one to one: int32 <-> int, float, double,
string <-> text (``length``), bool (``{"false": name, "true": name}``), enum, date, struct,
array (``{"length", "type", "specs"}``); a unit is written ``"name / symbol"`` as OneNET's
own models write it; ``functionType`` ``s`` (a system feature) <-> ``required``. OneNET has
no modules, so a module's features are written ``module__identifier`` (a loss per module);
int64 without an int32 range and bitMap have no TSL type. The ``x-citytwin`` block is lost.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any, Final

from citytwin.thingmodels.checks import INT32_MAX, INT32_MIN, number_text
from citytwin.thingmodels.datatypes import IDENTIFIER, MAX_ARRAY_SIZE, MAX_TEXT_LENGTH
from citytwin.thingmodels.errors import Issue, pointer
from citytwin.thingmodels.interchange import (
    data_type_losses,
    feature_pointers,
    mapping,
    product_key,
    tsl_identifier,
    verbatim_losses,
)
from citytwin.thingmodels.loader import MODULE_IDENTIFIER
from citytwin.thingmodels.tsl import Loss
from citytwin.thingmodels.types import DataType, Kind, Param, ThingModel

ONENET_TYPES: Final = ("int32", "int64", "float", "double", "string", "bool", "enum", "bitMap", "date", "struct", "array")
_KINDS: Final = {Kind.INT: "int32", Kind.FLOAT: "float", Kind.DOUBLE: "double", Kind.TEXT: "string",
                 Kind.BOOL: "bool", Kind.ENUM: "enum", Kind.DATE: "date", Kind.STRUCT: "struct", Kind.ARRAY: "array"}


# -- out --------------------------------------------------------------------------------------


def to_onenet(model: ThingModel) -> tuple[dict[str, Any], list[Loss]]:
    """A OneNET thing model for ``model`` and what it could not say."""
    losses: list[Loss] = []
    at = feature_pointers(model)
    doc: dict[str, Any] = {"version": model.profile.version or "1.0", "profile": {"productId": model.product_key}}
    for key in ("title", "description", "semanticType"):
        if model.ext.get(key):
            losses.append(Loss(f"/x-citytwin/{key}", f"the product's {key} has no place in a OneNET thing model"))
    verbatim_losses(model.written, "", "OneNET", losses)
    for index, module in enumerate(model.modules.values()):
        losses.append(Loss(f"/modules/{index}", f"module {module.identifier!r}: OneNET has no modules; "
                           f"its features are written {module.identifier}__identifier"))
    props, events, services = [], [], []
    for key, prop in model.properties.items():
        p_at = at[("properties", key)]
        verbatim_losses(prop.written, p_at, "OneNET", losses)
        entry = _head(key, prop.name, prop.description, prop.required, "property")
        entry["accessMode"] = prop.access_mode.value
        entry["dataType"] = _data_type(prop.data_type, p_at, pointer(p_at, "dataType"), losses)
        if prop.ext.get("writeOnly"):
            losses.append(Loss(pointer(pointer(p_at, "x-citytwin"), "writeOnly"), "OneNET accessMode has no write-only"))
        _ext(prop.ext, p_at, losses)
        props.append(entry)
    for key, event in model.events.items():
        e_at = at[("events", key)]
        verbatim_losses(event.written, e_at, "OneNET", losses)
        entry = _head(key, event.name, event.description, event.required, "event")
        entry["eventType"] = event.type.value
        entry["outputData"] = _params(event.output, pointer(e_at, "outputData"), losses)
        _ext(event.ext, e_at, losses)
        events.append(entry)
    for key, service in model.services.items():
        s_at = at[("services", key)]
        verbatim_losses(service.written, s_at, "OneNET", losses)
        entry = _head(key, service.name, service.description, service.required, "service")
        entry["callType"] = service.call_type.value
        entry["input"] = _params(service.inputs, pointer(s_at, "inputData"), losses)
        entry["output"] = _params(service.outputs, pointer(s_at, "outputData"), losses)
        _ext(service.ext, s_at, losses)
        services.append(entry)
    doc.update(properties=props, events=events, services=services)
    return doc, losses


def _head(key: str, name: str, desc: str, required: bool, mode: str) -> dict[str, Any]:
    return {"identifier": key.replace(":", "__"), "name": name, "functionType": "s" if required else "u",
            "functionMode": mode, "desc": desc, "required": required}


def _ext(ext: Mapping[str, Any], at: str, losses: list[Loss]) -> None:
    for key in ("semanticType", "ucum", "default"):
        if key in ext:
            losses.append(Loss(pointer(pointer(at, "x-citytwin"), key), f"{key} has no place in a OneNET thing model"))


def _params(params: Mapping[str, Param], at: str, losses: list[Loss]) -> list[dict[str, Any]]:
    out = []
    for index, param in enumerate(params.values()):
        p_at = pointer(at, index)
        verbatim_losses(param.written, p_at, "OneNET", losses)
        out.append({"identifier": param.identifier, "name": param.name,
                    "dataType": _data_type(param.data_type, p_at, pointer(p_at, "dataType"), losses)})
        _ext(param.ext, p_at, losses)
    return out


def _data_type(dt: DataType, at: str, type_at: str, losses: list[Loss]) -> dict[str, Any]:
    specs_at = pointer(type_at, "specs")
    if dt.type is not Kind.ARRAY or dt.item is None:
        data_type_losses(dt, type_at, "OneNET", losses)
    else:
        verbatim_losses(dt.written, type_at, "OneNET", losses)
    specs: Any
    if dt.type in (Kind.INT, Kind.FLOAT, Kind.DOUBLE):
        specs = {key: number_text(value) for key, value in (("min", dt.min), ("max", dt.max), ("step", dt.step)) if value is not None}
        if dt.unit:
            specs["unit"] = f"{dt.unit_name} / {dt.unit}" if dt.unit_name else dt.unit
        elif dt.unit_name:
            losses.append(Loss(pointer(specs_at, "unitName"), "a unit name without a unit has no OneNET form"))
    elif dt.type is Kind.BOOL:
        specs = {"false": dt.names.get(0, "false"), "true": dt.names.get(1, "true")}
    elif dt.type is Kind.ENUM:
        specs = {str(value): name for value, name in dt.names.items()}
    elif dt.type is Kind.TEXT:
        specs = {"length": dt.length}
    elif dt.type is Kind.DATE:
        specs = {}
    elif dt.type is Kind.STRUCT:
        specs = [{"identifier": f.identifier, "name": f.name,
                  "dataType": _data_type(f.data_type, pointer(specs_at, i), pointer(pointer(specs_at, i), "dataType"), losses)}
                 for i, f in enumerate(dt.fields)]
        for i, f in enumerate(dt.fields):
            _ext(f.ext, pointer(specs_at, i), losses)
    else:
        assert dt.item is not None
        item = _data_type(dt.item, at, pointer(specs_at, "item"), losses)
        specs = {"length": dt.size, "type": item["type"], "specs": item["specs"]}
    return {"type": _KINDS[dt.type], "specs": specs}


# -- in ---------------------------------------------------------------------------------------


def from_onenet(doc: Mapping[str, Any], product: str | None = None) -> tuple[dict[str, Any], list[Loss]]:
    """Our document for a OneNET thing model, and what TSL could not take from it."""
    losses: list[Loss] = []
    body: Mapping[str, Any] = doc["data"] if isinstance(doc.get("data"), Mapping) and "properties" not in doc else doc
    profile = mapping(body.get("profile"))
    key = product or str(profile.get("productId") or "imported")
    out: dict[str, Any] = {"profile": {"productKey": product_key(key)}}
    if isinstance(body.get("version"), str) and body["version"]:
        out["profile"]["version"] = body["version"]
    for extra in ("industryId", "sceneId", "categoryId"):
        if extra in profile:
            losses.append(Loss(f"/profile/{extra}", f"OneNET {extra} has no TSL place"))
    taken: set[str] = set()
    out["properties"] = []
    for index, entry in _entries(body, "properties"):
        at = f"/properties/{index}"
        dt = _tsl_type(entry.get("dataType"), pointer(at, "dataType"), losses, "param")
        if dt is None:
            continue
        access = entry.get("accessMode")
        if access not in ("r", "rw"):
            losses.append(Loss(pointer(at, "accessMode"), f"accessMode {access!r} is not r or rw; imported as rw"))
        out["properties"].append({**_feature(entry, at, losses, taken), "accessMode": "r" if access == "r" else "rw", "dataType": dt})
    out["events"] = []
    for index, entry in _entries(body, "events"):
        at = f"/events/{index}"
        kind = entry.get("eventType", entry.get("type", "info"))
        if kind not in ("info", "alert", "error"):
            losses.append(Loss(pointer(at, "eventType"), f"event type {kind!r} is not info, alert or error; imported as info"))
            kind = "info"
        out["events"].append({**_feature(entry, at, losses, taken), "type": kind,
                              "outputData": _tsl_params(entry.get("outputData"), pointer(at, "outputData"), losses)})
    out["services"] = []
    for index, entry in _entries(body, "services"):
        at = f"/services/{index}"
        call = {"s": "sync", "a": "async"}.get(str(entry.get("callType")), entry.get("callType"))
        if call not in ("sync", "async"):
            losses.append(Loss(pointer(at, "callType"), f"callType {call!r} is not sync or async; imported as async"))
            call = "async"
        inputs = "input" if "input" in entry else "inputData"
        outputs = "output" if "output" in entry else "outputData"
        out["services"].append({**_feature(entry, at, losses, taken), "callType": call,
                                "inputData": _tsl_params(entry.get(inputs), pointer(at, inputs), losses),
                                "outputData": _tsl_params(entry.get(outputs), pointer(at, outputs), losses)})
    _modules(out)
    return out, losses


def _modules(out: dict[str, Any]) -> None:
    """Features written ``module__identifier`` (as ``to_onenet`` writes a module's) go back
    into their module."""
    modules: dict[str, dict[str, Any]] = {}
    for section in ("properties", "events", "services"):
        kept = []
        for entry in out[section]:
            module, sep, identifier = entry["identifier"].partition("__")
            if sep and identifier and MODULE_IDENTIFIER.fullmatch(module) and IDENTIFIER.fullmatch(identifier):
                target = modules.setdefault(module, {"identifier": module, "name": module,
                                                     "properties": [], "events": [], "services": []})
                target[section].append({**entry, "identifier": identifier})
            else:
                kept.append(entry)
        out[section] = kept
    if modules:
        out["modules"] = list(modules.values())


def _entries(body: Mapping[str, Any], key: str) -> Iterator[tuple[int, Mapping[str, Any]]]:
    value = body.get(key)
    for index, entry in enumerate(value if isinstance(value, list) else []):
        if isinstance(entry, Mapping):
            yield index, entry


def _feature(entry: Mapping[str, Any], at: str, losses: list[Loss], taken: set[str]) -> dict[str, Any]:
    identifier = str(entry.get("identifier", ""))
    out: dict[str, Any] = {"identifier": tsl_identifier(identifier, pointer(at, "identifier"), losses, taken=taken),
                           "name": entry.get("name") or identifier,
                           "required": entry.get("required") is True or entry.get("functionType") == "s"}
    if isinstance(entry.get("desc"), str) and entry["desc"]:
        out["desc"] = entry["desc"]
    return out


def _tsl_params(raw: Any, at: str, losses: list[Loss]) -> list[dict[str, Any]]:
    params = []
    taken: set[str] = set()
    for index, entry in enumerate(raw if isinstance(raw, list) else []):
        if not isinstance(entry, Mapping):
            continue
        p_at = pointer(at, index)
        dt = _tsl_type(entry.get("dataType"), pointer(p_at, "dataType"), losses, "param")
        if dt is not None:
            identifier = str(entry.get("identifier", ""))
            params.append({"identifier": tsl_identifier(identifier, pointer(p_at, "identifier"), losses, feature=False, taken=taken),
                           "name": entry.get("name") or identifier, "dataType": dt})
    return params


def _tsl_type(raw: Any, at: str, losses: list[Loss], role: str) -> dict[str, Any] | None:
    if not isinstance(raw, Mapping):
        losses.append(Loss(at, "no dataType; dropped"))
        return None
    kind = raw.get("type")
    specs = raw.get("specs")
    specs_at = pointer(at, "specs")
    if kind in ("int32", "int64", "float", "double"):
        given = specs if isinstance(specs, Mapping) else {}
        out: dict[str, Any] = {key: given[key] for key in ("min", "max", "step")
                               if isinstance(given.get(key), (str, int, float)) and str(given[key]).strip() != ""}
        tsl = {"int32": "int", "int64": "int", "float": "float", "double": "double"}[kind]
        if kind == "int64" and not all(k in out and INT32_MIN <= float(out[k]) <= INT32_MAX for k in ("min", "max")):
            losses.append(Loss(pointer(at, "type"), "int64 without an int32 range: TSL has no int64; imported as double"))
            tsl = "double"
        unit = given.get("unit")
        if isinstance(unit, str) and unit.strip():
            name, sep, symbol = unit.rpartition(" / ")
            if sep and symbol:
                out["unit"], out["unitName"] = symbol, name
            else:
                out["unit"] = unit
        return {"type": tsl, "specs": out}
    if kind == "bool":
        given = specs if isinstance(specs, Mapping) else {}
        return {"type": "bool", "specs": {"0": str(given.get("false", "false")), "1": str(given.get("true", "true"))}}
    if kind == "enum" and isinstance(specs, Mapping) and specs:
        return {"type": "enum", "specs": {str(k): str(v) for k, v in specs.items()}}
    if kind == "string":
        length = specs.get("length") if isinstance(specs, Mapping) else None
        try:
            size = int(str(length))
        except ValueError:
            size = MAX_TEXT_LENGTH
        return {"type": "text", "specs": {"length": str(min(max(size, 1), MAX_TEXT_LENGTH))}}
    if kind == "date":
        return {"type": "date", "specs": {}}
    if kind == "struct" and isinstance(specs, list) and role != "field":
        fields = []
        taken: set[str] = set()
        for index, entry in enumerate(specs):
            if isinstance(entry, Mapping):
                f_at = pointer(specs_at, index)
                dt = _tsl_type(entry.get("dataType"), pointer(f_at, "dataType"), losses, "field")
                if dt is not None:
                    identifier = str(entry.get("identifier", ""))
                    fields.append({"identifier": tsl_identifier(identifier, pointer(f_at, "identifier"), losses, feature=False, taken=taken),
                                   "name": entry.get("name") or identifier, "dataType": dt})
        return {"type": "struct", "specs": fields} if fields else None
    if kind == "array" and isinstance(specs, Mapping) and role == "param":
        item = _tsl_type({"type": specs.get("type"), "specs": copy.deepcopy(specs.get("specs"))}, specs_at, losses, "item")
        if item is None or item["type"] not in ("int", "float", "double", "text", "struct"):
            losses.append(Loss(specs_at, "TSL arrays hold int, float, double, text or struct only; dropped"))
            return None
        try:
            size = int(str(specs.get("length")))
        except ValueError:
            size = MAX_ARRAY_SIZE
        return {"type": "array", "specs": {"size": str(min(max(size, 1), MAX_ARRAY_SIZE)), "item": item}}
    if kind == "bitMap":
        losses.append(Loss(pointer(at, "type"), "bitMap has no TSL type; imported as int (the bit names are lost)"))
        return {"type": "int", "specs": {}}
    losses.append(Loss(pointer(at, "type"), f"type {kind!r} has no TSL form here ({', '.join(ONENET_TYPES)}); dropped"))
    return None


# -- the rules --------------------------------------------------------------------------------

_MODES: Final = {"properties": "property", "events": "event", "services": "service"}


def check_onenet(doc: Any) -> list[Issue]:
    """The OneNET thing-model rules docs/thing-models.md cites, each as an ``onenet-shape`` issue."""
    if not isinstance(doc, Mapping):
        return [Issue("", "a OneNET thing model must be a JSON object", "onenet-shape")]
    issues: list[Issue] = []
    seen: set[str] = set()
    for section, mode in _MODES.items():
        entries = doc.get(section, [])
        if not isinstance(entries, list):
            issues.append(Issue(f"/{section}", f"{section} must be an array", "onenet-shape"))
            continue
        for index, entry in enumerate(entries):
            at = f"/{section}/{index}"
            if not isinstance(entry, Mapping):
                issues.append(Issue(at, "must be an object", "onenet-shape"))
                continue
            identifier = entry.get("identifier")
            if not isinstance(identifier, str) or not IDENTIFIER.fullmatch(identifier):
                issues.append(Issue(pointer(at, "identifier"), "identifier must be 1-50 letters, digits or '_', starting with a letter", "onenet-shape"))
            elif identifier in seen:
                issues.append(Issue(pointer(at, "identifier"), f"identifier {identifier!r} is used twice in the product", "onenet-shape"))
            else:
                seen.add(identifier)
            if entry.get("functionType") not in ("u", "s"):
                issues.append(Issue(pointer(at, "functionType"), "functionType must be 'u' (user) or 's' (system)", "onenet-shape"))
            if entry.get("functionMode", mode) != mode:
                issues.append(Issue(pointer(at, "functionMode"), f"functionMode must be {mode!r} here", "onenet-shape"))
            if section == "properties":
                if entry.get("accessMode") not in ("r", "rw"):
                    issues.append(Issue(pointer(at, "accessMode"), "accessMode must be 'r' or 'rw'", "onenet-shape"))
                _check_type(entry.get("dataType"), pointer(at, "dataType"), issues)
            elif section == "events":
                if entry.get("eventType", entry.get("type", "info")) not in ("info", "alert", "error"):
                    issues.append(Issue(pointer(at, "eventType"), "eventType must be info, alert or error", "onenet-shape"))
                _check_params(entry.get("outputData", []), pointer(at, "outputData"), issues)
            else:
                if entry.get("callType") not in ("sync", "async", "s", "a"):
                    issues.append(Issue(pointer(at, "callType"), "callType must be sync or async", "onenet-shape"))
                for key in ("input", "output", "inputData", "outputData"):
                    if key in entry:
                        _check_params(entry[key], pointer(at, key), issues)
    return issues


def _check_params(raw: Any, at: str, issues: list[Issue]) -> None:
    if not isinstance(raw, list):
        issues.append(Issue(at, "parameters must be an array", "onenet-shape"))
        return
    for index, entry in enumerate(raw):
        p_at = pointer(at, index)
        if not isinstance(entry, Mapping) or not isinstance(entry.get("identifier"), str):
            issues.append(Issue(p_at, "a parameter needs an identifier", "onenet-shape"))
            continue
        _check_type(entry.get("dataType"), pointer(p_at, "dataType"), issues)


def _check_type(raw: Any, at: str, issues: list[Issue]) -> None:
    if not isinstance(raw, Mapping) or raw.get("type") not in ONENET_TYPES:
        issues.append(Issue(pointer(at, "type"), f"dataType.type must be one of {', '.join(ONENET_TYPES)}", "onenet-shape"))
        return
    specs = raw.get("specs")
    if raw["type"] == "struct":
        if not isinstance(specs, list):
            issues.append(Issue(pointer(at, "specs"), "struct specs must be an array of fields", "onenet-shape"))
        else:
            _check_params(specs, pointer(at, "specs"), issues)
    elif raw["type"] == "array":
        if not isinstance(specs, Mapping) or specs.get("type") not in ONENET_TYPES:
            issues.append(Issue(pointer(at, "specs"), "array specs need length, type and specs", "onenet-shape"))
    elif specs is not None and not isinstance(specs, Mapping):
        issues.append(Issue(pointer(at, "specs"), "specs must be an object", "onenet-shape"))
