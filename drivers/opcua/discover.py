"""``citytwin discover opcua://HOST:PORT``: browse a server, print a starting device binding.

Walks the hierarchy under Objects (skipping the server's own namespace-0 diagnostics),
and prints every variable with its NodeId (by namespace URI, which survives a server
upgrade), its Variant type and whether it is writable, and every method with its typed
arguments as a ``call`` binding. The output is a starting point for a person to edit:
point names are derived from browse paths and rarely match the thing model's identifiers.
"""

from __future__ import annotations

import base64
import re
from typing import Any

import yaml
from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.uaerrors import UaError

from citytwin.drivers.errors import ConnectError

_MAX_NODES = 2000
_MAX_DEPTH = 8
# built-in DataType NodeIds (namespace 0) that a binding can name
_BUILTIN = {
    1: "Boolean", 2: "SByte", 3: "Byte", 4: "Int16", 5: "UInt16", 6: "Int32", 7: "UInt32",
    8: "Int64", 9: "UInt64", 10: "Float", 11: "Double", 12: "String",
}


def opc_url(url: str) -> str:
    """``opcua://host:port[/path]`` (the CLI's spelling) or ``opc.tcp://...`` as opc.tcp."""
    if url.startswith("opcua://"):
        return "opc.tcp://" + url.removeprefix("opcua://")
    if not url.startswith("opc.tcp://"):
        raise ValueError(f"{url!r}: expected opcua://HOST:PORT or opc.tcp://HOST:PORT")
    return url


def _nodeid_text(nodeid: ua.NodeId, namespaces: list[str]) -> str:
    kind = {ua.NodeIdType.String: "s", ua.NodeIdType.Guid: "g", ua.NodeIdType.ByteString: "b"}.get(
        nodeid.NodeIdType, "i"
    )
    raw: Any = nodeid.Identifier
    ident = base64.b64encode(raw).decode() if kind == "b" else str(raw)
    index = int(nodeid.NamespaceIndex)
    if index == 0:
        return f"{kind}={ident}"
    if index < len(namespaces):
        return f"nsu={namespaces[index]};{kind}={ident}"
    return f"ns={index};{kind}={ident}"


def _snake(words: list[str]) -> str:
    text = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", "_".join(words))
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower() or "point"


def _name(path: list[str], taken: set[str]) -> str:
    """The browse name in snake_case; its parent's name is prepended only to tell two apart."""
    for candidate in (_snake(path[-1:]), _snake(path[-2:])):
        if candidate not in taken:
            taken.add(candidate)
            return candidate
    base, n = _snake(path[-2:]), 2
    while f"{base}_{n}" in taken:
        n += 1
    taken.add(f"{base}_{n}")
    return f"{base}_{n}"


async def _arguments(method: Node, which: str) -> list[tuple[str, str]]:
    try:
        prop = await method.get_child(f"0:{which}")
        args = await prop.read_value()
    except (UaError, KeyError):
        return []
    out = []
    for arg in args or []:
        dtype = arg.DataType
        type_name = _BUILTIN.get(dtype.Identifier, "String") if dtype.NamespaceIndex == 0 else "String"
        out.append((str(arg.Name), type_name))
    return out


async def discover_opcua(url: str, timeout: float = 5.0) -> str:
    """Connects anonymously without security and returns the binding as YAML text."""
    found = await browse_opcua(url, timeout)
    doc = {k: found[k] for k in ("driver", "connection", "points", "services") if found.get(k)}
    header = (
        f"# discovered from {found['connection']['url']}: {len(found['points'])} variables, "
        f"{len(found['services'])} methods.\n"
        "# Rename the points to the thing model's property identifiers and drop the rest.\n"
    )
    return header + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=120)


