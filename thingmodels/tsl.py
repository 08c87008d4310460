"""Alibaba TSL out of a model, and TSL documents into ours, losslessly.

A model parsed from TSL remembers how each node was written (``Written``): keys it does not
interpret, whether optional keys were present, numeric specs as strings or numbers, and the
default post/set/get entries. Exporting writes all of that back, so TSL -> model -> TSL gives
the same JSON up to key order. A model built otherwise is written the way Alibaba writes TSL
(numeric specs as strings). Our own document is TSL plus ``x-citytwin`` blocks and a
``modules`` list; a modular product is, in TSL, one document for the default module (listing
its ``functionBlocks``) and one per module carrying ``functionBlockId``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from citytwin.thingmodels.checks import number_text
from citytwin.thingmodels.datatypes import EXT
from citytwin.thingmodels.errors import pointer
from citytwin.thingmodels.types import (
    NUMERIC_KINDS,
    DataType,
    Event,
    Kind,
    Module,
    Param,
    Property,
    Service,
    ThingModel,
    Written,
)

SCHEMA_URL: Final = "https://iotx-tsl.oss-ap-southeast-1.aliyuncs.com/schema.json"
_BLOCK_KEYS: Final = ("functionBlockId", "functionBlockName")


@dataclass(frozen=True, slots=True)
class Loss:
    """Something the target format cannot say, at its pointer in our document."""

    pointer: str
    what: str

    def __str__(self) -> str:
        return f"{self.pointer or '/'}: {self.what}"


@dataclass(slots=True)
class TslExport:
    """The default module's TSL document, one document per module, and what was lost."""

    main: dict[str, Any]
    modules: dict[str, dict[str, Any]] = field(default_factory=dict)
    losses: list[Loss] = field(default_factory=list)


# -- out --------------------------------------------------------------------------------------


def to_tsl(model: ThingModel) -> TslExport:
    """TSL documents for ``model``; the ``x-citytwin`` blocks are listed as losses."""
    losses: list[Loss] = []
    main = _document(model, citytwin=False, losses=losses)
    if model.modules and "functionBlocks" not in model.written.extra:
        main["functionBlocks"] = [
            {"functionBlockId": m.identifier, "functionBlockName": m.name, "productKey": model.product_key}
            for m in model.modules.values()
        ]
    export = TslExport(main, losses=losses)
    for module in model.modules.values():
        doc = _document(module.model, citytwin=False, losses=losses, at=module.written.at)
        doc["functionBlockId"] = module.identifier
        doc["functionBlockName"] = module.name
        if module.ref is not None or "profile" not in doc:
            # a module is part of the product: its document names the product, not the model
            doc["profile"] = {"productKey": model.product_key}
        if module.description:
            losses.append(Loss(module.written.at, "module description (TSL function blocks have none)"))
        if module.ext:
            losses.append(Loss(pointer(module.written.at, EXT), _ext_loss(module.ext)))
        export.modules[module.identifier] = doc
    return export


def to_document(model: ThingModel) -> dict[str, Any]:
    """Our own document: TSL plus the extension blocks and the modules (inline or by name)."""
    doc = _document(model, citytwin=True, losses=[])
    if model.modules:
        doc["modules"] = [_module(m) for m in model.modules.values()]
    return doc


def _module(module: Module) -> dict[str, Any]:
    entry: dict[str, Any] = {"identifier": module.identifier, "name": module.name}
    if module.description or "desc" in module.written.keys:
        entry["desc"] = module.description
    if module.ref is not None:
        entry["model"] = module.ref
        entry.update(copy.deepcopy(dict(module.written.extra)))
    else:
        entry.update(_document(module.model, citytwin=True, losses=[]))
    if module.ext:
        entry[EXT] = copy.deepcopy(dict(module.ext))
    return entry


def _document(model: ThingModel, citytwin: bool, losses: list[Loss], at: str = "") -> dict[str, Any]:
    shape = model.written
    doc: dict[str, Any] = copy.deepcopy(dict(shape.extra))
    if not shape.keys:
        doc["schema"] = SCHEMA_URL
    if model.profile.product_key or "profile" in shape.keys:
        profile: dict[str, Any] = copy.deepcopy(dict(model.profile.written.extra))
        key_name = "identifier" if "identifier" in model.profile.written.keys else "productKey"
        profile[key_name] = model.product_key
        if model.profile.version is not None:
            profile["version"] = model.profile.version
        doc["profile"] = profile
    properties, events, services = model.own()
    sections: dict[str, list[Any]] = {
        "properties": [_property(p, citytwin, losses) for p in properties.values()],
        "events": [_event(e, citytwin, losses) for e in events.values()],
        "services": [_service(s, citytwin, losses) for s in services.values()],
    }
    for section, index, entry in shape.system:
        sections[section].insert(min(index, len(sections[section])), copy.deepcopy(entry))
    for section, items in sections.items():
        if items or section in shape.keys or not shape.keys:
            doc[section] = items
    _extension(doc, model.ext, citytwin, losses, at)
    return doc


def _extension(doc: dict[str, Any], ext: Mapping[str, Any], citytwin: bool, losses: list[Loss], at: str) -> None:
    if not ext:
        return
    if citytwin:
        doc[EXT] = copy.deepcopy(dict(ext))
    else:
        losses.append(Loss(pointer(at, EXT), _ext_loss(ext)))


def _ext_loss(ext: Mapping[str, Any]) -> str:
    return f"x-citytwin extension ({', '.join(ext)}) has no TSL equivalent"


