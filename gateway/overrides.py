"""Single settings overridden without editing the file: ``--set PATH=VALUE`` and ``CITYTWIN__…``.

Pointing an example at one's own broker should not need a sed'ed copy. ``--set hub.url=mqtt://…``
(repeatable; ``devices[0].poll_period`` or ``devices.0.poll_period``) and environment variables
spelled as EdgeX users know them (``CITYTWIN__HUB__URL``: ``__`` between path segments, names
matched case-insensitively) are applied to the parsed YAML before validation, so an override is
checked exactly like the file; an error in one names the override, not a file line.
Precedence: ``--set`` over the environment over the file. Values are YAML scalars
(``2`` a number, ``true`` a boolean, ``"5"`` a string, ``[a, b]`` a list).

The overrides given to ``citytwin run`` hold for the life of the process (``use``), so a reload
(SIGHUP, ``POST /reload``) applies them to the re-read file again.
"""

from __future__ import annotations

import os
import re
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from citytwin.gateway.config import (
    ConfigError,
    ConfigIssue,
    GatewayConfig,
    format_path,
    load_document,
    parse_document,
)
from citytwin.gateway.yamlsrc import Located

ENV_PREFIX = "CITYTWIN__"
_SEGMENT = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
SECRET_KEYS = ("password",)


@dataclass(frozen=True, slots=True)
class Override:
    path: tuple[str | int, ...]
    value: Any
    origin: str  # how it was given: "--set hub.url=…" or "CITYTWIN__HUB__URL"

    @property
    def shown_path(self) -> str:
        return format_path(self.path)

    def shown_value(self) -> str:
        if self.path and str(self.path[-1]).lower() in SECRET_KEYS:
            return "***"
        return yaml.safe_dump(self.value, default_flow_style=True, width=1 << 16).strip().removesuffix("...").strip()


class OverrideIssue(ConfigIssue):
    """A problem in an override: it has no file line, so it names the override instead."""

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{self.source}: {where}{self.message}"


def parse_path(text: str) -> tuple[str | int, ...]:
    """``devices[0].poll_period`` or ``devices.0.poll_period`` → ``("devices", 0, "poll_period")``."""
    parts: list[str | int] = []
    for dotted in text.split("."):
        if not dotted:
            raise ValueError(f"empty segment in {text!r}")
        end = 0
        for match in _SEGMENT.finditer(dotted):
            if match.start() != end:
                break
            end = match.end()
            name, index = match.groups()
            parts.append(int(index) if index is not None else (int(name) if name.isdigit() else name))
        if end != len(dotted):
            raise ValueError(f"cannot read the path {text!r} (e.g. hub.url, devices[0].poll_period)")
    return tuple(parts)


def _value(text: str) -> Any:
    try:
        return yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        return text


def from_set(items: Iterable[str]) -> list[Override]:
    """``--set PATH=VALUE`` options; ValueError names the bad one."""
    out = []
    for item in items:
        path, sep, value = item.partition("=")
        if not sep or not path.strip():
            raise ValueError(f"--set {item}: expected PATH=VALUE, e.g. hub.url=mqtt://broker:1883")
        try:
            parts = parse_path(path.strip())
        except ValueError as exc:
            raise ValueError(f"--set {item}: {exc}") from None
        out.append(Override(parts, _value(value), f"--set {item}"))
    return out


def from_env(environ: Mapping[str, str] | None = None) -> list[Override]:
    """``CITYTWIN__HUB__URL=…`` variables, sorted by name so the order does not depend on the shell."""
    environ = os.environ if environ is None else environ
    out = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX:
            continue
        segments = name[len(ENV_PREFIX):].split("__")
        parts = tuple(int(s) if s.isdigit() else s.lower() for s in segments if s)
        if parts:
            out.append(Override(parts, _value(environ[name]), name))
    return out


_process: list[Override] = []


def use(overrides: Sequence[Override]) -> None:
    """Keep ``--set`` overrides for this process: every later read of the file applies them."""
    _process[:] = list(overrides)


