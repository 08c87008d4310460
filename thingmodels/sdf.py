"""OneDM SDF (RFC 9880) in: an SDF document (and the documents its ``sdfRef`` may reach) to
our document, with every loss listed.

sdfObject -> a model; sdfThing -> a model whose sdfObjects are modules (``pump_1:frequency``);
sdfProperty / sdfAction / sdfEvent -> properties / services / events; sdfChoice -> enum (or
bool); ``writable``/``readable`` -> accessMode and ``writeOnly``; SenML ``unit`` -> display
unit and UCUM code (``units``); ``sdfRequired`` -> ``required``. SDF has no event type and
no service call type: events come in as ``info``, services as ``async``. ``namespace``,
``defaultNamespace``, ``info`` and the definition's name ride along in a top-level ``x-sdf``
block, so an export gives them back. The pre-RFC ``odm*`` keywords are refused by name.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

from citytwin.thingmodels.errors import pointer
from citytwin.thingmodels.interchange import (
    listing,
    mapping,
    module_identifier,
    product_key,
    tsl_identifier,
)
from citytwin.thingmodels.sdfdata import DATA_QUALITIES, DEFINITION_ONLY, SdfData
from citytwin.thingmodels.sdfrefs import expand, namespace_uri
from citytwin.thingmodels.tsl import Loss

SDF_BLOCK: Final = "x-sdf"
CITYTWIN_URN: Final = "urn:citytwin:product:"
_LEGACY = re.compile(r"odm[A-Z][A-Za-z]*")


class SdfImportError(ValueError):
    """A document that cannot be imported at all (pre-RFC ``odm*`` keywords)."""


def legacy_keywords(doc: Any) -> list[str]:
    """The pre-RFC ``odm*`` keywords used anywhere as keys in ``doc``, sorted."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                if isinstance(key, str) and _LEGACY.fullmatch(key):
                    found.add(key)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(doc)
    return sorted(found)


def from_sdf(
    doc: Mapping[str, Any], others: Sequence[Mapping[str, Any]] = (), product: str | None = None
) -> tuple[dict[str, Any], list[Loss]]:
    """Our document for an SDF document, and what TSL could not take from it."""
    legacy = legacy_keywords(doc)
    if legacy:
        raise SdfImportError(
            f"pre-RFC OneDM keywords {', '.join(legacy)}: this file predates SDF 1.0 (RFC 9880 names them "
            "sdfObject, sdfProperty, sdfRef, ...); it is not converted"
        )
    expanded, problems = expand(doc, others)
    losses = [Loss(p.pointer, p.message) for p in problems]
    return _Importer(losses).document(doc, expanded, product), losses


def _referenced(doc: Any) -> set[str]:
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            ref = node.get("sdfRef")
            if isinstance(ref, str) and ref.startswith("#/"):
                found.add(ref[1:])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(doc)
    return found


