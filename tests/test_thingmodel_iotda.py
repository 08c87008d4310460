"""Huawei Cloud IoTDA product models in and out: the library round-trips with the loss report
as the only difference, exports follow the documented rules, and an IoTDA model shaped as
the product API documents it imports as expected."""

from __future__ import annotations

import json
from typing import Any

import pytest
from thingmodel_roundtrip import mutations, unexplained

from citytwin.thingmodels.formats import Format, detect_format
from citytwin.thingmodels.iotda import from_iotda, to_iotda
from citytwin.thingmodels.iotdacheck import check_iotda
from citytwin.thingmodels.library import library_names, load_library_model
from citytwin.thingmodels.loader import check_model, parse_model
from citytwin.thingmodels.types import AccessMode, CallType, Kind

PRODUCT: dict[str, Any] = {
    "name": "Thermometer", "device_type": "acme.thermometer", "manufacturer_name": "ACME", "protocol_type": "MQTT",
    "description": "A room thermometer",
    "service_capabilities": [
        {"service_id": "temperature", "service_type": "temperature", "option": "Master",
         "properties": [
             {"property_name": "temperature", "required": True, "data_type": "decimal", "min": "-40", "max": "85",
              "step": 0.1, "unit": "°C", "method": "RE", "description": "Room temperature"},
             {"property_name": "interval", "required": False, "data_type": "int", "min": 1, "max": 3600,
              "unit": "s", "method": "RWE", "default_value": 60},
             {"property_name": "mode", "data_type": "string", "enum_list": ["eco", "comfort"], "method": "RW"},
             {"property_name": "tags", "data_type": "string list", "max_length": 16, "method": "R"},
         ],
         "commands": [
             {"command_name": "reboot", "paras": [{"para_name": "force", "required": False, "data_type": "boolean"}],
              "responses": [{"response_name": "ACK", "paras": [{"para_name": "result", "data_type": "int", "min": 0, "max": 1}]}]},
             {"command_name": "beep", "paras": []},
         ],
         "events": [{"event_type": "overheat", "paras": [{"para_name": "temp", "data_type": "decimal"}]}]},
        {"service_id": "battery", "service_type": "battery", "option": "Optional", "description": "Battery pack",
         "properties": [{"property_name": "level", "data_type": "int", "min": 0, "max": 100, "unit": "%", "method": "RE"}]},
    ],
}


def test_detected_and_imported() -> None:
    assert detect_format(PRODUCT) is Format.IOTDA and check_iotda(PRODUCT) == []
    doc, losses = from_iotda(PRODUCT)
    model = parse_model(doc)
    assert model.product_key == "acme.thermometer" and model.ext["title"] == "Thermometer"
    temp = model.properties["temperature"]
    assert (temp.data_type.type, temp.data_type.min, temp.data_type.max, temp.data_type.unit) == (Kind.DOUBLE, -40.0, 85.0, "°C")
    assert temp.access_mode is AccessMode.R and temp.required and temp.description == "Room temperature"
    assert model.properties["interval"].ext["default"] == 60 and model.properties["interval"].writable
    assert dict(model.properties["mode"].data_type.names) == {0: "eco", 1: "comfort"}
    tags = model.properties["tags"].data_type
    assert tags.type is Kind.ARRAY and tags.item is not None and tags.item.length == 16
    assert model.services["reboot"].call_type is CallType.SYNC and list(model.services["reboot"].outputs) == ["result"]
    assert model.services["beep"].call_type is CallType.ASYNC
    assert list(model.modules) == ["battery"] and model.properties["battery:level"].data_type.max == 100
    pointers = {x.pointer for x in losses}
    assert "/service_capabilities/0/properties/2/enum_list" in pointers  # string enums become integers
    assert "/service_capabilities/0/properties/2/method" in pointers  # not subscribable: TSL always reports
    assert "/service_capabilities/0/commands/0/paras/0/required" in pointers


@pytest.mark.parametrize("name", library_names())
def test_library_round_trips_with_the_losses_as_the_only_difference(name: str) -> None:
    model = load_library_model(name)
    doc, losses = to_iotda(model)
    assert check_iotda(doc) == []
    assert detect_format(doc) is Format.IOTDA
    back = parse_model(from_iotda(json.loads(json.dumps(doc)))[0])
    assert unexplained(model, back, losses) == []


def test_losses_name_what_iotda_cannot_say() -> None:
    model = load_library_model("pump")
    _, losses = to_iotda(model)
    whats = " | ".join(x.what for x in losses)
    assert "IoTDA has no event types (error)" in whats
    assert "float is 32-bit in TSL; IoTDA decimal has no precision" in whats
    assert "a UCUM code has no IoTDA field" in whats
    assert unexplained(model, parse_model(from_iotda(to_iotda(model)[0])[0]), []) != []


def test_rules_catch_a_bad_model() -> None:
    bad = json.loads(json.dumps(PRODUCT))
    bad["service_capabilities"][0]["properties"][0]["data_type"] = "float"
    bad["service_capabilities"][0]["properties"][1]["method"] = "X"
    bad["service_capabilities"][1]["service_id"] = "temperature"
    assert {(i.pointer, i.rule) for i in check_iotda(bad)} == {
        ("/service_capabilities/0/properties/0/data_type", "iotda-shape"),
        ("/service_capabilities/0/properties/1/method", "iotda-shape"),
        ("/service_capabilities/1/service_id", "iotda-shape"),
    }


def test_no_crash_on_mutated_models() -> None:
    docs = [to_iotda(load_library_model(n))[0] for n in library_names()] + [PRODUCT]
    for doc in mutations(docs, 800, seed=14):
        check_iotda(doc)
        ours, _ = from_iotda(doc)
        model, issues = check_model(ours)
        if model is not None and not issues:
            to_iotda(model)
