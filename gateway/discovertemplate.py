"""From a browsed device to a starting template and thing model, for a person to edit.

``citytwin discover URL --template out.yaml --model out.json``: the driver's browse (plain
data: points, services, and what the device says about them) becomes a TSL thing model
(data type from the point's type, or from the hint ``data`` where the protocol's types are
not the point's, as BACnet's object types; range, unit, value names and description from the
device, e.g. OPC UA EURange, EngineeringUnits, Description, or BACnet min/max-pres-value,
units, state-text, active/inactive-text, description; access from the writable flag) and a
template that binds every property to its point. Both load as they are (checked here), but
they are a start, not a product: names come from browse paths and object names, and a vendor
or integrator should name, trim and describe them before a fleet runs on them.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from citytwin.thingmodels.loader import RESERVED, load_model_json

# OPC UA built-in types -> TSL. TSL's int is 32-bit: wider integers become double, exact
# below 2^53 (counters and totals stay exact for decades of realistic counts).
_TSL_TYPES = {
    "Boolean": "bool", "SByte": "int", "Byte": "int", "Int16": "int", "UInt16": "int", "Int32": "int",
    "UInt32": "double", "Int64": "double", "UInt64": "double", "Float": "float", "Double": "double",
    "String": "text",
}
_INT_LIMITS = {"SByte": (-128, 127), "Byte": (0, 255), "Int16": (-32768, 32767), "UInt16": (0, 65535)}


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _tsl_type(point: dict[str, Any], hints: dict[str, Any]) -> str | None:
    """The TSL type of a browsed point; None: a structured or vendor type, bound by hand."""
    if "data" in hints:
        return str(hints["data"])
    if "type" not in point:
        return None
    return _TSL_TYPES.get(point["type"], "text")


def _data_type(kind: str | None, hints: dict[str, Any], tsl: str | None = None) -> dict[str, Any]:
    tsl = tsl or _TSL_TYPES.get(kind or "", "text")
    labels = hints.get("labels")
    if tsl == "bool":
        names = labels if isinstance(labels, dict) else {"0": "false", "1": "true"}
        return {"type": "bool", "specs": {"0": str(names.get("0", "false")), "1": str(names.get("1", "true"))}}
    if tsl == "enum" and isinstance(labels, dict) and labels:
        return {"type": "enum", "specs": {str(k): str(v) for k, v in labels.items()}}
    if tsl == "text":
        return {"type": "text", "specs": {"length": "2048"}}
    if tsl == "enum":
        tsl = "int"  # no value names: a number the person editing the model names
    specs: dict[str, str] = {}
    low, high = hints.get("min"), hints.get("max")
    if low is None and high is None and kind in _INT_LIMITS:
        low, high = _INT_LIMITS[kind]
    if low is not None:
        specs["min"] = _number(low)
    if high is not None:
        specs["max"] = _number(high)
    if tsl == "int":
        specs["step"] = "1"
    if hints.get("unit"):
        specs["unit"] = str(hints["unit"])
    return {"type": tsl, "specs": specs}


def _entry(identifier: str, hints: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {"identifier": identifier, "name": str(hints.get("title") or identifier)}
    if hints.get("description"):
        entry["desc"] = str(hints["description"])
    return entry


def _identifier(name: str, taken: set[str]) -> str:
    """``name`` as a TSL identifier (a letter first, at most 50 characters, not reserved), unique."""
    base = re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_") or "point"
    if not base[0].isalpha():
        base = f"p_{base}"
    base = base[:50]
    if base in RESERVED:  # time, value, set …: TSL keeps them for its own topics
        base = f"{base}_1"
    candidate, n = base, 2
    while candidate in taken:
        candidate, n = f"{base[:50 - len(str(n)) - 1]}_{n}", n + 1
    taken.add(candidate)
    return candidate


def normalized(found: dict[str, Any]) -> dict[str, Any]:
    """The browse with every point and service named by a valid, unique TSL identifier (the
    model's identifiers and the template's point names must be the same)."""
    taken: set[str] = set()
    renamed: dict[str, str] = {}
    points = {renamed.setdefault(n, _identifier(n, taken)): p for n, p in found["points"].items()}
    services = {renamed.setdefault(n, _identifier(n, taken)): v for n, v in found.get("services", {}).items()}
    hints = {renamed[n]: h for n, h in found.get("hints", {}).items() if n in renamed}
    return {**found, "points": points, "services": services, "hints": hints}


def _modelled(found: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The browsed points a model property can be made for, by name."""
    hints: dict[str, dict[str, Any]] = found.get("hints", {})
    return {n: p for n, p in found["points"].items() if _tsl_type(p, hints.get(n, {})) is not None}


def make_model(found: dict[str, Any], product_key: str) -> dict[str, Any]:
    """A TSL thing model of every browsed point (a property) and method (a service)."""
    found = normalized(found)
    hints: dict[str, dict[str, Any]] = found.get("hints", {})
    properties = []
    for name, point in _modelled(found).items():
        h = hints.get(name, {})
        properties.append({**_entry(name, h), "accessMode": "rw" if point.get("writable") else "r",
                           "required": False, "dataType": _data_type(point.get("type"), h, _tsl_type(point, h))})
    services = []
    for name, service in found.get("services", {}).items():
        h = hints.get(name, {})
        call = service.get("call", {})
        services.append({
            **_entry(name, h), "callType": "sync", "required": False, "method": f"thing.service.{name}",
            "inputData": [{"identifier": a["name"], "name": a["name"], "dataType": _data_type(a.get("type"), {})}
                          for a in call.get("inputs", [])],
            "outputData": [{"identifier": n, "name": n, "dataType": _data_type(t, {})}
                           for n, t in h.get("outputs", {}).items()],
        })
    model = {"schema": "https://iotx-tsl.oss-ap-southeast-1.aliyuncs.com/schema.json",
             "profile": {"productKey": product_key, "version": "1.0"},
             "properties": properties, "events": [], "services": services}
    load_model_json(json.dumps(model), product_key)  # raises if it is not a valid model
    return model


def make_template(found: dict[str, Any], name: str, model_ref: str) -> str:
    """The template (a ``templates:`` entry) binding every modelled property and method."""
    found = normalized(found)
    points = _modelled(found)
    body: dict[str, Any] = {"model": model_ref, "driver": found["driver"],
                            "connection": dict(found.get("connection", {})), "points": points}
    if found.get("services"):
        body["services"] = found["services"]
    conn = found.get("connection", {})
    where = conn.get("url") or conn.get("address") or conn.get("host") or "the device"
    header = (f"# A starting template discovered from {where}: "
              f"{len(points)} points, {len(found.get('services', {}))} methods, bound to {model_ref}.\n"
              "# Edit before use: rename points and services to meaningful identifiers (in the model too),\n"
              "# drop what the city does not need, set deadbands; move what differs per device (URL, address,\n"
              "# device id) from the connection to each device.\n")
    return header + yaml.safe_dump({"templates": {name: body}}, sort_keys=False, allow_unicode=True, width=120)


def template_name(url: str) -> str:
    """A template name from a device URL (its host), for when none is given."""
    host = re.sub(r"^[a-z.]+://", "", url).split("/")[0].split(":")[0]
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", host).strip("-") or "discovered"
