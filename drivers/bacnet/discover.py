"""``citytwin discover bacnet://HOST[:PORT]``: find a device, print a starting binding and model.

The Who-Is goes to the given address (directed, not broadcast: a broadcast does not cross
routers, and on loopback a peer at another port never sees it), and the I-Am names the
device instance. Then the device's object-list is read (whole, or item by item when the
device cannot send it in one unsegmented answer), and the name, units and priority-array
of every object a point can bind, a few objects per ReadPropertyMultiple. The output is
two YAML documents: a device binding (commandable objects writable at priority 8, manual
operator) and a thing model with one property per object, for a person to edit.

``browse_bacnet`` gives the same survey as plain data for ``citytwin discover --template
--model`` (gateway/discovertemplate.py), and asks each object for what the standard lets it
say about itself besides: description, min-pres-value / max-pres-value, inactive-text /
active-text, number-of-states and state-text (all optional properties; a device without one
answers that property with an error, and the hint is simply absent). These answers are
longer, so fewer objects go in one request, and a request the device still aborts as too long
is asked again object by object.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import yaml
from bacpypes3.apdu import ErrorRejectAbortNack
from bacpypes3.pdu import Address
from bacpypes3.primitivedata import ObjectIdentifier

from citytwin.drivers.bacnet import application
from citytwin.drivers.bacnet.binding import (
    ANALOG,
    BINARY,
    COMMANDABLE,
    MULTI_STATE,
    OBJECT_TYPES,
    TEXT,
    split_address,
)
from citytwin.drivers.bacnet.requests import Requester
from citytwin.drivers.errors import ConnectError, DeviceError

_PER_REQUEST = 20
_PER_REQUEST_EXTENDED = 5  # descriptions and state texts make longer answers
# the optional properties each kind of object may describe itself with (ASHRAE 135 clause 12)
_EXTENDED = {
    **dict.fromkeys(ANALOG, ("min-pres-value", "max-pres-value")),
    **dict.fromkeys(BINARY, ("inactive-text", "active-text")),
    **dict.fromkeys(MULTI_STATE, ("number-of-states", "state-text")),
}
_OPERATOR_PRIORITY = 8  # "manual operator" in the standard's priority table
# BACnet engineering units (as bacpypes3 names them) -> the unit a thing model writes
_UNITS = {
    "degrees-celsius": "°C", "degrees-fahrenheit": "°F", "degrees-kelvin": "K", "percent": "%",
    "percent-relative-humidity": "%RH", "pascals": "Pa", "kilopascals": "kPa", "watts": "W",
    "kilowatts": "kW", "kilowatt-hours": "kWh", "parts-per-million": "ppm", "luxes": "lx",
    "volts": "V", "amperes": "A", "hertz": "Hz", "cubic-meters-per-hour": "m³/h",
    "liters-per-second": "L/s", "meters-per-second": "m/s", "seconds": "s", "minutes": "min",
    "hours": "h",
}


def bacnet_address(url: str) -> str:
    """``bacnet://HOST[:PORT]`` -> ``HOST:PORT`` (47808 when none is given)."""
    if not url.startswith("bacnet://"):
        raise ValueError(f"{url!r}: expected bacnet://HOST[:PORT]")
    host, port = split_address(url.removeprefix("bacnet://").rstrip("/"))
    return f"{host}:{port}"


