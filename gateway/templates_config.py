"""Templates and inventories, expanded into the ordinary ``devices`` list before validation.

A template is a named device binding (model, driver, points, outputs, events, services,
interlocks, poll period, connection defaults); a device made from it (``template: NAME``, in
``devices`` or a row of an inventory file) adds its own fields: connection, groups, identity,
and overrides of the template's parts. Mappings merge into the template's (``connection``,
a point's ``address`` or ``deadband``, ``tags``); ``null`` removes a key (a point the device
lacks); ``events`` and ``interlocks`` given as a mapping of rule numbers (counting from 1,
as command replies name them) merge into those rules, given as a list they replace them;
``groups`` add to the template's.

Two things make a fleet cheap. The template's points, outputs, services, events and
interlocks are validated once, and every device that does not override one of them shares
the same validated objects and, after validation, the same container (so the compiled config
grows with templates, not with devices x points; ``devicespec.CompileCache`` then compiles
a shared point map once). And every path of the expanded config remembers where it was
written: an error in a template's point names the template's line once (with the number of
devices it affects), an error in an override or a row names the device's line or the CSV
cell.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, get_args

from pydantic import TypeAdapter, ValidationError

from citytwin.drivers.registry import DRIVER_NAMES
from citytwin.gateway.config import (
    IDENT,
    ConfigIssue,
    GatewayConfig,
    device_config_model,
    format_path,
    issue_at,
)
from citytwin.gateway.inventory import DeviceEntry, Rel, read_csv, read_yaml
from citytwin.gateway.yamlsrc import Located

SHARED_MAPS = ("points", "outputs", "services")
SHARED_LISTS = ("events", "interlocks")
SHARED = SHARED_MAPS + SHARED_LISTS
_DEVICE_ONLY = ("id", "uid", "location", "template")
_MISSING: Any = object()


@cache
def _part_adapter(driver: str, part: str) -> TypeAdapter[Any]:
    """The validator of one whole device part (all points, all rules) for a driver."""
    annotation: Any = device_config_model(driver).model_fields[part].annotation
    return TypeAdapter(annotation)


@cache
def _item_adapter(driver: str, part: str) -> TypeAdapter[Any]:
    """The validator of one item of a device part (one point, one rule) for a driver."""
    annotation = device_config_model(driver).model_fields[part].annotation
    return TypeAdapter(get_args(annotation)[-1])


@dataclass(slots=True)
class Template:
    name: str
    raw: dict[str, Any]
    # part -> the part validated once, whole; a device that does not override it gets an
    # empty placeholder through validation and this very object afterwards (``finish``)
    validated: dict[str, Any] = field(default_factory=dict)
    # part -> for a part that does not validate whole: each item that validates on its own
    # replaced by its validated object, the others raw (each device reports them, deduped)
    parts: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, name: str, raw: dict[str, Any]) -> Template:
        template = cls(name, raw)
        driver = raw.get("driver")
        for part in SHARED:
            items = raw.get(part)
            if driver not in DRIVER_NAMES or not isinstance(items, dict | list):
                if items is not None:
                    template.parts[part] = items
                continue
            try:
                template.validated[part] = _part_adapter(str(driver), part).validate_python(items)
                template.parts[part] = {} if isinstance(items, dict) else []
                continue
            except ValidationError:
                pass
            adapter = _item_adapter(str(driver), part)
            if isinstance(items, dict):
                template.parts[part] = {k: _validated(adapter, v) for k, v in items.items()}
            else:
                template.parts[part] = [_validated(adapter, v) for v in items]
        return template

    def item_parts(self, part: str) -> Any:
        """The part item by item (validated objects where they validate), for overrides."""
        validated = self.validated.get(part)
        if validated is None:
            return self.parts.get(part)
        return dict(validated) if isinstance(validated, dict) else list(validated)


def _validated(adapter: TypeAdapter[Any], value: Any) -> Any:
    try:
        return adapter.validate_python(value)
    except ValidationError:
        return value  # validated again in each device, where the error is reported (once)


def deep_merge(base: Any, over: Any) -> Any:
    """``over`` on top of ``base``: mappings merge, ``None`` removes, anything else replaces."""
    if isinstance(base, dict) and isinstance(over, dict):
        merged = dict(base)
        for key, value in over.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = deep_merge(merged.get(key, _MISSING), value)
        return merged
    return over


class FleetDoc(Located):
    """The expanded config: places every device path in the template, entry, row or cell."""

    __slots__ = ("entries", "issues", "shared_parts", "templates")

    def __init__(self, data: Any, doc: Located) -> None:
        super().__init__(data, doc.source, doc.lines)
        self.entries: list[tuple[DeviceEntry, Template | None]] = []
        self.issues: list[ConfigIssue] = []
        self.templates: dict[str, Template] = {}
        # device index -> part -> the part validated once for every device that names the same
        # YAML node (an anchor and its aliases), set after validation like a template's
        self.shared_parts: dict[int, dict[str, Any]] = {}

    def where(self, path: Rel) -> tuple[str, int, str | None]:
        if len(path) < 2 or path[0] != "devices" or not isinstance(path[1], int) or path[1] >= len(self.entries):
            return super().where(path)
        entry, template = self.entries[path[1]]
        rel = _written(path[2:], entry.data)
        own = _depth(entry.data, rel)
        if template is not None and _depth(template.raw, path[2:]) > own:
            at = ("templates", template.name, *path[2:])
            return self.source, self.line_of(at), format_path(at)
        line, label = entry.locate(rel)
        return entry.source, line, label

    def finish(self, config: GatewayConfig) -> list[ConfigIssue]:
        """After validation: the parts a device took unchanged from its template are the
        template's validated objects, shared by all its devices."""
        for index, (device, (entry, template)) in enumerate(zip(config.devices, self.entries, strict=True)):
            for part, validated in self.shared_parts.get(index, {}).items():
                setattr(device, part, validated)
            if template is None:
                continue
            for part, validated in template.validated.items():
                if part not in entry.data:
                    setattr(device, part, validated)
        return []


