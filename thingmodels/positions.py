"""Parse a JSON or YAML document and remember where every value came from.

A vendor fixes a model faster from ``pump.json:12:7`` than from a JSON pointer, and a plain
``json.load`` silently keeps the last of two equal keys, hiding a copy-paste error. So the
text is parsed twice: by the standard parser (its values, and its syntax errors with line and
column) and then, for JSON, by a small scanner over the now known-valid text that records
the line and column of each member key and array item, by JSON pointer, and every duplicate
key. YAML positions come from PyYAML's node tree. Columns count characters, 1-based.
"""

from __future__ import annotations

import bisect
import json
import json.decoder
import re
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Final

import yaml

from citytwin.thingmodels.errors import Issue, pointer

_WS: Final = re.compile(r"[ \t\n\r]*")
_NUMBER: Final = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?")
_CONSTANTS: Final = ("NaN", "Infinity", "-Infinity")
_LITERALS: Final = {"true": 4, "false": 5, "null": 4}
# the C string scanner json itself uses; typeshed does not declare it
scanstring: Callable[[str, int], tuple[str, int]] = vars(json.decoder)["scanstring"]


@dataclass(frozen=True, slots=True)
class Position:
    line: int
    column: int


class DocumentSyntaxError(ValueError):
    """The text is not a document at all; ``rule`` is json-syntax or yaml-syntax."""

    def __init__(self, rule: str, message: str, where: Position) -> None:
        super().__init__(f"{where.line}:{where.column}: {message}")
        self.rule = rule
        self.message = message
        self.position = where


@dataclass(slots=True)
class ParsedDocument:
    """A document's data, the position of each pointer in it, and its duplicate keys."""

    data: Any
    positions: dict[str, Position] = field(default_factory=dict)
    duplicates: list[Issue] = field(default_factory=list)

    def position_of(self, at: str) -> Position:
        """Where ``at`` is written, or its nearest written ancestor (a missing key's object)."""
        while True:
            found = self.positions.get(at)
            if found is not None:
                return found
            if not at:
                return Position(1, 1)
            at = at[: at.rfind("/")]


def parse_document(text: str, name: str = "") -> ParsedDocument:
    """JSON, or YAML when ``name`` ends in .yaml/.yml; raises ``DocumentSyntaxError``."""
    if name.lower().endswith((".yaml", ".yml")):
        return parse_yaml(text)
    return parse_json(text)


# -- JSON -------------------------------------------------------------------------------------


class _Constant:
    """Stands in for NaN/Infinity so the scanner can report where they are."""


def parse_json(text: str) -> ParsedDocument:
    try:
        data = json.loads(text, parse_constant=lambda _name: _Constant())
    except json.JSONDecodeError as exc:
        raise DocumentSyntaxError(
            "json-syntax", f"invalid JSON: {exc.msg}", Position(exc.lineno, exc.colno)
        ) from None
    except RecursionError:
        raise DocumentSyntaxError("json-syntax", "invalid JSON: nested too deeply", Position(1, 1)) from None
    doc = ParsedDocument(data)
    scanner = _JsonScanner(text, doc)
    try:
        scanner.value(_WS.match(text, 0).end(), "")  # type: ignore[union-attr]
    except RecursionError:
        raise DocumentSyntaxError("json-syntax", "invalid JSON: nested too deeply", Position(1, 1)) from None
    return doc


class _JsonScanner:
    """Walks valid JSON text, recording positions and duplicate keys (no values built)."""

    def __init__(self, text: str, doc: ParsedDocument) -> None:
        self.text = text
        self.doc = doc
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def at(self, index: int) -> Position:
        line = bisect.bisect_right(self.line_starts, index) - 1
        return Position(line + 1, index - self.line_starts[line] + 1)

    def skip(self, index: int) -> int:
        return _WS.match(self.text, index).end()  # type: ignore[union-attr]

    def value(self, i: int, at: str) -> int:
        """Scan the value starting at ``i``; returns the index just past it."""
        text = self.text
        char = text[i]
        if char == "{":
            return self.obj(i, at)
        if char == "[":
            return self.array(i, at)
        if char == '"':
            return scanstring(text, i + 1)[1]
        for constant in _CONSTANTS:
            if text.startswith(constant, i):
                raise DocumentSyntaxError(
                    "json-syntax", f"invalid JSON: {constant} is not valid JSON", self.at(i)
                )
        match = _NUMBER.match(text, i)
        if match is not None:
            return match.end()
        for literal, length in _LITERALS.items():
            if text.startswith(literal, i):
                return i + length
        raise DocumentSyntaxError("json-syntax", "invalid JSON", self.at(i))  # unreachable

    def obj(self, i: int, at: str) -> int:
        text = self.text
        i = self.skip(i + 1)
        if text[i] == "}":
            return i + 1
        seen: dict[str, Position] = {}
        while True:
            key, end = scanstring(text, i + 1)
            child = pointer(at, key)
            where = self.at(i)
            first = seen.get(key)
            if first is not None:
                self.doc.duplicates.append(
                    Issue(
                        child,
                        f"duplicate key {key!r} (first at line {first.line} column {first.column});"
                        " only the last is used",
                        "duplicate-key",
                    )
                )
            seen[key] = where
            self.doc.positions[child] = where
            i = self.skip(self.skip(end) + 1)  # past ':'
            i = self.skip(self.value(i, child))
            if text[i] == "}":
                return i + 1
            i = self.skip(i + 1)  # past ','

    def array(self, i: int, at: str) -> int:
        text = self.text
        i = self.skip(i + 1)
        if text[i] == "]":
            return i + 1
        index = 0
        while True:
            child = pointer(at, index)
            self.doc.positions[child] = self.at(i)
            i = self.skip(self.value(i, child))
            if text[i] == "]":
                return i + 1
            i = self.skip(i + 1)
            index += 1


# -- YAML -------------------------------------------------------------------------------------


def parse_yaml(text: str) -> ParsedDocument:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return ParsedDocument(None)
        doc = ParsedDocument(loader.construct_document(node))
        _walk(loader.construct_object, node, "", doc)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Position(mark.line + 1, mark.column + 1) if mark is not None else Position(1, 1)
        raise DocumentSyntaxError("yaml-syntax", f"invalid YAML: {exc.problem or exc}", where) from None
    except yaml.YAMLError as exc:
        raise DocumentSyntaxError("yaml-syntax", f"invalid YAML: {exc}", Position(1, 1)) from None
    except RecursionError:
        raise DocumentSyntaxError("yaml-syntax", "invalid YAML: nested too deeply", Position(1, 1)) from None
    finally:
        loader.dispose()
    return doc


def _mark(node: yaml.Node) -> Position:
    return Position(node.start_mark.line + 1, node.start_mark.column + 1)


def _walk(construct: Callable[..., Any], node: yaml.Node, at: str, doc: ParsedDocument) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[Hashable, Position] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == "<<":
                continue
            key = construct(key_node, deep=True)
            if not isinstance(key, Hashable):
                continue
            child = pointer(at, str(key))
            where = _mark(key_node)
            first = seen.get(key)
            if first is not None:
                doc.duplicates.append(
                    Issue(
                        child,
                        f"duplicate key {str(key)!r} (first at line {first.line} column {first.column});"
                        " only the last is used",
                        "duplicate-key",
                    )
                )
            seen[key] = where
            doc.positions[child] = where
            _walk(construct, value_node, child, doc)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            child = pointer(at, index)
            doc.positions[child] = _mark(item)
            _walk(construct, item, child, doc)
