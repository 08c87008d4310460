"""JSON pointers (RFC 6901) into device payloads, shared by the drivers that read documents.

Compiled once per binding (``parse_pointer``) so that each payload costs one walk per point.
Stdlib only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MISSING: Any = object()
"""What ``resolve`` returns when the pointer names nothing in the document."""


def parse_pointer(text: str) -> tuple[str, ...]:
    """``"/a/b~1c/0"`` -> ``("a", "b/c", "0")``; ``""`` is the whole document.

    Raises ``ValueError`` for text that is not a JSON pointer.
    """
    if text == "":
        return ()
    if not text.startswith("/"):
        raise ValueError("a JSON pointer is empty or starts with '/'")
    tokens = []
    for raw in text[1:].split("/"):
        if "~" in raw.replace("~0", "").replace("~1", ""):
            raise ValueError(f"'~' must be followed by 0 or 1 in {raw!r}")
        tokens.append(raw.replace("~1", "/").replace("~0", "~"))
    return tuple(tokens)


def resolve(doc: Any, tokens: tuple[str, ...]) -> Any:
    """The value at ``tokens`` in ``doc``, or ``MISSING``."""
    for token in tokens:
        if isinstance(doc, Mapping):
            doc = doc.get(token, MISSING)
            if doc is MISSING:
                return MISSING
        elif isinstance(doc, list):
            if not token.isdigit() or (token != "0" and token.startswith("0")):
                return MISSING
            index = int(token)
            if index >= len(doc):
                return MISSING
            doc = doc[index]
        else:
            return MISSING
    return doc


def place(doc: dict[str, Any], tokens: tuple[str, ...], value: Any) -> None:
    """Set ``value`` at ``tokens`` in ``doc``, creating objects on the way."""
    if not tokens:
        raise ValueError("cannot place a value at the document root")
    node = doc
    for token in tokens[:-1]:
        child = node.get(token)
        if not isinstance(child, dict):
            child = node[token] = {}
        node = child
    node[tokens[-1]] = value
