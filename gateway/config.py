"""Gateway configuration: one YAML file for the gateway, its hub link and its devices.

The file is data validated by pydantic. Every error is reported with the file, the line and
the field path (``pump-station.yaml:14: devices[0].points.level.address: must be 0..65535``),
never as a traceback; all errors are reported at once.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Hashable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    SecretStr,
    TypeAdapter,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

from citytwin.drivers.fields import IntRange, PositiveFloat
from citytwin.drivers.registry import DRIVER_NAMES, binding_models
from citytwin.gateway.conditions import CONDITION_HELP, is_condition
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
    # the retained twin document of a changing device is republished at most this often; with
    # many devices and fast polls twins dominate the uplink (docs/performance.md), so raise it
    twin_publish_interval: PositiveSeconds = 1.0
    # the city's coding scheme for asset identifiers: every device ``uid`` must match it whole
    uid_pattern: str | None = None
    # polls in flight at once, gateway-wide; more wait to start (no request is sent while they
    # wait, so nothing goes stale), which bounds the work a saturated box holds at once
    max_polls_in_flight: Annotated[int, IntRange(1, 100_000)] = 32
    # the event loop's lag the poll gate aims to stay under (it admits fewer polls at once when
    # the loop wakes later than this): headroom for commands on a saturated or throttled box
    loop_lag_target: PositiveSeconds = 0.01
    # the CPU the gateway keeps under (it paces polls to stay under 75 % of it, so commands find
    # the box awake): "auto" = the CPU quota of its cgroup (cpu.max, cpu.cfs_quota_us), else its
    # CPUs; a number of cores (e.g. 0.5) for headroom without a cgroup (never above a quota);
    # "none" = measured and reported only
    cpu_budget: float | Literal["auto", "none"] = "auto"

    @field_validator("cpu_budget", mode="before")
    @classmethod
    def _cores(cls, value: Any) -> float | str:
        if value in ("auto", "none"):
            return str(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"must be a number of cores (e.g. 0.5), 'auto' (the cgroup's CPU quota) or "
                             f"'none', not {value!r}")
        if not 0.01 <= value <= 1024:
            raise ValueError(f"must be 0.01..1024 cores, not {value:g}")
        return float(value)

    @field_validator("uid_pattern")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return value


class OutboxSection(Strict):
    """Store-and-forward bounds; beyond any of them the oldest messages are dropped and counted."""

    max_messages: Annotated[int, IntRange(100, 1_000_000_000)] = 1_000_000
    max_bytes: Annotated[int, IntRange(10_000, 1 << 50)] = 512 * 1024 * 1024
    max_age: PositiveSeconds = 7 * 24 * 3600.0
    # backlog replay after an outage, messages per second, so the hub is not flooded
    replay_rate: PositiveSeconds = 2000.0
    # memory bounds (issue 13): reports serialized but not yet stored, and live reports held for
    # the hub link; when either is full the next polls wait (they stretch and are counted as
    # skipped) instead of the heap growing. Live reports beyond the window stream from disk.
    write_queue_bytes: Annotated[int, IntRange(1024, 1 << 40)] = 1024 * 1024
    live_window_bytes: Annotated[int, IntRange(1024, 1 << 40)] = 256 * 1024


class TlsSection(Strict):
    """TLS to the broker (``mqtts://``); a client certificate makes it mutual TLS."""

    ca_file: Path | None = None  # None: the system's trusted CAs
    cert_file: Path | None = None
    key_file: Path | None = None  # None: the key is in cert_file
    insecure_skip_verify: bool = False  # for lab brokers only: no certificate or host name check

    @model_validator(mode="after")
    def _key_needs_cert(self) -> TlsSection:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file needs cert_file as well")
        return self


class HubSection(Strict):
    url: str = "mqtt://127.0.0.1:1883"
    protocol: Literal["5", "3.1.1"] = "5"
    prefix: str = "citytwin/v1"
    client_id: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    tls: TlsSection | None = None  # only with mqtts://, which uses TLS even without this section
    keepalive: Annotated[int, IntRange(5, 3600)] = 30
    qos: Literal[0, 1] = 1
    reconnect_min: PositiveSeconds = 0.5
    reconnect_max: PositiveSeconds = 30.0
    snapshot_interval: PositiveSeconds = 60.0
    # messages held in memory while the hub is unreachable; the oldest are dropped beyond it
    queue_limit: Annotated[int, IntRange(100, 10_000_000)] = 100_000
    # ... and at most this many payload bytes (replies and gateway events; reports use the outbox)
    queue_bytes: Annotated[int, IntRange(64 * 1024, 1 << 40)] = 8 * 1024 * 1024
    # also publish each property's value, retained and bare, on {p}/{gw}/{dev}/values/{name}, so
    # WoT consumers can read and observe it over MQTT (one more message per changed property)
    property_topics: bool = False

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_as_text(cls, value: Any) -> Any:
        return {5: "5", 311: "3.1.1"}.get(value, value)

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, value: str) -> str:
        if not re.match(r"^mqtts?://[^/:@]+(:\d{1,5})?/?$", value):
            raise ValueError("must look like mqtt://HOST:PORT or mqtts://HOST:PORT (credentials go in username/password)")
        return value

    @model_validator(mode="after")
    def _tls_needs_mqtts(self) -> HubSection:
        if self.tls is not None and not self.use_tls:
            raise ValueError("tls needs an mqtts:// url")
        return self

    @property
    def use_tls(self) -> bool:
        return self.url.startswith("mqtts://")

    @property
    def host(self) -> str:
        return self.url.split("://", 1)[1].rstrip("/").rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        rest = self.url.split("://", 1)[1].rstrip("/")
        return int(rest.rsplit(":", 1)[1]) if ":" in rest else (8883 if self.use_tls else 1883)


