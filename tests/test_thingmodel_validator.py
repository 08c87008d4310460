"""The vendor validator: positions, duplicate keys, rule ids, the invalid-model corpus, lint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from citytwin.gateway.cli.model import file_resolver
from citytwin.thingmodels.errors import ModelError
from citytwin.thingmodels.library import library_names, library_text
from citytwin.thingmodels.lint import lint_model
from citytwin.thingmodels.loader import check_model, load_model_json, load_model_text, parse_model
from citytwin.thingmodels.positions import DocumentSyntaxError, Position, parse_json, parse_yaml
from citytwin.thingmodels.rules import RULES, Severity
from citytwin.thingmodels.validator import validate_text

CORPUS = Path(__file__).parent / "thingmodel_corpus" / "invalid"
EXPECTED: dict[str, dict[str, Any]] = json.loads((CORPUS / "expected.json").read_text())


# -- positions --------------------------------------------------------------------------------


def test_json_positions_of_keys_and_items() -> None:
    text = '{\n  "a": [1,\n    {"b": "x", "c": [true, null]}],\n  "é/~": 2.5e3\n}'
    doc = parse_json(text)
    assert doc.data == {"a": [1, {"b": "x", "c": [True, None]}], "é/~": 2500.0}
    assert doc.positions["/a"] == Position(2, 3)
    assert doc.positions["/a/0"] == Position(2, 9)
    assert doc.positions["/a/1"] == Position(3, 5)
    assert doc.positions["/a/1/c"] == Position(3, 16)
    assert doc.positions["/a/1/c/1"] == Position(3, 28)
    assert doc.positions["/é~1~0"] == Position(4, 3)  # columns count characters, tokens escape
    assert doc.position_of("/a/1/missing/deeper") == Position(3, 5)
    assert doc.position_of("") == Position(1, 1)
    assert doc.duplicates == []


def test_json_duplicate_keys_at_any_depth() -> None:
    text = '{"p": {"min": 1, "max": 2, "min": 3},\n "p": {"q": [{"k": 1, "k": 1}]}}'
    doc = parse_json(text)
    assert doc.data == {"p": {"q": [{"k": 1}]}}  # what json.load would keep
    found = [(i.pointer, i.rule) for i in doc.duplicates]
    assert found == [("/p/min", "duplicate-key"), ("/p", "duplicate-key"), ("/p/q/0/k", "duplicate-key")]
    assert "first at line 1 column 8" in doc.duplicates[0].message
    assert doc.positions["/p"] == Position(2, 2)  # the last occurrence, whose value is kept


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ('{"a": 1,\n "b": NaN}', Position(2, 7), "NaN is not valid JSON"),
        ('{"a": [1, -Infinity]}', Position(1, 11), "-Infinity is not valid JSON"),
        ('{"a": 1,,}', Position(1, 9), "Expecting property name enclosed in double quotes"),
        ("", Position(1, 1), "Expecting value"),
    ],
)
def test_json_syntax_errors_have_positions(text: str, where: Position, message: str) -> None:
    with pytest.raises(DocumentSyntaxError) as info:
        parse_json(text)
    assert info.value.rule == "json-syntax"
    assert info.value.position == where
    assert message in info.value.message


def test_yaml_positions_and_duplicates() -> None:
    text = "profile:\n  productKey: x\nproperties:\n  - identifier: a\n    specs: {0: off, 1: on}\n  - identifier: b\n    identifier: c\n"
    doc = parse_yaml(text)
    assert doc.data["properties"][1] == {"identifier": "c"}
    assert doc.positions["/properties/1"] == Position(6, 5)
    assert doc.positions["/properties/0/specs/1"] == Position(5, 21)
    assert [(i.pointer, i.rule) for i in doc.duplicates] == [("/properties/1/identifier", "duplicate-key")]
    with pytest.raises(DocumentSyntaxError) as info:
        parse_yaml("a: [1, 2\nb: 3\n")
    assert info.value.rule == "yaml-syntax" and info.value.position.line == 2


def test_empty_yaml_is_not_a_model() -> None:
    report = validate_text("# nothing\n", "empty.yaml")
    assert [(f.rule, f.line, f.column) for f in report.findings] == [("document-type", 1, 1)]


# -- the corpus: one defect per file ----------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_file_reports_its_one_defect(name: str) -> None:
    path = CORPUS / name
    report = validate_text(path.read_text(encoding="utf-8"), name, file_resolver(CORPUS))
    found = [
        {"rule": f.rule, "pointer": f.pointer, "line": f.line, "column": f.column}
        for f in report.findings
    ]
    assert found == [EXPECTED[name]]
    assert not report.valid and report.model is None
    assert str(report.findings[0]).startswith(f"{name}:{EXPECTED[name]['line']}:{EXPECTED[name]['column']} ")
    assert str(report.findings[0]).endswith(f"[{EXPECTED[name]['rule']}]")


def test_corpus_covers_every_error_rule() -> None:
    covered = {e["rule"] for e in EXPECTED.values()}
    errors = {r.id for r in RULES.values() if r.severity is Severity.ERROR}
    assert errors - covered == {"module-count"}  # 200 modules: see test_module_count below
    assert {path.name for path in CORPUS.iterdir()} == set(EXPECTED) | {"expected.json"}


def test_module_count() -> None:
    modules = [{"identifier": f"m{i}", "name": f"M{i}", "model": "pump"} for i in range(200)]
    _model, issues = check_model({"profile": {"productKey": "x"}, "modules": modules})
    assert [(i.pointer, i.rule) for i in issues] == [("/modules", "module-count")]
    _model, issues = check_model({"profile": {"productKey": "x"}, "modules": modules[:199]})
    assert issues == []


def test_every_error_is_reported_not_just_the_first() -> None:
    doc = json.loads((CORPUS / "range-order.json").read_text())
    doc["properties"][1]["identifier"] = "value"
    doc["events"][0]["type"] = "fatal"
    doc["services"][0]["inputData"][0]["dataType"]["specs"] = {"0": "no"}
    text = json.dumps(doc, indent=2)
    rules = [f.rule for f in validate_text(text, "m.json").findings]
    assert rules == ["range-order", "identifier-reserved", "event-type", "bool-keys"]


def test_reserved_words_apply_to_features_not_parameters() -> None:
    doc = {
        "profile": {"productKey": "x"},
        "events": [
            {
                "identifier": "reading",
                "name": "r",
                "type": "info",
                "outputData": [{"identifier": "value", "name": "v", "dataType": {"type": "int"}}],
            }
        ],
    }
    assert check_model(doc)[1] == []
    doc["events"][0]["identifier"] = "time"
    assert [i.rule for i in check_model(doc)[1]] == ["identifier-reserved"]


def test_identifiers_share_one_namespace_across_sections() -> None:
    doc = {
        "profile": {"productKey": "x"},
        "properties": [
            {"identifier": "reset", "name": "r", "accessMode": "r", "dataType": {"type": "int"}}
        ],
        "services": [{"identifier": "reset", "name": "r", "callType": "sync"}],
    }
    issues = check_model(doc)[1]
    assert [(i.pointer, i.rule) for i in issues] == [("/services/0/identifier", "identifier-duplicate")]
    assert issues[0].message == "duplicate identifier 'reset' (first at /properties/0)"


def test_gateway_loader_rejects_duplicate_keys_too() -> None:
    text = '{"profile": {"productKey": "a", "productKey": "b"}}'
    with pytest.raises(ModelError) as info:
        load_model_json(text, "m.json")
    assert [(i.pointer, i.rule) for i in info.value.issues] == [("/profile/productKey", "duplicate-key")]


def test_yaml_models_load_like_json() -> None:
    text = (CORPUS / "range-order.yaml").read_text().replace("min: 50", "min: 5")
    model = load_model_text(text, "ok.yaml")
    assert model.properties["running"].data_type.names == {0: "stopped", 1: "running"}
    assert model.properties["frequency"].data_type.min == 5.0
    with pytest.raises(ModelError, match="invalid JSON"):
        load_model_json(text, "ok.yaml")  # the gateway's loader reads JSON only


# -- the library is valid, and clean -----------------------------------------------------------


@pytest.mark.parametrize("name", library_names())
def test_library_model_is_valid(name: str) -> None:
    report = validate_text(library_text(name), f"{name}.json", lint=True)
    assert report.valid, [str(f) for f in report.errors]
    if name != "pump_station":  # kept exactly as the foundation wrote it (no UCUM codes)
        assert report.findings == []


# -- lint -------------------------------------------------------------------------------------


def _lint(doc: dict[str, Any]) -> list[tuple[str, str]]:
    return [(i.pointer, i.rule) for i in lint_model(parse_model(doc))]


def test_lint_warnings() -> None:
    doc: dict[str, Any] = {
        "profile": {"productKey": "x", "deviceName": "d1", "colour": "red"},
        "properties": [
            {"identifier": "a", "name": "A", "accessMode": "rw", "desc": "d",
             "dataType": {"type": "float", "specs": {"max": "5"}}},
            {"identifier": "b", "name": "B", "accessMode": "r",
             "dataType": {"type": "int", "specs": {"unit": "m", "precision": "2"}}},
            {"identifier": "c", "name": "C", "accessMode": "r", "desc": "d", "acessMode": "rw",
             "dataType": {"type": "int", "specs": {"unit": "m"}}, "x-citytwin": {"ucum": "m"}},
        ],
        "events": [{"identifier": "e", "name": "E", "type": "info", "method": "thing.event.e.post"}],
        "services": [{"identifier": "s", "name": "S", "callType": "sync", "desc": "d", "method": "thing.service.t"}],
    }
    assert _lint(doc) == [
        ("/profile/colour", "unknown-key"),
        ("/properties/0/dataType", "unit-missing"),
        ("/properties/0/dataType", "range-missing"),
        ("/properties/1", "ucum-missing"),
        ("/properties/1", "description-missing"),
        ("/properties/1/dataType/specs/precision", "unknown-key"),
        ("/properties/2/acessMode", "unknown-key"),
        ("/events/0", "description-missing"),
        ("/services/0/method", "method-mismatch"),
    ]
    report = validate_text(json.dumps(doc, indent=1), "m.json", lint=True)
    assert report.valid and len(report.warnings) == 9
    assert str(report.warnings[0]) == (
        "m.json:5:3 /profile/colour: warning: unknown key 'colour' (neither TSL nor x-citytwin) [unknown-key]"
    )
    assert validate_text(json.dumps(doc), "m.json").findings == []  # lint is off by default


def test_every_warning_rule_is_exercised() -> None:
    warnings = {r.id for r in RULES.values() if r.severity is Severity.WARNING}
    assert warnings == {"unknown-key", "unit-missing", "range-missing", "ucum-missing",
                        "description-missing", "method-mismatch"}
