"""``citytwin model check-binding CONFIG``: does each device's binding fit its thing model?

Beyond what the gateway refuses at start-up (a bound property, event or service the model
lacks, a service writing a read-only table), it checks what would only show at run time: a
register type that cannot hold the property's range after scale and offset, an integer
property read from a float register, a writable property or service bound to a read-only
table, a service that writes a read-only property. Findings use the validator's format,
``file:line:col pointer: message [rule]``, with positions from the config's YAML.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any, Final

from citytwin.gateway.config import ConfigError, DeviceConfig, GatewayConfig, parse_config
from citytwin.gateway.devicespec import compile_config, resolve_model
from citytwin.thingmodels.errors import ModelError, pointer
from citytwin.thingmodels.positions import DocumentSyntaxError, ParsedDocument, parse_yaml
from citytwin.thingmodels.rules import Severity
from citytwin.thingmodels.types import AccessMode, DataType, Kind, ThingModel
from citytwin.thingmodels.validator import Finding

READ_ONLY_TABLES: Final = frozenset({"input_register", "discrete_input"})
BIT_TABLES: Final = frozenset({"coil", "discrete_input"})
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
BINDING_RULES: Final[dict[str, str]] = {
    "config": "the config file itself is invalid (schema, YAML)",
    "binding-model": "the device's thing model cannot be loaded",
    "binding-unknown": "a bound property, event, service, input or output the model lacks",
    "binding-type": "a register type that cannot carry the property's data type",
    "binding-range": "the property's range does not fit the register after scale and offset",
    "binding-writable": "a writable property or a service write bound to a read-only table",
    "binding-readonly-write": "a service writes a property the model declares read-only",
}
_CLASSIFY: Final = (
    ("invalid thing model", "binding-model"),
    ("has no ", "binding-unknown"),
    ("is not a bound property", "binding-unknown"),
    ("neither an output nor a bound property", "binding-unknown"),
    ("read-only", "binding-writable"),
    ("must be a coil or holding_register", "binding-writable"),
    ("cannot be bound to a Modbus point", "binding-type"),
)
_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")

Loc = tuple[Hashable, ...]


def check_binding_text(text: str, source: str, base_dir: Path) -> list[Finding]:
    """Every binding problem in a gateway config, in line order."""
    try:
        positions = parse_yaml(text)
    except DocumentSyntaxError as exc:
        return [Finding(source, exc.position.line, exc.position.column, "", "config", Severity.ERROR, exc.message)]
    try:
        config, _doc = parse_config(text, source)
    except ConfigError as exc:
        return [_finding(positions, source, _loc_of(i.path), "config", i.message) for i in exc.issues]
    findings = [
        _finding(positions, source, loc, _classify(message), message)
        for loc, message in compile_config(config, base_dir)[1]
    ]
    seen = {(f.pointer, f.message) for f in findings}
    for loc, rule, message in _extra_checks(config, base_dir):
        finding = _finding(positions, source, loc, rule, message)
        if (finding.pointer, finding.message) not in seen:
            findings.append(finding)
    findings.sort(key=lambda f: (f.line, f.column))
    return findings


def _classify(message: str) -> str:
    return next((rule for text, rule in _CLASSIFY if text in message), "binding-unknown")


def _loc_of(path: str) -> Loc:
    return tuple(int(index) if index else name for name, index in _PATH_PART.findall(path))


def _finding(positions: ParsedDocument, source: str, loc: Sequence[Hashable], rule: str, message: str) -> Finding:
    at = ""
    for part in loc:
        at = pointer(at, str(part))
    where = positions.position_of(at)
    return Finding(source, where.line, where.column, at, rule, Severity.ERROR, message)


def _extra_checks(config: GatewayConfig, base_dir: Path) -> list[tuple[Loc, str, str]]:
    problems: list[tuple[Loc, str, str]] = []
    for index, device in enumerate(config.devices):
        try:
            model = resolve_model(device.model, base_dir)
        except (ModelError, OSError, ValueError):
            continue  # compile_config has reported it
        problems.extend(_device(device, model, ("devices", index)))
    return problems


def _device(device: DeviceConfig, model: ThingModel, loc: Loc) -> list[tuple[Loc, str, str]]:
    problems: list[tuple[Loc, str, str]] = []
    for name, point in device.points.items():
        prop = model.properties.get(name)
        if prop is None:
            continue
        at = (*loc, "points", name)
        kind = prop.data_type.type
        if prop.access_mode is AccessMode.RW and point.table in READ_ONLY_TABLES:
            problems.append(((*at, "table"), "binding-writable",
                             f"writable property {name!r} is bound to a read-only {point.table}"))
        if kind in (Kind.INT, Kind.ENUM, Kind.FLOAT, Kind.DOUBLE) and point.table in BIT_TABLES:
            problems.append(((*at, "table"), "binding-type", f"a {kind} property cannot be read from a {point.table} (one bit)"))
            continue
        if kind in (Kind.INT, Kind.ENUM) and point.type in ("float32", "float64") and point.scale == 1.0:
            problems.append(((*at, "type"), "binding-type",
                             f"{kind} property {name!r} is read from a {point.type} register; use an integer type"))
        message = _range_problem(prop.data_type, point.type, point.scale, point.offset)
        if message is not None:
            problems.append(((*at, "type"), "binding-range", f"property {name!r}: {message}"))
    for service_id, binding in device.services.items():
        service = model.services.get(service_id)
        if service is None:
            continue
        for step_index, step in enumerate(binding.writes):
            step_loc = (*loc, "services", service_id, "writes", step_index)
            for target in _targets(step.point, service.inputs):
                prop = model.properties.get(target)
                if prop is not None and prop.access_mode is AccessMode.R:
                    problems.append(((*step_loc, "point"), "binding-readonly-write",
                                     f"service {service_id!r} writes {target!r}, which the model declares read-only"))
                point = device.points.get(target)
                value = step.value
                if point is None or not (isinstance(value, str) and value.startswith("$")):
                    continue
                param = service.inputs.get(value[1:])
                if param is not None:
                    message = _range_problem(param.data_type, point.type, point.scale, point.offset)
                    if message is not None:
                        problems.append(((*step_loc, "value"), "binding-range", f"input {value[1:]!r} into {target!r}: {message}"))
    return problems


def _targets(template: str, inputs: Any) -> list[str]:
    """The points a templated write can reach ("pump{pump}_run_cmd" over an enum input)."""
    if "{" not in template:
        return [template]
    names = re.findall(r"\{(\w+)\}", template)
    if len(names) != 1 or names[0] not in inputs or not inputs[names[0]].data_type.names:
        return []
    return [template.replace("{" + names[0] + "}", str(v)) for v in inputs[names[0]].data_type.names]


def _range_problem(dt: DataType, register: str, scale: float, offset: float) -> str | None:
    raw = RAW_RANGE.get(register)
    if raw is None or dt.type not in (Kind.INT, Kind.ENUM, Kind.FLOAT, Kind.DOUBLE):
        return None
    ends = (raw[0] * scale + offset, raw[1] * scale + offset)
    low, high = min(ends), max(ends)
    wanted = [v for v in (dt.min, dt.max) if v is not None] or list(dt.names)
    if not wanted:
        return None
    if min(wanted) < low or max(wanted) > high:
        span = f"{_num(min(wanted))}..{_num(max(wanted))}"
        transform = "" if (scale, offset) == (1.0, 0.0) else f" with scale {_num(scale)} and offset {_num(offset)}"
        return f"range {span} does not fit {register}{transform} ({_num(low)}..{_num(high)})"
    return None


def _num(value: float) -> str:
    return f"{value:.10g}"