class Transform(BaseModel):
    """The gateway's part of a point binding: value = raw * scale + offset, and a deadband."""

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
        if value is not None and (not is_condition(value) or "{" in value):
            raise ValueError(CONDITION_HELP + " (no {input} templates in events)")
        return value


class WriteStep(Strict):
    # a property or an output; "{input}" is replaced by that service input's value
    point: str
    # a literal, or "$input" for a service input's value
    value: Any


class MaxChange(Strict):
    input: str
    property: str  # may use {input} templates, e.g. pump{pump}_frequency_setpoint
    limit: Annotated[float, Field(gt=0)]


class ServiceBinding(Strict):
    """A service is carried out by writes to points, or by one call of the driver's own kind."""

    writes: list[WriteStep] = []
    call: Any = None  # narrowed per driver to its call model
    timeout: PositiveSeconds = 5.0

    @model_validator(mode="after")
    def _writes_or_call(self) -> ServiceBinding:
        if bool(self.writes) == (self.call is not None):
            raise ValueError("needs either 'writes' (a non-empty list) or 'call', not both")
        return self


class Interlock(Strict):
    """A rule checked before a service runs; a violated rule rejects the command and names itself.

    Exactly one of: ``require`` (a condition on current reported values that must hold; point
    names may use ``{input}`` templates), ``max_per_hour`` (succeeded calls in the last hour,
    counted per value of ``per_input`` when given), ``min_interval`` (seconds since the last
    succeeded call of any of ``services``, per ``per_input`` when given), ``max_change``
    (``|input - current property| <= limit``: ramps and steps).
    """

    services: Annotated[list[str], Field(min_length=1)]
    require: str | None = None
    max_per_hour: Annotated[int, IntRange(1, 1_000_000)] | None = None
    min_interval: PositiveSeconds | None = None
    max_change: MaxChange | None = None
    per_input: str | None = None
    message: str | None = None  # shown when the rule is violated on trusted values
    # ``require`` and ``max_change`` read reported values with their quality and age: a bad,
    # stale or missing value violates the rule; an uncertain one too, unless accepted here
    accept: Literal["good", "uncertain"] = "good"
    max_age: PositiveSeconds | None = None  # default: the device's stale_after

    @field_validator("require")
    @classmethod
    def _condition(cls, value: str | None) -> str | None:
        if value is not None and not is_condition(value):
            raise ValueError(CONDITION_HELP)
        return value

    @model_validator(mode="after")
    def _one_rule(self) -> Interlock:
        rules = [self.require, self.max_per_hour, self.min_interval, self.max_change]
        if sum(r is not None for r in rules) != 1:
            raise ValueError("needs exactly one of require, max_per_hour, min_interval, max_change")
        return self