def check_uids(fleet: FleetDoc, data: dict[str, Any], devices: list[Any]) -> None:
    """Every uid unique and in the city's coding scheme (``gateway.uid_pattern``), checked on
    the written values so these errors come with all the others."""
    section = data.get("gateway")
    pattern = section.get("uid_pattern") if isinstance(section, dict) else None
    try:
        compiled = re.compile(pattern) if isinstance(pattern, str) else None
    except re.error:
        compiled = None  # validation says so
    owners: dict[str, Any] = {}
    for index, device in enumerate(devices):
        uid = device.get("uid") if isinstance(device, dict) else None
        if not isinstance(uid, str):
            continue
        at = ("devices", index, "uid")
        if compiled is not None and compiled.fullmatch(uid) is None:
            fleet.issues.append(issue_at(fleet, at, f"{uid!r} does not match gateway.uid_pattern {pattern!r}"))
        if uid in owners:
            fleet.issues.append(issue_at(fleet, at, f"uid {uid!r} is already device {owners[uid]!r}'s"))
        owners.setdefault(uid, device.get("id"))


def _written(rel: Rel, own: dict[str, Any]) -> Rel:
    """A validated path as the entry wrote it: rule overrides are keyed by number from 1."""
    if len(rel) >= 2 and rel[0] in SHARED_LISTS and isinstance(own.get(str(rel[0])), dict) and isinstance(rel[1], int):
        return (rel[0], rel[1] + 1, *rel[2:])
    return rel


def _depth(data: Any, rel: Rel) -> int:
    """How many leading parts of ``rel`` exist in ``data``."""
    depth = 0
    for key in rel:
        if isinstance(data, dict):
            if key in data:
                data = data[key]
            elif str(key) in data:
                data = data[str(key)]
            else:
                break
        elif isinstance(data, list) and isinstance(key, int) and 0 <= key < len(data):
            data = data[key]
        else:
            break
        depth += 1
    return depth


def expand_fleet(doc: Located, base_dir: Path, files: Mapping[str, str] | None = None) -> FleetDoc:
    """Templates and inventories into ``devices``; problems found on the way in ``.issues``."""
    data = doc.data
    fleet = FleetDoc(data, doc)
    devices = data.get("devices", [])
    if not isinstance(devices, list):
        return fleet  # validation says so
    entries = [DeviceEntry(d if isinstance(d, dict) else {}, doc.source, doc.line_of(("devices", i)), doc,
                           ("devices", i)) for i, d in enumerate(devices)]
    if "templates" not in data and "inventory" not in data and not any("template" in e.data for e in entries):
        fleet.entries = [(e, None) for e in entries]
        shared = _share_aliases(fleet, devices)
        if shared is not devices:
            fleet.data = dict(data, devices=shared)
        check_uids(fleet, data, devices)
        return fleet
    fleet.templates = _templates(data.get("templates", {}), fleet)
    expanded: list[Any] = []
    for device, entry in zip(devices, entries, strict=True):
        if not isinstance(device, dict):  # validation says so, at its place
            expanded.append(device)
            fleet.entries.append((entry, None))
        else:
            _add(fleet, expanded, entry)
    for entry in _inventory_entries(data.get("inventory"), doc, base_dir, fleet.issues, files or {}):
        _add(fleet, expanded, entry)
    _drop_repeated_ids(fleet, expanded)
    fleet.data = dict(data, devices=_share_aliases(fleet, expanded))
    check_uids(fleet, data, expanded)
    return fleet


