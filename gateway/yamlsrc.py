"""YAML loading that remembers where every value came from.

Validation errors must name the file and line of the offending field, so the loader keeps
a map from each value's path (``("devices", 0, "points", "level", "address")``) to its
1-based line, built from PyYAML's node tree.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import yaml

Path = tuple[Hashable, ...]


class YamlSyntaxError(Exception):
    def __init__(self, source: str, line: int, message: str) -> None:
        super().__init__(f"{source}:{line}: {message}")
        self.source = source
        self.line = line
        self.message = message


@dataclass(slots=True)
class Located:
    """A parsed document with the line of every path in it."""

    data: Any
    source: str
    lines: dict[Path, int] = field(default_factory=dict)

    def line_of(self, path: Path) -> int:
        """Line of ``path``, or of its nearest ancestor that exists (a missing key's parent)."""
        for end in range(len(path), -1, -1):
            sub = path[:end]
            line = self.lines.get(sub)
            if line is None:
                line = self.lines.get(tuple(str(p) for p in sub))
            if line is not None:
                return line
        return 1

    def where(self, path: Path) -> tuple[str, int, str | None]:
        """(file, line, label) of ``path``; label None: the path itself names it. Expanded
        documents (templates, inventories) place a path in another file or section."""
        return self.source, self.line_of(path), None


def load_yaml(text: str, source: str) -> Located:
    # libyaml's parser when PyYAML has it: 4x faster on large configs, the same nodes and marks
    loader = (yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader)(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return Located({}, source, {(): 1})
        data = loader.construct_document(node)
        lines: dict[Path, int] = {}
        _walk(loader, node, (), lines)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise YamlSyntaxError(source, line, f"invalid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(source, 1, f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()
    return Located(data, source, lines)


def _walk(loader: yaml.SafeLoader | yaml.CSafeLoader, node: yaml.Node, path: Path, lines: dict[Path, int]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == "<<":
                continue
            key = loader.construct_object(key_node, deep=True)
            if isinstance(key, Hashable):
                lines[path + (key,)] = key_node.start_mark.line + 1
                _walk(loader, value_node, path + (key,), lines)
                lines[path + (key,)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(loader, item, path + (index,), lines)
