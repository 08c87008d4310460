"""Does a CoAP point fit what the thing model asks of it? (the registry's ``check`` hook)

A resource carries whatever its payload holds, so only the request path is checked: a
writable property needs a ``writable`` point, which PUTs (or POSTs) the value at its pointer.
Imports pydantic only, never aiocoap.
"""

from __future__ import annotations

from pydantic import BaseModel

from citytwin.drivers.coap.binding import CoapPoint
from citytwin.drivers.registry import BindingFinding, PropertyUse


def check_point(point: BaseModel, use: PropertyUse) -> list[BindingFinding]:
    if not isinstance(point, CoapPoint) or not use.writable or point.writable:
        return []
    return [BindingFinding(
        "binding-writable",
        f"writable in the model, but {point.path} is only read (set writable: true)",
        ("writable",),
    )]
