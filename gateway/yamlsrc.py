"""YAML loading that remembers where every value came from.

Validation errors must name the file and line of the offending field, so the loader keeps
PyYAML's node tree and finds a path's line (``("devices", 0, "points", "level", "address")``)
in it when an error asks. It used to build a map of every path's line up front: for 1,000
devices written out with 100 points each that was 425,000 paths, 1.7 s of the 4.2 s load
and the largest object of the load's peak memory, for the few lines an error ever needs.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping
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
    lines: Mapping[Path, int] = field(default_factory=dict)

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


def _loader() -> type[yaml.SafeLoader] | type[yaml.CSafeLoader]:
    # libyaml's parser when PyYAML has it: 4x faster on large configs, the same nodes and marks
    return yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader


def load_data(text: str) -> Any:
    """The document's data only (no lines), as fast as PyYAML parses."""
    return yaml.load(text, Loader=_loader())  # a safe loader: the C one where PyYAML has it


def load_yaml(text: str, source: str) -> Located:
    loader = _loader()(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return Located({}, source, {(): 1})
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise YamlSyntaxError(source, line, f"invalid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(source, 1, f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()
    return Located(data, source, NodeLines(node))


class NodeLines(Mapping[Path, int]):
    """Path -> 1-based line, looked up in the node tree when asked.

    A mapping entry's line is its key's line, a sequence item's its own first line. Keys are
    matched as written (``str`` of the path element), which is how error paths name them;
    values brought in by a ``<<`` merge are not followed (their nearest ancestor answers).
    """

    __slots__ = ("_root",)

    def __init__(self, root: yaml.Node) -> None:
        self._root = root

    def __getitem__(self, path: Path) -> int:
        node, line = self._root, self._root.start_mark.line + 1
        for part in path:
            if isinstance(node, yaml.MappingNode):
                wanted = str(part)
                for key_node, value_node in node.value:
                    if isinstance(key_node, yaml.ScalarNode) and key_node.value == wanted and wanted != "<<":
                        node, line = value_node, key_node.start_mark.line + 1
                        break
                else:
                    raise KeyError(path)
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                raise KeyError(path)
        return line

    def __iter__(self) -> Iterator[Path]:  # every path: for completeness, never on a hot path
        stack: list[tuple[yaml.Node, Path]] = [(self._root, ())]
        while stack:
            node, path = stack.pop()
            yield path
            if isinstance(node, yaml.MappingNode):
                stack.extend((v, (*path, k.value)) for k, v in node.value
                             if isinstance(k, yaml.ScalarNode) and k.value != "<<")
            elif isinstance(node, yaml.SequenceNode):
                stack.extend((item, (*path, i)) for i, item in enumerate(node.value))

    def __len__(self) -> int:
        return sum(1 for _ in self)
