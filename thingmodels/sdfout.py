"""OneDM SDF (RFC 9880) out: a model as one sdfObject, or, with modules, an sdfThing whose
sdfObjects are the modules, with every loss listed.

The export keeps to the qualities the OneDM playground's ``sdf-validation`` JSON Schema
allows (no extension qualities), so it validates there. What SDF cannot say goes to the loss
report: a service's call type, an event's type, a float's 32-bit precision, a unit without a
SenML name, a unit's display name, a semantic type. Enums and named bools become sdfChoice
with ``const`` values (a ``label`` where the name is not an SDF name); ``step`` becomes
``multipleOf``; a date becomes a ``unix-time`` number (seconds).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any, Final

from citytwin.thingmodels.errors import pointer
from citytwin.thingmodels.interchange import data_type_losses, feature_pointers, verbatim_losses
from citytwin.thingmodels.sdf import CITYTWIN_URN, SDF_BLOCK
from citytwin.thingmodels.tsl import Loss
from citytwin.thingmodels.types import (
    AccessMode,
    CallType,
    DataType,
    EventType,
    Kind,
    Param,
    ThingModel,
)
from citytwin.thingmodels.units import to_senml

_INFO_KEYS: Final = ("title", "version", "copyright", "license")
_ITEM_KEYS: Final = frozenset(
    {"type", "description", "sdfChoice", "minimum", "maximum", "enum", "format", "minLength", "maxLength",
     "properties", "required"}
)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def to_sdf(model: ThingModel) -> tuple[dict[str, Any], list[Loss]]:
    """An SDF document for ``model`` and what it could not say."""
    return _Exporter(model).document()


def _number(value: int | float) -> int | float:
    return int(value) if isinstance(value, float) and value.is_integer() and abs(value) < 1e16 else value


class _Exporter:
    def __init__(self, model: ThingModel) -> None:
        self.model = model
        self.losses: list[Loss] = []
        self.at = feature_pointers(model)

    def lose(self, at: str, what: str) -> None:
        self.losses.append(Loss(at, what))

    def document(self) -> tuple[dict[str, Any], list[Loss]]:
        model = self.model
        block = model.written.extra.get(SDF_BLOCK)
        block = block if isinstance(block, Mapping) else {}
        doc: dict[str, Any] = {}
        info = {k: v for k, v in (block.get("info") or {}).items() if k in _INFO_KEYS} if isinstance(block.get("info"), Mapping) else {}
        if model.ext.get("title"):
            info["title"] = model.ext["title"]
        else:
            info.pop("title", None)
        if model.profile.version:
            info["version"] = model.profile.version
        else:
            info.pop("version", None)
        if info:
            doc["info"] = info
        kind, name = "sdfThing" if model.modules else "sdfObject", model.product_key.rsplit(".", 1)[-1]
        definition = block.get("definition")
        if isinstance(definition, str) and "/" in definition:
            name = definition.split("/", 1)[1]
        namespace = dict(block["namespace"]) if isinstance(block.get("namespace"), Mapping) else {}
        default = block.get("defaultNamespace")
        derived = f"{default}.{name}" if isinstance(default, str) and default else name
        if derived != model.product_key:
            namespace["citytwin"] = CITYTWIN_URN + model.product_key
            default = "citytwin"
        if namespace:
            doc["namespace"] = namespace
        if isinstance(default, str):
            doc["defaultNamespace"] = default
        verbatim_losses(model.written, "", "SDF", self.losses, skip=(SDF_BLOCK,))
        body: dict[str, Any] = {}
        if isinstance(block.get("label"), str) and block["label"] != name:
            body["label"] = block["label"]
        if model.ext.get("description"):
            body["description"] = model.ext["description"]
        if model.ext.get("semanticType"):
            self.lose("/x-citytwin/semanticType", "a semantic type has no SDF quality")
        base = f"#/{kind}/{name}"
        self.features(model, "", base, body)
        if model.modules:
            objects: dict[str, Any] = {}
            for m_index, module in enumerate(model.modules.values()):
                at = f"/modules/{m_index}"
                obj: dict[str, Any] = {"label": module.name} if module.name != module.identifier else {}
                if module.description:
                    obj["description"] = module.description
                if module.ref is not None:
                    self.lose(pointer(at, "model"), f"module names model {module.ref!r}; SDF gets its features inline")
                if module.ext:
                    self.lose(pointer(at, "x-citytwin"), "a module's semantic type has no SDF quality")
                self.features(module.model, module.identifier, f"{base}/sdfObject/{module.identifier}", obj)
                objects[module.identifier] = obj
            body["sdfObject"] = objects
        doc[kind] = {name: body}
        return doc, self.losses

    def features(self, part: ThingModel, module: str, base: str, out: dict[str, Any]) -> None:
        prefix = f"{module}:" if module else ""
        required: list[str] = []
        properties, events, services = part.own()
        section_out: dict[str, Any] = {}
        for key, prop in properties.items():
            at = self.at[("properties", prefix + key)]
            verbatim_losses(prop.written, at, "SDF", self.losses)
            entry: dict[str, Any] = {}
            if prop.name != key:
                entry["label"] = prop.name
            if prop.description:
                entry["description"] = prop.description
            entry.update(self.schema(prop.data_type, prop.ext, at))
            if prop.access_mode is AccessMode.R:
                entry["writable"] = False
            elif prop.ext.get("writeOnly"):
                entry["readable"] = False
            self.semantic(prop.ext, at)
            section_out[key] = entry
            if prop.required:
                required.append(f"{base}/sdfProperty/{key}")
        if section_out:
            out["sdfProperty"] = section_out
        actions: dict[str, Any] = {}
        for key, service in services.items():
            at = self.at[("services", prefix + key)]
            verbatim_losses(service.written, at, "SDF", self.losses)
            entry = {}
            if service.name != key:
                entry["label"] = service.name
            if service.description:
                entry["description"] = service.description
            if service.inputs:
                entry["sdfInputData"] = self.params(service.inputs, "input", pointer(at, "inputData"))
            if service.outputs:
                entry["sdfOutputData"] = self.params(service.outputs, "output", pointer(at, "outputData"))
            if service.call_type is CallType.SYNC:
                self.lose(pointer(at, "callType"), "SDF has no service call type (sync)")
            self.semantic(service.ext, at)
            actions[key] = entry
            if service.required:
                required.append(f"{base}/sdfAction/{key}")
        if actions:
            out["sdfAction"] = actions
        events_out: dict[str, Any] = {}
        for key, event in events.items():
            at = self.at[("events", prefix + key)]
            verbatim_losses(event.written, at, "SDF", self.losses)
            entry = {}
            if event.name != key:
                entry["label"] = event.name
            if event.description:
                entry["description"] = event.description
            if event.output:
                entry["sdfOutputData"] = self.params(event.output, "output", pointer(at, "outputData"))
            if event.type is not EventType.INFO:
                self.lose(pointer(at, "type"), f"SDF has no event type ({event.type})")
            self.semantic(event.ext, at)
            events_out[key] = entry
            if event.required:
                required.append(f"{base}/sdfEvent/{key}")
        if events_out:
            out["sdfEvent"] = events_out
        if required:
            out["sdfRequired"] = required

    def semantic(self, ext: Mapping[str, Any], at: str) -> None:
        if ext.get("semanticType"):
            self.lose(pointer(pointer(at, "x-citytwin"), "semanticType"), "a semantic type has no SDF quality")

    def params(self, params: Mapping[str, Param], single: str, at: str) -> dict[str, Any]:
        items = list(params.values())
        if len(items) == 1 and items[0].identifier == single:
            return self.param(items[0], single, pointer(at, 0))
        return {
            "type": "object",
            "properties": {p.identifier: self.param(p, p.identifier, pointer(at, i)) for i, p in enumerate(items)},
            "required": [p.identifier for p in items],
        }

    def param(self, param: Param, key: str, at: str) -> dict[str, Any]:
        verbatim_losses(param.written, at, "SDF", self.losses)
        entry: dict[str, Any] = {}
        if param.name != key:
            entry["label"] = param.name
        entry.update(self.schema(param.data_type, param.ext, at))
        self.semantic(param.ext, at)
        return entry

    def schema(self, dt: DataType, ext: Mapping[str, Any], at: str, type_at: str | None = None) -> dict[str, Any]:
        """The SDF data qualities for a TSL data type (with ``default`` from the extension)."""
        type_at = type_at or pointer(at, "dataType")
        data_type_losses(dt, type_at, "SDF", self.losses)
        specs_at = pointer(type_at, "specs")
        kind = dt.type
        out: dict[str, Any]
        if kind in (Kind.INT, Kind.FLOAT, Kind.DOUBLE):
            out = {"type": "integer" if kind is Kind.INT else "number"}
            if dt.min is not None:
                out["minimum"] = _number(dt.min)
            if dt.max is not None:
                out["maximum"] = _number(dt.max)
            if dt.step is not None:
                out["multipleOf"] = _number(dt.step)
            ucum = ext.get("ucum")
            senml = to_senml(ucum if isinstance(ucum, str) else None, dt.unit)
            if senml is not None:
                out["unit"] = senml
            elif dt.unit or ucum:
                self.lose(pointer(specs_at, "unit"), f"unit {dt.unit or ucum!r} has no SenML name")
                if ucum:
                    self.lose(pointer(pointer(at, "x-citytwin"), "ucum"), f"UCUM code {ucum!r} has no SenML name")
            if dt.unit_name:
                self.lose(pointer(specs_at, "unitName"), f"unit display name {dt.unit_name!r} has no SDF quality")
            if kind is Kind.FLOAT:
                self.lose(pointer(type_at, "type"), "float is 32-bit in TSL; SDF numbers have no precision")
        elif kind is Kind.BOOL:
            out = {"type": "boolean"}
            if dict(dt.names) != {0: "false", 1: "true"}:
                out["sdfChoice"] = self.choices([(False, dt.names.get(0, "false")), (True, dt.names.get(1, "true"))])
        elif kind is Kind.ENUM:
            out = {"type": "integer", "sdfChoice": self.choices(list(dt.names.items()))}
        elif kind is Kind.TEXT:
            out = {"type": "string", "maxLength": dt.length}
        elif kind is Kind.DATE:
            out = {"type": "number", "sdfType": "unix-time"}
            self.lose(pointer(type_at, "type"), "date (epoch milliseconds as a string) becomes unix-time (seconds, a number)")
        elif kind is Kind.STRUCT:
            fields = dt.fields
            out = {
                "type": "object",
                "properties": {f.identifier: self.param(f, f.identifier, pointer(specs_at, i)) for i, f in enumerate(fields)},
                "required": [f.identifier for f in fields],
            }
        else:
            assert dt.item is not None
            item = self.schema(dt.item, {}, at, pointer(specs_at, "item"))
            for key in sorted(set(item) - _ITEM_KEYS):
                where = {"unit": "specs/unit", "multipleOf": "specs/step", "sdfType": "type"}.get(key, key)
                self.lose(f"{specs_at}/item/{where}", f"{key} of array items has no place in SDF items")
                item.pop(key)
            out = {"type": "array", "maxItems": dt.size, "items": item}
        if "default" in ext:
            value = copy.deepcopy(ext["default"])
            if kind is Kind.DATE:
                value = int(value) / 1000
            out["default"] = value
        return out

    def choices(self, values: list[tuple[Any, str]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for value, label in values:
            name = label if _NAME.fullmatch(label) else re.sub(r"[^A-Za-z0-9_]", "_", label).strip("_")
            if not _NAME.fullmatch(name):
                name = f"v_{name}" if name else f"v_{str(value).lower()}"
            base, n = name, 2
            while name in out:
                name, n = f"{base}_{n}", n + 1
            alt: dict[str, Any] = {"const": value}
            if name != label:
                alt["label"] = label
            out[name] = alt
        return out
