"""Interlocks and limits declared per device, checked before any write.

A violated rule rejects the command with the rule's number and text, so an operator reads
*which* safety rule stopped a pump start, not just that something did.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from citytwin.gateway.commandlog import CommandLog
from citytwin.gateway.config import CONDITION, Interlock
from citytwin.gateway.devicespec import CONDITION_OPS, parse_literal


def _fill(template: str, inputs: Mapping[str, Any]) -> str:
    try:
        return template.format(**inputs) if "{" in template else template
    except (KeyError, IndexError, ValueError):
        return template


async def check_interlocks(
    rules: list[Interlock],
    device: str,
    service: str,
    inputs: Mapping[str, Any],
    values: Mapping[str, Any],
    log: CommandLog,
) -> str | None:
    """None when every rule for this service holds, else the reason of the first that does not."""
    for number, rule in enumerate(rules, 1):
        if service not in rule.services:
            continue
        reason = await _violation(rule, device, inputs, values, log)
        if reason is not None:
            label = rule.message or reason
            return f"interlock {number} ({_describe(rule, inputs)}): {label}"
    return None


def _describe(rule: Interlock, inputs: Mapping[str, Any]) -> str:
    if rule.require is not None:
        return f"require {_fill(rule.require, inputs)}"
    if rule.max_per_hour is not None:
        return f"at most {rule.max_per_hour} per hour" + (f" per {rule.per_input}" if rule.per_input else "")
    if rule.min_interval is not None:
        return f"at least {rule.min_interval:g} s apart" + (f" per {rule.per_input}" if rule.per_input else "")
    assert rule.max_change is not None
    change = rule.max_change
    return f"{change.input} may differ from {_fill(change.property, inputs)} by at most {change.limit:g}"


async def _violation(
    rule: Interlock, device: str, inputs: Mapping[str, Any], values: Mapping[str, Any], log: CommandLog
) -> str | None:
    if rule.require is not None:
        text = _fill(rule.require, inputs)
        match = CONDITION.match(text)
        if match is None:
            return f"cannot evaluate {text!r}"
        prop, op, literal = match.groups()
        current = values.get(prop)
        if current is None:
            return f"{prop} has no current value"
        try:
            if not CONDITION_OPS[op](current, parse_literal(literal)):
                return f"{prop} is {current!r}"
        except TypeError:
            return f"{prop} is {current!r}"
        return None
    if rule.max_change is not None:
        change = rule.max_change
        prop = _fill(change.property, inputs)
        target, current = inputs.get(change.input), values.get(prop)
        if current is None:
            return f"{prop} has no current value"
        if not isinstance(target, int | float) or abs(target - current) > change.limit:
            return f"{change.input} {target!r} is more than {change.limit:g} from {prop} {current!r}"
        return None
    window = 3600.0 if rule.max_per_hour is not None else float(rule.min_interval or 0)
    since = time.time_ns() // 1_000_000 - int(window * 1000)
    history = await log.executed_since(device, rule.services, since)
    if rule.per_input is not None:
        key = inputs.get(rule.per_input)
        history = [h for h in history if h[1].get(rule.per_input) == key]
    if rule.max_per_hour is not None and len(history) >= rule.max_per_hour:
        return f"{len(history)} in the last hour"
    if rule.min_interval is not None and history:
        ago = (time.time_ns() // 1_000_000 - history[-1][0]) / 1000
        return f"the last was {ago:.1f} s ago"
    return None

