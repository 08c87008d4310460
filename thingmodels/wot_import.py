"""W3C WoT Thing Models and Thing Descriptions in: checked, resolved, converted, losses listed.

``import_wot`` is the one entry: a TM is checked as a TM (``wot_tm_rules.check_tm``), made
whole (``wot_tm_resolve``: tm:extends, tm:ref, placeholders), then converted; a TD is
checked as a TD and converted. Conversion maps affordances to TSL features (their data
schemas through ``wot_schema_in``): names TSL refuses (``on-peak``, reserved words such as
``value``, names clashing across sections) are renamed and each rename is a loss line; what
TSL has no place for (forms, security definitions, tm:submodel links, bare semantic terms,
exclusive bounds, string enums...) is a loss line too, never silently dropped. The result is our model document, which the caller
checks with ``loader.check_model`` like any other.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from citytwin.thingmodels.errors import Issue
from citytwin.thingmodels.rules import Severity
from citytwin.thingmodels.tsl import Loss
from citytwin.thingmodels.wot_schema_in import (
    UCUM,
    SchemaReader,
    context_prefixes,
    display_name,
    escape_token,
    nonblank,
)
from citytwin.thingmodels.wot_tm_resolve import Loader, Value, fill, placeholders, resolve_tm
from citytwin.thingmodels.wot_tm_rules import (
    affordance_of,
    as_map,
    check_optional_targets,
    check_td,
    check_tm,
    lint_wot,
    refs_in,
    wot_severity,
)

_SECTIONS: Final = (("properties", "properties"), ("actions", "services"), ("events", "events"))
# keys each part maps (or deliberately implies); any other key is a loss line
_THING_KEYS: Final = frozenset({"@context", "@type", "title", "description", "version", "properties", "actions",
                                "events", "tm:optional", "tm:required", "citytwin:productKey", "$comment"})
_AFFORDANCE_KEYS: Final = frozenset({"@type", "title", "description", "forms", "citytwin:eventType", "citytwin:ucum",
                                     "input", "output", "data", "synchronous", "observable", "$comment"})
_SCHEMA_KEYS: Final = frozenset({"@type", "title", "description", "type", "readOnly", "writeOnly", "unit",
                                 "minimum", "maximum", "oneOf", "enum", "const", "default", "maxLength",
                                 "maxItems", "items", "properties", "pattern", "required", "citytwin:ucum",
                                 "$comment", "observable"})
_PRODUCT_KEY: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(slots=True)
class WotImport:
    """What importing one WoT document found; ``doc`` is our model document when converted."""

    format: str
    doc: dict[str, Any] | None = None
    issues: list[Issue] = field(default_factory=list)
    losses: list[Loss] = field(default_factory=list)
    remote: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if wot_severity(i.rule) is Severity.ERROR]


def import_wot(
    doc: Any,
    is_tm: bool,
    location: str,
    load: Loader,
    values: Mapping[str, Value] | None = None,
    product_key: str | None = None,
    need_values: bool = True,
) -> WotImport:
    """Check ``doc`` (a TM when ``is_tm``, else a TD), resolve it and convert it.

    ``need_values``: unfilled placeholders are an error (convert); without it (validate) they
    only skip the conversion.
    """
    result = WotImport("wot-tm" if is_tm else "wot-td")
    if not isinstance(doc, Mapping):
        result.issues.append(Issue("", "a Thing Model or Thing Description must be a JSON object", "wot-schema"))
        return result
    result.issues.extend(check_tm(doc) if is_tm else check_td(doc))
    result.issues.extend(lint_wot(doc))
    model: Mapping[str, Any] = doc
    if is_tm:
        resolution = resolve_tm(doc, location, load)
        result.issues.extend(resolution.issues)
        result.remote = resolution.remote
        if result.errors:
            return result
        result.issues.extend(check_optional_targets(resolution.doc))
        values = values or {}
        missing = sorted(placeholders(resolution.doc) - set(values))
        if missing:
            result.issues.append(Issue("", f"placeholders without a value: {', '.join(missing)} (give them with "
                                       "--set NAME=VALUE, or --set-json NAME=JSON)",
                                       "tm-placeholder" if need_values else "tm-unfilled"))
            return result
        model, fill_issues = fill(resolution.doc, values)
        result.issues.extend(fill_issues)
    elif any(True for _ in refs_in(doc)):  # a TD made from a TM may keep same-document tm:refs
        resolution = resolve_tm(doc, location, load)
        result.issues.extend(resolution.issues)
        result.remote = resolution.remote
        model = resolution.doc
    if result.errors:
        return result
    result.doc, result.losses = _Converter(is_tm).model(model, product_key)
    return result


class _Converter(SchemaReader):
    def __init__(self, is_tm: bool) -> None:
        super().__init__()
        self.is_tm = is_tm

    def model(self, tm: Mapping[str, Any], product_key: str | None) -> tuple[dict[str, Any], list[Loss]]:
        title = nonblank(tm.get("title"))
        key = product_key or nonblank(tm.get("citytwin:productKey"))
        if not (key and _PRODUCT_KEY.fullmatch(key)):
            key = re.sub(r"[^A-Za-z0-9._-]", "_", title or "")[:64].lstrip("._-") or "imported"
        out: dict[str, Any] = {"profile": {"productKey": key}}
        version = tm.get("version")
        if isinstance(version, Mapping):
            chosen = version.get("model") if self.is_tm else version.get("instance", version.get("model"))
            if nonblank(chosen):
                out["profile"]["version"] = chosen
        elif version is not None:
            self.lose("/version", f"version {version!r} is not an object like {{\"model\": \"1.0\"}}; not imported")
        ext: dict[str, Any] = {}
        if title:
            ext["title"] = title
        if nonblank(tm.get("description")):
            ext["description"] = tm["description"]
        ext.update(self.semantic(tm, "", context_prefixes(tm.get("@context"))))
        if ext:
            out["x-citytwin"] = ext
        self.thing_losses(tm)
        required = _required(tm, self.is_tm)
        prefixes = context_prefixes(tm.get("@context"))
        out["properties"], out["services"], out["events"] = [], [], []
        forms = 0
        for section, ours in _SECTIONS:
            raw = tm.get(section)
            for name, aff in (raw.items() if isinstance(raw, Mapping) else []):
                at = f"/{section}/{escape_token(str(name))}"
                if not isinstance(aff, Mapping):
                    continue
                forms += 1 if aff.get("forms") else 0
                entry = getattr(self, section)(str(name), aff, at, prefixes)
                if entry is None:
                    continue
                entry["required"] = (section, str(name)) in required
                out[ours].append(entry)
        if forms:
            self.lose("", f"the forms of {forms} affordance(s) (protocol bindings: how to reach one device) "
                      "are not part of a thing model; the gateway's binding says that")
        return out, self.losses

    # -- the Thing ------------------------------------------------------------------------------

    def thing_losses(self, tm: Mapping[str, Any]) -> None:
        for key, value in tm.items():
            if key in _THING_KEYS or str(key).startswith("$"):  # $comment, $title...: notes to readers
                continue
            at = f"/{escape_token(str(key))}"
            if key == "securityDefinitions" and isinstance(value, Mapping):
                schemes = ", ".join(f"{k}: {v.get('scheme')}" if isinstance(v, Mapping) else str(k) for k, v in value.items())
                self.lose(at, f"security definitions ({schemes}) are how to reach a device, not its model; not imported")
            elif key == "links" and isinstance(value, list):
                for index, link in enumerate(value):
                    if isinstance(link, Mapping) and link.get("rel") == "tm:submodel":
                        self.lose(f"{at}/{index}", f"tm:submodel {link.get('href')!r} (instance "
                                  f"{link.get('instanceName')!r}) is not imported: convert that model on its own")
                    else:
                        rel = link.get("rel") if isinstance(link, Mapping) else None
                        self.lose(f"{at}/{index}", f"link (rel {rel!r}) has no TSL term")
            elif key == "version":
                continue
            else:
                self.lose(at, f"{key!r} has no TSL term; not imported")

    def common(self, name: str, aff: Mapping[str, Any], at: str, prefixes: Mapping[str, str],
               known: frozenset[str]) -> dict[str, Any]:
        ident = self.identifier(name, at, self.used, True)
        entry: dict[str, Any] = {"identifier": ident, "name": display_name(aff.get("title"), name, ident)}
        if nonblank(aff.get("description")):
            entry["desc"] = aff["description"]
        for key in aff:
            if key not in known and not str(key).startswith("$"):
                self.lose(f"{at}/{escape_token(str(key))}", f"{key!r} has no TSL term; not imported")
        return entry

    def properties(self, name: str, aff: Mapping[str, Any], at: str, prefixes: Mapping[str, str]) -> dict[str, Any] | None:
        dt = self.data_type(aff, at, "property")
        if dt is None:
            self.lose(at, "property dropped: its data schema has no TSL type")
            return None
        entry = self.common(name, aff, at, prefixes, _AFFORDANCE_KEYS | _SCHEMA_KEYS)
        entry["accessMode"] = "r" if aff.get("readOnly") is True else "rw"
        entry["dataType"] = dt
        ext = self.semantic(aff, at, prefixes)
        if aff.get("writeOnly") is True and aff.get("readOnly") is not True:
            ext["writeOnly"] = True
        if "citytwin:ucum" in aff:
            ucum = aff["citytwin:ucum"]
            if ucum is None or (isinstance(ucum, str) and UCUM.fullmatch(ucum)):
                ext["ucum"] = ucum
            else:
                self.lose(f"{at}/citytwin:ucum", f"{ucum!r} is no UCUM code; not imported")
        if "default" in aff:
            self.lose(f"{at}/default", "default value is not imported")
        if ext:
            entry["x-citytwin"] = ext
        return entry

    def actions(self, name: str, aff: Mapping[str, Any], at: str, prefixes: Mapping[str, str]) -> dict[str, Any]:
        entry = self.common(name, aff, at, prefixes, _AFFORDANCE_KEYS)
        entry["callType"] = "sync" if aff.get("synchronous") is True else "async"
        entry["inputData"] = self.params(aff.get("input"), f"{at}/input", "input")
        entry["outputData"] = self.params(aff.get("output"), f"{at}/output", "output")
        ext = self.semantic(aff, at, prefixes)
        if ext:
            entry["x-citytwin"] = ext
        return entry

    def events(self, name: str, aff: Mapping[str, Any], at: str, prefixes: Mapping[str, str]) -> dict[str, Any]:
        entry = self.common(name, aff, at, prefixes, _AFFORDANCE_KEYS)
        kind = aff.get("citytwin:eventType")
        if kind not in ("info", "alert", "error"):
            self.lose(at, "WoT events have no severity; imported as TSL type 'info'")
            kind = "info"
        entry["type"] = kind
        entry["outputData"] = self.params(aff.get("data"), f"{at}/data", "data")
        ext = self.semantic(aff, at, prefixes)
        if ext:
            entry["x-citytwin"] = ext
        return entry

def _required(tm: Mapping[str, Any], is_tm: bool) -> set[tuple[str, str]]:
    """TD 1.1: in a TM every affordance is mandatory unless tm:optional names it; a model
    that uses the draft's tm:required instead marks exactly those; a TD has no such notion."""
    if not is_tm:
        return set()
    every = {(section, str(name)) for section, _ in _SECTIONS
             for name in as_map(tm.get(section))}
    optional, required = _named(tm.get("tm:optional")), _named(tm.get("tm:required"))
    if optional is not None:
        return every - optional
    if required is not None:
        return required
    return every


def _named(entries: Any) -> set[tuple[str, str]] | None:
    if not isinstance(entries, list):
        return None
    return {found for e in entries if isinstance(e, str) and (found := affordance_of(e)) is not None}


