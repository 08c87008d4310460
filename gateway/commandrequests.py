"""What a command is: its payload's shape per kind, parsed and refused in one place.

A payload that is not JSON or not of its kind's shape is ``rejected`` as ``malformed`` with
the first field that is wrong; the command id is kept even then, so the reply can name it.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

CommandId = Field(min_length=1, max_length=256)


class Request(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = CommandId
    expires_at: int | None = None  # epoch ms
    dry_run: bool = False
    operator: str | None = None  # trusted only when access.identity includes "payload"

    def inputs(self) -> dict[str, Any]:
        """What the command carries, as recorded with its id (and matched by per_input rules)."""
        return {}

    def targets(self, service: str | None) -> list[str]:
        """What access is checked for: the service, or the properties, or the twin."""
        return ["twin"]


class InvokeRequest(Request):
    input: dict[str, Any] = {}

    def inputs(self) -> dict[str, Any]:
        return self.input

    def targets(self, service: str | None) -> list[str]:
        return [service or ""]


class SetRequest(Request):
    properties: dict[str, Any] = Field(min_length=1)

    def inputs(self) -> dict[str, Any]:
        return self.properties

    def targets(self, service: str | None) -> list[str]:
        return sorted(self.properties)


class DesiredRequest(Request):
    desired: dict[str, Any]
    version: int | None = None  # expected current version (optimistic concurrency)

    def inputs(self) -> dict[str, Any]:
        return self.desired

    def targets(self, service: str | None) -> list[str]:
        return sorted(self.desired) or ["twin"]


class GetRequest(Request):
    pass


REQUESTS: dict[str, type[Request]] = {
    "invoke": InvokeRequest, "set": SetRequest, "desired": DesiredRequest, "get": GetRequest,
}
KIND_LABEL = {"invoke": "other", "set": "properties/set", "desired": "twin/desired", "get": "twin/get"}


class Rejected(Exception):
    """A command refused before anything reached the device; ``code`` is the reply's error code."""

    def __init__(self, code: str, message: str, output: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.output = output


def command_id_of(payload: bytes) -> str | None:
    """The id of a payload, if it has a usable one (for replies to malformed commands too)."""
    try:
        raw = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    value = raw.get("id") if isinstance(raw, dict) else None
    return value if isinstance(value, str) else None


def parse_request(kind: str, payload: bytes) -> Request:
    try:
        raw = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise Rejected("malformed", f"payload is not JSON: {exc}") from None
    try:
        return REQUESTS[kind].model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "payload"
        raise Rejected("malformed", f"{where}: {first['msg']}") from None


def depth(value: Any, level: int = 0) -> int:
    """How deeply a JSON value nests (desired documents are bounded by it)."""
    if isinstance(value, dict):
        return max((depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((depth(v, level + 1) for v in value), default=level + 1)
    return level
