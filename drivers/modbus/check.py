"""Does a Modbus point fit what the thing model asks of it? (the registry's ``check`` hook)

What only shows at run time otherwise: a register type that cannot hold the property's range
after scale and offset, a number read from a one-bit table, an integer property read from a
float register, text from a numeric register (or the reverse), a writable property on a
read-only table. Imports pydantic and the stdlib-only codec, never pymodbus.
"""

from __future__ import annotations

from typing import Final

from pydantic import BaseModel

from citytwin.drivers.modbus.binding import ModbusPoint
from citytwin.drivers.modbus.codec import BIT_TABLES, WRITABLE_TABLES
from citytwin.drivers.registry import NUMERIC, BindingFinding, PropertyUse, kind_with_article
from citytwin.thingmodels.types import Kind

RAW_RANGE: Final[dict[str, tuple[float, float]]] = {
    "uint16": (0, 2**16 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "uint32": (0, 2**32 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint64": (0, 2**64 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "float32": (-3.4028234663852886e38, 3.4028234663852886e38),
    "float64": (-1.7976931348623157e308, 1.7976931348623157e308),
}


def check_point(point: BaseModel, use: PropertyUse) -> list[BindingFinding]:
    if not isinstance(point, ModbusPoint):
        return []
    found: list[BindingFinding] = []
    kind = use.kind
    if use.writable and point.table not in WRITABLE_TABLES:
        found.append(BindingFinding(
            "binding-writable", f"writable in the model, but bound to a read-only {point.table}", ("table",)
        ))
    if kind in NUMERIC and point.table in BIT_TABLES:
        found.append(BindingFinding(
            "binding-type", f"{kind_with_article(kind)} value cannot be held in a {point.table} (one bit)", ("table",)
        ))
        return found
    if kind is Kind.TEXT and point.type != "string":
        found.append(BindingFinding("binding-type", f"a text value needs a string point, not {point.type}", ("type",)))
        return found
    if kind is not Kind.TEXT and point.type == "string":
        found.append(BindingFinding("binding-type", f"{kind_with_article(kind)} value cannot be held in a string", ("type",)))
        return found
    if kind in (Kind.INT, Kind.ENUM) and point.type in ("float32", "float64") and use.scale == 1.0:
        found.append(BindingFinding(
            "binding-type", f"{kind_with_article(kind)} value is held in a {point.type} register; use an integer type", ("type",)
        ))
    raw = RAW_RANGE.get(point.type)
    problem = use.range_problem(point.type, *raw) if raw is not None else None
    if problem is not None:
        found.append(BindingFinding("binding-range", problem, ("type",)))
    return found
