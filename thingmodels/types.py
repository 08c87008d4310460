"""The parsed thing model: immutable values, each property and parameter carrying the checker
compiled for its data type, so validating a value on the hot path is one closure call.

Build models with ``loader.parse_model``; constructing these classes by hand skips every
document check and requires compiled ``check``/``normalize`` callables from ``checks``.

Two things ride along that the runtime never reads: ``ext``, the validated ``x-citytwin``
extension block (semantic type, UCUM code, default, write-only), and ``written``, how the
source document spelled the node, so that a TSL export reproduces the TSL it came from.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Checker = Callable[[Any], str | None]
"""Returns None for a valid value, else a short human reason such as ``12.5 is above max 6``."""

Normalizer = Callable[[Any], Any]
"""Maps a value its checker accepted to the canonical form sent to devices (0/1 -> bool, ...)."""

MODULE_SEPARATOR = ":"
"""Joins a module and a feature identifier (``pump_1:frequency``), as TSL addresses the
features of a custom module (function block)."""


class Kind(enum.StrEnum):
    INT = "int"
    FLOAT = "float"
    DOUBLE = "double"
    BOOL = "bool"
    ENUM = "enum"
    TEXT = "text"
    DATE = "date"
    STRUCT = "struct"
    ARRAY = "array"


NUMERIC_KINDS = frozenset({Kind.INT, Kind.FLOAT, Kind.DOUBLE})


class AccessMode(enum.StrEnum):
    R = "r"
    RW = "rw"


class EventType(enum.StrEnum):
    INFO = "info"
    ALERT = "alert"
    ERROR = "error"


class CallType(enum.StrEnum):
    SYNC = "sync"
    ASYNC = "async"


@dataclass(frozen=True, slots=True)
class Written:
    """How a node was written: what a lossless re-export needs and the model does not carry.

    ``at`` is the node's JSON pointer in its source document, ``keys`` the keys present,
    ``extra`` the keys the model does not interpret (verbatim), ``literals`` a data type's
    specs as written ("0" or 0), ``system`` a model's TSL default entries (post/set/get) as
    (section, index, entry).
    """

    at: str = ""
    keys: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)
    literals: Mapping[str, Any] = field(default_factory=dict)
    system: tuple[tuple[str, int, Any], ...] = ()


NOT_WRITTEN = Written()


@dataclass(frozen=True, slots=True)
class DataType:
    """A value's type and its specs; fields that do not apply to ``type`` stay at defaults.

    ``names`` maps bool (0/1) and enum values to display names; ``length`` bounds text,
    ``size`` and ``item`` describe arrays, ``fields`` structs. Numbers keep the precision
    of the document (int specs are ints).
    """

    type: Kind
    min: int | float | None = None
    max: int | float | None = None
    step: int | float | None = None
    unit: str | None = None
    unit_name: str | None = None
    names: Mapping[int, str] = field(default_factory=dict)
    length: int | None = None
    size: int | None = None
    item: DataType | None = None
    fields: tuple[Param, ...] = ()
    written: Written = field(default=NOT_WRITTEN, compare=False, repr=False, kw_only=True)


@dataclass(frozen=True, slots=True)
class Param:
    """An event output, service input/output or struct field."""

    identifier: str
    name: str
    data_type: DataType
    check: Checker = field(compare=False, repr=False, kw_only=True)
    normalize: Normalizer = field(compare=False, repr=False, kw_only=True)
    ext: Mapping[str, Any] = field(default_factory=dict, kw_only=True)
    written: Written = field(default=NOT_WRITTEN, compare=False, repr=False, kw_only=True)


@dataclass(frozen=True, slots=True)
class Property:
    identifier: str
    name: str
    data_type: DataType
    access_mode: AccessMode
    required: bool = False
    description: str = ""
    check: Checker = field(compare=False, repr=False, kw_only=True)
    normalize: Normalizer = field(compare=False, repr=False, kw_only=True)
    ext: Mapping[str, Any] = field(default_factory=dict, kw_only=True)
    written: Written = field(default=NOT_WRITTEN, compare=False, repr=False, kw_only=True)

    @property
    def writable(self) -> bool:
        return self.access_mode is AccessMode.RW


@dataclass(frozen=True, slots=True)
class Event:
    identifier: str
    name: str
    type: EventType
    output: Mapping[str, Param]
    description: str = ""
    required: bool = False
    ext: Mapping[str, Any] = field(default_factory=dict, kw_only=True)
    written: Written = field(default=NOT_WRITTEN, compare=False, repr=False, kw_only=True)


@dataclass(frozen=True, slots=True)
class Service:
    identifier: str
    name: str
    call_type: CallType
    inputs: Mapping[str, Param]
    outputs: Mapping[str, Param]
    description: str = ""
    required: bool = False
    ext: Mapping[str, Any] = field(default_factory=dict, kw_only=True)
    written: Written = field(default=NOT_WRITTEN, compare=False, repr=False, kw_only=True)


@dataclass(frozen=True, slots=True)
class Profile:
    product_key: str
    version: str | None = None
    written: Written = field(default=NOT_WRITTEN, compare=False, repr=False, kw_only=True)


@dataclass(frozen=True, slots=True)
class Module:
    """A custom module (TSL function block): another model's features under one prefix.

    ``model`` holds the module's features with their own identifiers; the composed model
    lists them again, qualified (``pump_1:frequency``). ``ref`` names the model it was made
    from (a library name or a file), or is None when the features are written inline.
    """

    identifier: str
    name: str
    model: ThingModel
    ref: str | None = None
    description: str = ""
    ext: Mapping[str, Any] = field(default_factory=dict, kw_only=True)
    written: Written = field(default=NOT_WRITTEN, compare=False, repr=False, kw_only=True)


@dataclass(frozen=True, slots=True)
class ThingModel:
    """One product's model; sections keep document order and are keyed by identifier.

    With modules, each section lists the default module's features first, then every
    module's features under qualified keys (``pump_1:frequency``), so the runtime checks a
    module's values exactly like the default module's.
    """

    profile: Profile
    properties: Mapping[str, Property]
    events: Mapping[str, Event]
    services: Mapping[str, Service]
    modules: Mapping[str, Module] = field(default_factory=dict)
    ext: Mapping[str, Any] = field(default_factory=dict, kw_only=True)
    written: Written = field(default=NOT_WRITTEN, compare=False, repr=False, kw_only=True)

    @property
    def product_key(self) -> str:
        return self.profile.product_key

    def own(self) -> tuple[dict[str, Property], dict[str, Event], dict[str, Service]]:
        """The default module's features only (no module prefix)."""
        return (
            {k: v for k, v in self.properties.items() if MODULE_SEPARATOR not in k},
            {k: v for k, v in self.events.items() if MODULE_SEPARATOR not in k},
            {k: v for k, v in self.services.items() if MODULE_SEPARATOR not in k},
        )

    def check_service_input(self, service_id: str, inputs: Mapping[str, Any]) -> list[str]:
        """Every problem with a service call's inputs, one message each; [] when valid."""
        service = self.services.get(service_id)
        if service is None:
            return [f"unknown service {service_id!r}"]
        problems: list[str] = []
        params = service.inputs
        for identifier, param in params.items():
            if identifier not in inputs:
                problems.append(f"missing input {identifier!r}")
                continue
            reason = param.check(inputs[identifier])
            if reason is not None:
                problems.append(f"input {identifier!r}: {reason}")
        problems.extend(f"unknown input {key!r}" for key in inputs if key not in params)
        return problems

    def check_property_set(self, values: Mapping[str, Any]) -> list[str]:
        """Every problem with a property-set command, one message each; [] when valid."""
        problems: list[str] = []
        properties = self.properties
        for identifier, value in values.items():
            prop = properties.get(identifier)
            if prop is None:
                problems.append(f"unknown property {identifier!r}")
            elif prop.access_mode is not AccessMode.RW:
                problems.append(f"property {identifier!r} is read-only")
            else:
                reason = prop.check(value)
                if reason is not None:
                    problems.append(f"property {identifier!r}: {reason}")
        return problems
