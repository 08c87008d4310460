"""Config models for a BACnet/IP device, its points and its service calls.

Imports pydantic only, never bacpypes3, so validating a config loads no protocol library.
Object identifiers are written as BACnet spells them, ``analog-input,1`` (``analog-input:1``
is accepted too); property names in their hyphenated form (``present-value``).
"""

from __future__ import annotations

import builtins
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from citytwin.drivers.fields import IntRange, PositiveFloat

MAX_INSTANCE = 4194302  # 4194303 is the wildcard instance
DEFAULT_PORT = 47808  # 0xBAC0

# the standard object types whose present-value a point can bind (ASHRAE 135 clause 12)
ANALOG = frozenset({"analog-input", "analog-output", "analog-value", "large-analog-value"})
BINARY = frozenset({"binary-input", "binary-output", "binary-value"})
MULTI_STATE = frozenset({"multi-state-input", "multi-state-output", "multi-state-value"})
INTEGER = frozenset({"integer-value", "positive-integer-value", "accumulator", "pulse-converter"})
TEXT = frozenset({"characterstring-value"})
COMMANDABLE = frozenset({
    "analog-output", "binary-output", "multi-state-output",  # always
    "analog-value", "binary-value", "multi-state-value",  # when the device makes them so
    "integer-value", "positive-integer-value", "large-analog-value", "characterstring-value",
})
OBJECT_TYPES = ANALOG | BINARY | MULTI_STATE | INTEGER | TEXT | frozenset({"device", "loop"})

_OBJECT = re.compile(r"^\s*([a-z][a-z-]*[a-z])\s*[,:]\s*(\d{1,7})\s*$")
_PROPERTY = re.compile(r"^[a-z][a-z-]*[a-z]$")
_HOST_PORT = re.compile(r"^(?P<host>[A-Za-z0-9.-]+)(:(?P<port>\d{1,5}))?$")

Priority = Annotated[int, IntRange(1, 16)]


def parse_object(value: str) -> tuple[str, int]:
    """``analog-input,1`` -> ("analog-input", 1); ValueError with an operator's message."""
    match = _OBJECT.match(value)
    if match is None:
        raise ValueError("must look like 'analog-input,1' (object type, instance)")
    kind, instance = match.group(1), int(match.group(2))
    if kind not in OBJECT_TYPES:
        known = ", ".join(sorted(OBJECT_TYPES))
        raise ValueError(f"unknown object type {kind!r}; one of {known}")
    if instance > MAX_INSTANCE:
        raise ValueError(f"instance must be 0..{MAX_INSTANCE}")
    return kind, instance


def split_address(value: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """``HOST[:PORT]`` -> (host, port); ValueError when it is not one."""
    match = _HOST_PORT.match(value.strip())
    if match is None:
        raise ValueError("must be HOST or HOST:PORT (an IPv4 address or name, UDP port)")
    port = int(match.group("port") or default_port)
    if not 1 <= port <= 65535:
        raise ValueError("port must be 1..65535")
    return match.group("host"), port


class BacnetConnection(BaseModel):
    """How to reach one BACnet/IP device, and how the gateway appears on the network.

    Every BACnet device of one gateway shares one local UDP endpoint (``local_address``,
    the gateway's own device ``local_device_id``): devices answer and send COV
    notifications to the port a request came from, and two sockets bound to one port
    would split those datagrams between them.
    """

    model_config = ConfigDict(extra="forbid")

    address: str
    """the device: HOST or HOST:PORT (UDP, default 47808)"""
    device_id: Annotated[int, IntRange(0, MAX_INSTANCE)] | None = None
    """the device instance expected at the address; checked at connect by a directed Who-Is"""
    local_address: str = "0.0.0.0:47808"
    """the gateway's own BACnet/IP endpoint, shared by all BACnet devices of the gateway"""
    local_device_id: Annotated[int, IntRange(0, MAX_INSTANCE)] = 4194301
    timeout: PositiveFloat = 3.0
    """seconds to wait for the answer to one request, retries included"""
    cov: bool = True
    """False for devices without SubscribeCOV: every point is read in the poll instead"""
    cov_lifetime: Annotated[int, IntRange(10, 86400)] = 300
    """seconds a subscription lives on the device; renewed at half of it, so a device that
    restarted and forgot it is subscribed again within that half"""
    cov_confirmed: bool = False
    """ask for confirmed notifications (each one acknowledged) instead of unconfirmed ones"""
    cov_retry: PositiveFloat = 60.0
    """seconds before an object whose subscription was refused is tried again (polled meanwhile)"""
    max_objects_per_request: Annotated[int, IntRange(1, 200)] = 40
    """objects per ReadPropertyMultiple, so an answer fits one unsegmented 1476-byte APDU"""

    @field_validator("address", "local_address")
    @classmethod
    def _address(cls, value: str) -> str:
        split_address(value)
        return value.strip()

    @model_validator(mode="after")
    def _distinct_ports(self) -> BacnetConnection:
        # bacpypes3 binds with SO_REUSEPORT: a shared port would not fail, it would split the
        # datagrams between the gateway and the device
        host, port = split_address(self.address)
        local_host, local_port = split_address(self.local_address)
        if port == local_port and (host.startswith("127.") or host == local_host):
            raise ValueError(
                f"the device ({self.address}) and the gateway's local_address ({self.local_address}) "
                f"share UDP port {port} on one host: give the gateway another port"
            )
        return self


class BacnetPoint(BaseModel):
    """One property of one object; ``present-value`` unless ``property`` says otherwise.

    Present values are subscribed by COV (``mode: cov``) when the device allows it and
    polled otherwise. A writable point is written at ``priority`` (1 highest … 16 lowest;
    commandable objects take 16 when none is given).
    """

    model_config = ConfigDict(extra="forbid")

    object: str
    property: str = "present-value"
    mode: Literal["cov", "poll"] = "cov"
    writable: bool = False
    priority: Priority | None = None

    @field_validator("object")
    @classmethod
    def _object(cls, value: str) -> str:
        kind, instance = parse_object(value)
        return f"{kind},{instance}"

    @field_validator("property")
    @classmethod
    def _property(cls, value: str) -> str:
        if not _PROPERTY.match(value):
            raise ValueError("must be a property name such as present-value or status-flags")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> BacnetPoint:
        kind = self.kind
        if self.priority is not None and kind not in COMMANDABLE:
            raise ValueError(f"a priority needs a commandable object; {kind} is not one")
        if self.writable and self.property != "present-value" and self.priority is not None:
            raise ValueError("a priority applies to present-value only")
        return self

    # the field `property` shadows the builtin inside this class body
    @builtins.property
    def kind(self) -> str:
        return self.object.split(",")[0]

    @builtins.property
    def subscribed(self) -> bool:
        """Delivered by COV when the device allows: present values of points in cov mode."""
        return self.mode == "cov" and self.property == "present-value"


class BacnetCall(BaseModel):
    """A service carried out on one bound point: ``relinquish`` (write Null at the priority:
    the object falls back to the next priority or its relinquish-default) or ``write`` (the
    service input ``input`` as the raw value, unscaled)."""

    model_config = ConfigDict(extra="forbid")

    relinquish: str | None = None
    write: str | None = None
    input: str = "value"
    priority: Priority | None = None
    """overrides the point's priority"""

    @model_validator(mode="after")
    def _one(self) -> BacnetCall:
        if (self.relinquish is None) == (self.write is None):
            raise ValueError("needs exactly one of 'relinquish: POINT' or 'write: POINT'")
        return self

    @property
    def point(self) -> str:
        return self.relinquish if self.relinquish is not None else self.write or ""
