"""``PROPERTY OP VALUE``: one condition type for event triggers and interlocks, compiled once.

A config names conditions as text (``level >= 0.5``, ``pump{pump}_fault == false``); they
are parsed when the config is compiled, never per command or per poll. The property side may
name a module property (``pump_1:fault``) and, in interlocks, use ``{input}`` templates filled
from the command's inputs; the value side is read as YAML reads it (numbers, booleans, text).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from citytwin.drivers.templates import fill, template_fields

# the property may hold {input} templates; they are checked against the service's inputs
CONDITION = re.compile(
    r"^\s*([A-Za-z_{][A-Za-z0-9_{}]*(?::[A-Za-z_{][A-Za-z0-9_{}]*)?)\s*(>=|<=|==|!=|>|<)\s*(\S+)\s*$"
)
CONDITION_HELP = "must look like 'PROPERTY OP VALUE' with OP one of > >= < <= == !="
OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt,
    "<=": operator.le, "==": operator.eq, "!=": operator.ne,
}


def parse_literal(text: str) -> Any:
    """The value side of a condition, as YAML reads it (numbers, true/false, strings)."""
    return yaml.safe_load(text)


def is_condition(text: str) -> bool:
    return CONDITION.match(text) is not None


@dataclass(frozen=True, slots=True)
class Condition:
    prop: str  # a property name, or a template of one
    op_text: str
    value: Any
    text: str
    fields: tuple[str, ...]  # the {input} names the property side uses

    @classmethod
    def parse(cls, text: str) -> Condition:
        match = CONDITION.match(text)
        if match is None:
            raise ValueError(f"{text!r} {CONDITION_HELP}")
        prop, op, literal = match.groups()
        return cls(prop, op, parse_literal(literal), text.strip(), tuple(template_fields(prop)))

    def property_for(self, inputs: Mapping[str, Any]) -> str:
        """The property this condition reads for one command (raises MissingInput)."""
        return fill(self.prop, inputs) if self.fields else self.prop

    def describe(self, inputs: Mapping[str, Any]) -> str:
        return f"{self.property_for(inputs)} {self.op_text} {_show(self.value)}"

    def compare(self, current: Any) -> bool:
        """Whether the condition holds for ``current``; a value of another type never holds."""
        try:
            return bool(OPERATORS[self.op_text](current, self.value))
        except TypeError:
            return False

    def holds(self, values: Mapping[str, Any]) -> bool:
        """For event rules: the condition on the current values (no value: does not hold)."""
        current = values.get(self.prop)
        return current is not None and self.compare(current)


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
