"""The CLI side of importing W3C WoT Thing Models and Thing Descriptions.

``thingmodels.wot_import`` checks and converts; this module does the I/O it must not: it
reads referenced files, keeps remote references out unless ``--allow-remote`` names a cache
directory (then a cached copy is used, and a missing one is fetched into the cache once),
turns ``--set``/``--set-json`` into placeholder values, and places every issue at
file:line:col. An internal failure becomes ``ImporterCrash`` (exit 3, one line), never a
traceback and never "invalid".
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from citytwin.thingmodels.errors import Issue
from citytwin.thingmodels.loader import Resolver, check_model
from citytwin.thingmodels.positions import DocumentSyntaxError, ParsedDocument, parse_document
from citytwin.thingmodels.rules import Severity
from citytwin.thingmodels.tsl import Loss
from citytwin.thingmodels.types import ThingModel
from citytwin.thingmodels.validator import Finding, Report
from citytwin.thingmodels.wot_import import import_wot
from citytwin.thingmodels.wot_tm_resolve import Loader, RemoteRefused, Value
from citytwin.thingmodels.wot_tm_rules import wot_severity

EXIT_CRASH: Final = 3
_FETCH_LIMIT: Final = 4 * 1024 * 1024
_FETCH_TIMEOUT: Final = 10.0


class ImporterCrash(Exception):
    """A bug in the importer (not a bad input): exit 3 with this one-line message."""


class BadOption(Exception):
    """A malformed --set / --set-json: exit 2."""


def add_wot_arguments(parser: argparse.ArgumentParser, with_set: bool) -> None:
    """The options for WoT inputs (``with_set``: also ``--set``, for commands that lack it)."""
    if with_set:
        parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                            help="a Thing Model placeholder's value (typed by where it lands)")
    parser.add_argument("--set-json", action="append", default=[], metavar="NAME=JSON",
                        help="a Thing Model placeholder's value as JSON (objects, arrays, numbers)")
    parser.add_argument("--allow-remote", action="store_true",
                        help="resolve http(s) tm:extends / tm:ref through --remote-cache (fetching what it lacks)")
    parser.add_argument("--remote-cache", metavar="DIR",
                        help="cache of remote Thing Models: DIR/HOST/PATH (needed by --allow-remote)")


def placeholder_values(args: argparse.Namespace) -> dict[str, Value]:
    values: dict[str, Value] = {}
    for item in getattr(args, "set", None) or []:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise BadOption(f"--set {item!r}: expected NAME=VALUE")
        values[name] = Value(text)
    for item in getattr(args, "set_json", None) or []:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise BadOption(f"--set-json {item!r}: expected NAME=JSON")
        try:
            values[name] = Value(json.loads(text), is_json=True)
        except ValueError as exc:
            raise BadOption(f"--set-json {name}: not JSON ({exc})") from None
    return values


def file_loader(allow_remote: bool, cache: str | None) -> Loader:
    """Locations are file paths (joined like URI references) or http(s) URLs."""

    def load(location: str) -> Mapping[str, Any]:
        scheme = urlsplit(location).scheme
        if scheme in ("http", "https"):
            return _remote(location, allow_remote, cache)
        if scheme and len(scheme) > 1:
            raise LookupError(f"{location}: a {scheme}: reference cannot be loaded (files and http(s) only)")
        return _read(Path(location))

    return load


def _read(path: Path) -> Mapping[str, Any]:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise LookupError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise LookupError(f"cannot read {path}: not UTF-8 ({exc.reason})") from None
    try:
        data = parse_document(text, str(path)).data
    except DocumentSyntaxError as exc:
        raise LookupError(f"{path}:{exc.position.line}:{exc.position.column}: {exc.message}") from None
    if not isinstance(data, Mapping):
        raise LookupError(f"{path} is not a JSON object")
    return data


def cache_path(cache: str, url: str) -> Path:
    """Where ``url`` lives in the cache: DIR/HOST/PATH (a trailing / becomes index.json)."""
    parts = urlsplit(url)
    path = parts.path if parts.path and not parts.path.endswith("/") else parts.path + "index.json"
    tokens = [t for t in path.split("/") if t and t not in (".", "..")]
    return Path(cache, parts.netloc.replace(":", "_"), *tokens)


def _remote(url: str, allow: bool, cache: str | None) -> Mapping[str, Any]:
    if not allow:
        raise RemoteRefused(f"{url} is remote and was not fetched, so what it brings in was neither checked nor converted; "
                            "give --allow-remote --remote-cache DIR to resolve it through a cache")
    if cache is None:
        raise RemoteRefused(f"{url} is remote: --allow-remote needs --remote-cache DIR, where remote models are kept")
    path = cache_path(cache, url)
    if not path.is_file():
        try:
            with urllib.request.urlopen(url, timeout=_FETCH_TIMEOUT) as response:
                body = response.read(_FETCH_LIMIT + 1)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise RemoteRefused(f"{url} is not in the cache ({path}) and fetching it failed: "
                                f"{getattr(exc, 'reason', exc)}") from None
        if len(body) > _FETCH_LIMIT:
            raise RemoteRefused(f"{url} is larger than {_FETCH_LIMIT} bytes; not cached")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    return _read(path)


def load_wot(
    name: str,
    parsed: ParsedDocument,
    is_tm: bool,
    args: argparse.Namespace,
    resolver: Resolver,
    need_values: bool = True,
) -> tuple[ThingModel | None, list[Finding], list[Loss]]:
    """Check, resolve and convert one WoT document; every finding placed at file:line:col."""
    values = placeholder_values(args)
    loader = file_loader(bool(getattr(args, "allow_remote", False)), getattr(args, "remote_cache", None))
    try:
        result = import_wot(parsed.data, is_tm, name, loader, values, getattr(args, "product_key", None), need_values)
        findings = [_finding(name, parsed, issue, wot_severity(issue.rule)) for issue in [*parsed.duplicates, *result.issues]]
        findings.sort(key=lambda f: (f.severity is Severity.WARNING, f.line, f.column))
        if result.doc is None or any(f.severity is Severity.ERROR for f in findings):
            return None, findings, result.losses
        model, issues = check_model(result.doc, resolver)
    except (RecursionError, MemoryError) as exc:
        raise ImporterCrash(f"{name}: internal error: {type(exc).__name__} (the document nests too deeply?)") from None
    except Exception as exc:  # the importer's own bug: reported in one line, exit 3
        raise ImporterCrash(f"{name}: internal error in the WoT importer: {type(exc).__name__}: {exc}") from exc
    findings += [Finding(name, 0, 0, i.pointer, i.rule or "value-type", Severity.ERROR,
                         f"{i.message} (in the converted model)") for i in issues]
    return (model if not issues else None), findings, result.losses


def validate_wot(name: str, parsed: ParsedDocument, is_tm: bool, args: argparse.Namespace, resolver: Resolver,
                 lint: bool) -> Report:
    """``citytwin model validate`` of a WoT document: checked as what it is, then converted."""
    model, findings, _ = load_wot(name, parsed, is_tm, args, resolver, need_values=False)
    kept = [f for f in findings if lint or f.severity is Severity.ERROR]
    return Report(name, kept, model)


def _finding(name: str, parsed: ParsedDocument, issue: Issue, severity: Severity) -> Finding:
    where = parsed.position_of(issue.pointer)
    return Finding(name, where.line, where.column, issue.pointer, issue.rule or "value-type", severity, issue.message)
