"""``citytwin discover bacnet://HOST[:PORT]``: find a device, print a starting binding and model.

The Who-Is goes to the given address (directed, not broadcast: a broadcast does not cross
routers, and on loopback a peer at another port never sees it), and the I-Am names the
device instance. Then the device's object-list is read (whole, or item by item when the
device cannot send it in one unsegmented answer), and the name, units and priority-array
of every object a point can bind, a few objects per ReadPropertyMultiple. The output is
two YAML documents: a device binding (commandable objects writable at priority 8, manual
operator) and a thing model with one property per object, for a person to edit.
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


async def discover_bacnet(url: str, timeout: float = 5.0) -> str:
    """Finds the device at ``url`` and returns its starting binding and thing model as YAML."""
    address = bacnet_address(url)
    shared = await application.acquire("0.0.0.0:0", 4194302)  # an ephemeral port of our own
    app = shared.app
    send = Requester(address, timeout)
    try:
        peer = Address(address)
        try:
            answers = await asyncio.wait_for(app.who_is(address=peer, timeout=timeout), timeout + 0.5)
        except TimeoutError:
            answers = []
        if not answers:
            raise ConnectError(f"no I-Am from {address} within {timeout} s (Who-Is sent to it directly)")
        device_id = int(answers[0].iAmDeviceIdentifier[1])
        device = ObjectIdentifier(("device", device_id))
        objects = [o for o in await _object_list(send, app, peer, device) if str(o[0]) in OBJECT_TYPES - {"device", "loop"}]
        details: dict[Any, dict[str, Any]] = {}
        for start in range(0, len(objects), _PER_REQUEST):
            request: list[Any] = []
            for obj in objects[start:start + _PER_REQUEST]:
                kind = str(obj[0])
                props = ["object-name"] + (["units"] if kind in ANALOG else [])
                props += ["priority-array"] if kind in COMMANDABLE else []
                request.extend([obj, props])
            for obj, prop, _index, value in await send(app.read_property_multiple(peer, request), "reading object names"):
                if not isinstance(value, ErrorRejectAbortNack) and getattr(value, "errorCode", None) is None:
                    details.setdefault(obj, {})[str(prop)] = value
    finally:
        await application.release(shared)
    return _render(address, device_id, objects, details)


def _render(address: str, device_id: int, objects: list[Any], details: dict[Any, dict[str, Any]]) -> str:
    points: dict[str, dict[str, Any]] = {}
    properties: list[dict[str, Any]] = []
    for obj in objects:
        kind, instance = str(obj[0]), int(obj[1])
        info = details.get(obj, {})
        title = str(info.get("object-name", f"{kind}-{instance}"))
        name = _snake(title)
        while name in points:
            name += f"_{instance}"
        point: dict[str, Any] = {"object": f"{kind},{instance}"}
        writable = "priority-array" in info
        if writable:
            point.update(writable=True, priority=_OPERATOR_PRIORITY)
        points[name] = point
        properties.append(_property(name, title, kind, info, writable))
    connection: dict[str, Any] = {"address": address, "device_id": device_id}
    host, port = split_address(address)
    if host.startswith("127."):  # device and gateway on one machine: one UDP port each
        connection["local_address"] = f"127.0.0.1:{port + 1 if port < 65535 else port - 1}"
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
