"""W3C WoT TM/TD export checked by the official JSON Schemas and by the Thingweb playground,
and Thing Model import (tm:ref, tm:extends, placeholders, tm:required)."""

from __future__ import annotations

import json
import shutil
import subprocess
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from citytwin.thingmodels.library import library_names, load_library_model
from citytwin.thingmodels.loader import parse_model
from citytwin.thingmodels.types import AccessMode, CallType, Kind
from citytwin.thingmodels.wot import HubBinding, TmImportError, from_tm, to_td, to_tm

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
    assert tm["tm:required"] == ["#/properties/cmd"] and tm["version"] == {"model": "2.1"}
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


# -- Thing Model in ----------------------------------------------------------------------------

BASE_TM = {
    "@context": ["https://www.w3.org/2022/wot/td/v1.1"],
    "@type": "tm:ThingModel",
    "title": "Base meter",
    "properties": {
        "energy": {"type": "number", "minimum": 0, "unit": "kWh", "readOnly": True, "title": "Energy"},
        "status": {"type": "integer", "oneOf": [{"const": 0, "title": "ok"}, {"const": 1, "title": "fault"}]},
    },
}


def test_tm_import_with_refs_placeholders_and_required() -> None:
    tm = {
        "@context": ["https://www.w3.org/2022/wot/td/v1.1"],
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
    }

    def resolve(href: str) -> dict[str, Any]:
        if href == "base.tm.json":
            return BASE_TM
        raise KeyError(href)

    doc, losses = from_tm(tm, resolve, {"MODEL": "ACME-3", "POWER_UNIT": "kW"})
    model = parse_model(doc)
    assert model.product_key == "ACME-3_smart_meter" and model.profile.version == "1.2"
    assert model.ext["semanticType"] == "https://saref.etsi.org/core/Meter"
    assert list(model.properties) == ["energy", "status", "power", "relay", "label", "on_peak"]
    energy, power = model.properties["energy"], model.properties["power"]
    assert energy.required and energy.access_mode is AccessMode.R and energy.data_type.unit == "kWh"
    assert power.name == "Power" and power.data_type.unit == "kW" and power.access_mode is AccessMode.R
    assert model.properties["status"].data_type.names == {0: "ok", 1: "fault"}
    assert model.properties["relay"].data_type.names == {0: "open", 1: "closed"}
    label = model.properties["label"]
    assert (label.data_type.type, label.data_type.length, label.ext) == (Kind.TEXT, 40, {"writeOnly": True})
    assert model.services["reset"].required and model.services["reset"].call_type is CallType.SYNC
    assert list(model.services["calibrate"].inputs) == ["input"]
    assert model.events["tamper"].type.value == "info"
    what = {loss.pointer: loss.what for loss in losses}
    assert "imported as 'on_peak'" in what["/properties/on-peak"]
    assert "one TSL parameter" in what["/actions/calibrate/input"]
    assert "severity" in what["/events/tamper"]


def test_tm_import_of_our_own_export_keeps_the_model() -> None:
    model = load_library_model("street_light")
    tm, _ = to_tm(model)
    back = parse_model(from_tm(tm, product_key=model.product_key)[0])
    assert list(back.properties) == list(model.properties)
    for key, prop in model.properties.items():
        other = back.properties[key]
        assert (other.name, other.access_mode, other.data_type.min, other.data_type.max, other.data_type.unit) == (
            prop.name, prop.access_mode, prop.data_type.min, prop.data_type.max, prop.data_type.unit)
        assert other.ext.get("ucum") == prop.ext.get("ucum")
    assert {k: e.type for k, e in back.events.items()} == {k: e.type for k, e in model.events.items()}
    assert {k: s.call_type for k, s in back.services.items()} == {k: s.call_type for k, s in model.services.items()}


@pytest.mark.parametrize(
    ("tm", "message"),
    [
        ({"title": "{{X}}", "properties": {}}, "placeholders without a value: X"),
        ({"properties": {"a": {"tm:ref": "#/properties/b"}}}, "write it as FILE#POINTER"),
        ({"properties": {"a": {"tm:ref": "other.json#/properties/b"}}}, "other.json"),
        ({"properties": {"a": {"tm:ref": "base.tm.json#/properties/nope"}}}, "no '/properties/nope'"),
    ],
)
def test_tm_import_errors(tm: dict[str, Any], message: str) -> None:
    def resolve(href: str) -> dict[str, Any]:
        if href == "base.tm.json":
            return BASE_TM
        raise KeyError(f"no file {href}")

    with pytest.raises(TmImportError, match=message):
        from_tm({"@context": ["https://www.w3.org/2022/wot/td/v1.1"], **tm}, resolve)


def test_tm_optional_marks_the_rest_required() -> None:
    tm = {**BASE_TM, "tm:optional": ["#/properties/status"]}
    model = parse_model(from_tm(tm)[0])
    assert model.properties["energy"].required and not model.properties["status"].required
