"""Config models for an OPC UA device, its points and its method calls.

Imports pydantic and the stdlib-only NodeId parser, never asyncua, so validating a config
loads no protocol library. Times are in milliseconds where OPC UA counts them so
(publishing and sampling intervals), in seconds where the gateway does (timeouts).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from citytwin.drivers.fields import IntRange, PositiveFloat
from citytwin.drivers.opcua.nodeid import parse_nodeid

VariantName = Literal[
    "Boolean", "SByte", "Byte", "Int16", "UInt16", "Int32", "UInt32",
    "Int64", "UInt64", "Float", "Double", "String",
]
"""The built-in types a binding may name; a write or call sends exactly this type."""

INTEGER_TYPES: frozenset[str] = frozenset(
    {"SByte", "Byte", "Int16", "UInt16", "Int32", "UInt32", "Int64", "UInt64"}
)

Milliseconds = Annotated[float, Field(ge=0, le=3_600_000)]


def _check_nodeid(value: str) -> str:
    parse_nodeid(value)
    return value.strip()


class OpcUaConnection(BaseModel):
    """How to reach one OPC UA server, how to secure the link, and how to subscribe."""

    model_config = ConfigDict(extra="forbid")

    url: Annotated[str, Field(pattern=r"^opc\.tcp://[^/:]+(:\d{1,5})?(/.*)?$")]
    security_mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    security_policy: Literal["Basic256Sha256"] = "Basic256Sha256"
    pki_dir: Path = Path("pki")
    """own/ holds the gateway's certificate (made on first start), trusted/ the server
    certificates it accepts, rejected/ the ones it refused (move one to trusted/ to accept it)"""
    server_certificate: Path | None = None
    """one server certificate (DER or PEM) trusted in addition to pki_dir/trusted/"""
    application_uri: str = "urn:citytwin:gateway"
    username: str | None = None
    password: SecretStr | None = None
    timeout: PositiveFloat = 4.0
    """seconds to wait for the answer to one request"""
    connect_timeout: PositiveFloat = 5.0
    probe_interval: PositiveFloat = 1.0
    """seconds between probes of an idle session, so a dead server is noticed while subscribed"""
    subscribe: bool = True
    """False for servers that cannot subscribe: every point is read in the poll instead"""
    publishing_interval: Annotated[float, Field(gt=0, le=3_600_000)] = 500.0
    sampling_interval: Milliseconds | None = None
    """default for points that name none; None samples at the publishing interval"""
    keepalive_count: Annotated[int, IntRange(1, 1000)] = 10
    """publishing intervals without data after which the server sends a keep-alive"""
    watchdog_intervals: Annotated[int, IntRange(2, 100_000)] | None = None
    """publishing intervals with neither data nor keep-alive after which a subscription is
    rebuilt; default keepalive_count + 3"""
    queue_limit: Annotated[int, IntRange(10, 10_000_000)] = 100_000
    """notifications buffered between the library and the gateway; the oldest go first"""

    @model_validator(mode="after")
    def _consistent(self) -> OpcUaConnection:
        if self.watchdog_intervals is not None and self.watchdog_intervals <= self.keepalive_count:
            raise ValueError(
                f"watchdog_intervals ({self.watchdog_intervals}) must exceed keepalive_count "
                f"({self.keepalive_count}): a healthy idle subscription is silent that long"
            )
        if self.password is not None and self.username is None:
            raise ValueError("password needs a username")
        return self

    @property
    def stale_intervals(self) -> int:
        return self.watchdog_intervals or self.keepalive_count + 3


class OpcUaPoint(BaseModel):
    """One variable: its NodeId, how it is delivered and, for writes, its Variant type."""

    model_config = ConfigDict(extra="forbid")

    node: str
    type: VariantName | None = None
    """the Variant type written; required for writable points"""
    writable: bool = False
    mode: Literal["subscribe", "poll"] = "subscribe"
    sampling_interval: Milliseconds | None = None
    queue_size: Annotated[int, IntRange(1, 10_000)] = 1
    """values the server queues per publishing interval (1: only the latest)"""
    server_deadband: Annotated[float, Field(ge=0)] = 0.0
    """a data change filter applied by the server (0: every change)"""
    server_deadband_type: Literal["absolute", "percent"] = "absolute"

    @field_validator("node")
    @classmethod
    def _nodeid(cls, value: str) -> str:
        return _check_nodeid(value)

    @model_validator(mode="after")
    def _consistent(self) -> OpcUaPoint:
        if self.writable and self.type is None:
            raise ValueError("a writable point needs its Variant 'type' (Int32, Double, Boolean, ...)")
        if self.server_deadband and self.mode != "subscribe":
            raise ValueError("server_deadband applies to subscribed points only")
        return self


def prepare(connection: BaseModel, data_dir: Path, device_id: str) -> BaseModel:
    """The registry's ``prepare`` hook: a relative ``pki_dir`` lives in ``data_dir/device_id/``.

    The gateway's key and trust list are its own state, like the twins, so they go where the
    operator keeps state (and two devices never share one trust list by accident). Only the
    path is computed: the directories and the certificate are made when the driver connects,
    so ``config check`` creates nothing.
    """
    if not isinstance(connection, OpcUaConnection) or connection.pki_dir.is_absolute():
        return connection
    return connection.model_copy(update={"pki_dir": data_dir / device_id / connection.pki_dir})


class CallInput(BaseModel):
    """One input argument, in the method's order: the service input it takes, and its type."""

    model_config = ConfigDict(extra="forbid")

    name: str
    type: VariantName


class OpcUaCall(BaseModel):
    """A service carried out by one method call: ``object`` is the method's parent object."""

    model_config = ConfigDict(extra="forbid")

    object: str
    method: str
    inputs: list[CallInput] = []
    outputs: list[str] = []
    """names for the output arguments, in order; they become the reply's output"""

    @field_validator("object", "method")
    @classmethod
    def _nodeids(cls, value: str) -> str:
        return _check_nodeid(value)

    @field_validator("inputs", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        # `- plan: Int32` is accepted for `- {name: plan, type: Int32}`
        if isinstance(value, list):
            return [
                {"name": next(iter(v)), "type": next(iter(v.values()))}
                if isinstance(v, dict) and len(v) == 1 and "name" not in v else v
                for v in value
            ]
        return value
