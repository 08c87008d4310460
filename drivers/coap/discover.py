"""``citytwin discover coap://HOST[:PORT]``: a device's resources as a starting binding.

``GET /.well-known/core`` (RFC 6690) lists the device's resources with what the link format
can say of them: ``obs`` (observable), ``title``, ``rt`` (resource type), ``if`` (interface).
Each listed resource is read once with GET; every scalar in its representation (JSON, CBOR,
or a plain-text scalar) becomes a point, its path and JSON pointer, observed where the link
says ``obs``. The link format has no attribute for units, ranges or writability, so:

- the type is the value's: bool, or double for any number (one reading cannot tell a
  whole-numbered real from an integer quantity; a double holds both); a text value is noted
  and left out, as the CoAP driver binds numbers and booleans only;
- a point is writable only where the link's interface says parameter or actuator
  (``if="core.p"`` / ``"core.a"``, CoRE Interfaces); discovery never tries a write;
- a resource that refuses GET with 4.05 is an operation: a service that POSTs to it;
- the link's ``title`` (and ``rt``) becomes the description.

What could not be read is listed in ``notes``, never dropped silently.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Set as AbstractSet
from typing import Any
from urllib.parse import urlsplit

import yaml
from aiocoap import GET, Message
from aiocoap import error as coap_error
from aiocoap.numbers.codes import Code

from citytwin.drivers.coap import context
from citytwin.drivers.coap.payload import decode
from citytwin.drivers.errors import ConnectError, DecodeError

_LINK = re.compile(r'\s*<([^>]*)>((?:\s*;\s*[^;,="\s]+(?:\s*=\s*(?:"[^"]*"|[^;,"]*))?)*)\s*(?:,|$)')
_PARAM = re.compile(r';\s*([^;,="\s]+)(?:\s*=\s*(?:"([^"]*)"|([^;,"]*)))?')
_WRITABLE_INTERFACES = {"core.p", "core.a", "core.rp"}  # parameter, actuator, read-write parameter
_MAX_DEPTH = 4


def parse_links(text: str) -> list[tuple[str, dict[str, str]]]:
    """RFC 6690 link format: each target with its attributes (a flag such as ``obs`` -> "")."""
    links: list[tuple[str, dict[str, str]]] = []
    pos = 0
    while pos < len(text.rstrip()):
        match = _LINK.match(text, pos)
        if match is None or match.end() == pos:
            raise DecodeError(f"malformed link format at character {pos}: {text[pos:pos + 40]!r}")
        attrs = {m.group(1): m.group(2) if m.group(2) is not None else (m.group(3) or "").strip()
                 for m in _PARAM.finditer(match.group(2))}
        links.append((match.group(1), attrs))
        pos = match.end()
    return links


def _snake(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _leaves(document: Any, pointer: str = "", depth: int = 0) -> list[tuple[str, str]]:
    """(JSON pointer, TSL type) of every scalar a point can bind, objects walked."""
    if isinstance(document, bool):
        return [(pointer, "bool")]
    if isinstance(document, int | float):
        return [(pointer, "double")]
    if isinstance(document, str):
        return [(pointer, "text")]
    if isinstance(document, dict) and depth < _MAX_DEPTH:
        found: list[tuple[str, str]] = []
        for key, value in document.items():
            escaped = str(key).replace("~", "~0").replace("/", "~1")
            found += _leaves(value, f"{pointer}/{escaped}", depth + 1)
        return found
    return []  # arrays, null, deep nesting: bind by hand


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme != "coap" or not parts.hostname:
        raise ValueError(f"{url!r}: expected coap://HOST[:PORT]")
    return parts.hostname, parts.port or 5683


async def _get(ctx: Any, base: str, path: str, timeout: float) -> Any:
    async with asyncio.timeout(timeout):
        return await ctx.request(Message(code=GET, uri=base + path)).response


async def browse_coap(url: str, timeout: float = 5.0) -> dict[str, Any]:
    """The binding as plain data, with ``hints`` (type, description) per point and service."""
    host, port = _address(url)
    base = f"coap://{host}:{port}"
    points: dict[str, dict[str, Any]] = {}
    services: dict[str, dict[str, Any]] = {}
    hints: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    ctx = await context.acquire()
    try:
        try:
            listing = await _get(ctx, base, "/.well-known/core", timeout)
        except (TimeoutError, coap_error.Error) as exc:
            raise ConnectError(f"no answer from {base}/.well-known/core within {timeout} s"
                               + (f": {exc}" if str(exc) else "")) from None
        if not listing.code.is_successful():
            raise ConnectError(f"{base}/.well-known/core answered {listing.code.dotted} {listing.code.name_printable}")
        for target, attrs in parse_links(listing.payload.decode("utf-8", "replace")):
            if "://" in target or not target.startswith("/") or target.startswith("/.well-known/") or "rel" in attrs:
                continue  # another host's, the listing itself, or a relation (impl-info), not a resource
            described = " ".join(x for x in (attrs.get("title"), f"(rt {attrs['rt']})" if attrs.get("rt") else "") if x)
            stem = _snake(target) or "root"
            try:
                response = await _get(ctx, base, target, timeout)
            except (TimeoutError, coap_error.Error) as exc:
                notes.append(f"{target}: not read ({exc or f'no answer within {timeout:g} s'})")
                continue
            if response.code == Code.METHOD_NOT_ALLOWED:  # an operation: POST to it
                name = _unique(stem, points.keys() | services.keys())
                services[name] = {"call": {"path": target, "method": "POST"}}
                hints[name] = {"description": described} if described else {}
                continue
            if not response.code.is_successful():
                notes.append(f"{target}: GET answered {response.code.dotted} {response.code.name_printable}")
                continue
            try:
                document = decode(response.payload, response.opt.content_format)
            except DecodeError as exc:
                notes.append(f"{target}: {exc}")
                continue
            leaves = _leaves(document)
            if not leaves:
                notes.append(f"{target}: nothing a point can bind (arrays or nulls only)")
            writable = bool(_WRITABLE_INTERFACES & set(attrs.get("if", "").split()))
            for pointer, kind in leaves:
                if kind == "text":  # the driver's points carry numbers and booleans (registry: no text trait)
                    notes.append(f"{target}{'#' + pointer if pointer else ''}: text, which a CoAP point cannot bind")
                    continue
                name = _unique(_snake(f"{stem}_{pointer}") if pointer else stem, points.keys() | services.keys())
                point: dict[str, Any] = {"path": target}
                if pointer:
                    point["pointer"] = pointer
                if "obs" in attrs:
                    point["observe"] = True
                if writable:
                    point["writable"] = True
                points[name] = point
                hints[name] = {"data": kind, **({"description": described} if described else {})}
    finally:
        await context.release(ctx)
    connection: dict[str, Any] = {"host": host, "port": port}
    return {"driver": "coap", "connection": connection, "points": points, "services": services, "hints": hints,
            "notes": notes}


def _unique(name: str, taken: AbstractSet[str]) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}_{n}", n + 1
    return candidate


async def discover_coap(url: str, timeout: float = 5.0) -> str:
    """The device's resources as a starting binding (YAML text)."""
    found = await browse_coap(url, timeout)
    doc = {k: found[k] for k in ("driver", "connection", "points", "services") if found.get(k)}
    header = (f"# discovered from {url}: {len(found['points'])} values in its resources, "
              f"{len(found['services'])} operations (POST).\n"
              "# Types are guessed from one reading, writability from the link's interface only: check both.\n"
              + "".join(f"# {note}\n" for note in found["notes"]))
    return header + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=120)
