"""Why a thing-model document was rejected.

Every issue carries a JSON pointer (RFC 6901) into the document, so a later validator can map
it to file:line:col without re-deriving where the problem was; a loader reports all issues it
finds at once, because fixing a model one error per run is miserable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem; ``pointer`` is "" for the document root."""

    pointer: str
    message: str

    def __str__(self) -> str:
        return f"{self.pointer or '/'}: {self.message}"


class ModelError(ValueError):
    """A document is not a valid thing model; ``issues`` lists every problem found."""

    def __init__(self, source: str, issues: Sequence[Issue]) -> None:
        self.source = source
        self.issues: list[Issue] = list(issues)
        lines = "\n".join(f"  {source}#{i.pointer}: {i.message}" for i in self.issues)
        count = len(self.issues)
        super().__init__(f"{source}: {count} issue{'s' if count != 1 else ''}\n{lines}")


def pointer(base: str, token: str | int) -> str:
    """Append one reference token to a JSON pointer, escaping ``~`` and ``/``."""
    text = str(token).replace("~", "~0").replace("/", "~1")
    return f"{base}/{text}"
