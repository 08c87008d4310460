"""``citytwin model check-binding CONFIG``: does each device's binding fit its thing model?

Beyond what the gateway refuses at start-up (a bound property, event or service the model
lacks, a service writing a read-only point), it checks what would only show at run time:
each bound property, and each service input written into a point, goes to its driver's
``check`` hook (drivers/registry.py), which knows the protocol (a register type that
cannot hold the range after scale and offset, an OPC UA node of another type, a writable
property on a point the driver cannot write). This module knows no protocol. It also
reports a service that writes a read-only property. Findings use the validator's format,
``file:line:col pointer: message [rule]``, with positions from the config's YAML.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any, Final

from citytwin.drivers.registry import PropertyUse, binding_models
from citytwin.gateway.config import ConfigError, DeviceConfig, GatewayConfig, parse_config
from citytwin.gateway.devicespec import compile_config, resolve_model
from citytwin.thingmodels.errors import ModelError, pointer
from citytwin.thingmodels.positions import DocumentSyntaxError, ParsedDocument, parse_yaml
from citytwin.thingmodels.rules import Severity
from citytwin.thingmodels.types import AccessMode, DataType, ThingModel
from citytwin.thingmodels.validator import Finding

BINDING_RULES: Final[dict[str, str]] = {
    "config": "the config file itself is invalid (schema, YAML)",
    "binding-model": "the device's thing model cannot be loaded",
    "binding-unknown": "a bound property, event, service, input or output the model lacks",
    "binding-type": "a point whose raw type cannot carry the property's data type "
                    "(a number in one bit or a string, text in a number, an integer in a float)",
    "binding-range": "the property's range (or enum values) does not fit the point's raw type "
                     "after scale and offset",
    "binding-writable": "a writable property, or a service write, bound to a point the driver "
                        "cannot write (a read-only table, node or resource; no set command)",
    "binding-readonly-write": "a service writes a property the model declares read-only",
    "binding-readable": "a property the model reports bound to a point the driver never reads "
                        "(no topic to read it from)",
    "binding-write-value": "a point's write command whose payload never carries the written value",
    "binding-call": "a service bound to a call on a driver without callable operations",
}
_CLASSIFY: Final = (
    ("invalid thing model", "binding-model"),
    ("has no callable operations", "binding-call"),
    ("has no ", "binding-unknown"),
    ("is not a bound property", "binding-unknown"),
    ("neither an output nor a bound property", "binding-unknown"),
    ("read-only", "binding-writable"),
    ("must be a writable point", "binding-writable"),
    ("cannot be bound to", "binding-type"),
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
    problems = compile_config(config, base_dir)[1]
    findings = [_finding(positions, source, loc, _classify(message), message) for loc, message in problems]
    seen = {(f.pointer, f.message) for f in findings}
    flagged = {tuple(loc) for loc, _ in problems}
    for loc, rule, message in _extra_checks(config, base_dir, flagged):
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


def _extra_checks(config: GatewayConfig, base_dir: Path, flagged: set[Loc]) -> list[tuple[Loc, str, str]]:
    problems: list[tuple[Loc, str, str]] = []
    for index, device in enumerate(config.devices):
        try:
            model = resolve_model(device.model, base_dir)
        except (ModelError, OSError, ValueError):
            continue  # compile_config has reported it
        problems.extend(_device(device, model, ("devices", index), flagged))
    return problems


def _use(data_type: DataType, point: Any, writable: bool, readable: bool) -> PropertyUse:
    return PropertyUse(data_type, writable, readable, point.scale, point.offset)


def _device(device: DeviceConfig, model: ThingModel, loc: Loc, flagged: set[Loc]) -> list[tuple[Loc, str, str]]:
    """The driver's own check of every bound property and every service input it writes."""
    check = binding_models(device.driver).check
    problems: list[tuple[Loc, str, str]] = []
    for name, point in device.points.items():
        prop = model.properties.get(name)
        at = (*loc, "points", name)
        if prop is None or at in flagged:  # compile_config has said why it cannot bind
            continue
        use = _use(prop.data_type, point, prop.writable, not prop.ext.get("writeOnly", False))
        for finding in check(point, use):
            problems.append(((*at, *finding.path), finding.rule, f"property {name!r}: {finding.message}"))
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
                if param is None:
                    continue
                for finding in check(point, _use(param.data_type, point, False, False)):
                    problems.append(((*step_loc, "value"), finding.rule,
                                     f"input {value[1:]!r} into {target!r}: {finding.message}"))
    return problems


def _targets(template: str, inputs: Any) -> list[str]:
    """The points a templated write can reach ("pump{pump}_run_cmd" over an enum input)."""
    if "{" not in template:
        return [template]
    names = re.findall(r"\{(\w+)\}", template)
    if len(names) != 1 or names[0] not in inputs or not inputs[names[0]].data_type.names:
        return []
    return [template.replace("{" + names[0] + "}", str(v)) for v in inputs[names[0]].data_type.names]
