"""Modules (TSL function blocks) and the x-citytwin extension block."""

from __future__ import annotations

from typing import Any

import pytest

from citytwin.thingmodels.library import load_library_model
from citytwin.thingmodels.loader import check_model, parse_model
from citytwin.thingmodels.types import AccessMode, Kind


def test_modular_pump_station_addresses_module_features() -> None:
    model = load_library_model("pump_station_modular")
    assert list(model.modules) == ["pump_1", "pump_2"]
    assert model.modules["pump_1"].ref == "pump" and model.modules["pump_1"].name == "Pump 1 / 1号泵"
    pump = load_library_model("pump")
    own_props, own_events, own_services = model.own()
    assert list(own_props) == ["level", "inflow", "outflow", "outlet_pressure", "high_level_float"]
    assert list(own_events) == ["high_level"] and own_services == {}
    expected = list(own_props) + [f"pump_{n}:{p}" for n in (1, 2) for p in pump.properties]
    assert list(model.properties) == expected
    prop = model.properties["pump_2:frequency_setpoint"]
    assert prop.identifier == "pump_2:frequency_setpoint" and prop.access_mode is AccessMode.RW
    assert model.modules["pump_2"].model.properties["frequency_setpoint"] == pump.properties["frequency_setpoint"]
    assert list(model.services) == [f"pump_{n}:{s}" for n in (1, 2) for s in ("start", "stop", "set_frequency")]
    assert list(model.events) == ["high_level", "pump_1:trip", "pump_2:trip"]


def test_module_features_are_checked_like_any_other(tmp_path: Any) -> None:
    model = load_library_model("pump_station_modular")
    assert model.check_property_set({"pump_1:frequency_setpoint": 40.0}) == []
    assert model.check_property_set({"pump_1:frequency_setpoint": 60, "pump_2:running": True, "pump_3:x": 1}) == [
        "property 'pump_1:frequency_setpoint': 60 is above max 50",
        "property 'pump_2:running' is read-only",
        "unknown property 'pump_3:x'",
    ]
    assert model.check_service_input("pump_2:set_frequency", {"hz": 30}) == []
    assert model.check_service_input("pump_2:set_frequency", {"hz": 20}) == ["input 'hz': 20 is below min 25"]
    assert model.properties["pump_1:frequency"].check(51) == "51 is above max 50"


def _doc(**extra: Any) -> dict[str, Any]:
    return {"profile": {"productKey": "m"}, **extra}


PROP = {"identifier": "level", "name": "Level", "accessMode": "r", "dataType": {"type": "float"}}


def test_identifiers_are_unique_per_module_not_per_product() -> None:
    doc = _doc(
        properties=[PROP],
        modules=[
            {"identifier": "a", "name": "A", "properties": [PROP]},
            {"identifier": "b", "name": "B", "properties": [PROP, {**PROP, "name": "again"}]},
        ],
    )
    model, issues = check_model(doc)
    assert [(i.pointer, i.rule) for i in issues] == [("/modules/1/properties/1/identifier", "identifier-duplicate")]
    del doc["modules"][1]["properties"][1]
    model = parse_model(doc)
    assert list(model.properties) == ["level", "a:level", "b:level"]
    assert model.modules["a"].ref is None


@pytest.mark.parametrize(
    ("modules", "expected"),
    [
        ([{"identifier": "x", "name": "X", "model": "pump_station_modular"}], ("/modules/0/model", "module-ref")),
        ([{"identifier": "x", "name": "X", "model": "pump", "properties": [PROP]}], ("/modules/0", "module-ref")),
        ([{"identifier": "x", "name": "X", "model": 3}], ("/modules/0/model", "value-type")),
        (
            [{"identifier": "x", "name": "X", "model": "pump"}, {"identifier": "x", "name": "Y", "model": "pump"}],
            ("/modules/1/identifier", "identifier-duplicate"),
        ),
        ([{"identifier": "x" * 31, "name": "X", "model": "pump"}], ("/modules/0/identifier", "module-identifier")),
        ([{"identifier": "x", "name": "X", "properties": [{**PROP, "accessMode": "w"}]}], ("/modules/0/properties/0/accessMode", "access-mode")),
        ({"identifier": "x"}, ("/modules", "value-type")),
    ],
)
def test_module_errors(modules: Any, expected: tuple[str, str]) -> None:
    _model, issues = check_model(_doc(modules=modules))
    assert [(i.pointer, i.rule) for i in issues] == [expected]


