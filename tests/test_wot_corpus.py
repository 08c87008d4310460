"""The WoT importer agrees with the labelled W3C corpus (../shared/corpus/wot, read where it is).

Every manifest entry goes through the code path of ``citytwin model convert`` (its own
argument parser and ``_load_for_convert``, in process: no subprocess per file). A verdict is
*valid* (a model came out), *invalid* (refused with a rule), or a *limitation* (refused only
because a remote reference was not fetched). Correct: valid/warning labels get valid,
invalid labels get invalid, and a limitation counts only where the file really references a
remote document. The issue's figure: 99/250 before this importer, 250/250 now.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from citytwin.gateway.cli.model import add_model_commands
from citytwin.gateway.cli.modelconvert import _load_for_convert
from citytwin.thingmodels.rules import Severity
from citytwin.thingmodels.tsl import to_document
from citytwin.thingmodels.wot_tm_rules import WOT_RULES

ROOT = Path(__file__).resolve().parent.parent


def _corpus() -> Path | None:
    """``shared/corpus/wot`` beside the checkout (or beside the folder of worktrees)."""
    for folder in ROOT.parents:
        candidate = folder / "shared" / "corpus" / "wot"
        if (candidate / "manifest.json").is_file():
            return candidate
    return None


CORPUS = _corpus()
MANIFEST: dict[str, dict[str, Any]] = json.loads((CORPUS / "manifest.json").read_text()) if CORPUS else {}
_REMOTE = re.compile(r'"(?:href|tm:ref)"\s*:\s*"https?://')


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_model_commands(parser.add_subparsers())
    return parser


PARSER = _parser()


def _absent() -> None:
    reason = "the shared WoT corpus (shared/corpus/wot beside the checkout) is not here"
    if os.environ.get("CITYTWIN_REQUIRE_CORPUS") == "1":
        pytest.fail(reason + " and CITYTWIN_REQUIRE_CORPUS=1")
    pytest.skip(reason)


def _verdict(name: str, entry: dict[str, Any]) -> tuple[str, Any, list[Any]]:
    assert CORPUS is not None
    argv = ["model", "convert", str(CORPUS / name), "--to", "citytwin"]
    for key, value in entry.get("set", {}).items():
        argv += ["--set", f"{key}={value}"]
    model, findings, _losses, _format = _load_for_convert(PARSER.parse_args(argv))
    errors = [f for f in findings if f.severity is Severity.ERROR]
    if model is not None:
        return "valid", model, findings
    if errors and all(f.rule == "wot-remote-ref" for f in errors):
        return "limitation", None, findings
    return "invalid", None, findings


@pytest.mark.parametrize("name", sorted(MANIFEST) or ["(corpus absent)"])
def test_corpus_verdict(name: str) -> None:
    if CORPUS is None:
        _absent()
    entry = MANIFEST[name]
    verdict, model, findings = _verdict(name, entry)
    want = "invalid" if entry["label"] == "invalid" else "valid"  # the playground's "warning" TDs are valid
    shown = "\n".join(map(str, findings))
    if verdict == "limitation":
        assert _REMOTE.search((CORPUS / name).read_text(encoding="utf-8-sig")), shown
        assert all("--allow-remote" in f.message for f in findings if f.rule == "wot-remote-ref")
        return
    assert verdict == want, shown
    if verdict == "invalid":  # refused by a WoT rule, never by the TSL check of a half-converted model
        assert all(f.rule in WOT_RULES or f.rule == "duplicate-key" for f in findings), shown
        return
    assert not [f for f in findings if f.severity is Severity.ERROR]
    doc = to_document(model)
    for path, value in entry.get("expect", {}).items():
        section, key, *rest = path.split("/")
        node: Any = {x["identifier"]: x for x in doc.get(section, [])}.get(key)
        assert node is not None, f"{path}: no {section} {key!r} in the import"
        for token in rest:
            node = node.get(token, False if token == "required" else None)
        assert node == value, f"{path}: {node!r}, expected {value!r}"


def test_manifest_names_every_corpus_file() -> None:
    if CORPUS is None:
        _absent()
    assert CORPUS is not None
    files = {str(p.relative_to(CORPUS)) for p in CORPUS.rglob("*") if p.is_file()} - {"manifest.json", "SOURCES.md"}
    assert files == set(MANIFEST) and len(MANIFEST) == 250