def active(environ: Mapping[str, str] | None = None) -> list[Override]:
    """The environment's overrides, then the process's ``--set`` ones (later ones win)."""
    return from_env(environ) + list(_process)


def apply(data: Any, overrides: Sequence[Override]) -> list[OverrideIssue]:
    """Set each override in ``data`` (in place); issues for paths that cannot be set."""
    issues = []
    for override in overrides:
        problem = _set(data, override.path)
        if problem is None:
            _put(data, override.path, override.value)
        else:
            issues.append(OverrideIssue(source=override.origin, line=0, path=override.shown_path, message=problem))
    return issues


def _set(data: Any, path: tuple[str | int, ...]) -> str | None:
    """Why ``path`` cannot be set in ``data``, or None (resolving names case-insensitively)."""
    node = data
    for depth, part in enumerate(path):
        last = depth == len(path) - 1
        here = format_path(path[:depth]) or "the top level"
        if isinstance(node, list):
            if not isinstance(part, int):
                return f"{here} is a list: give an index, e.g. {format_path((*path[:depth], 0))}"
            if not 0 <= part < len(node):
                return f"{here} has {len(node)} item(s); index {part} is out of range"
            if not last:
                node = node[part]
        elif isinstance(node, dict):
            if not last:
                key = _key(node, part)
                if key not in node or node[key] is None:
                    node[key] = {}
                node = node[key]
        else:
            return f"{here} is a single value, not a section"
    return None


def _put(data: Any, path: tuple[str | int, ...], value: Any) -> None:
    node = data
    for part in path[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[_key(node, part)]
    last = path[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[_key(node, last)] = value


def _key(node: dict[Any, Any], part: str | int) -> Hashable:
    """The existing key ``part`` names (``HUB`` or ``0`` from the environment), else ``part``."""
    if part in node:
        return part
    text = str(part).lower()
    for key in node:
        if str(key).lower() == text:
            return key  # type: ignore[no-any-return]
    return str(part)


def _blame(issues: Iterable[ConfigIssue], overrides: Sequence[Override], doc: Located | None) -> list[ConfigIssue]:
    """An issue is an override's when it lies at or below the overridden path, or within what the
    override created (``--set devices[0].points.new.address=3`` creates ``new``: its missing
    ``table`` is the override's too). The last override given wins."""
    out: list[ConfigIssue] = []
    for issue in issues:
        owner = None
        if not isinstance(issue, OverrideIssue):
            for override in overrides:
                if _owns(override, issue.path, doc):
                    owner = override
        out.append(issue if owner is None else
                   OverrideIssue(source=owner.origin, line=0, path=issue.path, message=issue.message))
    return out


def _owns(override: Override, shown: str, doc: Located | None) -> bool:
    if shown == override.shown_path or shown.startswith((override.shown_path + ".", override.shown_path + "[")):
        return True
    if doc is None:
        return False
    try:
        path = parse_path(shown)
    except ValueError:
        return False
    common: list[str | int] = []
    for mine, theirs in zip(override.path, path, strict=False):
        if str(mine).lower() != str(theirs).lower():
            break
        common.append(theirs)
    # nothing in common but the top level, or a common part the file has: not the override's
    return len(common) > 0 and tuple(common) not in doc.lines


def blame(error: ConfigError, overrides: Sequence[Override], doc: Located | None = None) -> ConfigError:
    return ConfigError(_blame(error.issues, overrides, doc)) if overrides else error


def parse(
    text: str, source: str, overrides: Sequence[Override] = (), base_dir: Path | None = None,
    files: Mapping[str, str] | None = None,
) -> tuple[GatewayConfig, Located]:
    """``parse_config`` with overrides applied before validation; every issue at once. The
    document returned places every path of the config (templates and inventories expanded)."""
    doc = load_document(text, source)
    problems = apply(doc.data, overrides)
    try:
        config, placed = parse_document(doc, Path(source).parent if base_dir is None else base_dir, files)
    except ConfigError as exc:
        raise ConfigError(problems + _blame(exc.issues, overrides, doc)) from None
    if problems:
        raise ConfigError(problems)
    return config, placed
