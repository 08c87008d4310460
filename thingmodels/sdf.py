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

from citytwin.thingmodels.checks import INT32_MAX, INT32_MIN, compile_check
from citytwin.thingmodels.datatypes import MAX_ARRAY_SIZE, MAX_TEXT_LENGTH, DataTypeParser
from citytwin.thingmodels.errors import pointer
from citytwin.thingmodels.interchange import (
    listing,
    mapping,
    module_identifier,
    product_key,
    tsl_identifier,
)
from citytwin.thingmodels.sdfrefs import QUALITIES, expand, namespace_uri
from citytwin.thingmodels.tsl import Loss
from citytwin.thingmodels.units import from_senml

SDF_BLOCK: Final = "x-sdf"
CITYTWIN_URN: Final = "urn:citytwin:product:"
_LEGACY = re.compile(r"odm[A-Z][A-Za-z]*")
_FEATURES: Final = ("sdfProperty", "sdfAction", "sdfEvent")
_DATA: Final = QUALITIES - {"sdfProperty", "sdfAction", "sdfEvent", "sdfData", "sdfObject", "sdfThing", "sdfRequired",
                             "sdfInputData", "sdfOutputData"}
_DEFINITION_ONLY: Final = frozenset(
    {"description", "label", "$comment", "sdfRequired", "sdfProperty", "sdfAction", "sdfEvent", "sdfData",
     "sdfObject", "sdfThing", "minItems", "maxItems"}
)


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


