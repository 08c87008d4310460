"""Does an OPC UA point fit what the thing model asks of it? (the registry's ``check`` hook)

A point that declares its Variant ``type`` is checked against the property's data type
(the type a write sends, and what a read is expected to return): a number in a Boolean or
String node, text in a numeric node, an integer property in a Float or Double node without
a scale, and the integer types' (or Float's) range after scale and offset. A writable
property needs a ``writable`` point. An untyped point is read as whatever the server sends,
so only its writability is checked. Imports pydantic only, never asyncua.
"""

from __future__ import annotations

from typing import Final

from pydantic import BaseModel

from citytwin.drivers.opcua.binding import INTEGER_TYPES, OpcUaPoint
from citytwin.drivers.registry import NUMERIC, BindingFinding, PropertyUse, kind_with_article
from citytwin.thingmodels.types import Kind

RAW_RANGE: Final[dict[str, tuple[float, float]]] = {
    "SByte": (-(2**7), 2**7 - 1),
    "Byte": (0, 2**8 - 1),
    "Int16": (-(2**15), 2**15 - 1),
    "UInt16": (0, 2**16 - 1),
    "Int32": (-(2**31), 2**31 - 1),
    "UInt32": (0, 2**32 - 1),
    "Int64": (-(2**63), 2**63 - 1),
    "UInt64": (0, 2**64 - 1),
    "Float": (-3.4028234663852886e38, 3.4028234663852886e38),
}
_NUMBER_TYPES: Final = INTEGER_TYPES | {"Float", "Double"}


def check_point(point: BaseModel, use: PropertyUse) -> list[BindingFinding]:
    if not isinstance(point, OpcUaPoint):
        return []
    found: list[BindingFinding] = []
    if use.writable and not point.writable:
        found.append(BindingFinding(
            "binding-writable",
            "writable in the model, but the point is not writable (set writable: true and its type)",
            ("writable",),
        ))
    declared = point.type
    if declared is None:
        return found
    kind = use.kind
    wanted: frozenset[str] | None = None
    if kind is Kind.BOOL:
        wanted = INTEGER_TYPES | {"Boolean"}
    elif kind in NUMERIC:
        wanted = _NUMBER_TYPES
    elif kind is Kind.TEXT:
        wanted = frozenset({"String"})
    if wanted is not None and declared not in wanted:
        found.append(BindingFinding(
            "binding-type", f"{kind_with_article(kind)} value cannot be carried by a {declared} node", ("type",)
        ))
        return found
    if kind in (Kind.INT, Kind.ENUM) and declared in ("Float", "Double") and use.scale == 1.0:
        found.append(BindingFinding(
            "binding-type", f"{kind_with_article(kind)} value is carried by a {declared} node; use an integer type", ("type",)
        ))
    raw = RAW_RANGE.get(declared)
    problem = use.range_problem(declared, *raw) if raw is not None else None
    if problem is not None:
        found.append(BindingFinding("binding-range", problem, ("type",)))
    return found
