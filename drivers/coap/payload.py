"""CoAP payloads: decode by Content-Format, encode by format name, JSON pointers into them.

Only three media types are spoken: application/json (50), application/cbor (60) and
text/plain (0, also assumed when a response names none). A text payload that parses as a
JSON scalar ("21.5", "true") is that scalar, so plain sensors read as numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cbor2
import orjson

from citytwin.drivers.coap.binding import Format
from citytwin.drivers.errors import BindingError, DecodeError
from citytwin.drivers.jsonpointer import MISSING, parse_pointer, place
from citytwin.drivers.jsonpointer import resolve as resolve_or_missing

CONTENT_FORMAT: dict[Format, int] = {"text": 0, "json": 50, "cbor": 60}
FORMAT_NAME: dict[int, str] = {0: "text/plain", 50: "application/json", 60: "application/cbor"}


def decode(payload: bytes, content_format: int | None) -> Any:
    """The document a payload carries. Raises ``DecodeError`` for anything malformed."""
    try:
        if content_format == 50:
            return orjson.loads(payload)
        if content_format == 60:
            return cbor2.loads(payload)
    except (orjson.JSONDecodeError, cbor2.CBORDecodeError, ValueError) as exc:
        name = FORMAT_NAME[int(content_format or 0)]
        raise DecodeError(f"malformed {name} payload: {exc}") from None
    if content_format is not None and content_format != 0:
        raise DecodeError(f"unsupported Content-Format {int(content_format)}")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"text payload is not UTF-8: {exc}") from None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
    return value if not isinstance(value, dict | list) else text


def encode(document: Any, fmt: Format) -> bytes:
    """``document`` as a payload of format ``fmt``; raises ``BindingError`` if it cannot be."""
    try:
        if fmt == "json":
            return orjson.dumps(document)
        if fmt == "cbor":
            return cbor2.dumps(document)
    except (TypeError, ValueError, cbor2.CBOREncodeError) as exc:
        raise BindingError(f"cannot encode {document!r} as {fmt}: {exc}") from None
    if isinstance(document, str):
        return document.encode("utf-8")
    if document is None or isinstance(document, bool | int | float):
        return orjson.dumps(document)
    raise BindingError(f"a text payload must be a scalar, not {type(document).__name__}")


def split_pointer(pointer: str) -> tuple[str, ...]:
    """RFC 6901 reference tokens of a pointer ("" is the whole document)."""
    return parse_pointer(pointer)


def resolve(document: Any, tokens: tuple[str, ...]) -> Any:
    """The value at ``tokens``; raises ``KeyError`` naming the first token that is absent."""
    value = resolve_or_missing(document, tokens)
    if value is MISSING:
        for end in range(1, len(tokens) + 1):
            if resolve_or_missing(document, tokens[:end]) is MISSING:
                raise KeyError(tokens[end - 1])
    return value


def build(values: Mapping[tuple[str, ...], Any]) -> Any:
    """One document holding every value at its tokens (objects only, no arrays)."""
    document: Any = None
    for tokens, value in values.items():
        if not tokens:
            document = value
            continue
        if not isinstance(document, dict):
            document = {}
        place(document, tokens, value)
    return document
