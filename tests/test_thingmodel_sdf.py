"""OneDM SDF (RFC 9880) in and out: the shared corpus of real SDF files, the library, TSL.

Numbers the issue asks for: every corpus file imports (the legacy odm* files are refused by
name), the imported model is valid, and the round trips hold: SDF -> ours -> SDF equals the
input up to key order, the losses reported and the normalisations docs/thing-models.md lists;
ours -> SDF -> ours differs only where the loss report says.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from thingmodel_roundtrip import mutations, unexplained

from citytwin.thingmodels.library import library_names, load_library_model
from citytwin.thingmodels.loader import check_model, parse_model
from citytwin.thingmodels.sdf import SdfImportError, from_sdf
from citytwin.thingmodels.sdfcheck import check_sdf
from citytwin.thingmodels.sdfout import to_sdf
from citytwin.thingmodels.sdfrefs import expand
from citytwin.thingmodels.tsl import Loss, from_tsl, is_module_document, to_tsl
from citytwin.thingmodels.units import from_senml, to_senml

ROOT = Path(__file__).resolve().parent.parent
CORPUS = next((p / "shared" / "corpus" / "sdf" for p in (ROOT.parent, ROOT.parent.parent)
               if (p / "shared" / "corpus" / "sdf").is_dir()), ROOT.parent / "shared" / "corpus" / "sdf")
FILES = sorted(CORPUS.glob("*/*.sdf.json")) if CORPUS.is_dir() else []
LEGACY = {"odmobject-st-switch.sdf.json", "odmthing-ocf-airflowcontrol.sdf.json"}
TSL = Path(__file__).parent / "thingmodel_corpus" / "tsl"


def _corpus() -> None:
    if not CORPUS.is_dir():
        if os.environ.get("CITYTWIN_REQUIRE_CORPUS") == "1":
            pytest.fail(f"CITYTWIN_REQUIRE_CORPUS=1 but the SDF corpus is missing at {CORPUS}")
        pytest.skip(f"the shared SDF corpus is not at {CORPUS}")


def _validator() -> jsonschema.Draft7Validator:
    _corpus()
    schema = json.loads((CORPUS / "schema" / "sdf-validation.jso.json").read_text(encoding="utf-8"))
    return jsonschema.Draft7Validator(schema)


def _ucum_added(at: str, old: Any, new: Any) -> bool:
    """Documented normalisation: a unit SDF names gets its UCUM code on the way back."""
    return at.endswith("/x-citytwin/ucum") and old is None


def test_corpus_is_there() -> None:
    _corpus()
    assert len(FILES) == 26 and {f.name for f in FILES} >= LEGACY


# -- the corpus -------------------------------------------------------------------------------


def _leaves(node: Any, at: str, out: dict[str, Any]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            _leaves(value, f"{at}/{str(key).replace('~', '~0').replace('/', '~1')}", out)
    elif isinstance(node, list) and node and all(isinstance(v, str) for v in node):
        out[at] = sorted(node)  # sdfRequired, required: sets written as lists
    elif isinstance(node, list):
        for index, value in enumerate(node):
            _leaves(value, f"{at}/{index}", out)
    else:
        out[at] = node


def _normalised(doc: dict[str, Any]) -> dict[str, Any]:
    """The input as the export writes it when nothing is lost: sdfRef expanded (RFC 9880's
    merge patch), label equal to the key dropped, writable/readable true dropped, a text
    without maxLength at 10240, sdfData definitions and top-level definitions that other
    definitions reference (types, reached through sdfRef) gone, the type that an sdfChoice's
    alternatives share (integer for integer consts) written once on the data definition."""
    expanded, _ = expand(doc)
    referenced = {r for r in re.findall(r'"sdfRef": "#(/[^"]+)"', json.dumps(doc))}
    for section in ("sdfThing", "sdfObject"):
        tops = expanded.get(section)
        if not isinstance(tops, dict):
            continue
        if any(f"/{section}/{n}" not in referenced for n in tops) or (section == "sdfObject" and "sdfThing" in expanded):
            for name in [n for n in tops if f"/{section}/{n}" in referenced]:
                del tops[name]
            if not tops:
                del expanded[section]

    def walk(node: Any, key: str | None) -> Any:
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                if k == "sdfData" or (k == "label" and v == key) or (k in ("writable", "readable") and v is True):
                    continue
                out[k] = walk(v, k if not k.startswith("sdf") and k not in ("properties",) else None)
            choices = out.get("sdfChoice")
            if isinstance(choices, dict) and choices and all(isinstance(a, dict) for a in choices.values()):
                types = {a.get("type") for a in choices.values()}
                consts = [a.get("const") for a in choices.values()]
                if len(types) == 1 and None not in types:
                    out.setdefault("type", types.pop())
                    for alt in choices.values():
                        del alt["type"]
                elif types == {None} and all(isinstance(c, int) and not isinstance(c, bool) for c in consts):
                    out.setdefault("type", "integer")
            if out.get("type") == "string" and "maxLength" not in out and "sdfType" not in out and "enum" not in out:
                out["maxLength"] = 10240
            return out
        if isinstance(node, list):
            return [walk(v, None) for v in node]
        return node

    def named(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: (
                {n: walk_named(d, n) for n, d in v.items()} if k in ("sdfThing", "sdfObject", "sdfProperty", "sdfAction", "sdfEvent",
                                                                  "sdfChoice", "properties") and isinstance(v, dict)
                else named(v)) for k, v in node.items()}
        return node

    def walk_named(d: Any, name: str) -> Any:
        return walk(named(d), name)

    return walk(named(expanded), None)  # type: ignore[no-any-return]


def _covered(at: str, losses: list[Loss], renames: dict[str, str], old: Any = None, new: Any = None) -> bool:
    if at.endswith("/sdfRequired") and isinstance(old, list):
        # an sdfRequired entry may only go (or change its name) with a feature a loss names
        gone = set(old) - set(new if isinstance(new, list) else [])
        return all(_covered(entry[1:], losses, renames) for entry in gone)
    for before, after in renames.items():
        if at == after or at.startswith(after + "/") or at.startswith(after + "_"):
            at = before if at.startswith(after + "_") else before + at[len(after):]
    return any(at == loss.pointer or at.startswith(loss.pointer + "/") for loss in losses)


def _renames(losses: list[Loss]) -> dict[str, str]:
    found = {}
    for loss in losses:
        match = re.search(r"name '([^']*)' is not a TSL (?:module )?identifier; imported as '([^']*)'", loss.what)
        if match and loss.pointer.endswith("/" + match.group(1)):
            found[loss.pointer] = loss.pointer[: -len(match.group(1))] + match.group(2)
        relabelled = re.search(r"choice name '([^']*)' \(labelled '([^']*)'\)", loss.what)
        if relabelled and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", relabelled.group(2)):
            found[loss.pointer] = loss.pointer[: -len(relabelled.group(1))] + relabelled.group(2)
        flattened = re.search(r"become modules named (\S+)_…", loss.what)
        if flattened:
            found[loss.pointer] = loss.pointer.rsplit("/sdfThing/", 1)[0] + "/sdfObject/" + flattened.group(1)
    return found


@pytest.mark.parametrize("path", FILES, ids=[f.name for f in FILES])
def test_corpus_file_imports_validates_and_round_trips(path: Path) -> None:
    validator = _validator()
    doc = json.loads(path.read_text(encoding="utf-8"))
    if path.name in LEGACY:
        with pytest.raises(SdfImportError, match=r"pre-RFC OneDM keywords .*odmObject"):
            from_sdf(doc)
        assert [i.rule for i in check_sdf(doc)] == ["sdf-legacy"]
        return
    ours, losses = from_sdf(doc)
    model = parse_model(json.loads(json.dumps(ours)))  # valid as TSL, through text as a file would be
    exported, export_losses = to_sdf(model)
    assert list(validator.iter_errors(exported)) == []
    again = parse_model(from_sdf(exported)[0])
    assert unexplained(model, again, export_losses, _ucum_added) == []
    assert to_sdf(again)[0] == exported  # a fixpoint after one trip
    # SDF -> ours -> SDF: every difference from the (normalised) input is a loss the import named
    before, after = {}, {}
    _leaves(_normalised(doc), "", before)
    _leaves(exported, "", after)
    renames = _renames(losses)
    differences = [at for at in sorted(set(before) | set(after))
                   if before.get(at) != after.get(at) and not _covered(at, losses, renames, before.get(at), after.get(at))]
    assert differences == []


def test_exact_round_trip_of_a_clean_file() -> None:
    _corpus()
    doc = json.loads((CORPUS / "playground" / "sdfobject-liquid_level.sdf.json").read_text(encoding="utf-8"))
    ours, losses = from_sdf(doc)
    assert losses == []
    assert to_sdf(parse_model(ours)) == (doc, [])


def test_sdfthing_becomes_modules_and_refs_resolve() -> None:
    _corpus()
    doc = json.loads((CORPUS / "exploratory" / "sdfthing-fridgefreezer.sdf.json").read_text(encoding="utf-8"))
    model = parse_model(from_sdf(doc)[0])
    assert list(model.modules) == ["fridge", "freezer"]
    assert model.properties["freezer:set_temp"].writable and not model.properties["fridge:current_temp"].writable
    assert model.product_key == "FridgeFreezer" or model.product_key == "fridgefreezer"


def test_the_modbus_power_supply_keeps_its_actions_and_reports_remote_refs() -> None:
    _corpus()
    doc = json.loads((CORPUS / "exploratory" / "sdfthing-modbus-dcpowersupply.sdf.json").read_text(encoding="utf-8"))
    ours, losses = from_sdf(doc)
    model = parse_model(ours)
    assert len(model.modules) == 10
    assert {k.split(":")[1] for k in model.services} == {"SetVoltage", "SetAmperage", "Start", "Stop", "SetAddress"}
    assert set(model.events) == {"RegulationState:OverCurrent"}
    state = model.properties["RegulationState:RegulationState"].data_type
    assert (state.type.value, dict(state.names)) == ("enum", {0: "CC", 1: "CV", 2: "OC"})
    voltage = model.properties["VoltageSetPoint:Set_Point_Value"]
    assert voltage.writable and voltage.data_type.unit == "V" and voltage.ext["ucum"] == "V"
    remote = [x for x in losses if "remote references are not fetched" in x.what]
    assert {x.pointer for x in remote} >= {"/sdfThing/DCPowerSupply_LW3010E/sdfObject/VoltageSetPoint/sdfRef"}


# -- references across files --------------------------------------------------------------------


def test_sdfref_into_another_given_file() -> None:
    types = {"namespace": {"t": "https://example.com/types"}, "defaultNamespace": "t",
             "sdfData": {"Level": {"type": "number", "minimum": 0, "maximum": 10, "unit": "m"}}}
    product = {"namespace": {"t": "https://example.com/types", "me": "https://example.com/me"}, "defaultNamespace": "me",
               "sdfObject": {"tank": {"sdfProperty": {"level": {"sdfRef": "t:#/sdfData/Level", "writable": False}}}}}
    ours, losses = from_sdf(product, [types])
    assert losses == []
    level = parse_model(ours).properties["level"]
    assert (level.data_type.max, level.data_type.unit, level.ext["ucum"], level.writable) == (10.0, "m", "m", False)
    _, losses = from_sdf(product)
    assert [x.pointer for x in losses] == ["/sdfObject/tank/sdfProperty/level/sdfRef", "/sdfObject/tank/sdfProperty/level"]
    assert "remote references are not fetched" in losses[0].what


def test_sdfref_loop_is_reported_not_followed() -> None:
    doc = {"sdfObject": {"o": {"sdfProperty": {"p": {"sdfRef": "#/sdfData/a"}}}},
           "sdfData": {"a": {"sdfRef": "#/sdfData/b"}, "b": {"sdfRef": "#/sdfData/a", "type": "integer"}}}
    _, losses = from_sdf(doc)
    assert any("loop" in x.what for x in losses)


# -- the library and TSL ----------------------------------------------------------------------


@pytest.mark.parametrize("name", library_names())
def test_library_model_round_trips_through_sdf(name: str) -> None:
    validator = _validator()
    model = load_library_model(name)
    doc, losses = to_sdf(model)
    assert list(validator.iter_errors(doc)) == []
    back = parse_model(from_sdf(json.loads(json.dumps(doc)))[0])
    assert back.product_key == model.product_key
    assert unexplained(model, back, losses, _ucum_added) == []


def test_round_trip_check_can_fail() -> None:
    model = load_library_model("pump")
    doc, _losses = to_sdf(model)
    back = parse_model(from_sdf(doc)[0])
    assert unexplained(model, back, [], _ucum_added) != []  # without the loss report the differences show


PRODUCTS = {"lamp_full": ["lamp_full.json"], "numbers_and_vendor_keys": ["numbers_and_vendor_keys.json"],
            "minimal": ["minimal.json"], "gateway": ["gateway_main.json", "gateway_ups.json", "gateway_meter_1.json"]}


@pytest.mark.parametrize("product", sorted(PRODUCTS))
def test_tsl_to_sdf_to_tsl_loses_only_what_is_reported(product: str) -> None:
    docs = [json.loads((TSL / f).read_text(encoding="utf-8")) for f in PRODUCTS[product]]
    main = next(d for d in docs if not is_module_document(d))
    model = parse_model(from_tsl(main, [d for d in docs if is_module_document(d)]))
    doc, losses = to_sdf(model)
    back = parse_model(from_sdf(doc)[0])
    assert unexplained(model, back, losses, _ucum_added) == []
    # what TSL cannot take back is only the UCUM code the SDF unit brought
    assert all(x.what == "x-citytwin extension (ucum) has no TSL equivalent" for x in to_tsl(back).losses)


def test_choices_and_booleans_come_back() -> None:
    model = load_library_model("signal_controller")
    doc, _ = to_sdf(model)
    mode = doc["sdfObject"]["signal_controller"]["sdfProperty"]["mode"]
    assert mode["type"] == "integer" and all("const" in alt for alt in mode["sdfChoice"].values())
    back = parse_model(from_sdf(doc)[0])
    assert back.properties["mode"].data_type.names == model.properties["mode"].data_type.names


def test_units() -> None:
    assert from_senml("Cel") is not None and from_senml("Cel").ucum == "Cel"  # type: ignore[union-attr]
    assert to_senml("Cel", "°C") == "Cel" and to_senml("%", "%") == "/100" and to_senml("%", "%RH") == "%RH"
    assert to_senml("deg", "lat") == "lat" and to_senml("deg", "°") == "deg"
    assert to_senml("kPa", "kPa") is None and to_senml("m3/h", "m³/h") is None
    assert to_senml(None, "kW") == "kW" and to_senml(None, "furlong") is None


# -- invalid SDF: one defect per file, its rule and place ---------------------------------------

INVALID = Path(__file__).parent / "thingmodel_corpus" / "invalid-sdf"
EXPECTED = json.loads((INVALID / "expected.json").read_text(encoding="utf-8"))


def test_invalid_sdf_corpus_is_complete() -> None:
    assert sorted(p.name for p in INVALID.glob("*.sdf.json")) == sorted([*EXPECTED, "valid.sdf.json"])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_invalid_sdf_case(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    from citytwin.gateway.cli.main import main

    expected = EXPECTED[name]
    code = main(["model", "validate", "--lint", "--format", "json", str(INVALID / name)])
    report = json.loads(capsys.readouterr().out)["files"][0]
    assert report["format"] == "sdf"
    found = {(f["rule"], f["pointer"], f["line"], f["column"]) for f in report["findings"]}
    assert (expected["rule"], expected["pointer"], expected["line"], expected["column"]) in found
    assert {f["rule"] for f in report["findings"]} - {"conversion-loss"} == {expected["rule"]}  # one defect each
    warning = expected["rule"] in ("sdf-quality", "sdf-ref-remote")
    assert code == (0 if warning else 1)
    if warning:
        assert main(["model", "validate", "--strict", str(INVALID / name)]) == 1


def test_the_valid_sibling_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    from citytwin.gateway.cli.main import main

    assert main(["model", "validate", str(INVALID / "valid.sdf.json")]) == 0
    assert capsys.readouterr().out == f"{INVALID / 'valid.sdf.json'}: OK (sdf)\n"


def test_no_crash_on_mutated_corpus_files() -> None:
    _corpus()
    docs = [json.loads(f.read_text(encoding="utf-8")) for f in FILES]
    for doc in mutations(docs, 600, seed=16):
        check_sdf(doc)
        try:
            ours, _ = from_sdf(doc)
        except SdfImportError:
            continue
        model, issues = check_model(ours)
        if model is not None and not issues:
            to_sdf(model)


def test_every_corpus_file_through_the_cli(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from citytwin.gateway.cli.main import main

    _corpus()
    for path in FILES:
        code = main(["model", "convert", str(path), "--to", "tsl", "-o", str(tmp_path / "out.json")])
        err = capsys.readouterr().err
        if path.name in LEGACY:
            assert code == 1 and "pre-RFC OneDM keywords" in err and "[sdf-legacy]" in err, path.name
        else:
            assert code == 0 and "converting from sdf" in err, (path.name, err)
            assert main(["model", "validate", str(tmp_path / "out.json")]) == 0, path.name
            capsys.readouterr()


def test_our_sdf_rules_agree_with_the_playground_schema() -> None:
    """Every structural defect we flag, the OneDM playground's schema rejects too (reference
    and namespace checks go beyond what a schema can see), and the valid sibling passes it."""
    validator = _validator()
    assert list(validator.iter_errors(json.loads((INVALID / "valid.sdf.json").read_text(encoding="utf-8")))) == []
    structural = {"sdf-legacy", "sdf-quality", "sdf-shape", "sdf-type", "sdf-value-type"}
    for name, expected in EXPECTED.items():
        doc = json.loads((INVALID / name).read_text(encoding="utf-8"))
        if expected["rule"] in structural and expected["pointer"] != "/defaultNamespace":
            assert list(validator.iter_errors(doc)) != [], name


def test_sdfrequired_in_a_thing_names_features_of_its_objects() -> None:
    doc = {"sdfThing": {"station": {
        "sdfRequired": ["#/sdfThing/station/sdfObject/pump/sdfProperty/level", "#/sdfThing/station/sdfProperty/gone"],
        "sdfProperty": {"level": {"type": "number"}},
        "sdfObject": {"pump": {"sdfProperty": {"level": {"type": "number"}, "speed": {"type": "number"}}}}}}}
    ours, losses = from_sdf(doc)
    model = parse_model(ours)
    assert model.properties["pump:level"].required
    assert not model.properties["level"].required and not model.properties["pump:speed"].required
    assert [(x.pointer, x.what) for x in losses] == [
        ("/sdfThing/station/sdfRequired", "sdfRequired entry '#/sdfThing/station/sdfProperty/gone' names no feature that was imported")]