def test_invalid_referenced_model_is_reported_at_the_reference() -> None:
    def resolve(name: str) -> dict[str, Any]:
        if name == "broken":
            return {"profile": {"productKey": "b"}, "properties": [{**PROP, "dataType": {"type": "float", "specs": {"min": 2, "max": 1}}}]}
        raise KeyError(name)

    _model, issues = check_model(_doc(modules=[{"identifier": "x", "name": "X", "model": "broken"}]), resolve)
    assert [(i.pointer, i.rule) for i in issues] == [("/modules/0/model", "module-ref")]
    assert "min 2 is greater than max 1" in issues[0].message
    _model, issues = check_model(_doc(modules=[{"identifier": "x", "name": "X", "model": "pump"}]), resolve)
    assert issues[0].message.startswith("no model 'pump'")  # the caller's resolver decides, not the library


# -- the extension block ----------------------------------------------------------------------


def test_extension_values_reach_the_model() -> None:
    model = parse_model(
        _doc(
            **{"x-citytwin": {"title": "T", "semanticType": "https://saref.etsi.org/core/Sensor"}},
            properties=[
                {
                    **PROP,
                    "accessMode": "rw",
                    "dataType": {"type": "float", "specs": {"min": "0", "max": "6", "unit": "m"}},
                    "x-citytwin": {"ucum": "m", "default": 2.5, "writeOnly": True,
                                   "semanticType": "http://qudt.org/vocab/quantitykind/Length"},
                }
            ],
        )
    )
    assert model.ext["title"] == "T"
    assert model.properties["level"].ext == {
        "ucum": "m", "default": 2.5, "writeOnly": True, "semanticType": "http://qudt.org/vocab/quantitykind/Length",
    }
    assert model.properties["level"].data_type.type is Kind.FLOAT


@pytest.mark.parametrize(
    ("ext", "expected"),
    [
        ({"writeOnly": True}, ("/properties/0/x-citytwin/writeOnly", "extension")),
        ({"writeOnly": "yes"}, ("/properties/0/x-citytwin/writeOnly", "extension")),
        ({"ucum": "m s"}, ("/properties/0/x-citytwin/ucum", "extension")),
        ({"default": "high"}, ("/properties/0/x-citytwin/default", "default-value")),
        ({"title": "T"}, ("/properties/0/x-citytwin/title", "extension")),
        ("m", ("/properties/0/x-citytwin", "extension")),
    ],
)
def test_extension_errors(ext: Any, expected: tuple[str, str]) -> None:
    _model, issues = check_model(_doc(properties=[{**PROP, "x-citytwin": ext}]))
    assert [(i.pointer, i.rule) for i in issues] == [expected]


def test_null_ucum_says_there_is_no_code() -> None:
    model = parse_model(_doc(properties=[{**PROP, "x-citytwin": {"ucum": None}}]))
    assert model.properties["level"].ext == {"ucum": None}


def test_param_extension_default_is_checked() -> None:
    service = {
        "identifier": "go",
        "name": "Go",
        "callType": "sync",
        "inputData": [
            {"identifier": "n", "name": "N", "dataType": {"type": "int", "specs": {"min": 1, "max": 3}},
             "x-citytwin": {"default": 4}}
        ],
    }
    _model, issues = check_model(_doc(services=[service]))
    assert [(i.pointer, i.message) for i in issues] == [
        ("/services/0/inputData/0/x-citytwin/default", "default 4 is above max 3")
    ]
