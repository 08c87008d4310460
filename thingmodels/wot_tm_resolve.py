"""A Thing Model made whole: ``tm:extends`` and ``tm:ref`` resolved, placeholders filled.

TD 1.1 §10.3: an extending model inherits its parent's definitions and overrides them key by
key; a ``tm:ref`` copies the definition it points at and the referring object's own keys win
(both merge objects deeply, as the Thingweb tools do). ``tm:optional`` / ``tm:required`` are
the extending model's own: a child that names none makes everything mandatory (the
playground's "overwrite optional interactions" example). References are URI references
joined to the referring document's location, so a parent's own relative references work;
``#/...`` is the document itself. Loading a location is the caller's business (files, a
cache of remote models); a remote location the caller will not load is a stated limitation
(``RemoteRefused``), never a "no such file".

§10.4: a placeholder ``{{NAME}}`` that is a whole string value takes the value's JSON type
where the TD vocabulary expects a number, boolean, object or array; a placeholder inside
text is replaced as text.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urljoin

from citytwin.thingmodels.errors import Issue, pointer, split_pointer
from citytwin.thingmodels.wot_tm_rules import PLACEHOLDER, as_list


class RemoteRefused(LookupError):
    """A remote reference that the loader will not (or cannot) load; ``str`` says why."""


Loader = Callable[[str], Mapping[str, Any]]
"""Location (no fragment) -> document; raises RemoteRefused, or LookupError with the reason."""

_NUMBER_KEYS: Final = frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"})
_INTEGER_KEYS: Final = frozenset({"minLength", "maxLength", "minItems", "maxItems"})
_BOOLEAN_KEYS: Final = frozenset({"readOnly", "writeOnly", "observable", "safe", "idempotent", "synchronous"})
_OBJECT_KEYS: Final = frozenset({"properties", "actions", "events", "input", "output", "data", "dataResponse",
                                 "cancellation", "subscription", "uriVariables", "securityDefinitions",
                                 "schemaDefinitions", "additionalResponses"})
_ARRAY_KEYS: Final = frozenset({"enum", "required", "oneOf", "allOf", "anyOf", "links", "forms"})
_MAX_DEPTH: Final = 32


@dataclass(slots=True)
class Resolution:
    """The resolved model, what was wrong, and which remote locations were not loaded."""

    doc: dict[str, Any]
    issues: list[Issue] = field(default_factory=list)
    remote: list[str] = field(default_factory=list)


def resolve_tm(doc: Mapping[str, Any], location: str, load: Loader) -> Resolution:
    """``doc`` (read from ``location``) with every tm:extends and tm:ref resolved."""
    result = Resolution({})
    result.doc = _Resolver(load, result).model(doc, location, "", ())
    return result


class _Resolver:
    def __init__(self, load: Loader, result: Resolution) -> None:
        self.load = load
        self.result = result
        self.cache: dict[str, Mapping[str, Any]] = {}

    def fail(self, at: str, message: str) -> None:
        self.result.issues.append(Issue(at, message, "tm-ref"))

    def document(self, location: str, at: str) -> Mapping[str, Any] | None:
        if location in self.cache:
            return self.cache[location]
        try:
            doc = self.load(location)
        except RemoteRefused as exc:
            self.result.remote.append(location)
            self.result.issues.append(Issue(at, str(exc), "wot-remote-ref"))
            return None
        except LookupError as exc:  # the loader's message names the location
            self.fail(at, str(exc.args[0]) if exc.args else f"{location}: cannot be loaded")
            return None
        self.cache[location] = doc
        return doc

    def model(self, doc: Mapping[str, Any], location: str, at: str, chain: tuple[str, ...]) -> dict[str, Any]:
        """A whole model: its parent (tm:extends) under it, its tm:refs filled in."""
        if len(chain) > _MAX_DEPTH:
            self.fail(at, "tm:extends / tm:ref nest deeper than 32 levels")
            return {}
        base: dict[str, Any] = {}
        for index, link in enumerate(as_list(doc.get("links"))):
            if not (isinstance(link, Mapping) and link.get("rel") == "tm:extends"):
                continue
            link_at = f"{at}/links/{index}/href"
            href = link.get("href")
            if not isinstance(href, str):
                self.fail(link_at, "a tm:extends link needs an href")
                continue
            target = urljoin(location, href.partition("#")[0])
            if target in chain:
                self.fail(link_at, f"{href}: tm:extends loop ({' -> '.join((*chain, target))})")
                continue
            parent = self.document(target, link_at)
            if parent is None:
                continue
            resolved = self.model(parent, target, link_at, (*chain, target))
            for key in ("tm:optional", "tm:required", "links", "@type", "title", "description", "version"):
                resolved.pop(key, None)
            base = deep_merge(base, resolved)
        own = self.refs(doc, doc, location, at, (*chain, location))
        assert isinstance(own, dict)
        if isinstance(own.get("links"), list):
            own["links"] = [x for x in own["links"] if not (isinstance(x, Mapping) and x.get("rel") == "tm:extends")]
            if not own["links"]:
                del own["links"]
        merged = deep_merge(base, own)
        assert isinstance(merged, dict)
        return merged

    def refs(self, node: Any, root: Mapping[str, Any], location: str, at: str, chain: tuple[str, ...]) -> Any:
        if isinstance(node, list):
            return [self.refs(item, root, location, f"{at}/{i}", chain) for i, item in enumerate(node)]
        if not isinstance(node, Mapping):
            return node
        own = {key: self.refs(value, root, location, pointer(at, str(key)), chain)
               for key, value in node.items() if key != "tm:ref"}
        ref = node.get("tm:ref")
        if not isinstance(ref, str):
            return own
        ref_at = pointer(at, "tm:ref")
        where, _, fragment = ref.partition("#")
        target_location = urljoin(location, where) if where else location
        key = f"{target_location}#{fragment}"
        if key in chain:
            self.fail(ref_at, f"{ref}: tm:ref loop")
            return own
        target_doc = root if not where else self.document(target_location, ref_at)
        if target_doc is None:
            return own
        target: Any = target_doc
        raw_tokens = fragment.split("/")[1:]
        for index, token in enumerate(split_pointer(fragment)):
            if isinstance(target, Mapping) and token in target:
                target = target[token]
            elif isinstance(target, Mapping) and raw_tokens[index] in target:
                target = target[raw_tokens[index]]  # a producer that escaped the key itself (sdf-wot-converter)
                self.result.issues.append(Issue(ref_at, f"{ref}: {raw_tokens[index]!r} is a key only when read "
                                                "literally; RFC 6901 reads '~1' as '/'", "tm-ref-escaping"))
            elif isinstance(target, list) and token.isdigit() and int(token) < len(target):
                target = target[int(token)]
            else:
                self.fail(ref_at, f"{ref}: {target_location if where else 'this document'} has nothing at {fragment!r}")
                return own
        target_root = root if not where else target_doc
        # inside this document, problems of the target are placed where the target is written
        target_at = fragment if not where else ref_at
        resolved = self.refs(target, target_root, target_location, target_at, (*chain, key))
        return deep_merge(resolved, own)


def deep_merge(base: Any, over: Any) -> Any:
    """``over`` on top of ``base``: objects merge key by key, anything else is replaced."""
    if isinstance(base, Mapping) and isinstance(over, Mapping):
        out = {k: copy.deepcopy(v) for k, v in base.items()}
        for key, value in over.items():
            out[key] = deep_merge(out[key], value) if key in out else copy.deepcopy(value)
        return out
    return copy.deepcopy(over)


# -- placeholders -------------------------------------------------------------------------------


def placeholders(node: Any) -> set[str]:
    """The names of every placeholder in string values (keys were refused by the rules)."""
    found: set[str] = set()
    if isinstance(node, str):
        found.update(PLACEHOLDER.findall(node))
    elif isinstance(node, list):
        for item in node:
            found |= placeholders(item)
    elif isinstance(node, Mapping):
        for value in node.values():
            found |= placeholders(value)
    return found


@dataclass(frozen=True, slots=True)
class Value:
    """A placeholder's value: ``text`` from --set (typed by where it lands) or JSON from --set-json."""

    raw: Any
    is_json: bool = False


