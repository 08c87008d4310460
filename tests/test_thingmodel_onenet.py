"""China Mobile OneNET thing models in and out: the library round-trips with the loss report
as the only difference (modules included, written module__identifier), exports follow the
documented rules, and a model shaped as OneNET Studio exports it imports as expected."""

from __future__ import annotations

import json
from typing import Any

import pytest
from thingmodel_roundtrip import mutations, unexplained

from citytwin.thingmodels.formats import Format, detect_format
from citytwin.thingmodels.library import library_names, load_library_model
from citytwin.thingmodels.loader import check_model, parse_model
from citytwin.thingmodels.onenet import check_onenet, from_onenet, to_onenet
from citytwin.thingmodels.types import CallType, EventType, Kind

MODEL: dict[str, Any] = {
    "version": "1.0",
    "profile": {"industryId": "1", "sceneId": "2", "categoryId": "3", "productId": "Ab12Cd34Ef"},
    "properties": [
        {"identifier": "temp", "name": "温度", "functionType": "u", "functionMode": "property", "accessMode": "r",
         "desc": "", "required": False,
         "dataType": {"type": "float", "specs": {"min": "-20.5", "max": "50.5", "step": "0.5", "unit": "摄氏度 / °C"}}},
        {"identifier": "mode", "name": "模式", "functionType": "s", "functionMode": "property", "accessMode": "rw",
         "dataType": {"type": "enum", "specs": {"1": "模式1", "2": "模式2"}}},
        {"identifier": "counter", "name": "计数", "functionType": "u", "functionMode": "property", "accessMode": "r",
         "dataType": {"type": "int64", "specs": {"min": "0", "max": "99999999999", "step": "", "unit": ""}}},
        {"identifier": "flags", "name": "标志", "functionType": "u", "functionMode": "property", "accessMode": "r",
         "dataType": {"type": "bitMap", "specs": {}}},
        {"identifier": "cells", "name": "小区", "functionType": "u", "functionMode": "property", "accessMode": "r",
         "dataType": {"type": "array", "specs": {"length": 10, "type": "string", "specs": {"length": 256}}}},
    ],
    "events": [{"identifier": "alarm", "name": "告警", "functionType": "u", "functionMode": "event", "eventType": "alert",
                "outputData": [{"identifier": "switch", "name": "开关",
                                "dataType": {"type": "bool", "specs": {"false": "关", "true": "开"}}}]}],
    "services": [{"identifier": "reset", "name": "复位", "functionType": "u", "functionMode": "service", "callType": "s",
                  "input": [{"identifier": "delay", "name": "延时", "dataType": {"type": "int32", "specs": {"min": "0", "max": "60"}}}],
                  "output": []}],
}


def test_detected_and_imported() -> None:
    assert detect_format(MODEL) is Format.ONENET and check_onenet(MODEL) == []
    doc, losses = from_onenet(MODEL)
    model = parse_model(doc)
    assert model.product_key == "Ab12Cd34Ef" and model.profile.version == "1.0"
    temp = model.properties["temp"].data_type
    assert (temp.type, temp.min, temp.step, temp.unit, temp.unit_name) == (Kind.FLOAT, -20.5, 0.5, "°C", "摄氏度")
    assert model.properties["mode"].required and dict(model.properties["mode"].data_type.names) == {1: "模式1", 2: "模式2"}
    assert model.properties["counter"].data_type.type is Kind.DOUBLE  # int64 beyond int32
    cells = model.properties["cells"].data_type
    assert cells.size == 10 and cells.item is not None and cells.item.length == 256
    assert model.events["alarm"].type is EventType.ALERT
    assert dict(model.events["alarm"].output["switch"].data_type.names) == {0: "关", 1: "开"}
    assert model.services["reset"].call_type is CallType.SYNC and list(model.services["reset"].inputs) == ["delay"]
    assert {x.pointer for x in losses} >= {"/properties/2/dataType/type", "/properties/3/dataType/type", "/profile/industryId"}


@pytest.mark.parametrize("name", library_names())
def test_library_round_trips_with_the_losses_as_the_only_difference(name: str) -> None:
    model = load_library_model(name)
    doc, losses = to_onenet(model)
    assert check_onenet(doc) == []
    assert detect_format(doc) is Format.ONENET
    back = parse_model(from_onenet(json.loads(json.dumps(doc)))[0])
    assert unexplained(model, back, losses) == []


def test_modules_come_back_from_their_prefix() -> None:
    model = load_library_model("pump_station_modular")
    doc, losses = to_onenet(model)
    assert "pump_1__frequency_setpoint" in {p["identifier"] for p in doc["properties"]}
    back = parse_model(from_onenet(doc)[0])
    assert list(back.modules) == ["pump_1", "pump_2"]
    assert back.properties["pump_1:frequency_setpoint"].data_type == model.properties["pump_1:frequency_setpoint"].data_type
    assert "/modules/0" in {x.pointer for x in losses}


def test_rules_catch_a_bad_model() -> None:
    bad = json.loads(json.dumps(MODEL))
    bad["properties"][0]["functionType"] = "x"
    bad["properties"][1]["accessMode"] = "w"
    bad["events"][0]["eventType"] = "fault"
    bad["services"][0]["input"][0]["dataType"]["type"] = "long"
    assert {i.pointer for i in check_onenet(bad)} == {
        "/properties/0/functionType", "/properties/1/accessMode", "/events/0/eventType", "/services/0/input/0/dataType/type",
    }


def test_no_crash_on_mutated_models() -> None:
    docs = [to_onenet(load_library_model(n))[0] for n in library_names()] + [MODEL]
    for doc in mutations(docs, 800, seed=15):
        check_onenet(doc)
        ours, _ = from_onenet(doc)
        model, issues = check_model(ours)
        if model is not None and not issues:
            to_onenet(model)