class _Importer:
    def __init__(self, losses: list[Loss]) -> None:
        self.losses = losses

    def lose(self, at: str, what: str) -> None:
        self.losses.append(Loss(at, what))

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
                self.unknown(definition, at, _DEFINITION_ONLY)
            else:
                self.unknown(definition, at, _DEFINITION_ONLY - {"sdfObject", "sdfThing"})
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
            self.unknown(definition, at, _DEFINITION_ONLY - {"sdfObject", "sdfThing"})
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

    def unknown(self, node: Mapping[str, Any], at: str, allowed: frozenset[str]) -> None:
        for key in node:
            if key not in allowed and key != "sdfRef":
                self.lose(pointer(at, str(key)), f"quality {key!r} has no TSL place; dropped")

    # -- features ---------------------------------------------------------------------------

    def features(self, definition: Mapping[str, Any], at: str, out: dict[str, Any]) -> None:
        required = definition.get("sdfRequired")
        wanted = {r.lstrip("#") for r in required if isinstance(r, str)} if isinstance(required, list) else set()
        taken: set[str] = set()

        def is_required(section: str, name: str) -> bool:
            return any(r.endswith(f"/{section}/{name}") for r in wanted)

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
        self.unknown(prop, at, _DATA)
        if "$comment" in prop:
            self.lose(pointer(at, "$comment"), "$comment has no TSL place; dropped")
        return entry

    def params(self, data: Any, at: str, role: str) -> list[dict[str, Any]]:
        if not isinstance(data, Mapping):
            return []
        if data.get("type") == "object" or ("properties" in data and "type" not in data):
            fields = mapping(data.get("properties"))
            required = listing(data.get("required"))
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

    def param(self, name: str, data: Mapping[str, Any], at: str, taken: set[str], role: str = "param") -> dict[str, Any] | None:
        ext: dict[str, Any] = {}
        dt = self.data_type(data, at, role, ext)
        if dt is None:
            self.lose(at, f"parameter {name!r} has no type TSL can hold; dropped")
            return None
        self.value_defaults(data, at, dt, ext)
        ext.pop("writeOnly", None)
        entry: dict[str, Any] = {"identifier": tsl_identifier(name, at, self.losses, feature=False, taken=taken),
                                 "name": data.get("label") or name, "dataType": dt}
        if isinstance(data.get("description"), str):
            self.lose(pointer(at, "description"), "a parameter description has no TSL place")
        for key in ("writable", "readable", "observable"):
            if key in data:
                self.lose(pointer(at, key), f"{key} means nothing on a parameter")
        self.unknown(data, at, _DATA)
        if ext:
            entry["x-citytwin"] = ext
        return entry

    def value_defaults(self, node: Mapping[str, Any], at: str, dt: dict[str, Any], ext: dict[str, Any]) -> None:
        """``default`` (and ``const``, which TSL lacks) become the extension's default."""
        for key in ("default", "const"):
            if key not in node:
                continue
            value = node[key]
            parser = DataTypeParser()
            parsed = parser.data_type(dt, "", "param")
            fits = parsed is not None and compile_check(parsed)(_tsl_value(value, dt)) is None
            if key == "const":
                self.lose(at, f"const {value!r}: TSL has no constant"
                          + ("; kept as the default" if fits and "default" not in node else ""))
            if fits and "default" not in ext:
                ext["default"] = _tsl_value(value, dt)
            elif key == "default" and not fits:
                self.lose(pointer(at, "default"), f"default {value!r} does not fit the TSL type; dropped")

    # -- data -------------------------------------------------------------------------------

    def data_type(self, node: Mapping[str, Any], at: str, role: str, ext: dict[str, Any]) -> dict[str, Any] | None:
        """The TSL data type for an SDF data definition; ``role`` is param, field or item."""
        if "sdfChoice" in node and isinstance(node["sdfChoice"], Mapping):
            return self.choice(node, at, role, ext)
        if isinstance(node.get("enum"), list):
            values = node["enum"]
            self.lose(at, "SDF enum values are strings; TSL enums are integers: imported as 0..n-1 named by the strings")
            return {"type": "enum", "specs": {str(i): str(v) for i, v in enumerate(values)}} if values else None
        kind = node.get("type")
        if kind is None and "const" in node:
            value = node["const"]
            kind = ("boolean" if isinstance(value, bool) else "integer" if isinstance(value, int)
                    else "number" if isinstance(value, float) else "string" if isinstance(value, str) else None)
        if kind is None:
            kind = "object" if "properties" in node else "array" if "items" in node else None
        for key in ("nullable", "contentFormat"):
            if key in node:
                self.lose(pointer(at, key), f"{key} has no TSL place; dropped")
        sdf_type = node.get("sdfType")
        if sdf_type == "unix-time":
            self.lose(pointer(at, "sdfType"), "unix-time (seconds, a number) becomes TSL date (milliseconds, a string)")
            return {"type": "date", "specs": {}}
        if sdf_type == "byte-string":
            self.lose(pointer(at, "sdfType"), "byte-string becomes TSL text (the bytes base64-encoded)")
        elif sdf_type is not None:
            self.lose(pointer(at, "sdfType"), f"sdfType {sdf_type!r} is unknown; ignored")
        if kind in ("integer", "number"):
            return self.number(node, at, kind, ext)
        if kind == "string":
            for key in ("minLength", "pattern", "format"):
                if key in node:
                    self.lose(pointer(at, key), f"{key} has no TSL text spec; dropped")
            length = node.get("maxLength")
            if not isinstance(length, int) or isinstance(length, bool) or not 1 <= length <= MAX_TEXT_LENGTH:
                if length is not None:
                    self.lose(pointer(at, "maxLength"), f"maxLength {length!r} does not fit TSL text (1..{MAX_TEXT_LENGTH})")
                length = MAX_TEXT_LENGTH
            return {"type": "text", "specs": {"length": str(length)}}
        if kind == "boolean":
            return {"type": "bool", "specs": {"0": "false", "1": "true"}}
        if kind == "array":
            return self.array(node, at, role)
        if kind == "object":
            return self.struct(node, at, role)
        if kind is not None:
            self.lose(pointer(at, "type"), f"type {kind!r} is not an SDF type")
        return None

    def number(self, node: Mapping[str, Any], at: str, kind: str, ext: dict[str, Any]) -> dict[str, Any]:
        tsl = "int" if kind == "integer" else "double"
        specs: dict[str, Any] = {}
        bounds: dict[str, Any] = {}
        for key, name in (("minimum", "min"), ("maximum", "max")):
            value = node.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                bounds[name] = value
        for key in ("exclusiveMinimum", "exclusiveMaximum"):
            if key in node:
                self.lose(pointer(at, key), f"{key} has no TSL spec; dropped")
        if tsl == "int" and any(not INT32_MIN <= v <= INT32_MAX for v in bounds.values()):
            self.lose(at, "an integer range beyond int32: TSL int cannot hold it; imported as double")
            tsl = "double"
        elif tsl == "int" and any(isinstance(v, float) and not v.is_integer() for v in bounds.values()):
            self.lose(at, "a fractional bound on an integer: imported as double")
            tsl = "double"
        for name, value in bounds.items():
            specs[name] = _text(value)
        step = node.get("multipleOf")
        if isinstance(step, (int, float)) and not isinstance(step, bool) and step > 0:
            if tsl == "int" and isinstance(step, float) and not step.is_integer():
                self.lose(pointer(at, "multipleOf"), f"multipleOf {step} on an integer; dropped")
            else:
                specs["step"] = _text(step)
        unit = node.get("unit")
        if isinstance(unit, str):
            known = from_senml(unit)
            if known is None:
                specs["unit"] = unit
                self.lose(pointer(at, "unit"), f"unit {unit!r} is not a SenML unit with a UCUM code here; kept as display text only")
            else:
                if known.display:
                    specs["unit"] = known.display
                ext["ucum"] = known.ucum
        return {"type": tsl, "specs": specs}

    def choice(self, node: Mapping[str, Any], at: str, role: str, ext: dict[str, Any]) -> dict[str, Any] | None:
        choice_at = pointer(at, "sdfChoice")
        alternatives = [(str(n), a) for n, a in node["sdfChoice"].items() if isinstance(a, Mapping)]
        if not alternatives:
            self.lose(choice_at, "an empty sdfChoice; dropped")
            return None
        consts = [a.get("const") for _, a in alternatives]
        for name, alt in alternatives:
            label = alt.get("label")
            if isinstance(label, str) and label != name:
                self.lose(pointer(choice_at, name), f"choice name {name!r} (labelled {label!r}): TSL keeps one name per value, the label")
            if isinstance(alt.get("description"), str):
                self.lose(pointer(pointer(choice_at, name), "description"), "a choice description has no TSL place")
        if all(isinstance(c, bool) for c in consts) and len(set(consts)) == len(consts):
            names = {"0": "false", "1": "true"}
            for (name, alt), value in zip(alternatives, consts, strict=True):
                names["1" if value else "0"] = alt.get("label") or name
            return {"type": "bool", "specs": names}
        if all(isinstance(c, int) and not isinstance(c, bool) and INT32_MIN <= c <= INT32_MAX for c in consts):
            specs: dict[str, str] = {}
            for (name, alt), value in zip(alternatives, consts, strict=True):
                if str(value) in specs:
                    self.lose(pointer(choice_at, name), f"value {value} is chosen twice; the first name is kept")
                    continue
                specs[str(value)] = alt.get("label") or name
            return {"type": "enum", "specs": specs}
        if all(c is None for c in consts) and all(a.get("type") in (None, "string") and len(a) <= 3 for _, a in alternatives):
            self.lose(at, "the choice names are the values in SDF; TSL enums are integers: imported as 0..n-1")
            return {"type": "enum", "specs": {str(i): a.get("label") or n for i, (n, a) in enumerate(alternatives)}}
        self.lose(at, "alternatives with their own types or ranges: TSL has no union type; the first typed alternative is kept")
        for _, alt in alternatives:
            merged = {**{k: v for k, v in node.items() if k != "sdfChoice"}, **alt}
            if merged.get("type") is not None or "const" in merged:
                merged.pop("const", None)
                merged.pop("default", None)
                return self.data_type(merged, at, role, ext)
        return None

    def array(self, node: Mapping[str, Any], at: str, role: str) -> dict[str, Any] | None:
        if role != "param":
            self.lose(at, "an array inside a struct or an array: TSL does not nest them; dropped")
            return None
        items = node.get("items")
        if not isinstance(items, Mapping):
            self.lose(pointer(at, "items"), "array items are not one data definition; dropped")
            return None
        for key in ("description", "label", "unit", "default", "const"):
            if key in items:
                self.lose(pointer(pointer(at, "items"), key), f"{key} of array items has no TSL place; dropped")
        item = self.data_type(items, pointer(at, "items"), "item", {})
        if item is None or item["type"] not in ("int", "float", "double", "text", "struct"):
            self.lose(pointer(at, "items"), "TSL arrays hold int, float, double, text or struct only; dropped")
            return None
        size = node.get("maxItems")
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_ARRAY_SIZE:
            self.lose(pointer(at, "maxItems"), f"array size {size!r} does not fit TSL (1..{MAX_ARRAY_SIZE}); {MAX_ARRAY_SIZE} used")
            size = MAX_ARRAY_SIZE
        for key in ("minItems", "uniqueItems"):
            if key in node:
                self.lose(pointer(at, key), f"{key} has no TSL array spec; dropped")
        return {"type": "array", "specs": {"size": str(size), "item": item}}

    def struct(self, node: Mapping[str, Any], at: str, role: str) -> dict[str, Any] | None:
        if role == "field":
            self.lose(at, "an object inside a struct: TSL does not nest structs; dropped")
            return None
        fields = mapping(node.get("properties"))
        required = listing(node.get("required"))
        if set(fields) - set(required):
            self.lose(pointer(at, "required"), "optional struct fields: every TSL struct field is required")
        taken: set[str] = set()
        specs = []
        for name, sub in fields.items():
            if isinstance(sub, Mapping):
                field = self.param(str(name), sub, pointer(pointer(at, "properties"), str(name)), taken, "field")
                if field is not None:
                    specs.append(field)
        if not specs:
            self.lose(at, "an object without fields has no TSL type; dropped")
            return None
        return {"type": "struct", "specs": specs}


def _text(value: int | float) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


def _tsl_value(value: Any, dt: Mapping[str, Any]) -> Any:
    """An SDF value as our checker takes it (a bool stays a bool, a unix time in ms)."""
    if dt.get("type") == "date" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value * 1000)
    return value