def _share_aliases(fleet: FleetDoc, devices: list[Any]) -> list[Any]:
    """Devices written out that name one YAML node for a part (``points: *pumps``) share it.

    The part is validated once, whole, as a template's is; each further device gets an empty
    placeholder through validation and the validated object afterwards (``finish``). Without
    this, 1,000 devices aliasing one 100-point map made 100,000 point models, most of them
    garbage at once, and the heap that held them did not shrink back (docs/performance.md). A
    part that does not validate whole is left to each device, which reports its errors.
    """
    # (driver, part, id of the node) -> _ONCE after its first device, then the part validated
    # once (None: it does not validate whole); ids are unique here, ``devices`` holds every node
    seen: dict[tuple[str, str, int], Any] = {}
    out: list[Any] | None = None
    for index, (device, (_, template)) in enumerate(zip(devices, fleet.entries, strict=False)):
        driver = device.get("driver") if isinstance(device, dict) else None
        if template is not None or not isinstance(driver, str) or driver not in DRIVER_NAMES:
            continue
        for part in SHARED:
            items = device.get(part)
            if not isinstance(items, dict | list) or not items:
                continue
            key = (driver, part, id(items))
            value = seen.get(key, _UNSEEN)
            if value is _UNSEEN:
                seen[key] = _ONCE  # its first device validates it as written
                continue
            if value is _ONCE:
                value = seen[key] = _whole(driver, part, items)
            if value is None:
                continue
            out = out if out is not None else list(devices)
            out[index] = dict(out[index], **{part: {} if isinstance(items, dict) else []})
            fleet.shared_parts.setdefault(index, {})[part] = value
    return out if out is not None else devices


_UNSEEN, _ONCE = object(), object()


def _whole(driver: str, part: str, items: Any) -> Any:
    try:
        return _part_adapter(driver, part).validate_python(items)
    except ValidationError:
        return None


def _drop_repeated_ids(fleet: FleetDoc, expanded: list[Any]) -> None:
    """A device id used again is an error at the second use, naming the first."""
    first: dict[str, DeviceEntry] = {}
    keep = []
    for device, (entry, template) in zip(expanded, fleet.entries, strict=True):
        name = device.get("id") if isinstance(device, dict) else None
        if isinstance(name, str) and name in first:
            other = first[name]
            line, _ = other.locate(("id",))
            _issue(fleet, entry, ("id",), f"device id {name!r} is used twice (first at {other.source}:{line})")
            continue
        if isinstance(name, str):
            first[name] = entry
        keep.append((device, entry, template))
    expanded[:] = [d for d, _, _ in keep]
    fleet.entries = [(e, t) for _, e, t in keep]


def _templates(raw: Any, fleet: FleetDoc) -> dict[str, Template]:
    if not isinstance(raw, dict):
        return {}  # validation says so
    templates = {}
    for name, body in raw.items():
        at: Rel = ("templates", name)
        if not isinstance(name, str) or not re.match(IDENT, name):
            fleet.issues.append(issue_at(fleet, at, f"a template name must match {IDENT}"))
            continue
        if not isinstance(body, dict):
            continue  # validation says so
        for key in _DEVICE_ONLY:
            if key in body:
                fleet.issues.append(issue_at(fleet, (*at, key), f"'{key}' belongs to each device, not to a template"))
        templates[name] = Template.build(name, {k: v for k, v in body.items() if k not in _DEVICE_ONLY})
    return templates


