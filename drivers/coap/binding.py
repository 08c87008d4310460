"""Config models for a CoAP device, its points and its service calls.

Imports pydantic only, never aiocoap or cbor2, so that validating a config loads no
protocol library. A point names a resource (``path``) and a JSON pointer into that
resource's payload, so several properties can share one resource and one request.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from citytwin.drivers.fields import Port, PositiveFloat

Format = Literal["json", "cbor", "text"]
"""Payload formats by name: application/json (50), application/cbor (60), text/plain (0)."""


def _check_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError("must start with '/' (e.g. /aq/station)")
    if "#" in value or " " in value:
        raise ValueError("must not contain '#' or spaces")
    return value


def _check_pointer(value: str) -> str:
    if value and not value.startswith("/"):
        raise ValueError("must be a JSON pointer: empty for the whole payload, or /key/0/...")
    return value


class CoapConnection(BaseModel):
    """How to reach one CoAP device over UDP."""

    model_config = ConfigDict(extra="forbid")

    host: Annotated[str, Field(min_length=1)]
    port: Port = 5683
    timeout: PositiveFloat = 2.0
    """seconds to wait for the answer to one request, retransmissions included"""
    observe_max_silence: PositiveFloat = 60.0
    """an observed resource silent this long is read with GET and observed anew"""


class CoapPoint(BaseModel):
    """One value inside one resource's representation.

    ``format`` is the Accept of reads and the Content-Format of writes (reads take the
    server's default when unset, writes JSON). Points sharing a ``path`` are read with one
    request; the resource is observed when any of them sets ``observe``. A write sends a
    document built from the points' pointers (``/interval`` -> ``{"interval": 10}``).
    """

    model_config = ConfigDict(extra="forbid")

    path: str
    pointer: str = ""
    format: Format | None = None
    observe: bool = False
    writable: bool = False
    method: Literal["PUT", "POST"] = "PUT"
    """the request that writes this point"""

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return _check_path(value)

    @field_validator("pointer")
    @classmethod
    def _pointer(cls, value: str) -> str:
        return _check_pointer(value)


class CoapCall(BaseModel):
    """One request that carries out a service.

    ``payload`` is a template: every string ``"$name"`` in it is replaced by that service
    input's value; without a template the inputs are sent as one object. ``output`` maps
    service outputs to JSON pointers into the answer; without it an object answer is the
    output as it is.
    """

    model_config = ConfigDict(extra="forbid")

    path: str
    method: Literal["POST", "PUT", "GET", "DELETE"] = "POST"
    format: Format = "json"
    """Content-Format of the request payload"""
    accept: Format | None = None
    payload: Any = None
    output: dict[str, str] = {}

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return _check_path(value)

    @field_validator("output")
    @classmethod
    def _pointers(cls, value: dict[str, str]) -> dict[str, str]:
        for pointer in value.values():
            _check_pointer(pointer)
        return value
