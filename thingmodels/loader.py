"""Parse a TSL-shaped document into a ``ThingModel``, collecting every issue before failing.

Strict about what it understands, lenient about what it does not: keys it does not interpret
(Alibaba's ``method`` and ``schema``, a vendor's own) are kept verbatim for a lossless TSL
export, and the TSL default entries (``post``, ``set``, ``get``) are kept aside, not parsed
as features, so documents exported by Alibaba load unchanged. Modules (TSL function blocks)
are written inline or name another model (``"model": "pump"``), which ``resolve`` turns into
a document; by default only the bundled library is searched, because this package does no
I/O of its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, Final

from citytwin.thingmodels.checks import compile_check, compile_normalize
from citytwin.thingmodels.datatypes import EXT, MISSING, DataTypeParser, written
from citytwin.thingmodels.errors import Issue, ModelError, pointer
from citytwin.thingmodels.positions import DocumentSyntaxError, parse_document
from citytwin.thingmodels.types import (
    MODULE_SEPARATOR,
    AccessMode,
    CallType,
    Event,
    EventType,
    Module,
    Profile,
    Property,
    Service,
    ThingModel,
    Written,
)

Resolver = Callable[[str], Mapping[str, Any]]
"""Turns a module's ``model`` reference into a document; raises LookupError when unknown."""

PRODUCT_KEY: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MODULE_IDENTIFIER: Final = re.compile(r"[A-Za-z0-9_]{1,30}")
MAX_MODULES: Final = 200  # default module included
RESERVED: Final = frozenset(
    {"set", "get", "post", "property", "event", "service", "time", "value", "batch"}
)

MODEL_EXT: Final = frozenset({"semanticType", "title", "description"})
PROPERTY_EXT: Final = frozenset({"semanticType", "ucum", "default", "writeOnly"})
FEATURE_EXT: Final = frozenset({"semanticType"})

MODEL_KEYS: Final = ("profile", "properties", "events", "services", "modules", EXT)
MODULE_KEYS: Final = ("identifier", "name", "desc", "model", *MODEL_KEYS)
PROPERTY_KEYS: Final = ("identifier", "name", "accessMode", "required", "desc", "dataType", EXT)
EVENT_KEYS: Final = ("identifier", "name", "type", "required", "desc", "outputData", EXT)
SERVICE_KEYS: Final = (
    "identifier", "name", "callType", "required", "desc", "inputData", "outputData", EXT,
)

_PROPERTY_METHODS = frozenset(
    {"thing.service.property.set", "thing.service.property.get", "thing.event.property.post"}
)
_DEFAULT_SERVICES = frozenset({"set", "get", "propertySet", "propertyGet"})
_DEFAULT_EVENTS = frozenset({"post", "propertyPost"})


def parse_model(
    doc: Mapping[str, Any], source: str = "<model>", resolve: Resolver | None = None
) -> ThingModel:
    """The model ``doc`` describes; raises ``ModelError`` listing every issue found."""
    model, issues = check_model(doc, resolve)
    if model is None or issues:
        raise ModelError(source, issues)
    return model


def check_model(doc: Any, resolve: Resolver | None = None) -> tuple[ThingModel | None, list[Issue]]:
    """The model and every issue found, without raising (the validator's entry point)."""
    parser = _Parser(resolve or library_resolver)
    model = parser.model(doc, "", MODEL_KEYS, profile_required=True)
    return model, parser.issues


def load_model_json(text: str, source: str = "<model>") -> ThingModel:
    """Parse JSON text (NaN/Infinity and duplicate keys rejected); JSON errors are ModelErrors."""
    return load_model_text(text, source, json_only=True)


def load_model_text(
    text: str, source: str = "<model>", resolve: Resolver | None = None, json_only: bool = False
) -> ThingModel:
    """JSON, or YAML when ``source`` ends in .yaml/.yml; raises ModelError on any issue."""
    try:
        parsed = parse_document(text, "" if json_only else source)
    except DocumentSyntaxError as exc:
        kind = "JSON" if exc.rule == "json-syntax" else "YAML"
        where = f"line {exc.position.line} column {exc.position.column}"
        detail = exc.message.split(": ", 1)[-1]
        raise ModelError(source, [Issue("", f"invalid {kind} at {where}: {detail}", exc.rule)]) from None
    model, issues = check_model(parsed.data, resolve)
    issues = parsed.duplicates + issues
    if model is None or issues:
        raise ModelError(source, issues)
    return model


def library_resolver(name: str) -> Mapping[str, Any]:
    """Module references resolve to bundled library models unless a caller says otherwise."""
    from citytwin.thingmodels.library import library_document  # the library loads through here

    return library_document(name)


def is_system_entry(entry: Mapping[str, Any], section: str) -> bool:
    """The TSL default entries Alibaba generates from the properties (post, set, get)."""
    if entry.get("method") in _PROPERTY_METHODS:
        return True
    defaults = _DEFAULT_EVENTS if section == "events" else _DEFAULT_SERVICES
    return entry.get("identifier") in defaults


