"""Gateway configuration: one YAML file for the gateway, its hub link and its devices.

The file is data validated by pydantic. Every error is reported with the file, the line and
the field path (``pump-station.yaml:14: devices[0].points.level.address: must be 0..65535``),
never as a traceback; all errors are reported at once.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from citytwin.drivers.fields import IntRange, PositiveFloat
from citytwin.drivers.modbus.binding import ModbusPoint, ModbusTcpConnection
from citytwin.gateway.yamlsrc import Located, YamlSyntaxError, load_yaml

IDENT = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
PositiveSeconds = PositiveFloat


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GatewaySection(Strict):
    id: Annotated[str, Field(pattern=IDENT)]
    data_dir: Path = Path("./data")
    # how often dirty twins are written to disk; a crash loses at most this much twin history
    flush_interval: PositiveSeconds = 1.0


class HubSection(Strict):
    url: str = "mqtt://127.0.0.1:1883"
    protocol: Literal["5", "3.1.1"] = "5"
    prefix: str = "citytwin/v1"
    client_id: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    keepalive: Annotated[int, IntRange(5, 3600)] = 30
    qos: Literal[0, 1] = 1
    reconnect_min: PositiveSeconds = 0.5
    reconnect_max: PositiveSeconds = 30.0
    snapshot_interval: PositiveSeconds = 60.0
    # messages held in memory while the hub is unreachable; the oldest are dropped beyond it
    queue_limit: Annotated[int, IntRange(100, 10_000_000)] = 100_000

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_as_text(cls, value: Any) -> Any:
        return {5: "5", 311: "3.1.1"}.get(value, value)

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, value: str) -> str:
        if not re.match(r"^mqtt://[^/:]+(:\d{1,5})?/?$", value):
            raise ValueError("must look like mqtt://HOST:PORT")
        return value

    @property
    def host(self) -> str:
        return self.url.removeprefix("mqtt://").rstrip("/").rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        rest = self.url.removeprefix("mqtt://").rstrip("/")
        return int(rest.rsplit(":", 1)[1]) if ":" in rest else 1883


class PointConfig(ModbusPoint):
    """A property's Modbus binding plus the gateway's transform: value = raw * scale + offset."""

    scale: float = 1.0
    offset: float = 0.0
    # report by exception: a numeric change smaller than this is not reported
    deadband: Annotated[float, Field(ge=0)] = 0.0

    @field_validator("scale")
    @classmethod
    def _nonzero_scale(cls, value: float) -> float:
        if value == 0:
            raise ValueError("must not be 0")
        return value


CONDITION = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=|==|!=|>|<)\s*(\S+)\s*$")


class EventTrigger(Strict):
    """Raise a model event on the rising edge of a condition on a property."""

    event: str
    when: str
    # optional hysteresis: once raised, the event re-arms only when this holds
    clear: str | None = None
    # output parameter -> literal, or "$property" for the property's current value
    output: dict[str, Any] = {}

    @field_validator("when", "clear")
    @classmethod
    def _condition(cls, value: str | None) -> str | None:
        if value is not None and not CONDITION.match(value):
            raise ValueError("must look like 'PROPERTY OP VALUE' with OP one of > >= < <= == !=")
        return value


class WriteStep(Strict):
    # a property or an output; "{input}" is replaced by that service input's value
    point: str
    # a literal, or "$input" for a service input's value
    value: Any


class ServiceBinding(Strict):
    writes: Annotated[list[WriteStep], Field(min_length=1)]
    timeout: PositiveSeconds = 5.0


class DeviceConfig(Strict):
    id: Annotated[str, Field(pattern=IDENT)]
    model: str
    driver: Literal["modbus-tcp"]
    connection: ModbusTcpConnection
    poll_period: PositiveSeconds = 1.0
    reconnect_min: PositiveSeconds = 0.5
    reconnect_max: PositiveSeconds = 30.0
    points: dict[str, PointConfig]
    # write-only command points that are not model properties (start/stop coils)
    outputs: dict[str, ModbusPoint] = {}
    events: list[EventTrigger] = []
    services: dict[str, ServiceBinding] = {}


class GatewayConfig(Strict):
    gateway: GatewaySection
    hub: HubSection = HubSection()
    devices: list[DeviceConfig] = []

    @field_validator("devices")
    @classmethod
    def _unique_ids(cls, devices: list[DeviceConfig]) -> list[DeviceConfig]:
        seen: set[str] = set()
        for device in devices:
            if device.id in seen:
                raise ValueError(f"device id {device.id!r} is used twice")
            seen.add(device.id)
        return devices


class ConfigIssue(BaseModel):
    source: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{self.source}:{self.line}: {where}{self.message}"


class ConfigError(Exception):
    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        super().__init__("\n".join(str(i) for i in issues))
        self.issues = list(issues)


def format_path(loc: Sequence[Hashable]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


_MESSAGES = {
    "missing": "required field is missing",
    "extra_forbidden": "unknown field",
}


def _message(error: Any) -> str:
    kind = error["type"]
    if kind in _MESSAGES:
        return _MESSAGES[kind]
    message = str(error["msg"])
    return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def issues_from_validation(exc: ValidationError, doc: Located) -> list[ConfigIssue]:
    issues = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        issues.append(
            ConfigIssue(
                source=doc.source,
                line=doc.line_of(loc),
                path=format_path(loc),
                message=_message(error),
            )
        )
    return issues


def parse_config(text: str, source: str) -> tuple[GatewayConfig, Located]:
    """Parse and validate; raises ConfigError with every issue found."""
    try:
        doc = load_yaml(text, source)
    except YamlSyntaxError as exc:
        raise ConfigError([ConfigIssue(source=source, line=exc.line, path="", message=exc.message)]) from None
    if not isinstance(doc.data, dict):
        raise ConfigError([ConfigIssue(source=source, line=1, path="", message="must be a mapping")])
    try:
        config = GatewayConfig.model_validate(doc.data)
    except ValidationError as exc:
        raise ConfigError(issues_from_validation(exc, doc)) from None
    return config, doc
