"""NodeId strings as bindings write them, parsed without asyncua.

The OPC UA text form (Part 6, 5.3.1.10): ``ns=2;s=Signal.Phase``, ``ns=2;i=1001``,
``ns=1;g=<guid>``, ``ns=1;b=<base64>``, ``i=2258`` (namespace 0), or with a namespace URI
instead of an index, ``nsu=urn:city:intersection;s=Phase``. Indexes may differ between
servers and even between restarts of one server; URIs do not, so bindings that must survive
a server upgrade should say ``nsu=``. The URI is resolved against the server's namespace
array after each connect.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from typing import Literal, NamedTuple

IdKind = Literal["i", "s", "g", "b"]

_TEXT = re.compile(r"^(?:(?:ns=(?P<ns>\d+)|nsu=(?P<nsu>[^;]+));)?(?P<kind>[isgb])=(?P<id>.+)$", re.S)


class NodeIdText(NamedTuple):
    """A parsed NodeId: namespace by index or by URI (exactly one), identifier kind and text."""

    namespace: int
    uri: str | None
    kind: IdKind
    identifier: str

    def __str__(self) -> str:
        prefix = f"nsu={self.uri};" if self.uri is not None else (f"ns={self.namespace};" if self.namespace else "")
        return f"{prefix}{self.kind}={self.identifier}"


def parse_nodeid(text: str) -> NodeIdText:
    """Raises ValueError with a reason an operator can act on."""
    match = _TEXT.match(text.strip())
    if match is None:
        raise ValueError(
            f"{text!r} is not a NodeId; write ns=2;s=Name, ns=2;i=1001 or nsu=URI;s=Name"
        )
    kind: IdKind = match["kind"]  # type: ignore[assignment]
    ident = match["id"]
    if kind == "i":
        if not ident.isdigit() or int(ident) > 0xFFFFFFFF:
            raise ValueError(f"{text!r}: a numeric identifier must be 0..4294967295")
    elif kind == "g":
        try:
            uuid.UUID(ident)
        except ValueError:
            raise ValueError(f"{text!r}: g= needs a GUID") from None
    elif kind == "b":
        try:
            base64.b64decode(ident, validate=True)
        except binascii.Error:
            raise ValueError(f"{text!r}: b= needs base64") from None
    namespace = int(match["ns"]) if match["ns"] is not None else 0
    if namespace > 0xFFFF:
        raise ValueError(f"{text!r}: a namespace index must be 0..65535")
    return NodeIdText(namespace, match["nsu"], kind, ident)