async def _hints(node: Node) -> dict[str, Any]:
    """What the server says about a variable: Description, EURange and EngineeringUnits
    (the DataAccess properties of an AnalogItem), where it has them."""
    hints: dict[str, Any] = {}
    try:
        text = (await node.read_description()).Text
    except UaError:
        text = None
    if text:
        hints["description"] = str(text)
    for prop in await node.get_properties():
        try:
            name = (await prop.read_browse_name()).Name
            if name == "EURange":
                value = await prop.read_value()
                hints["min"], hints["max"] = float(value.Low), float(value.High)
            elif name == "EngineeringUnits":
                value = await prop.read_value()
                unit = value.DisplayName.Text if value.DisplayName is not None else None
                if unit:
                    hints["unit"] = str(unit)
        except (UaError, AttributeError, TypeError, ValueError):
            continue
    return hints


async def browse_opcua(url: str, timeout: float = 5.0) -> dict[str, Any]:
    """The binding as plain data, with ``hints`` per point and method for a thing model."""
    endpoint = opc_url(url)
    client = Client(endpoint, timeout=timeout)
    try:
        await client.connect()
    except (OSError, TimeoutError, UaError) as exc:
        raise ConnectError(f"cannot browse {endpoint}: {exc!r}") from None
    hints: dict[str, dict[str, Any]] = {}
    try:
        namespaces = list(await client.get_namespace_array())
        points: dict[str, dict[str, Any]] = {}
        services: dict[str, dict[str, Any]] = {}
        taken: set[str] = set()
        seen: set[ua.NodeId] = set()
        queue: list[tuple[Node, list[str], int]] = [
            (client.get_node(ua.NodeId(ua.Int32(ObjectIds.ObjectsFolder))), [], 0)
        ]
        while queue and len(seen) < _MAX_NODES:
            node, path, depth = queue.pop(0)
            for ref in await node.get_children_descriptions():
                child = client.get_node(ref.NodeId)
                if ref.NodeId in seen or int(ref.NodeId.NamespaceIndex) == 0:
                    continue
                seen.add(ref.NodeId)
                browse = str(ref.BrowseName.Name)
                here = [*path, browse]
                if ref.NodeClass == ua.NodeClass.Variable:
                    entry: dict[str, Any] = {"node": _nodeid_text(ref.NodeId, namespaces)}
                    dtype = await child.read_data_type()
                    builtin = dtype.Identifier if dtype.NamespaceIndex == 0 else None
                    if isinstance(builtin, int) and builtin in _BUILTIN:
                        entry["type"] = _BUILTIN[builtin]
                    level = (await child.read_attribute(AttributeIds.AccessLevel)).Value
                    access = level.Value if level is not None else 0
                    if access and access & ua.AccessLevel.CurrentWrite.mask and "type" in entry:
                        entry["writable"] = True
                    name = _name(here, taken)
                    points[name] = entry
                    hints[name] = {"browse_path": "/".join(here), **await _hints(child)}
                elif ref.NodeClass == ua.NodeClass.Method:
                    inputs = await _arguments(child, "InputArguments")
                    outputs = await _arguments(child, "OutputArguments")
                    call: dict[str, Any] = {
                        "object": _nodeid_text(node.nodeid, namespaces),
                        "method": _nodeid_text(ref.NodeId, namespaces),
                    }
                    if inputs:
                        call["inputs"] = [{"name": n, "type": t} for n, t in inputs]
                    if outputs:
                        call["outputs"] = [n for n, _ in outputs]
                    name = _name(here, taken)
                    services[name] = {"call": call}
                    hints[name] = {"browse_path": "/".join(here), "inputs": dict(inputs), "outputs": dict(outputs),
                                   **{k: v for k, v in (await _hints(child)).items() if k == "description"}}
                if ref.NodeClass == ua.NodeClass.Object and depth < _MAX_DEPTH:
                    queue.append((child, here, depth + 1))
    finally:
        try:
            await client.disconnect()
        except (OSError, UaError):
            client.disconnect_socket()
    return {"driver": "opcua", "connection": {"url": endpoint}, "points": points, "services": services,
            "hints": hints}