class _Parser(DataTypeParser):
    def __init__(self, resolve: Resolver) -> None:
        super().__init__()
        self.resolve = resolve

    # -- document structure ---------------------------------------------------------------

    def model(
        self, doc: Any, at: str, known: tuple[str, ...], profile_required: bool
    ) -> ThingModel | None:
        if not isinstance(doc, Mapping):
            self.fail(at, "a thing model must be a JSON object", "document-type")
            return None
        start = len(self.issues)
        profile: Profile | None = None
        if profile_required or "profile" in doc:
            profile = self.profile(doc, at)
        system: list[tuple[str, int, Any]] = []

        def skip(section: str) -> Callable[[Mapping[str, Any], int], bool]:
            def is_system(entry: Mapping[str, Any], index: int) -> bool:
                if is_system_entry(entry, section):
                    system.append((section, index, entry))
                    return True
                return False

            return is_system

        first_at: dict[str, str] = {}
        properties = self.items(
            doc.get("properties", []), pointer(at, "properties"), self.property, None, first_at
        )
        events = self.items(
            doc.get("events", []), pointer(at, "events"), self.event, skip("events"), first_at
        )
        services = self.items(
            doc.get("services", []), pointer(at, "services"), self.service, skip("services"), first_at
        )
        modules: dict[str, Module] | None = {}
        if "modules" in doc:
            modules = self.modules(doc["modules"], pointer(at, "modules"))
        ext = self.extension(doc, at, MODEL_EXT)
        if len(self.issues) > start:
            return None
        assert properties is not None and events is not None and services is not None
        assert modules is not None and ext is not None
        shape = written(doc, at, known)
        shape = Written(shape.at, shape.keys, shape.extra, system=tuple(system))
        for module_id, module in modules.items():
            _qualify(module_id, module.model, properties, events, services)
        return ThingModel(
            profile or Profile(""), properties, events, services, modules, ext=ext, written=shape
        )

    def profile(self, doc: Mapping[str, Any], at: str) -> Profile | None:
        raw = doc.get("profile", MISSING)
        if raw is MISSING:
            self.fail(at, "missing required key 'profile'", "required-key")
            return None
        at = pointer(at, "profile")
        if not isinstance(raw, Mapping):
            self.fail(at, "profile must be an object", "value-type")
            return None
        start = len(self.issues)
        key_name = "productKey" if "productKey" in raw or "identifier" not in raw else "identifier"
        product_key = self.required(raw, key_name, at)
        if product_key is not MISSING and not (
            isinstance(product_key, str) and PRODUCT_KEY.fullmatch(product_key)
        ):
            self.fail(
                pointer(at, key_name),
                "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
                "product-key",
            )
        version = self.optional_str(raw, "version", at)
        if len(self.issues) > start:
            return None
        return Profile(product_key, version or None, written=written(raw, at, (key_name, "version")))

    def modules(self, raw: Any, at: str) -> dict[str, Module] | None:
        if not isinstance(raw, list):
            self.fail(at, "must be an array", "value-type")
            return None
        start = len(self.issues)
        result: dict[str, Module] = {}
        first_at: dict[str, str] = {}
        if len(raw) + 1 > MAX_MODULES:
            self.fail(at, f"{len(raw)} modules: TSL allows {MAX_MODULES - 1} besides the default module", "module-count")
        for index, entry in enumerate(raw):
            entry_at = pointer(at, index)
            if not isinstance(entry, Mapping):
                self.fail(entry_at, "must be an object", "value-type")
                continue
            module = self.module(entry, entry_at)
            identifier = entry.get("identifier")
            if isinstance(identifier, str) and MODULE_IDENTIFIER.fullmatch(identifier):
                if identifier in first_at:
                    self.fail(
                        pointer(entry_at, "identifier"),
                        f"duplicate module {identifier!r} (first at {first_at[identifier]})",
                        "identifier-duplicate",
                    )
                else:
                    first_at[identifier] = entry_at
            if module is not None:
                result[module.identifier] = module
        return None if len(self.issues) > start else result

    def module(self, entry: Mapping[str, Any], at: str) -> Module | None:
        start = len(self.issues)
        identifier = self.required(entry, "identifier", at)
        if identifier is not MISSING and not (
            isinstance(identifier, str) and MODULE_IDENTIFIER.fullmatch(identifier)
        ):
            self.fail(
                pointer(at, "identifier"),
                f"module identifier {identifier!r} must be 1-30 letters, digits or '_'",
                "module-identifier",
            )
        name = self.name(entry, at)
        description = self.optional_str(entry, "desc", at)
        ext = self.extension(entry, at, FEATURE_EXT)
        ref = entry.get("model", MISSING)
        model: ThingModel | None = None
        if ref is MISSING:
            model = self.model(entry, at, MODULE_KEYS, profile_required=False)
        elif not isinstance(ref, str):
            self.fail(pointer(at, "model"), "model must be the name of a model", "value-type")
        elif any(key in entry for key in ("properties", "events", "services")):
            self.fail(at, "a module either names a model or lists its features, not both", "module-ref")
        else:
            model = self.referenced(ref, pointer(at, "model"))
        if len(self.issues) > start or model is None or ext is None:
            return None
        return Module(
            identifier,
            name,
            model,
            ref if isinstance(ref, str) else None,
            description or "",
            ext=ext,
            written=written(entry, at, MODULE_KEYS if ref is MISSING else ("identifier", "name", "desc", "model", EXT)),
        )

    def referenced(self, ref: str, at: str) -> ThingModel | None:
        try:
            doc = self.resolve(ref)
        except LookupError as exc:
            self.fail(at, f"no model {ref!r}: {exc.args[0] if exc.args else exc}", "module-ref")
            return None
        sub = _Parser(self.resolve)
        model = sub.model(doc, "", MODEL_KEYS, profile_required=True)
        if model is None or sub.issues:
            first = sub.issues[0] if sub.issues else Issue("", "not a thing model")
            more = f" (and {len(sub.issues) - 1} more)" if len(sub.issues) > 1 else ""
            self.fail(at, f"model {ref!r} is invalid: {first}{more}", "module-ref")
            return None
        if model.modules:
            self.fail(at, f"model {ref!r} has modules itself; modules do not nest", "module-ref")
            return None
        return model

    # -- features -------------------------------------------------------------------------

    def feature_identifier(self, entry: Mapping[str, Any], at: str) -> str:
        identifier = self.identifier(entry, at)
        if identifier in RESERVED:
            self.fail(
                pointer(at, "identifier"),
                f"identifier {identifier!r} is reserved by TSL; choose another",
                "identifier-reserved",
            )
        return identifier

    def property(self, entry: Mapping[str, Any], at: str) -> Property | None:
        start = len(self.issues)
        identifier = self.feature_identifier(entry, at)
        name = self.name(entry, at)
        access = self.choice(entry, "accessMode", at, AccessMode, "access-mode")
        required = self.flag(entry, "required", at)
        description = self.optional_str(entry, "desc", at)
        data_type = self.data_type_of(entry, at)
        ext = self.extension(entry, at, PROPERTY_EXT)
        if ext and ext.get("writeOnly") and access is AccessMode.R:
            self.fail(pointer(pointer(at, EXT), "writeOnly"), "writeOnly needs accessMode 'rw'", "extension")
        if len(self.issues) > start or data_type is None or access is None or ext is None:
            return None
        check = compile_check(data_type)
        self.check_default(ext, check, at)
        if len(self.issues) > start:
            return None
        return Property(
            identifier,
            name,
            data_type,
            access,
            required,
            description or "",
            check=check,
            normalize=compile_normalize(data_type),
            ext=ext,
            written=written(entry, at, PROPERTY_KEYS),
        )

    def event(self, entry: Mapping[str, Any], at: str) -> Event | None:
        start = len(self.issues)
        identifier = self.feature_identifier(entry, at)
        name = self.name(entry, at)
        kind = self.choice(entry, "type", at, EventType, "event-type")
        required = self.flag(entry, "required", at)
        description = self.optional_str(entry, "desc", at)
        output = self.items(entry.get("outputData", []), pointer(at, "outputData"), self.param)
        ext = self.extension(entry, at, FEATURE_EXT)
        if len(self.issues) > start or kind is None or output is None or ext is None:
            return None
        return Event(
            identifier, name, kind, output, description or "", required,
            ext=ext, written=written(entry, at, EVENT_KEYS),
        )

    def service(self, entry: Mapping[str, Any], at: str) -> Service | None:
        start = len(self.issues)
        identifier = self.feature_identifier(entry, at)
        name = self.name(entry, at)
        call_type = self.choice(entry, "callType", at, CallType, "call-type")
        required = self.flag(entry, "required", at)
        description = self.optional_str(entry, "desc", at)
        inputs = self.items(entry.get("inputData", []), pointer(at, "inputData"), self.param)
        outputs = self.items(entry.get("outputData", []), pointer(at, "outputData"), self.param)
        ext = self.extension(entry, at, FEATURE_EXT)
        if len(self.issues) > start or call_type is None or inputs is None or outputs is None or ext is None:
            return None
        return Service(
            identifier, name, call_type, inputs, outputs, description or "", required,
            ext=ext, written=written(entry, at, SERVICE_KEYS),
        )


def _qualify(
    module_id: str,
    model: ThingModel,
    properties: dict[str, Property],
    events: dict[str, Event],
    services: dict[str, Service],
) -> None:
    """Add a module's features to the composed sections under ``module:identifier``."""
    for key, prop in model.properties.items():
        qualified = f"{module_id}{MODULE_SEPARATOR}{key}"
        properties[qualified] = replace(prop, identifier=qualified)
    for key, event in model.events.items():
        qualified = f"{module_id}{MODULE_SEPARATOR}{key}"
        events[qualified] = replace(event, identifier=qualified)
    for key, service in model.services.items():
        qualified = f"{module_id}{MODULE_SEPARATOR}{key}"
        services[qualified] = replace(service, identifier=qualified)
