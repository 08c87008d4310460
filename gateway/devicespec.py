"""A device's config compiled against its thing model into what the runtime needs.

Cross-references that pydantic cannot see are checked here (a point bound to a property the
model lacks, a service writing a read-only table, an event output that is not in the model),
and reported with the same field paths as schema errors so they get file:line too.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

from pydantic import BaseModel

from citytwin.drivers.registry import BindingModels, binding_models
from citytwin.drivers.templates import input_reference, template_fields
from citytwin.gateway.conditions import Condition
from citytwin.gateway.config import DeviceConfig, GatewayConfig, ServiceBinding
from citytwin.gateway.interlocks import InterlockRule
from citytwin.gateway.twins import Layout
from citytwin.thingmodels.errors import ModelError
from citytwin.thingmodels.library import library_names, load_library_model
from citytwin.thingmodels.loader import load_model_json
from citytwin.thingmodels.types import Checker, Kind, ThingModel

Loc = tuple[Hashable, ...]


@dataclass(slots=True)
class PropertyPoint:
    """How one bound property turns a raw reading into a model value and back."""

    name: str
    kind: Kind
    scale: float
    offset: float
    deadband: float
    check: Checker
    binding: BaseModel  # the driver's own point binding
    writable: bool
    integer_raw: bool
    digits: int | None  # round engineering values to this many decimals (None: leave)
    significant: int | None  # or to this many significant digits (float32 sources)

    def to_value(self, raw: Any) -> Any:
        kind = self.kind
        if kind is Kind.BOOL:
            return bool(raw)
        value = raw * self.scale + self.offset if (self.scale != 1.0 or self.offset) else raw
        if kind is Kind.INT or kind is Kind.ENUM:
            return round(value)
        if isinstance(value, float):
            if not math.isfinite(value):
                return value
            if self.significant is not None:
                return float(f"{value:.{self.significant}g}")
            if self.digits is not None:
                return round(value, self.digits)
        return value

    def to_raw(self, value: Any) -> Any:
        if self.kind is Kind.BOOL:
            return bool(value)
        raw = (value - self.offset) / self.scale if (self.scale != 1.0 or self.offset) else value
        if self.integer_raw:
            return round(raw)
        return raw


class PointMap(dict[str, PropertyPoint]):
    """A device's compiled points, and what is derived from them computed once.

    The devices of one template share one point map (``CompileCache``), so the derived parts
    (the twin's property layout, the driver's bindings, the integer fast path) are built once
    for all of them, not per device: at 1,000 devices that is most of what a device costs.
    Never mutated once compiled.
    """

    __slots__ = ("_bindings", "_layout", "_plain")

    def __init__(self) -> None:
        super().__init__()
        self._layout: Layout | None = None
        self._plain: frozenset[str] | None = None
        self._bindings: dict[str, BaseModel] | None = None

    @property
    def layout(self) -> Layout:
        """The order in which twins and pipelines keep these properties' state."""
        if self._layout is None:
            self._layout = Layout(tuple(self))
        return self._layout

    @property
    def plain(self) -> frozenset[str]:
        """Integer properties with no scale or offset: an int raw value is the model value as is."""
        if self._plain is None:
            self._plain = frozenset(
                name for name, point in self.items()
                if point.kind in (Kind.INT, Kind.ENUM) and point.scale == 1.0 and not point.offset
            )
        return self._plain

    @property
    def bindings(self) -> Mapping[str, BaseModel]:
        """The driver's own point bindings (read-only: shared by every device of the map)."""
        if self._bindings is None:
            self._bindings = {n: p.binding for n, p in self.items()}
        return self._bindings


@dataclass(slots=True)
class EventRule:
    event: str
    type: str
    when: Condition
    clear: Condition | None
    output: dict[str, tuple[bool, Any]]  # name -> (is property reference, literal or property)


@dataclass(slots=True)
class DeviceSpec:
    config: DeviceConfig
    model: ThingModel
    points: PointMap
    outputs: dict[str, BaseModel]
    events: list[EventRule]
    services: dict[str, ServiceBinding]
    interlocks: list[InterlockRule] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.config.id

    def driver_points(self) -> Mapping[str, BaseModel]:
        """The driver's point bindings: shared by the devices of one point map unless this one
        has outputs of its own. Read-only: drivers never mutate it."""
        if not self.outputs:
            return self.points.bindings
        return {**self.points.bindings, **self.outputs}