class Location(Strict):
    """Where a device is: a point on the earth, and where in its building or site."""

    latitude: Annotated[float, Field(ge=-90, le=90)]
    longitude: Annotated[float, Field(ge=-180, le=180)]
    altitude: float | None = None  # metres
    # WGS 84 (GPS) or CGCS2000 (China's national geodetic system; within centimetres of WGS 84)
    crs: Literal["WGS84", "CGCS2000"] = "WGS84"
    address: str | None = None
    floor: str | None = None  # floor or level, as the site names it ("B2", "3", "platform")

    @field_validator("crs", mode="before")
    @classmethod
    def _crs_spelling(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"WGS 84": "WGS84", "WGS-84": "WGS84", "EPSG:4326": "WGS84", "EPSG:4490": "CGCS2000"}.get(
                value.strip().upper(), value.strip().upper())
        return value

    @field_validator("floor", mode="before")
    @classmethod
    def _floor_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _tag_values(value: Any) -> Any:
    """Tags are text; numbers and booleans written unquoted in YAML are taken as their text."""
    if isinstance(value, dict):
        return {k: (str(v).lower() if isinstance(v, bool) else str(v)) if isinstance(v, (int, float, bool)) else v
                for k, v in value.items()}
    return value


class DeviceConfig(Strict):
    """Fields every device has; each driver narrows connection, points, outputs and services."""

    id: Annotated[str, Field(pattern=IDENT)]
    model: str
    driver: str
    connection: Any
    poll_period: PositiveSeconds = 1.0
    # consecutive failed polls (transport errors) before the device is reported offline; the
    # link is re-opened with backoff after each (EdgeX's AllowedFails)
    allowed_failures: Annotated[int, IntRange(1, 1000)] = 3
    # a reported value older than this is stale: interlocks refuse to trust it (default: 3 poll
    # periods; for devices that call in, poll_period is their expected report interval)
    stale_after: PositiveSeconds | None = None
    # how long a property write or desired-state write may take on the device
    command_timeout: PositiveSeconds = 5.0
    reconnect_min: PositiveSeconds = 0.5
    reconnect_max: PositiveSeconds = 30.0
    points: dict[str, Any]
    # write-only command points that are not model properties (start/stop coils)
    outputs: dict[str, Any] = {}
    events: list[EventTrigger] = []
    services: dict[str, ServiceBinding] = {}
    interlocks: list[Interlock] = []
    groups: list[str] = []  # device groups named in access grants
    # identity and place (published retained on {p}/{gw}/{dev}/meta): the city's identifier of
    # the asset (checked against gateway.uid_pattern), its location and free key/value tags
    uid: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    location: Location | None = None
    tags: dict[str, str] = {}
    template: str | None = None  # the template this device was made from (set by the expansion)

    @field_validator("tags", mode="before")
    @classmethod
    def _tags_as_text(cls, value: Any) -> Any:
        return _tag_values(value)


@cache
def device_config_model(driver: str) -> type[DeviceConfig]:
    """The device model for one driver, built from the driver's own binding models."""
    models = binding_models(driver)
    slug = driver.title().replace("-", "")
    point = create_model(f"{slug}PointConfig", __base__=(models.point, Transform))
    service: Any = ServiceBinding
    if models.call is not None:
        service = create_model(
            f"{slug}ServiceBinding", __base__=ServiceBinding, call=(models.call | None, None)  # type: ignore[arg-type]
        )
    fields: dict[str, Any] = {
        "driver": (Literal[driver], ...),
        "connection": (models.connection, ...),
        "points": (dict[str, point], ...),  # type: ignore[valid-type]
        "outputs": (dict[str, models.point], {}),  # type: ignore[name-defined]
        "services": (dict[str, service], {}),
    }
    return create_model(f"{slug}DeviceConfig", __base__=DeviceConfig, **fields)


