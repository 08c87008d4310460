"""Why a thing-model document was rejected.

Every issue carries a JSON pointer (RFC 6901) into the document, so the validator can map it
to file:line:col without re-deriving where the problem was, and a stable rule id (see
``rules``) that tools and vendors can key on; a loader reports all issues it finds at once,
because fixing a model one error per run is miserable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem; ``pointer`` is "" for the document root.

    ``rule`` classifies the message and so takes no part in equality: two issues at the same
    place saying the same thing are the same issue.
    """

    pointer: str
    message: str
    rule: str = field(default="", compare=False)

    def __str__(self) -> str:
        tail = f" [{self.rule}]" if self.rule else ""
        return f"{self.pointer or '/'}: {self.message}{tail}"


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


def split_pointer(text: str) -> list[str]:
    """The unescaped reference tokens of a JSON pointer ("" -> [])."""
    if not text:
        return []
    return [t.replace("~1", "/").replace("~0", "~") for t in text.split("/")[1:]]
