"""The catalogue of rule ids: stable names for every check, so a vendor's CI can key on them.

Ids never change meaning once published; a new check gets a new id. ``ERROR`` rules make a
model invalid (``citytwin model validate``); ``WARNING`` rules are advice reported by
``citytwin model lint`` (and by ``validate --lint``). docs/thing-models.md says where each
TSL limit comes from.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final


class Severity(enum.StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    severity: Severity
    summary: str


def _rules(severity: Severity, *pairs: tuple[str, str]) -> dict[str, Rule]:
    return {rule_id: Rule(rule_id, severity, summary) for rule_id, summary in pairs}


_E = Severity.ERROR
_W = Severity.WARNING

RULES: Final[dict[str, Rule]] = {
    **_rules(
        _E,
        ("json-syntax", "the file is not valid JSON (NaN and Infinity included)"),
        ("yaml-syntax", "the file is not valid YAML"),
        ("duplicate-key", "an object names the same key twice (plain JSON parsers keep the last)"),
        ("document-type", "the document must be an object"),
        ("required-key", "a required key is missing"),
        ("value-type", "a value has the wrong JSON type"),
        ("product-key", "the product key is not 1-64 letters, digits, '.', '_' or '-'"),
        ("identifier-pattern", "an identifier is not 1-50 letters, digits or '_' starting with a letter"),
        ("identifier-reserved", "an identifier is a word TSL reserves (set, get, post, ...)"),
        ("identifier-duplicate", "an identifier is used twice in one module or parameter list"),
        ("name-empty", "a display name is missing or blank"),
        ("access-mode", "accessMode is not 'r' or 'rw'"),
        ("event-type", "an event type is not info, alert or error"),
        ("call-type", "a service callType is not sync or async"),
        ("data-type", "an unknown data type"),
        ("specs-shape", "specs have the wrong shape for the data type"),
        ("number-format", "a numeric spec is not a number or numeric string"),
        ("number-finite", "a numeric spec is NaN or infinite"),
        ("int-spec", "a spec of an int type is not an integer"),
        ("number-range", "a numeric spec is outside what its type can hold"),
        ("range-order", "min is greater than max"),
        ("step-positive", "step is zero or negative"),
        ("step-range", "step is larger than the range max - min"),
        ("bool-keys", "bool specs must name exactly the values 0 and 1"),
        ("enum-key", "an enum value is not an int32 integer"),
        ("enum-empty", "enum specs list no value"),
        ("text-length", "text length is not 1..10240"),
        ("array-size", "array size is not 1..512"),
        ("array-item-type", "array items are not int, float, double, text or struct"),
        ("struct-empty", "a struct has no field"),
        ("struct-field-type", "a struct field is a struct or an array (TSL allows no nesting)"),
        ("default-value", "an extension default value does not pass the data type's own check"),
        ("extension", "the x-citytwin extension block has an unknown key or a malformed value"),
        ("module-identifier", "a module identifier is not 1-30 letters, digits or '_'"),
        ("module-ref", "a module names a model that cannot be found or is itself modular"),
        ("module-count", "more modules than TSL allows in one product"),
    ),
    **_rules(
        _W,
        ("unit-missing", "a numeric property has no unit"),
        ("ucum-missing", "a numeric property with a unit has no UCUM code in the extension"),
        ("range-missing", "a writable numeric property has no min or max"),
        ("description-missing", "a property, event or service has no description"),
        ("unknown-key", "a key that neither TSL nor the citytwin extension defines (a typo?)"),
        ("method-mismatch", "a TSL method does not match the identifier it belongs to"),
    ),
}


def severity_of(rule_id: str) -> Severity:
    rule = RULES.get(rule_id)
    return rule.severity if rule is not None else Severity.ERROR
