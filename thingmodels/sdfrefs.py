"""``sdfRef`` resolution for SDF documents: pure, on documents already read.

A reference is ``#/pointer`` (this document) or ``prefix:#/pointer`` (a namespace the
document declares). A namespace resolves to a document given to us whose ``defaultNamespace``
is that URI: the CLI passes the other files named on its command line and those in
``--search-path``. Anything else is remote and refused: we never fetch. The referencing
definition's other qualities are a JSON merge patch (RFC 7396) on the referenced one, as
RFC 9880 says. Problems do not stop the expansion: each is reported with the pointer of its
``sdfRef``, and the definition keeps its own qualities.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from citytwin.thingmodels.errors import pointer, split_pointer

NAMED: Final = frozenset(
    {"sdfThing", "sdfObject", "sdfProperty", "sdfAction", "sdfEvent", "sdfData", "sdfChoice", "properties"}
)
"""Qualities whose value maps names to definitions."""

QUALITIES: Final = frozenset({
    "type", "const", "default", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "multipleOf", "minLength", "maxLength", "pattern", "format", "minItems", "maxItems",
    "uniqueItems", "items", "properties", "required", "enum", "sdfChoice", "unit", "nullable",
    "sdfType", "contentFormat", "description", "label", "$comment", "sdfRef", "sdfRequired",
    "writable", "readable", "observable", "sdfProperty", "sdfAction", "sdfEvent", "sdfData",
    "sdfObject", "sdfThing", "sdfInputData", "sdfOutputData",
})
"""Every quality RFC 9880 defines for definitions and data (the rest are extensions)."""


@dataclass(frozen=True, slots=True)
class RefProblem:
    """``kind`` is malformed, remote, unresolved or loop; ``pointer`` is the sdfRef's."""

    pointer: str
    kind: str
    message: str


def namespace_uri(doc: Mapping[str, Any]) -> str | None:
    """The URI of a document's default namespace, if it declares one."""
    names = doc.get("namespace")
    default = doc.get("defaultNamespace")
    if isinstance(names, Mapping) and isinstance(default, str) and isinstance(names.get(default), str):
        return _norm(names[default])
    return None


def _norm(uri: str) -> str:
    return uri.rstrip("#").rstrip("/")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396: ``patch`` applied to a copy of ``target``."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


class _Expander:
    def __init__(self, doc: Mapping[str, Any], others: Sequence[Mapping[str, Any]]) -> None:
        self.root = doc
        self.by_uri: dict[str, Mapping[str, Any]] = {}
        for other in (doc, *others):
            uri = namespace_uri(other)
            if uri is not None:
                self.by_uri.setdefault(uri, other)
        self.problems: list[RefProblem] = []

    def problem(self, at: str, kind: str, message: str) -> None:
        if not any(p.pointer == at and p.message == message for p in self.problems):
            self.problems.append(RefProblem(at, kind, message))

    def definition(self, node: Any, doc: Mapping[str, Any], at: str, site: str | None, stack: tuple[Any, ...]) -> Any:
        """Expand a definition or data node: its known qualities, and its sdfRef."""
        if not isinstance(node, Mapping):
            return copy.deepcopy(node)
        own: dict[str, Any] = {}
        for key, value in node.items():
            if key == "sdfRef":
                continue
            key_at = pointer(at, key)
            if key in NAMED and isinstance(value, Mapping):
                own[key] = {n: self.definition(v, doc, pointer(key_at, n), site, stack) for n, v in value.items()}
            elif key in ("items", "sdfInputData", "sdfOutputData") and isinstance(value, Mapping):
                own[key] = self.definition(value, doc, key_at, site, stack)
            else:
                own[key] = copy.deepcopy(value)
        if "sdfRef" not in node:
            return own
        ref_at = site or pointer(at, "sdfRef")
        found = self.resolve(node["sdfRef"], doc, ref_at)
        if found is None:
            return own
        target, target_doc, target_at = found
        key = (id(target_doc), target_at)
        if key in stack:
            self.problem(ref_at, "loop", f"sdfRef {node['sdfRef']!r} refers to itself (a loop)")
            return own
        base = self.definition(target, target_doc, target_at, ref_at, (*stack, key))
        return merge_patch(base, own)

    def resolve(self, ref: Any, doc: Mapping[str, Any], at: str) -> tuple[Any, Mapping[str, Any], str] | None:
        if not isinstance(ref, str):
            self.problem(at, "malformed", "sdfRef must be a string")
            return None
        target_doc: Mapping[str, Any] = doc
        prefix, sep, rest = ref.partition(":")
        if ref.startswith("#"):
            rest = ref
        elif sep and isinstance(doc.get("namespace"), Mapping) and prefix in doc["namespace"]:
            uri = str(doc["namespace"][prefix])
            other = self.by_uri.get(_norm(uri))
            if other is None:
                self.problem(at, "remote", f"sdfRef {ref!r} is in namespace {prefix!r} ({uri}), which no given file "
                             "defines; remote references are not fetched: give that file on the command line "
                             "or in --search-path")
                return None
            target_doc = other
        elif sep:
            self.problem(at, "remote", f"sdfRef {ref!r} is remote (namespace prefix {prefix!r} is not declared in "
                         "'namespace'); remote references are not fetched")
            return None
        else:
            self.problem(at, "malformed", f"sdfRef {ref!r} is neither '#/pointer' nor 'prefix:#/pointer'")
            return None
        if rest.startswith("/#"):
            rest = rest[1:]
        if not rest.startswith("#"):
            self.problem(at, "malformed", f"sdfRef {ref!r}: the pointer must follow '#'")
            return None
        path = rest[1:]
        if not path.startswith("/"):
            self.problem(at, "malformed", f"sdfRef {ref!r}: a JSON pointer starts with '/'; read as '#/{path}'")
            path = "/" + path
        node: Any = target_doc
        for token in split_pointer(path):
            if isinstance(node, Mapping) and token in node:
                node = node[token]
            else:
                self.problem(at, "unresolved", f"sdfRef {ref!r}: no {path!r} in "
                             f"{'this document' if target_doc is self.root else 'the referenced document'}")
                return None
        return node, target_doc, path


def expand(doc: Mapping[str, Any], others: Sequence[Mapping[str, Any]] = ()) -> tuple[dict[str, Any], list[RefProblem]]:
    """``doc`` with every resolvable sdfRef replaced by its (patched) target, and the problems."""
    expander = _Expander(doc, others)
    out = expander.definition(doc, doc, "", None, ())
    return (dict(out) if isinstance(out, Mapping) else {}), expander.problems