def _named(node: Mapping[str, Any], key: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    value = node.get(key)
    if isinstance(value, Mapping):
        for name, entry in value.items():
            if isinstance(entry, Mapping):
                yield str(name), entry


class _Importer(SdfData):
    """The document's structure and features; ``SdfData`` converts the data definitions."""

    def __init__(self, losses: list[Loss]) -> None:
        super().__init__(losses)
        self.required: list[tuple[str, str]] = []  # (where the sdfRequired list is, entry)
        self.matched: set[tuple[str, str]] = set()

    # -- the document -----------------------------------------------------------------------

    def document(self, raw: Mapping[str, Any], doc: Mapping[str, Any], product: str | None) -> dict[str, Any]:
        referenced = _referenced(raw)
        tops = [(s, n, d) for s in ("sdfThing", "sdfObject") for n, d in _named(doc, s)]
        things = [t for t in tops if t[0] == "sdfThing"]
        chosen = things or tops
        unreferenced = [t for t in chosen if f"/{t[0]}/{t[1]}" not in referenced]
        chosen = unreferenced or chosen
        for key in doc:
            if key not in ("info", "namespace", "defaultNamespace", "sdfThing", "sdfObject", "sdfData",
                           "sdfProperty", "sdfAction", "sdfEvent"):
                self.lose(pointer("", str(key)), f"top-level {key!r} has no TSL place; dropped")
        for section in ("sdfProperty", "sdfAction", "sdfEvent"):
            if section in doc:
                self.lose(f"/{section}", f"top-level {section} outside any sdfObject or sdfThing is not a product feature; dropped")
        info = mapping(doc.get("info"))
        out: dict[str, Any] = {"profile": {"productKey": ""}}
        if isinstance(info.get("version"), str):
            out["profile"]["version"] = info["version"]
        ext: dict[str, Any] = {}
        if isinstance(info.get("title"), str) and info["title"]:
            ext["title"] = info["title"]
        block: dict[str, Any] = {k: doc[k] for k in ("namespace", "defaultNamespace", "info") if k in doc}
        name = "imported"
        out["properties"], out["events"], out["services"] = [], [], []
        if not chosen:
            self.lose("", "no sdfObject or sdfThing: nothing here is a product (sdfData alone defines types)")
        elif len(chosen) == 1:
            section, name, definition = chosen[0]
            at = f"/{section}/{name}"
            block["definition"] = f"{section}/{name}"
            if isinstance(definition.get("label"), str):
                block["label"] = definition["label"]
            if isinstance(definition.get("description"), str):
                ext["description"] = definition["description"]
            self.features(definition, at, out)
            if section == "sdfThing":
                out["modules"] = self.modules(definition, at)
                self.unknown(definition, at, DEFINITION_ONLY)
            else:
                self.unknown(definition, at, DEFINITION_ONLY - {"sdfObject", "sdfThing"})
        else:
            self.lose("", f"{len(chosen)} top-level definitions ({', '.join(n for _, n, _ in chosen)}): each becomes a module")
            taken: set[str] = set()
            out["modules"] = []
            for section, sub_name, definition in chosen:
                out["modules"].extend(self.module_tree(section, sub_name, definition, f"/{section}/{sub_name}", "", taken))
        uri = namespace_uri(doc)
        if product:
            key = product
        elif uri is not None and uri.startswith(CITYTWIN_URN):
            key = uri[len(CITYTWIN_URN):]
        else:
            prefix = doc.get("defaultNamespace")
            key = product_key(f"{prefix}.{name}" if isinstance(prefix, str) and prefix else name)
        out["profile"]["productKey"] = key
        for entry in self.required:
            if entry not in self.matched:
                self.lose(entry[0], f"sdfRequired entry {entry[1]!r} names no feature that was imported")
        if ext:
            out["x-citytwin"] = ext
        if block:
            out[SDF_BLOCK] = block
        return out

    def modules(self, thing: Mapping[str, Any], at: str) -> list[dict[str, Any]]:
        taken: set[str] = set()
        found: list[dict[str, Any]] = []
        for name, obj in _named(thing, "sdfObject"):
            found.extend(self.module_tree("sdfObject", name, obj, pointer(pointer(at, "sdfObject"), name), "", taken))
        for name, sub in _named(thing, "sdfThing"):
            found.extend(self.module_tree("sdfThing", name, sub, pointer(pointer(at, "sdfThing"), name), "", taken))
        return found

    def module_tree(
        self, section: str, name: str, definition: Mapping[str, Any], at: str, outer: str, taken: set[str]
    ) -> list[dict[str, Any]]:
        """A module for an sdfObject; an sdfThing inside a product is flattened into modules."""
        full = f"{outer}_{name}" if outer else name
        if section == "sdfObject":
            module: dict[str, Any] = {"identifier": module_identifier(full, at, self.losses, taken),
                                      "name": definition.get("label") or name}
            if isinstance(definition.get("description"), str):
                module["desc"] = definition["description"]
            self.features(definition, at, module)
            self.unknown(definition, at, DEFINITION_ONLY - {"sdfObject", "sdfThing"})
            for key in ("minItems", "maxItems"):
                if key in definition:
                    self.lose(pointer(at, key), f"{key}: an array of objects is one module in TSL")
            return [module]
        self.lose(at, f"sdfThing {name!r} inside the product: TSL modules do not nest; its parts become modules named {full}_…")
        found: list[dict[str, Any]] = []
        own: dict[str, Any] = {"identifier": "", "name": definition.get("label") or name}
        self.features(definition, at, own)
        if own["properties"] or own["events"] or own["services"]:
            own["identifier"] = module_identifier(full, at, self.losses, taken)
            found.append(own)
        for key in ("minItems", "maxItems"):
            if key in definition:
                self.lose(pointer(at, key), f"{key}: an array of things has no TSL form")
        for sub_name, obj in _named(definition, "sdfObject"):
            found.extend(self.module_tree("sdfObject", sub_name, obj, pointer(pointer(at, "sdfObject"), sub_name), full, taken))
        for sub_name, sub in _named(definition, "sdfThing"):
            found.extend(self.module_tree("sdfThing", sub_name, sub, pointer(pointer(at, "sdfThing"), sub_name), full, taken))
        return found

    # -- features ---------------------------------------------------------------------------

    def features(self, definition: Mapping[str, Any], at: str, out: dict[str, Any]) -> None:
        """The features of one object or thing; ``sdfRequired`` entries are matched by their
        last two tokens in the definition's own list (it may come through an sdfRef, naming
        the referenced path) and exactly in an enclosing thing's list."""
        own = [(pointer(at, "sdfRequired"), r) for r in listing(definition.get("sdfRequired")) if isinstance(r, str)]
        self.required.extend(own)
        taken: set[str] = set()

        def is_required(section: str, name: str) -> bool:
            found = False
            for entry in self.required:
                target = entry[1].lstrip("#")
                here = f"{at}/{section}/{name}"
                elsewhere = not target.startswith(at + "/")  # the path of a definition reached by sdfRef
                if target == here or (entry in own and elsewhere and target.endswith(f"/{section}/{name}")):
                    self.matched.add(entry)
                    found = True
            return found

        out["properties"] = []
        for name, prop in _named(definition, "sdfProperty"):
            entry = self.property(name, prop, pointer(pointer(at, "sdfProperty"), name), taken)
            if entry is not None:
                entry["required"] = is_required("sdfProperty", name)
                out["properties"].append(entry)
        out["services"] = []
        for name, action in _named(definition, "sdfAction"):
            action_at = pointer(pointer(at, "sdfAction"), name)
            entry = {"identifier": tsl_identifier(name, action_at, self.losses, taken=taken),
                     "name": action.get("label") or name, "callType": "async",
                     "required": is_required("sdfAction", name)}
            if isinstance(action.get("description"), str):
                entry["desc"] = action["description"]
            entry["inputData"] = self.params(action.get("sdfInputData"), pointer(action_at, "sdfInputData"), "input")
            entry["outputData"] = self.params(action.get("sdfOutputData"), pointer(action_at, "sdfOutputData"), "output")
            self.unknown(action, action_at, frozenset({"description", "label", "sdfInputData", "sdfOutputData", "sdfData", "sdfRequired"}))
            out["services"].append(entry)
        out["events"] = []
        for name, event in _named(definition, "sdfEvent"):
            event_at = pointer(pointer(at, "sdfEvent"), name)
            entry = {"identifier": tsl_identifier(name, event_at, self.losses, taken=taken),
                     "name": event.get("label") or name, "type": "info", "required": is_required("sdfEvent", name)}
            if isinstance(event.get("description"), str):
                entry["desc"] = event["description"]
            entry["outputData"] = self.params(event.get("sdfOutputData"), pointer(event_at, "sdfOutputData"), "output")
            self.unknown(event, event_at, frozenset({"description", "label", "sdfOutputData", "sdfData", "sdfRequired"}))
            out["events"].append(entry)

    def property(self, name: str, prop: Mapping[str, Any], at: str, taken: set[str]) -> dict[str, Any] | None:
        ext: dict[str, Any] = {}
        dt = self.data_type(prop, at, "param", ext)
        if dt is None:
            self.lose(at, f"property {name!r} has no type TSL can hold; dropped")
            return None
        writable = prop.get("writable", True) is not False
        readable = prop.get("readable", True) is not False
        if prop.get("observable") is False:
            self.lose(pointer(at, "observable"), "observable false: TSL properties are always reported")
        if writable and not readable:
            ext["writeOnly"] = True
        self.value_defaults(prop, at, dt, ext)
        entry: dict[str, Any] = {"identifier": tsl_identifier(name, at, self.losses, taken=taken),
                                 "name": prop.get("label") or name, "accessMode": "rw" if writable else "r"}
        if isinstance(prop.get("description"), str):
            entry["desc"] = prop["description"]
        entry["dataType"] = dt
        if ext:
            entry["x-citytwin"] = ext
        self.unknown(prop, at, DATA_QUALITIES)
        if "$comment" in prop:
            self.lose(pointer(at, "$comment"), "$comment has no TSL place; dropped")
        return entry

    def params(self, data: Any, at: str, role: str) -> list[dict[str, Any]]:
        if not isinstance(data, Mapping):
            return []
        if data.get("type") == "object" or ("properties" in data and "type" not in data):
            fields = mapping(data.get("properties"))
            required = [r for r in listing(data.get("required")) if isinstance(r, str)]
            if not fields:
                self.lose(at, "an object without properties: TSL has no parameter for it")
            elif set(fields) - set(required):
                self.lose(pointer(at, "required"), "optional parameters: TSL service inputs and outputs are all required")
            taken: set[str] = set()
            params = []
            for name, sub in fields.items():
                sub_at = pointer(pointer(at, "properties"), str(name))
                if isinstance(sub, Mapping):
                    param = self.param(str(name), sub, sub_at, taken)
                    if param is not None:
                        params.append(param)
            if fields and not params:
                self.lose(at, "no parameter here has a TSL type; the whole data definition is dropped")
            return params
        param = self.param(role, data, at, set())
        return [param] if param is not None else []