class _ByDriver:
    """A device, validated as its ``driver``'s own model, built (and its binding models
    imported) only for the drivers a config uses.

    Why not pydantic's discriminated union over every driver: building it imported every
    driver's bindings and built 11 device models when this module loaded, ~0.15 s of CPU
    before the first poll (0.6 s under a quarter core) and ~10 MB kept for drivers a box never
    runs. The JSON Schema still names every driver (built when asked for)."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_plain_validator_function(_device_by_driver)

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        every: Any = Annotated[Union[tuple(device_config_model(name) for name in DRIVER_NAMES)],  # noqa: UP007
                               Field(discriminator="driver")]
        return handler(TypeAdapter[Any](every).core_schema)


def _device_by_driver(value: Any) -> DeviceConfig:
    if isinstance(value, DeviceConfig):
        return value
    if not isinstance(value, dict):
        raise PydanticCustomError("model_attributes_type",
                                  "Input should be a valid dictionary or object to extract fields from")
    driver = value.get("driver")
    if driver is None:
        raise PydanticCustomError("union_tag_not_found", "required field is missing: driver")
    if not isinstance(driver, str) or driver not in DRIVER_NAMES:  # parse_document words these
        raise PydanticCustomError("union_tag_invalid", "unknown driver {driver!r}", {"driver": str(driver)})
    return device_config_model(driver).model_validate(value)


# any device (typed Any: each is its driver's DeviceConfig subclass)
_ANY_DEVICE: Any = Annotated[DeviceConfig, _ByDriver]


class HttpUser(Strict):
    """One HTTP identity: its secret (the basic-auth password or the bearer token), given in the
    file or, for tests and labs, inline. It is never logged; the name is the operator name that
    access grants use."""

    secret: SecretStr | None = None
    secret_file: Path | None = None

    @model_validator(mode="after")
    def _one_secret(self) -> HttpUser:
        if (self.secret is None) == (self.secret_file is None):
            raise ValueError("needs exactly one of secret, secret_file")
        return self

    def read_secret(self) -> str:
        if self.secret is not None:
            return self.secret.get_secret_value()
        assert self.secret_file is not None
        return self.secret_file.read_text(encoding="utf-8").strip()


class HttpSection(Strict):
    """The HTTP endpoint: operations (/metrics, /health, /status, POST /reload) and every device
    as a W3C WoT Thing (/things: the Thing Description Directory; docs/wot.md)."""

    enabled: bool = True
    host: str = "127.0.0.1"  # loopback only unless you mean it; /reload answers loopback peers only
    port: Annotated[int, IntRange(0, 65535)] = 9108
    # /health fails when a device has had no successful poll for this long (at least 3 poll periods)
    silent_after: PositiveSeconds = 60.0
    things: bool = True  # serve /things (TDs, reads, observation, writes and actions)
    # how WoT consumers identify themselves: none (every request is anonymous: access.anonymous
    # decides), basic (user name and password) or bearer (a token per user)
    auth: Literal["none", "basic", "bearer"] = "none"
    users: dict[str, HttpUser] = {}
    longpoll_timeout: PositiveSeconds = 30.0  # an observation request waits this long for a change
    # the host name put into Thing Descriptions (default: host, or 127.0.0.1 for 0.0.0.0)
    public_host: str | None = None


Role = Literal["none", "viewer", "operator", "admin"]


class Grant(Strict):
    """Who may do what where: viewers read twins, operators also invoke services and set
    properties, admins also change desired state. Deny by default."""

    operators: Annotated[list[str], Field(min_length=1)]  # names, or "*" for any identified operator
    role: Literal["viewer", "operator", "admin"]
    devices: list[str] = ["*"]  # device ids, "group:NAME", or "*"
    services: list[str] = ["*"]  # services (and properties, for sets) this grant covers


class AccessSection(Strict):
    # where the operator's name comes from: the MQTT 5 user property "operator" set by the hub,
    # and/or the payload's "operator" field (trust it only when broker ACLs restrict who publishes)
    identity: list[Literal["user_property", "payload"]] = ["user_property"]
    anonymous: Role = "none"  # role of a command that names no operator
    grants: list[Grant] = []


class CommandsSection(Strict):
    # how long command ids are remembered (a repeated id within it gets the first reply)
    retention: PositiveSeconds = 7 * 24 * 3600.0
    # desired-state documents beyond these are refused
    max_desired_bytes: Annotated[int, IntRange(64, 1_000_000)] = 16_384
    max_desired_depth: Annotated[int, IntRange(1, 32)] = 6


class RemoteConfigSection(Strict):
    """Configuration sent by the hub on {p}/{gw}/config/desired (docs/operations.md, "Remote
    configuration"); only operators granted ``admin`` on ``"@gateway"`` may send it."""

    enabled: bool = True
    # the devices a remote config adds or changes must come online within this, or the
    # gateway goes back to the config it had before (and says so on config/reported)
    rollback_after: PositiveSeconds = 60.0
    max_bytes: Annotated[int, IntRange(1024, 64 * 1024 * 1024)] = 8 * 1024 * 1024


LOCKABLE = ("hub", "outbox", "access", "commands", "http", "remote_config", "templates", "devices", "inventory")


class GatewayConfig(Strict):
    gateway: GatewaySection
    hub: HubSection = HubSection()
    outbox: OutboxSection = OutboxSection()
    access: AccessSection = AccessSection()
    commands: CommandsSection = CommandsSection()
    http: HttpSection = HttpSection()
    devices: list[_ANY_DEVICE] = []
    # named device bindings that devices instantiate with ``template: NAME`` (docs/operations.md,
    # "A fleet"); expanded into ``devices`` before validation by gateway/templates_config.py
    templates: dict[str, dict[str, Any]] = {}
    # inventory files (CSV or YAML, relative to this file): one device per row, appended to devices
    inventory: list[str] = []
    remote_config: RemoteConfigSection = RemoteConfigSection()
    # sections a config from the hub may not change (it keeps this file's); ``gateway`` (the
    # gateway's identity and data directory) and ``locked`` itself are always locked
    locked: list[Literal[LOCKABLE]] = []  # type: ignore[valid-type]

    @field_validator("inventory", mode="before")
    @classmethod
    def _one_or_more(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

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
    return issues_from_validation_errors(exc.errors(), doc)


def issues_from_validation_errors(errors: Sequence[Any], doc: Located) -> list[ConfigIssue]:
    issues = []
    for error in errors:
        issues.append(issue_at(doc, tuple(error["loc"]), _message(error)))
    return issues


def issue_at(doc: Located, loc: tuple[Hashable, ...], message: str) -> ConfigIssue:
    """An issue at ``loc`` of the validated document, placed where the value was written (a
    device made from a template or an inventory row is placed in the template, row or cell)."""
    source, line, label = doc.where(loc)
    return ConfigIssue(source=source, line=line, path=label if label is not None else format_path(loc),
                       message=message)


def load_document(text: str, source: str) -> Located:
    """The YAML document with the line of every value; raises ConfigError on bad syntax."""
    try:
        doc = load_yaml(text, source)
    except YamlSyntaxError as exc:
        raise ConfigError([ConfigIssue(source=source, line=exc.line, path="", message=exc.message)]) from None
    if not isinstance(doc.data, dict):
        raise ConfigError([ConfigIssue(source=source, line=1, path="", message="must be a mapping")])
    return doc


def parse_config(
    text: str, source: str, base_dir: Path | None = None, files: Mapping[str, str] | None = None,
) -> tuple[GatewayConfig, Located]:
    """Parse and validate; raises ConfigError with every issue found.

    Templates and inventory files (relative to ``base_dir``, default the file's folder; or
    given in ``files`` by name, for a config that came from the hub) are expanded into
    ``devices`` first; the returned document places every path of the expanded config where
    it was written.
    """
    doc = load_document(text, source)
    return parse_document(doc, Path(source).parent if base_dir is None else base_dir, files)


def validate_document(doc: Located, base_dir: Path | None = None) -> GatewayConfig:
    """Validate a loaded document (perhaps with overrides applied); every issue at once."""
    return parse_document(doc, Path(doc.source).parent if base_dir is None else base_dir)[0]


def parse_document(
    doc: Located, base_dir: Path, files: Mapping[str, str] | None = None,
) -> tuple[GatewayConfig, Located]:
    """``parse_config`` for a document already loaded (perhaps with overrides, or merged)."""
    from citytwin.gateway.templates_config import (  # it builds on this module
        dedupe_issues,
        expand_fleet,
    )

    if not isinstance(doc.data, dict):
        raise ConfigError([ConfigIssue(source=doc.source, line=1, path="", message="must be a mapping")])
    fleet = expand_fleet(doc, base_dir, files)
    issues = list(fleet.issues)
    unknown = unknown_drivers(fleet)
    try:
        config = GatewayConfig.model_validate(fleet.data)
    except ValidationError as exc:
        found = [issue for error in exc.errors() if not _is_tag_error(error, unknown)
                 for issue in issues_from_validation_errors([error], fleet)]
        issues = _driver_issues(fleet, unknown) + issues + found
    else:
        issues.extend(fleet.finish(config))
    if issues:
        raise ConfigError(dedupe_issues(issues))
    return config, fleet


# --- the driver name ------------------------------------------------------------------
# a device whose ``driver`` is missing or unknown cannot be validated as any driver's model
# (``_device_by_driver`` stops there), and a misspelling would hide every other error in it.
# So the name is checked first, with a suggestion, and the rest of the device is validated
# as the driver it most likely means, or against DeviceConfig for the fields every device has.


def unknown_drivers(doc: Located) -> dict[int, Any]:
    """Index → given driver value of each device whose driver is missing or not a known name."""
    devices = doc.data.get("devices") if isinstance(doc.data, dict) else None
    if not isinstance(devices, list):
        return {}
    return {i: d.get("driver") for i, d in enumerate(devices)
            if isinstance(d, dict) and d.get("driver") not in DRIVER_NAMES}


def _is_tag_error(error: Any, unknown: dict[int, Any]) -> bool:
    loc = tuple(error["loc"])
    return (error["type"] in ("union_tag_invalid", "union_tag_not_found", "union_tag_invalid_type")
            and len(loc) == 2 and loc[0] == "devices" and loc[1] in unknown)


def suggest_driver(given: Any) -> str | None:
    if not isinstance(given, str):
        return None
    close = difflib.get_close_matches(given.lower(), DRIVER_NAMES, n=1, cutoff=0.6)
    return close[0] if close else None


def driver_message(given: Any) -> str:
    known = ", ".join(DRIVER_NAMES)
    if given is None:
        return f"required field is missing: one of {known}"
    if not isinstance(given, str):
        return f"must be a driver name: one of {known}"
    close = suggest_driver(given)
    hint = f"; did you mean {close!r}?" if close else ""
    return f"unknown driver {given!r}{hint} ({known})"


def _driver_issues(doc: Located, unknown: dict[int, Any]) -> list[ConfigIssue]:
    issues = []
    for index, given in unknown.items():
        loc: tuple[Hashable, ...] = ("devices", index, "driver")
        issues.append(issue_at(doc, loc, driver_message(given)))
        # the rest of the device is checked as the driver it most likely means, or, with no
        # likely one, for the fields every device has
        likely = suggest_driver(given)
        model = DeviceConfig if likely is None else device_config_model(likely)
        try:
            model.model_validate({**doc.data["devices"][index], "driver": likely or "?"})
        except ValidationError as exc:
            errors = exc.errors()
            for error in errors:
                error["loc"] = ("devices", index, *error["loc"])
            issues += issues_from_validation_errors(errors, doc)
    return issues