def _optional(doc: dict[str, Any], shape: Written, key: str, value: Any, default: Any) -> None:
    """Write an optional key if the source had it, or if it says something (or no source)."""
    if key in shape.keys or value != default or not shape.keys:
        doc[key] = value


def _property(prop: Property, citytwin: bool, losses: list[Loss]) -> dict[str, Any]:
    shape = prop.written
    doc: dict[str, Any] = {"identifier": _local(prop.identifier), "name": prop.name, "accessMode": prop.access_mode.value}
    _optional(doc, shape, "required", prop.required, False)
    if prop.description or "desc" in shape.keys:
        doc["desc"] = prop.description
    doc["dataType"] = data_type_doc(prop.data_type, citytwin, losses)
    doc.update(copy.deepcopy(dict(shape.extra)))
    _extension(doc, prop.ext, citytwin, losses, shape.at)
    return doc


def _event(event: Event, citytwin: bool, losses: list[Loss]) -> dict[str, Any]:
    shape = event.written
    doc: dict[str, Any] = {"identifier": _local(event.identifier), "name": event.name, "type": event.type.value}
    _optional(doc, shape, "required", event.required, False)
    if event.description or "desc" in shape.keys:
        doc["desc"] = event.description
    if not shape.keys:
        doc["method"] = f"thing.event.{_local(event.identifier)}.post"
    doc.update(copy.deepcopy(dict(shape.extra)))
    _optional(doc, shape, "outputData", [_param(p, citytwin, losses) for p in event.output.values()], [])
    _extension(doc, event.ext, citytwin, losses, shape.at)
    return doc


def _service(service: Service, citytwin: bool, losses: list[Loss]) -> dict[str, Any]:
    shape = service.written
    doc: dict[str, Any] = {"identifier": _local(service.identifier), "name": service.name}
    _optional(doc, shape, "required", service.required, False)
    doc["callType"] = service.call_type.value
    if service.description or "desc" in shape.keys:
        doc["desc"] = service.description
    if not shape.keys:
        doc["method"] = f"thing.service.{_local(service.identifier)}"
    doc.update(copy.deepcopy(dict(shape.extra)))
    _optional(doc, shape, "inputData", [_param(p, citytwin, losses) for p in service.inputs.values()], [])
    _optional(doc, shape, "outputData", [_param(p, citytwin, losses) for p in service.outputs.values()], [])
    _extension(doc, service.ext, citytwin, losses, shape.at)
    return doc


def _param(param: Param, citytwin: bool, losses: list[Loss]) -> dict[str, Any]:
    doc: dict[str, Any] = {"identifier": param.identifier, "name": param.name}
    doc["dataType"] = data_type_doc(param.data_type, citytwin, losses)
    doc.update(copy.deepcopy(dict(param.written.extra)))
    _extension(doc, param.ext, citytwin, losses, param.written.at)
    return doc


def data_type_doc(dt: DataType, citytwin: bool = True, losses: list[Loss] | None = None) -> dict[str, Any]:
    """A data type as TSL writes it."""
    sink = losses if losses is not None else []
    shape = dt.written
    literals = shape.literals
    doc: dict[str, Any] = {"type": dt.type.value}
    specs: Any
    known: tuple[str, ...] = ()
    if dt.type in NUMERIC_KINDS:
        specs = {}
        for key, value in (("min", dt.min), ("max", dt.max), ("step", dt.step)):
            if value is not None:
                specs[key] = _number(literals.get(key), value)
        if dt.unit is not None:
            specs["unit"] = dt.unit
        if dt.unit_name is not None:
            specs["unitName"] = dt.unit_name
        known = ("min", "max", "step", "unit", "unitName")
    elif dt.type is Kind.BOOL or dt.type is Kind.ENUM:
        specs = {str(value): name for value, name in dt.names.items()}
        known = tuple(specs)
    elif dt.type is Kind.TEXT:
        assert dt.length is not None
        specs = {"length": _number(literals.get("length"), dt.length)}
        known = ("length",)
    elif dt.type is Kind.DATE:
        specs = {}
    elif dt.type is Kind.STRUCT:
        specs = [_param(f, citytwin, sink) for f in dt.fields]
    else:
        assert dt.item is not None and dt.size is not None
        specs = {"size": _number(literals.get("size"), dt.size), "item": data_type_doc(dt.item, citytwin, sink)}
        known = ("size", "item")
    if isinstance(specs, dict):
        specs.update({k: copy.deepcopy(v) for k, v in literals.items() if k not in known})
    if specs or "specs" in shape.keys or not shape.keys:
        doc["specs"] = specs
    doc.update(copy.deepcopy(dict(shape.extra)))
    return doc


def _number(written: Any, value: int | float) -> Any:
    """The spec as the source wrote it when it still says ``value``, else Alibaba's string."""
    if written is not None and not isinstance(written, bool):
        try:
            if float(written) == value:
                return written
        except (TypeError, ValueError):
            pass
    return number_text(value)


def _local(identifier: str) -> str:
    return identifier.rsplit(":", 1)[-1]


# -- in ---------------------------------------------------------------------------------------


def from_tsl(main: Mapping[str, Any], modules: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """Our document for a TSL product: the default module's document, plus module documents
    (each with ``functionBlockId``) written inline under ``modules``."""
    doc = copy.deepcopy(dict(main))
    if modules:
        doc["modules"] = []
        for module in modules:
            entry = copy.deepcopy(dict(module))
            identifier = entry.pop("functionBlockId", None)
            name = entry.pop("functionBlockName", None)
            doc["modules"].append({"identifier": identifier, "name": name or identifier, **entry})
    return doc


def is_module_document(doc: Mapping[str, Any]) -> bool:
    return "functionBlockId" in doc