def _decimals(scale: float) -> int:
    if scale == int(scale):
        return 0
    return min(12, max(0, -math.floor(math.log10(abs(scale) * (1 + 1e-9)))) + 1)


def resolve_model(ref: str, base_dir: Path) -> ThingModel:
    """A library model name, or a path to a JSON model relative to the config file."""
    if ref in library_names():
        return load_library_model(ref)
    path = (base_dir / ref) if not Path(ref).is_absolute() else Path(ref)
    if not path.exists():
        raise FileNotFoundError(
            f"model {ref!r} is neither a library model ({', '.join(library_names())}) nor a file"
        )
    return load_model_json(path.read_text(encoding="utf-8"), str(path))


_Model = TypeVar("_Model", bound=BaseModel)


@dataclass(slots=True)
class CompileCache:
    """Shared across one config's devices: 1,000 devices of one model parse it once and share
    equal point bindings (models and bindings are never mutated), which is most of the memory
    a large config costs (docs/performance.md)."""

    models: dict[str, ThingModel] = field(default_factory=dict)
    model_keys: dict[tuple[str, Path], str] = field(default_factory=dict)
    traits: dict[str, BindingModels] = field(default_factory=dict)
    bindings: dict[tuple[type[BaseModel], object], BaseModel] = field(default_factory=dict)
    # the devices of one template share one validated point map (gateway/templates_config.py):
    # it is compiled once, and they share the compiled map too. Keyed by identity (the key
    # objects are kept alive in the value, so an id is never reused while cached).
    point_maps: dict[tuple[int, int], tuple[object, PointMap, list[tuple[Loc, str]]]] = field(
        default_factory=dict)
    # compiled maps by content (model, and each name with its shared point's identity)
    equal_maps: dict[tuple[int, tuple[tuple[str, int], ...]], tuple[dict[str, Any], PointMap]] = field(default_factory=dict)
    # one compiled point per validated point object, property and model, for devices that
    # override some of a template's points and share the rest
    compiled: dict[tuple[int, str, int], tuple[BaseModel, PropertyPoint]] = field(default_factory=dict)

    def model(self, ref: str, base_dir: Path) -> ThingModel:
        key = self.model_keys.get((ref, base_dir))
        if key is None:  # resolving a path costs system calls: once per reference, not per device
            key = self.model_keys[(ref, base_dir)] = ref if ref in library_names() else str((base_dir / ref).resolve())
        model = self.models.get(key)
        if model is None:
            model = self.models[key] = resolve_model(ref, base_dir)
        return model

    def shared(self, point: _Model) -> _Model:
        """One instance per distinct validated point config (the duplicates are freed)."""
        return cast(_Model, self.bindings.setdefault(_content_key(point), point))

    def binding(self, kind: type[BaseModel], fields: dict[str, Any]) -> BaseModel:
        key = (kind, repr(sorted(fields.items())))
        binding = self.bindings.get(key)
        if binding is None:
            binding = self.bindings[key] = kind.model_validate(fields)
        return binding


def _content_key(model: BaseModel) -> tuple[type[BaseModel], object]:
    """What makes two validated models interchangeable: their type and field values.

    Each value's type is part of the key (``1``, ``1.0`` and ``True`` are equal and hash alike,
    but are not the same config); unhashable values (lists, maps) fall back to ``repr``, which
    this replaced on the hot path (pydantic's repr took 2 of the 5.6 s that 1,000 devices
    written out with 100 points each took to load).
    """
    values = tuple((v.__class__, v) for v in model.__dict__.values())
    try:
        hash(values)
    except TypeError:
        return type(model), repr(model)
    return type(model), values


