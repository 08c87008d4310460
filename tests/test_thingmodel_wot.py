"""W3C WoT TM/TD export checked by the official JSON Schemas and by the Thingweb playground,
and TM/TD import (checks, tm:ref, tm:extends, placeholders, tm:optional, losses, the CLI)."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import subprocess
import threading
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from citytwin.gateway.cli import wotimport
from citytwin.gateway.cli.main import main
from citytwin.thingmodels.formats import Format, detect_format
from citytwin.thingmodels.library import library_names, load_library_model
from citytwin.thingmodels.loader import parse_model
from citytwin.thingmodels.rules import Severity
from citytwin.thingmodels.types import AccessMode, CallType, Kind, ThingModel
from citytwin.thingmodels.wot import HubBinding, to_td, to_tm
from citytwin.thingmodels.wot_import import WotImport, import_wot
from citytwin.thingmodels.wot_tm_resolve import RemoteRefused, Value
from citytwin.thingmodels.wot_tm_rules import WOT_RULES

NODE_DIR = Path(__file__).parent / "node"


def _schema(name: str) -> Any:
    return json.loads(resources.files("citytwin.thingmodels").joinpath("schemas", name).read_text(encoding="utf-8"))


TD_SCHEMA = jsonschema.Draft7Validator(_schema("td-schema.json"))
TM_SCHEMA = jsonschema.Draft7Validator(_schema("tm-schema.json"))


def _errors(validator: jsonschema.Draft7Validator, doc: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def test_schemas_are_the_pinned_w3c_ones() -> None:
    for name, title in (("td-schema.json", "Thing Description"), ("tm-schema.json", "Thing Model")):
        schema = _schema(name)
        assert schema["title"] == title and schema["version"] == "1.1-05-September-2022"
    assert _errors(TD_SCHEMA, {"title": "x"})  # the schema really rejects things


@pytest.mark.parametrize("name", library_names())
def test_library_exports_validate_against_the_w3c_schemas(name: str) -> None:
    model = load_library_model(name)
    tm, _ = to_tm(model)
    td, _ = to_td(model, HubBinding(gateway="gw-1", device=name.replace("_", "-")))
    assert _errors(TM_SCHEMA, tm) == []
    assert _errors(TD_SCHEMA, td) == []
    assert set(td["properties"]) == set(model.properties)
    assert set(td["actions"]) == set(model.services) and set(td["events"]) == set(model.events)


def test_mapping_details() -> None:
    model = load_library_model("sluice_gate")
    td, losses = to_td(model, HubBinding(broker="mqtt://hub.local:8883", gateway="gw", device="gate-7", secured=True))
    assert td["id"] == "urn:citytwin:gw:gate-7"
    assert td["securityDefinitions"] == {"basic_sc": {"scheme": "basic"}} and td["security"] == ["basic_sc"]
    position = td["properties"]["position"]
    assert (position["type"], position["minimum"], position["maximum"], position["unit"]) == ("number", 0, 100, "%")
    assert position["readOnly"] is True and position["citytwin:ucum"] == "%"
    assert position["forms"] == [{
        "href": "mqtt://hub.local:8883", "op": ["observeproperty", "unobserveproperty"],
        "contentType": "application/json", "mqv:topic": "citytwin/v1/gw/gate-7/properties/report",
        "mqv:controlPacket": "subscribe", "mqv:qos": "1",
    }]
    target = td["properties"]["target_position"]
    assert "readOnly" not in target and target["forms"][1]["op"] == ["writeproperty"]
    assert target["forms"][1]["mqv:topic"] == "citytwin/v1/gw/gate-7/properties/set"
    state = td["properties"]["state"]
    assert state["type"] == "integer" and state["oneOf"][1] == {"const": 1, "title": "opening / 开启中"}
    action = td["actions"]["set_position"]
    assert action["input"] == {
        "type": "object",
        "properties": {"position": {"title": "Position / 开度", "type": "number", "minimum": 0.0, "maximum": 100.0,
                                    "unit": "%", "citytwin:ucum": "%"}},
        "required": ["position"],
    }
    assert action["synchronous"] is False and td["actions"]["stop"]["synchronous"] is True
    assert action["forms"][0]["mqv:topic"] == "citytwin/v1/gw/gate-7/services/set_position/invoke"
    fault = td["events"]["fault"]
    assert fault["citytwin:eventType"] == "error" and fault["forms"][0]["mqv:controlPacket"] == "subscribe"
    assert any(loss.what.startswith("step") for loss in losses)
    tm, _ = to_tm(model)
    assert tm["@type"][0] == "tm:ThingModel" and "forms" not in tm["properties"]["position"]


def test_write_only_and_required() -> None:
    doc = {
        "profile": {"productKey": "x", "version": "2.1"},
        "properties": [
            {"identifier": "cmd", "name": "Command", "accessMode": "rw", "required": True,
             "dataType": {"type": "bool", "specs": {"0": "off", "1": "on"}}, "x-citytwin": {"writeOnly": True}},
            {"identifier": "at", "name": "At", "accessMode": "r", "dataType": {"type": "date"}},
        ],
    }
    model = parse_model(doc)
    tm, losses = to_tm(model)
    assert tm["tm:optional"] == ["/properties/at"] and tm["version"] == {"model": "2.1"}
    cmd = tm["properties"]["cmd"]
    assert cmd["writeOnly"] is True and cmd["observable"] is False
    assert cmd["oneOf"] == [{"const": False, "title": "off"}, {"const": True, "title": "on"}]
    assert tm["properties"]["at"]["pattern"] == "^[0-9]{1,15}$"
    assert [loss.pointer for loss in losses] == ["/properties/1/dataType/type"]
    td, td_losses = to_td(model, HubBinding(secured=False))
    assert td["properties"]["cmd"]["forms"][0]["op"] == ["writeproperty"] and len(td["properties"]["cmd"]["forms"]) == 1
    assert td["security"] == ["nosec_sc"] and _errors(TD_SCHEMA, td) == []
    assert "/properties/cmd" in [loss.pointer for loss in td_losses]


# -- the Thingweb playground agrees -----------------------------------------------------------


def _playground() -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail("node and npm are needed for the playground check (Debian packages nodejs, npm)")
    if not (NODE_DIR / "node_modules" / "@thing-description-playground" / "core").is_dir():
        subprocess.run([npm, "install", "--no-audit", "--no-fund", "--no-package-lock"], cwd=NODE_DIR,
                       check=True, capture_output=True, timeout=600)
    return Path(node)


def test_playground_full_validation_of_every_library_td(tmp_path: Path) -> None:
    node = _playground()
    files = []
    for name in library_names():
        td, _ = to_td(load_library_model(name), HubBinding(gateway="gw-1", device=name.replace("_", "-")))
        path = tmp_path / f"{name}.td.json"
        path.write_text(json.dumps(td, ensure_ascii=False), encoding="utf-8")
        files.append(str(path))
    result = subprocess.run([str(node), "validate-td.js", *files], cwd=NODE_DIR, capture_output=True, text=True, timeout=300)
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == len(files), result.stderr
    for line in lines:
        assert line["report"]["json"] == "passed" and line["report"]["schema"] == "passed", line
        assert "failed" not in line["report"].values(), line
        assert "failed" not in line["details"].values(), line
    assert result.returncode == 0


def test_playground_rejects_a_broken_td(tmp_path: Path) -> None:
    node = _playground()
    td, _ = to_td(load_library_model("pump"), HubBinding())
    td["security"] = ["missing_sc"]  # refers to no security definition
    path = tmp_path / "broken.td.json"
    path.write_text(json.dumps(td))
    result = subprocess.run([str(node), "validate-td.js", str(path)], cwd=NODE_DIR, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "failed" in json.loads(result.stdout)["details"].values() or json.loads(result.stdout)["report"]["schema"] == "failed"


# -- Thing Model and Thing Description in ------------------------------------------------------

CONTEXT = "https://www.w3.org/2022/wot/td/v1.1"
WOT_CORPUS = Path(__file__).parent / "thingmodel_corpus" / "wot-invalid"
WOT_EXPECTED: dict[str, dict[str, Any]] = json.loads((WOT_CORPUS / "expected.json").read_text())

BASE_TM = {
    "@context": [CONTEXT],
    "@type": "tm:ThingModel",
    "title": "Base meter",
    "properties": {
        "energy": {"type": "number", "minimum": 0, "unit": "kWh", "readOnly": True, "title": "Energy"},
        "status": {"type": "integer", "oneOf": [{"const": 0, "title": "ok"}, {"const": 1, "title": "fault"}]},
    },
}


def _loader(files: dict[str, Any]) -> Callable[[str], Any]:
    def load(location: str) -> Any:
        if location.startswith("https://"):
            raise RemoteRefused(f"{location} is remote")
        if location not in files:
            raise LookupError(f"cannot read {location}")
        return files[location]

    return load


def _import(doc: dict[str, Any], files: dict[str, Any] | None = None, values: dict[str, Value] | None = None,
            product_key: str | None = None) -> WotImport:
    return import_wot(doc, "tm:ThingModel" in str(doc.get("@type")), "models/main.tm.json", _loader(files or {}),
                      values, product_key)


def _model(result: WotImport) -> ThingModel:
    assert result.doc is not None and not result.errors, result.issues
    return parse_model(result.doc)


def _tm(**extra: Any) -> dict[str, Any]:
    return {"@context": [CONTEXT], "@type": "tm:ThingModel", "title": "Lamp", **extra}


def test_tm_import_with_refs_placeholders_and_required() -> None:
    tm = _tm(**{
        "@type": ["tm:ThingModel", "https://saref.etsi.org/core/Meter"],
        "title": "{{MODEL}} smart meter",
        "version": {"model": "1.2"},
        "links": [{"rel": "tm:extends", "href": "base.tm.json", "type": "application/tm+json"}],
        "tm:required": ["#/properties/energy", "#/actions/reset"],
        "properties": {
            "power": {"tm:ref": "base.tm.json#/properties/energy", "title": "Power", "unit": "{{POWER_UNIT}}"},
            "relay": {"type": "boolean", "oneOf": [{"const": False, "title": "open"}, {"const": True, "title": "closed"}]},
            "label": {"type": "string", "maxLength": 40, "writeOnly": True},
            "on-peak": {"type": "boolean"},
        },
        "actions": {
            "reset": {"synchronous": True, "input": {"type": "object", "properties": {"confirm": {"type": "boolean"}}}},
            "calibrate": {"input": {"type": "number", "minimum": -1, "maximum": 1}},
        },
        "events": {"tamper": {"data": {"type": "object", "properties": {"angle": {"type": "number", "unit": "deg"}}}}},
    })
    result = _import(tm, {"models/base.tm.json": BASE_TM}, {"MODEL": Value("ACME-3"), "POWER_UNIT": Value("kW")})
    model = _model(result)
    assert model.product_key == "ACME-3_smart_meter" and model.profile.version == "1.2"
    assert model.ext["semanticType"] == "https://saref.etsi.org/core/Meter"
    assert list(model.properties) == ["energy", "status", "power", "relay", "label", "on_peak"]
    energy, power = model.properties["energy"], model.properties["power"]
    assert energy.required and not power.required and energy.access_mode is AccessMode.R
    assert power.name == "Power" and power.data_type.unit == "kW" and power.access_mode is AccessMode.R
    assert model.properties["status"].data_type.names == {0: "ok", 1: "fault"}
    assert model.properties["relay"].data_type.names == {0: "open", 1: "closed"}
    label = model.properties["label"]
    assert (label.data_type.type, label.data_type.length, label.ext) == (Kind.TEXT, 40, {"writeOnly": True})
    assert model.services["reset"].required and model.services["reset"].call_type is CallType.SYNC
    assert list(model.services["calibrate"].inputs) == ["input"]
    assert model.events["tamper"].type.value == "info"
    what = {loss.pointer: loss.what for loss in result.losses}
    assert "imported as 'on_peak'" in what["/properties/on-peak"]
    assert "one TSL parameter" in what["/actions/calibrate/input"]
    assert "severity" in what["/events/tamper"]


def test_tm_import_of_our_own_export_keeps_the_model() -> None:
    model = load_library_model("street_light")
    tm, _ = to_tm(model)
    back = _model(_import(tm))
    assert back.product_key == model.product_key  # citytwin:productKey comes back
    assert list(back.properties) == list(model.properties)
    for key, prop in model.properties.items():
        other = back.properties[key]
        assert (other.name, other.access_mode, other.data_type.min, other.data_type.max, other.data_type.unit,
                other.required) == (prop.name, prop.access_mode, prop.data_type.min, prop.data_type.max,
                                    prop.data_type.unit, prop.required)
        assert other.ext.get("ucum") == prop.ext.get("ucum")
    assert {k: e.type for k, e in back.events.items()} == {k: e.type for k, e in model.events.items()}
    assert {k: s.call_type for k, s in back.services.items()} == {k: s.call_type for k, s in model.services.items()}


def test_same_document_ref_merges_deeply_and_own_keys_win() -> None:
    tm = _tm(properties={
        "generic": {"type": "number", "unit": "Cel", "minimum": -40, "readOnly": True},
        "outer": {"tm:ref": "#/properties/generic", "title": "Outer", "unit": "K", "minimum": 0},
    })
    outer = _model(_import(tm)).properties["outer"]
    assert (outer.name, outer.data_type.unit, outer.data_type.min, outer.access_mode) == ("Outer", "K", 0, AccessMode.R)


def test_parent_references_resolve_against_the_parent() -> None:
    parent = _tm(properties={"level": {"tm:ref": "defs/level.json#/level"}})
    files = {"models/lib/parent.tm.json": parent, "models/lib/defs/level.json": {"level": {"type": "number", "unit": "m"}}}
    child = _tm(links=[{"rel": "tm:extends", "href": "lib/parent.tm.json"}])
    assert _model(_import(child, files)).properties["level"].data_type.unit == "m"


@pytest.mark.parametrize(
    ("tm", "rule", "message"),
    [
        (_tm(title="{{X}}"), "tm-placeholder", "placeholders without a value: X"),
        (_tm(properties={"a": {"tm:ref": "other.json#/properties/b"}}), "tm-ref", "cannot read models/other.json"),
        (_tm(properties={"a": {"tm:ref": "base.tm.json#/properties/nope"}}), "tm-ref", "nothing at '/properties/nope'"),
        (_tm(properties={"a": {"tm:ref": "base.tm.json"}}), "tm-ref", "must be [URI]#/JSON/POINTER"),
        (_tm(links=[{"rel": "tm:extends", "href": "main.tm.json"}]), "tm-ref", "tm:extends loop"),
        (_tm(**{"tm:optional": ["/properties/energy/unit"]}), "tm-optional", "must name an interaction affordance"),
        (_tm(version={"instance": "1.0.0"}), "tm-version", "no instance version"),
        (_tm(properties={"a": {"type": "number", "{{K}}": 1}}), "tm-placeholder", "placeholders stand for values"),
        (_tm(links=[{"rel": "tm:extends", "href": "https://models.example/base.tm.json"}]), "wot-remote-ref", "is remote"),
        ({"@context": [CONTEXT], "title": "x"}, "tm-type", "must include 'tm:ThingModel'"),
    ],
)
def test_tm_import_errors(tm: dict[str, Any], rule: str, message: str) -> None:
    result = import_wot(tm, True, "models/main.tm.json", _loader({"models/base.tm.json": BASE_TM,
                                                                  "models/main.tm.json": tm}))
    assert result.doc is None
    assert any(i.rule == rule and message in i.message for i in result.errors), result.issues


def test_tm_optional_marks_the_rest_required_and_no_list_means_all() -> None:
    model = _model(_import({**BASE_TM, "tm:optional": ["/properties/status"]}))
    assert model.properties["energy"].required and not model.properties["status"].required
    model = _model(_import(BASE_TM))
    assert model.properties["energy"].required and model.properties["status"].required
    assert _import({**BASE_TM, "tm:optional": ["/events/missing"]}).errors[0].rule == "tm-optional"


def test_placeholders_keep_their_json_type() -> None:
    tm = _tm(properties={
        "level": {"type": "number", "maximum": "{{MAX}}", "observable": "{{OBS}}", "title": "Level {{N}}"},
        "mode": {"type": "string", "enum": "{{MODES}}"},
        "extra": {"type": "object", "properties": "{{FIELDS}}"},
    })
    values = {"MAX": Value("40.5"), "OBS": Value("true"), "N": Value("7"), "MODES": Value("auto"),
              "FIELDS": Value({"a": {"type": "integer", "minimum": 1}}, is_json=True)}
    result = _import(tm, values=values)
    model = _model(result)
    level = model.properties["level"]
    assert (level.data_type.max, level.name) == (40.5, "Level 7")
    assert model.properties["extra"].data_type.fields[0].data_type.min == 1
    assert any(loss.pointer == "/properties/mode/enum" for loss in result.losses)  # ["auto"]: strings, no TSL enum
    bad = _import(tm, values={**values, "MAX": Value("forty")})
    assert [i.rule for i in bad.errors] == ["tm-placeholder"] and "--set-json MAX" in bad.errors[0].message


def test_a_bound_that_is_no_number_is_a_loss_line() -> None:
    result = _import(_tm(properties={"level": {"type": "number", "maximum": "{{MAX}}"}}),
                     values={"MAX": Value(["x"], is_json=True)})
    assert _model(result).properties["level"].data_type.max is None
    assert any(loss.pointer == "/properties/level/maximum" and "not a number" in loss.what for loss in result.losses)


def test_semantic_types_are_kept_where_tsl_can_hold_them() -> None:
    tm = _tm(**{"@context": [CONTEXT, {"saref": "https://saref.etsi.org/core/"}],
                "@type": ["tm:ThingModel", "Lamp", "saref:LightSwitch"],
                "properties": {"on": {"@type": "saref:OnOffState", "type": "boolean"}}})
    result = _import(tm)
    model = _model(result)
    assert model.ext["semanticType"] == "https://saref.etsi.org/core/LightSwitch"
    assert model.properties["on"].ext["semanticType"] == "https://saref.etsi.org/core/OnOffState"
    assert any("'Lamp'" in loss.what for loss in result.losses)


def test_td_import_names_losses_and_renames() -> None:
    td = {
        "@context": CONTEXT, "@type": "Thing", "id": "urn:dev:lamp", "title": "Lamp", "description": "",
        "securityDefinitions": {"basic_sc": {"scheme": "basic"}}, "security": "basic_sc",
        "properties": {
            "value": {"type": "integer", "forms": [{"href": "https://lamp.example/value"}]},
            "status": {"type": "string", "forms": [{"href": "https://lamp.example/status"}]},
        },
        "events": {"status": {"data": {"type": "string"}, "forms": [{"href": "https://lamp.example/ev"}]}},
        "links": [{"rel": "tm:submodel", "href": "led.tm.json", "instanceName": "led"}],
    }
    result = import_wot(td, False, "lamp.td.json", _loader({}))
    model = _model(result)
    assert list(model.properties) == ["value_", "status"] and list(model.events) == ["status_2"]
    assert "semanticType" not in model.ext and "description" not in model.ext  # "Thing" says nothing; "" neither
    assert not any(p.required for p in model.properties.values())
    what = {loss.pointer: loss.what for loss in result.losses}
    assert what["/properties/value"] == "name 'value' is reserved by TSL; imported as 'value_'"
    assert ("/events/status", "name 'status' is already used; imported as 'status_2'") in [
        (loss.pointer, loss.what) for loss in result.losses]
    assert "basic_sc: basic" in what["/securityDefinitions"]
    assert "tm:submodel 'led.tm.json'" in what["/links/0"]
    assert "forms of 3 affordance(s)" in what[""]
    assert [(i.rule, i.pointer) for i in result.issues] == [("wot-description-empty", "/description")]


def test_tm_ref_with_literally_escaped_keys_is_resolved_with_a_warning() -> None:
    tm = _tm(schemaDefinitions={"a~1b": {"type": "integer"}}, properties={"n": {"tm:ref": "#/schemaDefinitions/a~1b"}})
    result = _import(tm)
    assert _model(result).properties["n"].data_type.type is Kind.INT
    assert [i.rule for i in result.issues] == ["tm-ref-escaping"]


# -- the CLI -----------------------------------------------------------------------------------


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("name", sorted(WOT_EXPECTED))
def test_wot_corpus_file_reports_its_one_defect(capsys: pytest.CaptureFixture[str], name: str) -> None:
    expected = dict(WOT_EXPECTED[name])
    args = expected.pop("args", [])
    code, out, _err = _cli(capsys, "model", "validate", "--format", "json", str(WOT_CORPUS / name), *args)
    findings = json.loads(out)["files"][0]["findings"]
    assert code == 1
    assert [{k: f[k] for k in expected} for f in findings] == [expected]


def test_wot_corpus_covers_every_wot_error_rule() -> None:
    errors = {r.id for r in WOT_RULES.values() if r.severity is Severity.ERROR}
    assert errors <= {e["rule"] for e in WOT_EXPECTED.values()}
    assert {p.name for p in WOT_CORPUS.iterdir()} == set(WOT_EXPECTED) | {"expected.json"}


def test_validate_checks_a_tm_as_a_tm(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "lamp.tm.json"
    path.write_text(json.dumps(_tm(description="", title="Lamp {{N}}",
                                   properties={"on": {"type": "boolean", "description": ""}})))
    code, out, _err = _cli(capsys, "model", "validate", str(path))
    assert (code, out.strip()) == (0, f"{path}: OK (wot-tm)")
    code, out, _err = _cli(capsys, "model", "validate", "--lint", str(path))
    assert code == 0 and out.count("[wot-description-empty]") == 2 and "[tm-unfilled]" in out
    code, out, _err = _cli(capsys, "model", "lint", "--strict", "--set", "N=1", str(path))
    assert code == 1 and "[tm-unfilled]" not in out


def test_convert_refuses_remote_references_unless_a_cache_is_given(capsys: pytest.CaptureFixture[str],
                                                                   tmp_path: Path) -> None:
    child = tmp_path / "child.tm.json"
    child.write_text(json.dumps(_tm(links=[{"rel": "tm:extends", "href": "https://models.example/v1/gate.tm.json"}],
                                    properties={"speed": {"tm:ref": "https://models.example/v1/gate.tm.json#/properties/level"}})))
    code, _out, err = _cli(capsys, "model", "convert", str(child), "--to", "citytwin")
    assert code == 1 and "[wot-remote-ref]" in err and "--allow-remote --remote-cache DIR" in err
    cache = tmp_path / "cache"
    (cache / "models.example" / "v1").mkdir(parents=True)
    (cache / "models.example" / "v1" / "gate.tm.json").write_text(
        json.dumps(_tm(properties={"level": {"type": "number", "unit": "m"}})))
    code, out, err = _cli(capsys, "model", "convert", str(child), "--to", "citytwin", "--allow-remote",
                          "--remote-cache", str(cache))
    assert code == 0, err
    assert [p["identifier"] for p in json.loads(out)["properties"]] == ["level", "speed"]


def test_allow_remote_fetches_once_into_the_cache(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    served = tmp_path / "served"
    served.mkdir()
    (served / "base.tm.json").write_text(json.dumps(BASE_TM))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/base.tm.json"
        child = tmp_path / "child.tm.json"
        child.write_text(json.dumps(_tm(links=[{"rel": "tm:extends", "href": url}])))
        argv = ("model", "convert", str(child), "--to", "citytwin", "--allow-remote", "--remote-cache", str(tmp_path / "c"))
        code, out, err = _cli(capsys, *argv)
        assert code == 0, err
        assert [p["identifier"] for p in json.loads(out)["properties"]] == ["energy", "status"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert (tmp_path / "c" / f"127.0.0.1_{server.server_address[1]}" / "base.tm.json").is_file()
    assert _cli(capsys, *argv)[0] == 0  # the server is gone: the cache answers


def test_placeholder_options(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "t.tm.json"
    path.write_text(json.dumps(_tm(properties={"t": {"type": "object", "properties": "{{FIELDS}}"}})))
    code, out, err = _cli(capsys, "model", "convert", str(path), "--to", "citytwin",
                          "--set-json", 'FIELDS={"a": {"type": "number"}}')
    assert code == 0, err
    assert json.loads(out)["properties"][0]["dataType"]["type"] == "struct"
    assert _cli(capsys, "model", "convert", str(path), "--to", "citytwin", "--set-json", "FIELDS={")[0] == 2


def test_an_importer_bug_is_exit_3_in_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise KeyError("items")  # a fault the fixed importer no longer has: injected

    monkeypatch.setattr(wotimport, "import_wot", broken)
    path = tmp_path / "t.tm.json"
    path.write_text(json.dumps(_tm()))
    for command in ("convert", "validate"):
        code, _out, err = _cli(capsys, "model", command, str(path), *(["--to", "citytwin"] if command == "convert" else []))
        assert code == 3 and err.count("\n") == 1 and "internal error in the WoT importer: KeyError" in err


def test_playground_agrees_with_our_td_rules_it_has() -> None:
    """The playground 1.4.0 refuses what our td-security and td-link-type refuse; td-op and
    td-enum-type go further than it does (its own corpus labels such TDs invalid: see docs)."""
    node = _playground()
    names = ["td-security.td.json", "td-link-type.td.json", "td-op.td.json", "td-enum-type.td.json"]
    result = subprocess.run([str(node), "validate-td.js", *(str(WOT_CORPUS / n) for n in names)], cwd=NODE_DIR,
                            capture_output=True, text=True, timeout=300)
    details = {Path(line["file"]).name: line["details"] for line in map(json.loads, result.stdout.splitlines())}
    assert details["td-security.td.json"]["security"] == "failed"
    assert details["td-link-type.td.json"]["linksRelTypeCount"] == "failed"
    assert "failed" not in details["td-op.td.json"].values()
    assert "failed" not in details["td-enum-type.td.json"].values()


def test_detect_format_tells_tm_from_td() -> None:
    assert detect_format({"@type": "tm:ThingModel"}) is Format.WOT_TM  # @context missing: the TM checks say so
    assert detect_format({"@context": CONTEXT, "@type": ["Thing"]}) is Format.WOT_TD
    assert detect_format({"title": "x", "properties": {"a": {"type": "number"}}}) is Format.WOT_TD
    assert detect_format({"profile": {"productKey": "x"}, "properties": []}) is Format.TSL
