"""Inventory files: one device per row, in CSV or YAML, with the place of every value.

A city rolls out thousands of identical devices; their differences (address, unit, groups,
asset id, location) live in a table that an asset register can export. Each row becomes a
device entry as it would be written under ``devices:`` (usually ``template: NAME`` plus its
own fields), and remembers where each field was written so that every error names the file,
the row and the column.

CSV columns (a header row names them; empty cells are left out):

- ``id``, ``template``, ``uid``, ``model``, ``driver`` and the device's scalar settings
  (``poll_period``, ``allowed_failures``, ...): device fields;
- ``groups``: group names separated by ``;``, ``,`` or spaces; ``tags``: ``key=value`` pairs
  separated by ``;``;
- ``latitude``, ``longitude``, ``altitude``, ``crs``, ``floor``: the device's ``location``;
- a dotted name is a path in the device entry: ``location.address``, ``tags.district``,
  ``points.level.address``, ``interlocks.2.max_change.limit`` (rule numbers count from 1);
- any other name is a connection field: ``host``, ``port``, ``unit``, ``line``, ``address``.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, cast

from citytwin.gateway.config import ConfigIssue, DeviceConfig, format_path
from citytwin.gateway.yamlsrc import Located, YamlSyntaxError, load_yaml

Rel = tuple[Hashable, ...]

_LOCATION = ("latitude", "longitude", "altitude", "crs", "floor")
_DEVICE = frozenset(DeviceConfig.model_fields) - {"connection", "location"}


@dataclass(slots=True)
class DeviceEntry:
    """One device as written (its own fields) and where each of them was written."""

    data: dict[str, Any]
    source: str
    line: int  # the entry's first line (a CSV row's line)
    doc: Located | None = None  # YAML: the document holding the entry under ``prefix``
    prefix: Rel = ()
    cells: dict[Rel, tuple[int, str]] = field(default_factory=dict)  # CSV: path -> (line, column)

    def locate(self, rel: Rel) -> tuple[int, str]:
        """(line, label) of a path inside this entry, or of its nearest ancestor written here."""
        if self.doc is not None:
            return self.doc.line_of(self.prefix + rel), format_path(self.prefix + rel)
        for end in range(len(rel), 0, -1):
            cell = self.cells.get(rel[:end])
            if cell is not None:
                line, column = cell
                rest = format_path(rel[end:])
                return line, f"{column}.{rest}" if rest and not rest.startswith("[") else column + rest
        name = self.data.get("id")
        return self.line, (f"{name}: " if isinstance(name, str) else "") + format_path(rel)


def column_path(name: str) -> Rel:
    """The device path a CSV column fills."""
    if "." in name:
        return tuple(int(p) if p.isdigit() else p for p in name.split("."))
    if name in _DEVICE:
        return (name,)
    if name in _LOCATION:
        return ("location", name)
    return ("connection", name)


def _cell_value(path: Rel, text: str) -> tuple[Any, str | None]:
    """A cell's value for its path, or why it cannot be read."""
    if path == ("groups",):
        return [g for g in re.split(r"[;,\s]+", text) if g], None
    if path == ("tags",):
        tags = {}
        for part in (p.strip() for p in text.split(";")):
            if not part:
                continue
            key, eq, value = part.partition("=")
            if not eq or not key.strip():
                return None, f"tags are key=value pairs separated by ';', not {part!r}"
            tags[key.strip()] = value.strip()
        return tags, None
    return text, None


def _put(data: dict[Any, Any], path: Rel, value: Any) -> None:
    for key in path[:-1]:
        data = data.setdefault(key, {})
    data[path[-1]] = value


def read_csv(text: str, source: str) -> tuple[list[DeviceEntry], list[ConfigIssue]]:
    """Every row a device entry; every problem found, each at its row and column."""
    issues: list[ConfigIssue] = []
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff")))
    header = next(reader, None)
    if header is None:
        return [], [ConfigIssue(source=source, line=1, path="", message="empty inventory: needs a header row")]
    names = [h.strip() for h in header]
    paths: list[Rel | None] = []
    seen: dict[Rel, str] = {}
    for number, name in enumerate(names, 1):
        label = f"column {number} ({name})"
        path = column_path(name) if name else None
        if path is None:
            issues.append(ConfigIssue(source=source, line=1, path=f"column {number}", message="the header names no field"))
        elif any(p == path[: len(p)] or path == p[: len(path)] for p in seen):
            other = next(seen[p] for p in seen if p == path[: len(p)] or path == p[: len(path)])
            issues.append(ConfigIssue(source=source, line=1, path=label, message=f"fills the same field as {other}"))
            path = None
        else:
            seen[path] = label
        paths.append(path)
    if ("id",) not in seen:
        issues.append(ConfigIssue(source=source, line=1, path="", message="the header needs an 'id' column"))
    entries: list[DeviceEntry] = []
    first_line = 2
    for row in reader:
        line = first_line
        first_line = reader.line_num + 1
        if not any(cell.strip() for cell in row):
            continue
        if len(row) > len(names):
            issues.append(ConfigIssue(source=source, line=line, path=f"column {len(names) + 1}",
                                      message=f"{len(row)} cells, but the header names {len(names)} columns"))
        entry = DeviceEntry({}, source, line)
        for number, (path, cell) in enumerate(zip(paths, row, strict=False), 1):
            text = cell.strip()
            if path is None or not text:
                continue
            label = f"column {number} ({names[number - 1]})"
            value, problem = _cell_value(path, text)
            if problem is not None:
                issues.append(ConfigIssue(source=source, line=line, path=label, message=problem))
                continue
            _put(entry.data, path, value)
            entry.cells[path] = (line, label)
        entries.append(entry)
    return entries, issues


def read_yaml(text: str, source: str) -> tuple[list[DeviceEntry], list[ConfigIssue]]:
    """A list of device entries, or a mapping with one under ``devices``."""
    try:
        doc = load_yaml(text, source)
    except YamlSyntaxError as exc:
        return [], [ConfigIssue(source=source, line=exc.line, path="", message=exc.message)]
    rows, prefix = doc.data, cast(Rel, ())
    if isinstance(rows, dict) and set(rows) == {"devices"}:
        rows, prefix = rows["devices"], ("devices",)
    if not isinstance(rows, list):
        return [], [ConfigIssue(source=source, line=1, path="",
                                message="an inventory is a list of devices (or a mapping with only 'devices')")]
    entries, issues = [], []
    for index, row in enumerate(rows):
        at = (*prefix, index)
        if not isinstance(row, dict):
            issues.append(ConfigIssue(source=source, line=doc.line_of(at), path=format_path(at),
                                      message="a device entry is a mapping"))
            continue
        entries.append(DeviceEntry(row, source, doc.line_of(at), doc, at))
    return entries, issues