def compile_device(
    config: DeviceConfig, loc: Loc, base_dir: Path, cache: CompileCache | None = None
) -> tuple[DeviceSpec | None, list[tuple[Loc, str]]]:
    issues: list[tuple[Loc, str]] = []
    cache = cache or CompileCache()
    traits = cache.traits.get(config.driver)
    if traits is None:
        traits = cache.traits[config.driver] = binding_models(config.driver)
    try:
        model = cache.model(config.model, base_dir)
    except ModelError as exc:
        return None, [(loc + ("model",), f"invalid thing model: {exc}")]
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return None, [(loc + ("model",), str(exc))]

    shared = cache.point_maps.get((id(config.points), id(model)))
    if shared is not None and shared[0] is config.points:
        points, found = shared[1], shared[2]
    else:
        found = []
        points = _compile_points(config, model, traits, cache, found)
        # devices written out in full with equal maps share one compiled map as a template's do
        # (their points are the cache's shared instances by now, so identity says equal)
        content = (id(model), tuple((name, id(point)) for name, point in config.points.items()))
        same = cache.equal_maps.get(content)
        if same is not None and not found:
            # and the same config map: this device's copy (its 100 key strings among them)
            # would stay scattered over the heap the load left behind, keeping it from shrinking
            config.points, points = same
        elif not found:
            cache.equal_maps[content] = (config.points, points)
        cache.point_maps[(id(config.points), id(model))] = (config.points, points, found)
    issues.extend((loc + rel, message) for rel, message in found)
    for name, output_point in config.outputs.items():
        if name in config.points:
            issues.append((loc + ("outputs", name), f"{name!r} is already a property point"))
        elif not traits.writable(output_point):
            issues.append((loc + ("outputs", name), "an output must be a writable point"))

    events = []
    for index, trigger in enumerate(config.events):
        name = trigger.event
        event = model.events.get(name)
        if event is None:
            issues.append((loc + ("events", index, "event"), f"model {model.product_key} has no event {name!r}"))
            continue
        conditions: list[Condition | None] = []
        for key in ("when", "clear"):
            text = getattr(trigger, key)
            if text is None:
                conditions.append(None)
                continue
            cond = Condition.parse(text)
            if cond.prop not in points:
                issues.append((loc + ("events", index, key), _not_bound(cond.prop, points)))
            conditions.append(cond)
        output: dict[str, tuple[bool, Any]] = {}
        for out_name, value in trigger.output.items():
            if out_name not in event.output:
                issues.append((loc + ("events", index, "output", out_name), f"event {name!r} has no output {out_name!r}"))
            is_ref = isinstance(value, str) and value.startswith("$")
            if is_ref and value[1:] not in points:
                issues.append((loc + ("events", index, "output", out_name), _not_bound(value[1:], points)))
            output[out_name] = (is_ref, value[1:] if is_ref else value)
        when, clear = conditions
        if when is not None:
            events.append(EventRule(name, str(event.type), when, clear, output))

    for name, service_binding in config.services.items():
        service = model.services.get(name)
        if service is None:
            issues.append((loc + ("services", name), f"model {model.product_key} has no service {name!r}"))
            continue
        if service_binding.call is not None and traits.call is None:
            issues.append((loc + ("services", name, "call"), f"driver {config.driver!r} has no callable operations; use 'writes'"))
        for index, step in enumerate(service_binding.writes):
            step_loc = loc + ("services", name, "writes", index)
            fields = template_fields(step.point)
            for f in fields:
                if f not in service.inputs:
                    issues.append((step_loc + ("point",), _no_input(name, f, service.inputs)))
            for target in _expand(step.point, fields, service.inputs):
                if target in config.outputs:
                    continue
                bound = points.get(target)
                if bound is None:
                    issues.append((step_loc + ("point",), f"{target!r} is neither an output nor a bound property"))
                elif not bound.writable:
                    issues.append((step_loc + ("point",), f"{target!r} is bound to a read-only point ({bound.binding})"))
            ref = input_reference(step.value)
            if ref is not None and ref not in service.inputs:
                issues.append((step_loc + ("value",), _no_input(name, ref, service.inputs)))

    interlocks = _compile_interlocks(config, model, points, loc, issues)
    if issues:
        return None, issues
    spec = DeviceSpec(config, model, points, dict(config.outputs), events, dict(config.services), interlocks)
    return spec, []