def _inventory_entries(
    raw: Any, doc: Located, base_dir: Path, issues: list[ConfigIssue], files: Mapping[str, str],
) -> list[DeviceEntry]:
    names = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else []
    entries: list[DeviceEntry] = []
    for index, name in enumerate(names):
        at: Rel = ("inventory",) if isinstance(raw, str) else ("inventory", index)
        if not isinstance(name, str):
            continue  # validation says so
        path = Path(name) if Path(name).is_absolute() else base_dir / name
        reader = read_csv if path.suffix.lower() == ".csv" else read_yaml if path.suffix.lower() in (
            ".yaml", ".yml", ".json") else None
        if reader is None:
            issues.append(ConfigIssue(source=doc.source, line=doc.line_of(at), path=format_path(at),
                                      message=f"{name!r}: an inventory is a .csv, .yaml, .yml or .json file"))
            continue
        try:
            text = files[name] if name in files else path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            issues.append(ConfigIssue(source=doc.source, line=doc.line_of(at), path=format_path(at),
                                      message=f"cannot read inventory {name!r}: {exc}"))
            continue
        found, problems = reader(text, name if name in files else str(path))
        entries.extend(found)
        issues.extend(problems)
    return entries


def _add(fleet: FleetDoc, expanded: list[Any], entry: DeviceEntry) -> None:
    """Append one entry's device (made from its template) unless it cannot be made."""
    own = entry.data
    name = own.get("template")
    if name is None:
        expanded.append(own)
        fleet.entries.append((entry, None))
        return
    template = fleet.templates.get(name) if isinstance(name, str) else None
    if template is None:
        close = difflib.get_close_matches(str(name), list(fleet.templates), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f" (templates: {', '.join(fleet.templates) or 'none'})"
        _issue(fleet, entry, ("template",), f"no template {name!r}{hint}")
        return
    if "driver" in own and own["driver"] != template.raw.get("driver"):
        _issue(fleet, entry, ("driver",), f"a device made from template {name!r} uses its driver")
        return
    device: dict[str, Any] = {k: v for k, v in template.raw.items() if k not in SHARED}
    for key, value in own.items():
        if key in SHARED or key == "template":
            continue
        base = device.get(key, _MISSING)
        if key == "groups" and isinstance(base, list) and isinstance(value, list):
            device[key] = [*base, *(g for g in value if g not in base)]
        elif value is None:
            device.pop(key, None)
        else:
            device[key] = deep_merge(base, value)
    for part in SHARED:
        if part in own:
            device[part] = _merge_part(fleet, entry, template, part, own[part])
        elif part in template.parts:
            device[part] = template.parts[part]
    device["template"] = name
    expanded.append(device)
    fleet.entries.append((entry, template))


def _merge_part(fleet: FleetDoc, entry: DeviceEntry, template: Template, part: str, over: Any) -> Any:
    """A device's override of one template part: per item, sharing the items it leaves alone."""
    raw = template.raw.get(part)
    if part in SHARED_MAPS and isinstance(over, dict):
        merged = dict(template.item_parts(part) or {})
        for key, value in over.items():
            base = raw.get(key) if isinstance(raw, dict) else None
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = deep_merge(base, value) if isinstance(base, dict) else value
        return merged
    if part in SHARED_LISTS and isinstance(over, dict):
        rules = list(template.item_parts(part) or [])
        raws = raw if isinstance(raw, list) else []
        dropped = set()
        for key, value in over.items():
            number = int(key) if isinstance(key, int | str) and str(key).isdigit() else 0
            if not 1 <= number <= len(raws):
                _issue(fleet, entry, (part, key),
                       f"template {template.name!r} has {len(raws)} {part}: override them by number, 1..{len(raws)}")
            elif value is None:
                dropped.add(number - 1)
            else:
                rules[number - 1] = deep_merge(raws[number - 1], value)
        return [rule for i, rule in enumerate(rules) if i not in dropped]
    return over


def _issue(fleet: FleetDoc, entry: DeviceEntry, rel: Rel, message: str) -> None:
    line, label = entry.locate(rel)
    fleet.issues.append(ConfigIssue(source=entry.source, line=line, path=label, message=message))


def dedupe_issues(issues: Sequence[ConfigIssue]) -> list[ConfigIssue]:
    """One issue per place and message: an error in a template is not repeated per device."""
    counts = Counter((i.source, i.line, i.path, i.message) for i in issues)
    out, seen = [], set()
    for issue in issues:
        key = (issue.source, issue.line, issue.path, issue.message)
        if key in seen:
            continue
        seen.add(key)
        n = counts[key]
        out.append(issue if n == 1 else issue.model_copy(update={"message": f"{issue.message} (in {n} devices)"}))
    return out


def template_counts(devices: Sequence[Any]) -> dict[str, int]:
    """Devices per template (``None``: written out in full), for ``citytwin config check``."""
    counts: Counter[str] = Counter(getattr(d, "template", None) or "" for d in devices)
    return dict(sorted(counts.items()))

