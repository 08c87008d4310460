"""The vendor validator: every problem in a model document, each with file:line:col, the JSON
pointer, a stable rule id and a message a vendor understands.

``pump.json:12:7 /properties/3/dataType/specs/min: min 10 is greater than max 5 [range-order]``

Text in, report out; reading files and choosing exit codes is the CLI's business.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from citytwin.thingmodels.errors import Issue
from citytwin.thingmodels.lint import lint_model
from citytwin.thingmodels.loader import Resolver, check_model
from citytwin.thingmodels.positions import (
    DocumentSyntaxError,
    ParsedDocument,
    Position,
    parse_document,
)
from citytwin.thingmodels.rules import Severity, severity_of
from citytwin.thingmodels.types import ThingModel


@dataclass(frozen=True, slots=True)
class Finding:
    source: str
    line: int
    column: int
    pointer: str
    rule: str
    severity: Severity
    message: str

    def __str__(self) -> str:
        label = "warning: " if self.severity is Severity.WARNING else ""
        return f"{self.source}:{self.line}:{self.column} {self.pointer or '/'}: {label}{self.message} [{self.rule}]"

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.source,
            "line": self.line,
            "column": self.column,
            "pointer": self.pointer,
            "rule": self.rule,
            "severity": str(self.severity),
            "message": self.message,
        }


@dataclass(slots=True)
class Report:
    """What validating one document found; ``model`` is None when it is invalid."""

    source: str
    findings: list[Finding] = field(default_factory=list)
    model: ThingModel | None = None

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.WARNING]

    @property
    def valid(self) -> bool:
        return not self.errors

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.source,
            "valid": self.valid,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "findings": [f.as_dict() for f in self.findings],
        }


def validate_text(
    text: str, source: str, resolve: Resolver | None = None, lint: bool = False
) -> Report:
    """Validate a JSON (or, by ``source``'s suffix, YAML) document; ``lint`` adds warnings."""
    report = Report(source)
    try:
        parsed = parse_document(text, source)
    except DocumentSyntaxError as exc:
        where = exc.position
        report.findings.append(
            Finding(source, where.line, where.column, "", exc.rule, Severity.ERROR, exc.message)
        )
        return report
    return validate_parsed(parsed, source, resolve, lint)


def validate_parsed(
    parsed: ParsedDocument, source: str, resolve: Resolver | None = None, lint: bool = False
) -> Report:
    report = Report(source)
    model, issues = check_model(parsed.data, resolve)
    found: list[Issue] = [*parsed.duplicates, *issues]
    if lint and model is not None and not found:
        found.extend(lint_model(model))
    report.findings = locate(found, parsed, source)
    if not report.errors:
        report.model = model
    return report


def locate(issues: Sequence[Issue], parsed: ParsedDocument, source: str) -> list[Finding]:
    """Findings for ``issues`` in line order (a stable sort keeps equal places in issue order)."""
    findings = []
    for issue in issues:
        where: Position = parsed.position_of(issue.pointer)
        rule = issue.rule or "value-type"
        findings.append(
            Finding(source, where.line, where.column, issue.pointer, rule, severity_of(rule), issue.message)
        )
    findings.sort(key=lambda f: (f.line, f.column))
    return findings