def _compile_points(
    config: DeviceConfig, model: ThingModel, traits: BindingModels, cache: CompileCache,
    issues: list[tuple[Loc, str]],
) -> PointMap:
    """Each bound property's compiled point; issues at paths relative to the device."""
    points = PointMap()
    for name, point in config.points.items():
        known = cache.compiled.get((id(point), name, id(model)))
        if known is None or known[0] is not point:
            # an equal point compiled before (devices written out in full repeat their maps)
            point = config.points[name] = cache.shared(point)
            known = cache.compiled.get((id(point), name, id(model)))
        if known is not None and known[0] is point:
            points[name] = known[1]
            continue
        prop = model.properties.get(name)
        if prop is None:
            issues.append((("points", name), f"model {model.product_key} has no property {name!r}"))
            continue
        kind = prop.data_type.type
        # the driver gets its own binding type, without the gateway's transform fields
        binding = cache.binding(traits.point, point.model_dump(include=set(traits.point.model_fields)))
        if kind not in (Kind.BOOL, Kind.INT, Kind.ENUM, Kind.FLOAT, Kind.DOUBLE, Kind.TEXT) or (kind is Kind.TEXT) != traits.text(binding):
            what = "a string point" if traits.text(binding) else "a driver point"
            issues.append((("points", name), f"a {kind} property cannot be bound to {what}"))
            continue
        significant = 7 if traits.float32(binding) else None
        digits = None if significant else _decimals(point.scale) + _decimals(point.offset)
        points[name] = PropertyPoint(
            name, kind, point.scale, point.offset, point.deadband, prop.check, binding,
            traits.writable(binding), traits.integer_raw(binding),
            digits if digits else None, significant,
        )
        cache.compiled[(id(point), name, id(model))] = (point, points[name])
    return points


def _not_bound(name: str, points: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(name, list(points), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{name!r} is not a bound property{hint}"


def _no_input(service: str, name: str, inputs: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(name, list(inputs), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"service {service!r} has no input {name!r}{hint}"


def _compile_interlocks(
    config: DeviceConfig, model: ThingModel, points: Mapping[str, PropertyPoint], loc: Loc,
    issues: list[tuple[Loc, str]],
) -> list[InterlockRule]:
    """Compile each rule once, checking every service, input and property it names."""
    rules = []
    for number, rule in enumerate(config.interlocks, 1):
        at = loc + ("interlocks", number - 1)
        services = []
        for index, name in enumerate(rule.services):
            service = model.services.get(name)
            if service is None:
                close = difflib.get_close_matches(name, list(model.services), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                issues.append((at + ("services", index), f"model {model.product_key} has no service {name!r}{hint}"))
            else:
                services.append(service)
        condition = None
        if rule.require is not None:
            condition = Condition.parse(rule.require)
            _check_property(condition.prop, condition.fields, services, points, at + ("require",), issues)
        change_prop = None
        if rule.max_change is not None:
            change = rule.max_change
            for service in services:
                if change.input not in service.inputs:
                    issues.append((at + ("max_change", "input"), _no_input(service.identifier, change.input, service.inputs)))
            change_prop = change.property
            _check_property(change_prop, template_fields(change_prop), services, points,
                            at + ("max_change", "property"), issues)
        if rule.per_input is not None:
            for service in services:
                if rule.per_input not in service.inputs:
                    issues.append((at + ("per_input",), _no_input(service.identifier, rule.per_input, service.inputs)))
        stale = rule.max_age or config.stale_after or 3 * config.poll_period
        rules.append(InterlockRule(number, rule, condition, change_prop, stale))
    return rules


def _check_property(
    template: str, fields: Sequence[str], services: Sequence[Any], points: Mapping[str, PropertyPoint],
    at: Loc, issues: list[tuple[Loc, str]],
) -> None:
    """A property (template) must be bound, for every value an enum input can take."""
    if not fields:
        if template not in points:
            issues.append((at, _not_bound(template, points)))
        return
    for service in services:
        missing = [f for f in fields if f not in service.inputs]
        for name in missing:
            issues.append((at, _no_input(service.identifier, name, service.inputs)))
        if missing:
            continue
        for target in _expand(template, list(fields), service.inputs):
            if target not in points:
                issues.append((at, _not_bound(target, points)))


def _expand(template: str, fields: list[str], inputs: Mapping[str, Any]) -> list[str]:
    """Every point name a templated write can reach (enum inputs enumerate; others are skipped)."""
    if not fields:
        return [template]
    choices: list[dict[str, Any]] = [{}]
    for f in fields:
        param = inputs.get(f)
        if param is None or not param.data_type.names:
            return []
        choices = [dict(c, **{f: v}) for c in choices for v in param.data_type.names]
    return [template.format(**c) for c in choices]


def compile_config(config: GatewayConfig, base_dir: Path) -> tuple[dict[str, DeviceSpec], list[tuple[Loc, str]]]:
    specs: dict[str, DeviceSpec] = {}
    issues: list[tuple[Loc, str]] = []
    cache = CompileCache()
    for index, device in enumerate(config.devices):
        spec, found = compile_device(device, ("devices", index), base_dir, cache)
        issues.extend(found)
        if spec is not None:
            specs[spec.id] = spec
    return specs, issues
