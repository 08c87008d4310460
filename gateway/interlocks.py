"""Interlocks and limits declared per device, checked before any write; they fail closed.

A violated rule rejects the command with the rule's number and text, so an operator reads
*which* safety rule stopped a pump start, not just that something did. ``require`` and
``max_change`` read the device's reported values **with their quality and age**: a value that
is bad, stale (older than the rule's ``max_age``, by default the device's ``stale_after`` or 3
poll periods) or missing violates the rule, and so does an uncertain one unless the rule says
``accept: uncertain``. An interlock that passed on a failed sensor would be worse than none:
it would tell the operator the pump was started safely. Such refusals say what was wrong with
the value, never the rule's configured ``message`` (which describes the trusted-value case).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from citytwin.drivers.templates import MissingInput, fill
from citytwin.gateway.commandlog import CommandLog
from citytwin.gateway.conditions import Condition
from citytwin.gateway.config import Interlock


class Current(NamedTuple):
    """A property's reported value as the device runner last confirmed it."""

    value: Any
    quality: str  # good | uncertain | bad
    reason: str | None  # why it is not good
    age: float  # seconds since the gateway last confirmed it (poll, push, live subscription)


class CurrentValues(Protocol):
    def current(self, prop: str) -> Current | None: ...


@dataclass(frozen=True, slots=True)
class InterlockRule:
    """One configured rule, compiled with the device (conditions parsed once, names checked)."""

    number: int
    rule: Interlock
    condition: Condition | None  # for require
    change_property: str | None  # for max_change (may hold {input} templates)
    max_age: float  # seconds

    def describe(self, inputs: Mapping[str, Any]) -> str:
        rule = self.rule
        per = f" per {rule.per_input}" if rule.per_input else ""
        try:
            if self.condition is not None:
                return f"require {self.condition.describe(inputs)}"
            if rule.max_per_hour is not None:
                return f"at most {rule.max_per_hour} per hour{per}"
            if rule.min_interval is not None:
                return f"at least {rule.min_interval:g} s apart{per}"
            assert rule.max_change is not None and self.change_property is not None
            change = rule.max_change
            return f"{change.input} may differ from {fill(self.change_property, inputs)} by at most {change.limit:g}"
        except MissingInput:
            return (self.condition.text if self.condition else str(self.change_property))


async def check_interlocks(
    rules: list[InterlockRule],
    device: str,
    service: str,
    inputs: Mapping[str, Any],
    values: CurrentValues,
    log: CommandLog,
) -> str | None:
    """None when every rule for this service holds, else the reason of the first that does not."""
    for rule in rules:
        if service not in rule.rule.services:
            continue
        untrusted, violated = await _violation(rule, device, inputs, values, log)
        if untrusted is not None:
            return f"interlock {rule.number} ({rule.describe(inputs)}): {untrusted}"
        if violated is not None:
            return f"interlock {rule.number} ({rule.describe(inputs)}): {rule.rule.message or violated}"
    return None


def trusted(rule: InterlockRule, prop: str, values: CurrentValues) -> tuple[Any, str | None]:
    """The property's value if the rule may trust it, else (None, why not)."""
    current = values.current(prop)
    if current is None or (current.value is None and current.quality != "bad"):
        return None, f"{prop} has no current value"
    if current.quality == "bad":
        return None, f"{prop} is bad: {current.reason or 'no reason given'}"
    if current.quality == "uncertain" and rule.rule.accept != "uncertain":
        return None, f"{prop} is uncertain: {current.reason if current.reason else repr(current.value)}"
    if current.age > rule.max_age:
        return None, (f"{prop} is stale: last confirmed {current.age:.1f} s ago "
                      f"(max_age {rule.max_age:g} s)")
    return current.value, None


async def _violation(
    rule: InterlockRule, device: str, inputs: Mapping[str, Any], values: CurrentValues, log: CommandLog
) -> tuple[str | None, str | None]:
    """(why the data cannot be trusted, why the rule is violated on trusted data)."""
    config = rule.rule
    try:
        if rule.condition is not None:
            prop = rule.condition.property_for(inputs)
            value, why = trusted(rule, prop, values)
            if why is not None:
                return why, None
            if not rule.condition.compare(value):
                return None, f"{prop} is {value!r}"
            return None, None
        if rule.change_property is not None:
            assert config.max_change is not None
            change = config.max_change
            prop = fill(rule.change_property, inputs)
            value, why = trusted(rule, prop, values)
            if why is not None:
                return why, None
            target = inputs.get(change.input)
            if not isinstance(target, int | float) or not isinstance(value, int | float) \
                    or abs(target - value) > change.limit:
                return None, f"{change.input} {target!r} is more than {change.limit:g} from {prop} {value!r}"
            return None, None
    except MissingInput as exc:
        return f"cannot evaluate: {exc}", None
    window = 3600.0 if config.max_per_hour is not None else float(config.min_interval or 0)
    now = time.time_ns() // 1_000_000
    history = await log.executed_since(device, config.services, now - int(window * 1000))
    if config.per_input is not None:
        key = inputs.get(config.per_input)
        history = [h for h in history if h[1].get(config.per_input) == key]
    if config.max_per_hour is not None and len(history) >= config.max_per_hour:
        return None, f"{len(history)} in the last hour"
    if config.min_interval is not None and history:
        return None, f"the last was {(now - history[-1][0]) / 1000:.1f} s ago"
    return None, None