def fill(doc: Mapping[str, Any], values: Mapping[str, Value]) -> tuple[dict[str, Any], list[Issue]]:
    """``doc`` with its placeholders replaced; issues for values that do not fit their place."""
    issues: list[Issue] = []
    filled = _fill(doc, values, "", None, None, issues)
    assert isinstance(filled, dict)
    return filled, issues


def _fill(node: Any, values: Mapping[str, Value], at: str, key: str | None, parent: Mapping[str, Any] | None,
          issues: list[Issue]) -> Any:
    if isinstance(node, str):
        whole = PLACEHOLDER.fullmatch(node)
        if whole and whole.group(1) in values:
            return _typed(whole.group(1), values[whole.group(1)], at, key, parent, issues)
        return PLACEHOLDER.sub(lambda m: _text(values[m.group(1)]) if m.group(1) in values else m.group(0), node)
    if isinstance(node, list):
        return [_fill(item, values, pointer(at, i), None, None, issues) for i, item in enumerate(node)]
    if isinstance(node, Mapping):
        return {k: _fill(v, values, pointer(at, str(k)), str(k), node, issues) for k, v in node.items()}
    return node


def _text(value: Value) -> str:
    if value.is_json and not isinstance(value.raw, str):
        return json.dumps(value.raw, ensure_ascii=False)
    return str(value.raw)


def _typed(name: str, value: Value, at: str, key: str | None, parent: Mapping[str, Any] | None,
           issues: list[Issue]) -> Any:
    if value.is_json:
        return value.raw
    text = str(value.raw)
    wanted = _wanted(key, parent)
    if wanted is None or wanted == "string":
        return text
    parsed: Any
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = text
    ok = {
        "number": isinstance(parsed, (int, float)) and not isinstance(parsed, bool) and math.isfinite(parsed),
        "integer": isinstance(parsed, int) and not isinstance(parsed, bool),
        "boolean": isinstance(parsed, bool),
        "object": isinstance(parsed, dict),
        "array": isinstance(parsed, list),
    }[wanted]
    if ok:
        return parsed
    if wanted == "array" and not isinstance(parsed, (list, dict)):
        return [parsed]  # one value where a list is expected: a list of one
    issues.append(Issue(at, f"placeholder {name!r} fills {key!r}, which must be a JSON {wanted}; "
                        f"got {text!r} (give JSON with --set-json {name}=...)", "tm-placeholder"))
    return text


def _wanted(key: str | None, parent: Mapping[str, Any] | None) -> str | None:
    """The JSON type the TD vocabulary expects for ``key`` (None: anything, left as text)."""
    if key in _NUMBER_KEYS:
        return "number"
    if key in _INTEGER_KEYS:
        return "integer"
    if key in _BOOLEAN_KEYS:
        return "boolean"
    if key in _OBJECT_KEYS:
        return "object"
    if key in _ARRAY_KEYS:
        return "array"
    if key in ("const", "default") and parent is not None and parent.get("type") in ("number", "integer", "boolean"):
        return str(parent["type"])
    return None
