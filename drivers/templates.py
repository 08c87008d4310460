"""Service inputs in bindings: ``{name}`` inside a point name and ``"$name"`` as a value.

One implementation for the gateway's service writes and interlocks and for the drivers'
payload templates (CoAP, MQTT), so a missing input is treated one way everywhere: it is an
error naming the template and the input, never a silent ``None`` or the raw template text.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from typing import Any

from citytwin.drivers.errors import BindingError


class MissingInput(BindingError):
    """A template names an input that the call did not carry."""

    def __init__(self, template: str, name: str) -> None:
        super().__init__(f"{template!r} needs the input {name!r}, which was not given")
        self.template = template
        self.name = name


def template_fields(template: str) -> list[str]:
    """The input names a ``{name}`` template uses, in order (empty for plain text)."""
    if "{" not in template:
        return []
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def fill(template: str, inputs: Mapping[str, Any]) -> str:
    """``template`` with each ``{name}`` replaced by ``inputs[name]``."""
    if "{" not in template:
        return template
    for name in template_fields(template):
        if name not in inputs:
            raise MissingInput(template, name)
    return template.format_map(inputs)


_REFERENCE = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)$")


def input_reference(value: Any) -> str | None:
    """The input a ``"$name"`` value refers to, or None for a literal (``"$5"`` is a literal)."""
    if isinstance(value, str) and value.startswith("$"):
        match = _REFERENCE.match(value)
        return match[1] if match else None
    return None


def substitute(template: Any, inputs: Mapping[str, Any]) -> Any:
    """A fresh copy of a JSON-like ``template`` with every ``"$name"`` replaced by its input."""
    name = input_reference(template)
    if name is not None:
        if name not in inputs:
            raise MissingInput(template, name)
        return inputs[name]
    if isinstance(template, dict):
        return {key: substitute(value, inputs) for key, value in template.items()}
    if isinstance(template, list):
        return [substitute(value, inputs) for value in template]
    return template