def _snake(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "point"


async def _object_list(send: Requester, app: Any, peer: Address, device: Any) -> list[Any]:
    try:
        return list(await send(app.read_property(peer, device, "object-list"), "reading object-list"))
    except DeviceError:  # too long for one unsegmented answer: item by item
        count = int(await send(app.read_property(peer, device, "object-list", 0), "reading object-list[0]"))
        return [
            await send(app.read_property(peer, device, "object-list", i), f"reading object-list[{i}]")
            for i in range(1, count + 1)
        ]


def _request(objects: list[Any], extended: bool) -> list[Any]:
    """A ReadPropertyMultiple's list: each object, then the properties asked of it."""
    request: list[Any] = []
    for obj in objects:
        kind = str(obj[0])
        props = ["object-name"] + (["units"] if kind in ANALOG else [])
        props += ["priority-array"] if kind in COMMANDABLE else []
        if extended:
            props += ["description", *_EXTENDED.get(kind, ())]
        request.extend([obj, props])
    return request


async def _details(send: Requester, app: Any, peer: Address, objects: list[Any],
                   extended: bool) -> dict[Any, dict[str, Any]]:
    details: dict[Any, dict[str, Any]] = {}
    per = _PER_REQUEST_EXTENDED if extended else _PER_REQUEST
    for start in range(0, len(objects), per):
        batch = objects[start:start + per]
        try:
            results = list(await send(app.read_property_multiple(peer, _request(batch, extended)),
                                      "reading object names"))
        except DeviceError:
            if not extended:
                raise
            results = []  # an answer too long for the device to send unsegmented: one by one
            for obj in batch:
                try:
                    results += await send(app.read_property_multiple(peer, _request([obj], True)), "reading object names")
                except DeviceError:
                    results += await send(app.read_property_multiple(peer, _request([obj], False)), "reading object names")
        for obj, prop, _index, value in results:
            if not isinstance(value, ErrorRejectAbortNack) and getattr(value, "errorCode", None) is None:
                details.setdefault(obj, {})[str(prop)] = value
    return details


async def _survey(url: str, timeout: float, extended: bool) -> tuple[str, int, list[Any], dict[Any, dict[str, Any]]]:
    """The device's address and instance, its bindable objects and what each says of itself."""
    address = bacnet_address(url)
    shared = await application.acquire("0.0.0.0:0", 4194302)  # an ephemeral port of our own
    app = shared.app
    send = Requester(address, timeout)
    try:
        peer = Address(address)
        try:
            async with asyncio.timeout(timeout + 0.5):  # not wait_for: on 3.11 it can lose a cancellation
                answers = await app.who_is(address=peer, timeout=timeout)
        except TimeoutError:
            answers = []
        if not answers:
            raise ConnectError(f"no I-Am from {address} within {timeout} s (Who-Is sent to it directly)")
        device_id = int(answers[0].iAmDeviceIdentifier[1])
        device = ObjectIdentifier(("device", device_id))
        objects = [o for o in await _object_list(send, app, peer, device) if str(o[0]) in OBJECT_TYPES - {"device", "loop"}]
        details = await _details(send, app, peer, objects, extended)
    finally:
        await application.release(shared)
    return address, device_id, objects, details


async def discover_bacnet(url: str, timeout: float = 5.0) -> str:
    """Finds the device at ``url`` and returns its starting binding and thing model as YAML."""
    return _render(*await _survey(url, timeout, extended=False))


async def browse_bacnet(url: str, timeout: float = 5.0) -> dict[str, Any]:
    """The binding as plain data, with ``hints`` per point for a thing model: ``data`` (the
    TSL type), ``title`` (object-name), ``description``, ``unit``, ``min``/``max`` and
    ``labels`` (bool and enum value names), each only where the device says it."""
    address, device_id, objects, details = await _survey(url, timeout, extended=True)
    points: dict[str, dict[str, Any]] = {}
    hints: dict[str, dict[str, Any]] = {}
    for obj, name, title, point in _points(objects, details):
        points[name] = point
        hints[name] = _hints(str(obj[0]), title, details.get(obj, {}))
    return {"driver": "bacnet", "connection": _connection(address, device_id), "points": points, "hints": hints}


def _points(objects: list[Any], details: dict[Any, dict[str, Any]]) -> list[tuple[Any, str, str, dict[str, Any]]]:
    """Each object with its point name (from object-name, unique), title and binding."""
    found: list[tuple[Any, str, str, dict[str, Any]]] = []
    taken: set[str] = set()
    for obj in objects:
        kind, instance = str(obj[0]), int(obj[1])
        info = details.get(obj, {})
        title = str(info.get("object-name", f"{kind}-{instance}"))
        name = _snake(title)
        while name in taken:
            name += f"_{instance}"
        taken.add(name)
        point: dict[str, Any] = {"object": f"{kind},{instance}"}
        if "priority-array" in info:
            point.update(writable=True, priority=_OPERATOR_PRIORITY)
        found.append((obj, name, title, point))
    return found


def _connection(address: str, device_id: int) -> dict[str, Any]:
    connection: dict[str, Any] = {"address": address, "device_id": device_id}
    host, port = split_address(address)
    if host.startswith("127."):  # device and gateway on one machine: one UDP port each
        connection["local_address"] = f"127.0.0.1:{port + 1 if port < 65535 else port - 1}"
    return connection


def _hints(kind: str, title: str, info: dict[str, Any]) -> dict[str, Any]:
    hints: dict[str, Any] = {"title": title}
    if str(info.get("description", "")).strip():
        hints["description"] = str(info["description"]).strip()
    if kind in BINARY:
        hints.update(data="bool", labels={"0": str(info.get("inactive-text", "inactive")),
                                          "1": str(info.get("active-text", "active"))})
    elif kind in MULTI_STATE:
        texts = [str(t) for t in info.get("state-text", None) or []]
        count = int(info["number-of-states"]) if "number-of-states" in info else len(texts)
        if count:  # the states are numbered 1..count (ASHRAE 135 12.18)
            hints.update(data="enum", labels={str(i): texts[i - 1] if i <= len(texts) else f"state {i}"
                                              for i in range(1, count + 1)})
        else:
            hints.update(data="int", min=1)
    elif kind in TEXT:
        hints["data"] = "text"
    elif kind in ANALOG:
        # REAL is single precision; a large-analog-value is a Double
        hints["data"] = "double" if kind == "large-analog-value" else "float"
        units = str(info.get("units", ""))
        if units in _UNITS:
            hints["unit"] = _UNITS[units]
        elif units and units != "no-units":
            hints["unit"] = units  # BACnet's own name: no symbol is guessed for it
        for prop, key in (("min-pres-value", "min"), ("max-pres-value", "max")):
            if prop in info:
                hints[key] = float(info[prop])
    else:  # integer-value, or the unsigned positive-integer-value, accumulator, pulse-converter
        hints["data"] = "int"
        if kind != "integer-value":
            hints["min"] = 0
    return hints


def _render(address: str, device_id: int, objects: list[Any], details: dict[Any, dict[str, Any]]) -> str:
    points: dict[str, dict[str, Any]] = {}
    properties: list[dict[str, Any]] = []
    for obj, name, title, point in _points(objects, details):
        points[name] = point
        properties.append(_property(name, title, str(obj[0]), details.get(obj, {}), "writable" in point))
    connection = _connection(address, device_id)
    binding = {"driver": "bacnet", "connection": connection, "points": points}
    model = {
        "schema": "https://iotx-tsl.oss-ap-southeast-1.aliyuncs.com/schema.json",
        "profile": {"productKey": f"discovered.bacnet.device_{device_id}", "version": "1.0"},
        "properties": properties,
    }
    header = (
        f"# discovered from {address}: device {device_id}, {len(points)} objects.\n"
        "# First document: the device binding; second: a starting thing model (save it as a .yaml\n"
        "# model). Rename points and properties to your model's identifiers and drop the rest.\n"
    )
    dump = yaml.safe_dump_all([binding, model], sort_keys=False, allow_unicode=True, width=120)
    return header + dump


def _property(name: str, title: str, kind: str, info: dict[str, Any], writable: bool) -> dict[str, Any]:
    data_type: dict[str, Any]
    if kind in BINARY:
        data_type = {"type": "bool", "specs": {"0": "inactive", "1": "active"}}
    elif kind in MULTI_STATE or kind not in ANALOG | TEXT:
        data_type = {"type": "int", "specs": {}}
    elif kind in TEXT:
        data_type = {"type": "text", "specs": {"length": "255"}}
    else:
        units = str(info.get("units", ""))
        data_type = {"type": "float", "specs": {"unit": _UNITS[units]} if units in _UNITS else {}}
    return {
        "identifier": name,
        "name": title,
        "accessMode": "rw" if writable else "r",
        "required": False,
        "dataType": data_type,
    }
