"""Thing-model language, first cut: loading, checkers, error reporting and the library."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import pytest

from citytwin.thingmodels.errors import Issue, ModelError
from citytwin.thingmodels.library import library_document, library_names, load_library_model
from citytwin.thingmodels.loader import load_model_json, parse_model
from citytwin.thingmodels.types import (
    AccessMode,
    CallType,
    EventType,
    Kind,
    Property,
    ThingModel,
)

# -- helpers ----------------------------------------------------------------------------------


def model_with(*properties: Any) -> dict[str, Any]:
    return {"profile": {"productKey": "test.product"}, "properties": list(properties)}


def prop_doc(identifier: str, data_type: Any, access: str = "rw") -> dict[str, Any]:
    return {
        "identifier": identifier,
        "name": identifier,
        "accessMode": access,
        "required": False,
        "dataType": data_type,
    }


def prop_of(data_type: dict[str, Any]) -> Property:
    return parse_model(model_with(prop_doc("p", data_type))).properties["p"]


def issues_of(doc: Any) -> list[Issue]:
    with pytest.raises(ModelError) as info:
        parse_model(doc, "broken.json")
    issues: list[Issue] = info.value.issues
    return issues


INT = {"type": "int", "specs": {"min": "-10", "max": "10", "step": "1"}}
FLOAT = {"type": "float", "specs": {"min": "0", "max": "6", "step": "0.01", "unit": "m"}}
ENUM = {"type": "enum", "specs": {"1": "pump 1", "2": "pump 2"}}
TEXT = {"type": "text", "specs": {"length": "5"}}
STRUCT = {
    "type": "struct",
    "specs": [
        {
            "identifier": "a",
            "name": "A",
            "dataType": {"type": "int", "specs": {"min": 0, "max": 10}},
        },
        {"identifier": "b", "name": "B", "dataType": {"type": "text", "specs": {"length": 3}}},
    ],
}
ARRAY = {
    "type": "array",
    "specs": {"size": "3", "item": {"type": "float", "specs": {"min": "0", "max": "1"}}},
}


# -- the pump-station library model ---------------------------------------------------------


def test_library_lists_pump_station() -> None:
    assert "pump_station" in library_names()


def test_pump_station_identifiers_and_shape() -> None:
    model = load_library_model("pump_station")
    assert model.product_key == "citytwin.water.pump_station"
    expected = ["level", "inflow", "outflow", "outlet_pressure", "high_level_float"]
    for n in (1, 2):
        expected += [
            f"pump{n}_running",
            f"pump{n}_fault",
            f"pump{n}_frequency",
            f"pump{n}_frequency_setpoint",
            f"pump{n}_run_hours",
            f"pump{n}_current",
        ]
    assert list(model.properties) == expected
    assert list(model.events) == ["high_level", "pump_fault"]
    assert list(model.services) == ["start_pump", "stop_pump", "set_frequency"]
    writable = sorted(p.identifier for p in model.properties.values() if p.writable)
    assert writable == ["pump1_frequency_setpoint", "pump2_frequency_setpoint"]


@pytest.mark.parametrize(
    ("identifier", "kind", "low", "high", "unit"),
    [
        ("level", Kind.FLOAT, 0, 6, "m"),
        ("inflow", Kind.FLOAT, 0, 2000, "m³/h"),
        ("outflow", Kind.FLOAT, 0, 2000, "m³/h"),
        ("outlet_pressure", Kind.FLOAT, 0, 1000, "kPa"),
        ("pump1_frequency", Kind.FLOAT, 0, 50, "Hz"),
        ("pump2_frequency_setpoint", Kind.FLOAT, 25, 50, "Hz"),
        ("pump1_run_hours", Kind.DOUBLE, 0, 1_000_000, "h"),
        ("pump2_current", Kind.FLOAT, 0, 200, "A"),
    ],
)
def test_pump_station_numeric_specs(
    identifier: str, kind: Kind, low: float, high: float, unit: str
) -> None:
    dt = load_library_model("pump_station").properties[identifier].data_type
    assert (dt.type, dt.min, dt.max, dt.unit) == (kind, low, high, unit)
    assert isinstance(dt.min, float) and isinstance(dt.max, float)
    assert dt.unit_name


def test_pump_station_details() -> None:
    model = load_library_model("pump_station")
    assert model.properties["level"].data_type.step == 0.01
    assert model.properties["pump1_frequency_setpoint"].data_type.step == 0.1
    assert model.properties["high_level_float"].data_type.names == {0: "normal", 1: "high"}
    assert model.properties["pump2_fault"].data_type.type is Kind.BOOL
    high_level = model.events["high_level"]
    assert high_level.type is EventType.ALERT
    assert list(high_level.output) == ["level"]
    assert high_level.output["level"].data_type.unit == "m"
    fault = model.events["pump_fault"]
    assert fault.type is EventType.ERROR
    assert fault.output["pump"].data_type.names == {1: "pump 1", 2: "pump 2"}
    assert fault.output["current"].data_type.unit == "A"
    for service in model.services.values():
        assert service.call_type is CallType.SYNC
        assert service.outputs == {}
        assert service.inputs["pump"].data_type.names == {1: "pump 1", 2: "pump 2"}
    hz = model.services["set_frequency"].inputs["hz"].data_type
    assert (hz.type, hz.min, hz.max, hz.step, hz.unit) == (Kind.FLOAT, 25, 50, 0.1, "Hz")


def test_library_document_is_a_fresh_copy_and_parses_to_the_same_model() -> None:
    doc = library_document("pump_station")
    assert parse_model(doc) == load_library_model("pump_station")
    doc["properties"].clear()
    assert len(library_document("pump_station")["properties"]) == 17
    assert load_library_model("pump_station") is load_library_model("pump_station")


def test_unknown_library_model() -> None:
    with pytest.raises(KeyError, match="no library model 'nope'"):
        load_library_model("nope")
    with pytest.raises(KeyError):
        library_document("../pump_station")


# -- checkers ---------------------------------------------------------------------------------

NAN = float("nan")

CASES: list[tuple[dict[str, Any], list[Any], list[tuple[Any, str]]]] = [
    (
        INT,
        [0, -10, 10],
        [
            (11, "11 is above max 10"),
            (-11, "-11 is below min -10"),
            (True, "true is not an integer"),
            (1.0, "1.0 is not an integer"),
            ("1", "'1' is not an integer"),
            (None, "null is not an integer"),
        ],
    ),
    (
        {"type": "int"},
        [-(2**31), 2**31 - 1],
        [(2**31, "2147483648 is above int32 max 2147483647"), (-(2**31) - 1, "below int32 min")],
    ),
    (
        FLOAT,
        [0, 6, 6.0, 3, 0.01],
        [
            (12.5, "12.5 is above max 6"),
            (6.000001, "6.000001 is above max 6"),
            (-0.01, "-0.01 is below min 0"),
            (NAN, "nan is not a finite number"),
            (math.inf, "inf is not a finite number"),
            (True, "true is not a number"),
            ("1.5", "'1.5' is not a number"),
            ([1.0], "[1.0] is not a number"),
        ],
    ),
    (
        {"type": "float"},
        [-3.4e38, 3.4e38],
        [(1e39, "1e+39 is above float max 3.4028234663852886e+38")],
    ),
    (
        {"type": "double"},
        [1e39, -1e300],
        [(10**400, "is above double max"), (-math.inf, "-inf is not a finite number")],
    ),
    (
        {"type": "bool", "specs": {"0": "off", "1": "on"}},
        [True, False, 0, 1],
        [
            (2, "2 is not a bool (true/false or 0/1)"),
            (1.0, "1.0 is not a bool"),
            ("true", "'true' is not a bool"),
            (None, "null is not a bool"),
        ],
    ),
    (
        ENUM,
        [1, 2],
        [
            (3, "3 is not one of 1 (pump 1), 2 (pump 2)"),
            (0, "0 is not one of"),
            (True, "true is not an enum value (an integer)"),
            ("1", "'1' is not an enum value"),
            (1.0, "1.0 is not an enum value"),
        ],
    ),
    (
        TEXT,
        ["", "abcde", "集水井液位"],
        [
            ("abcdef", "text of 6 characters is longer than length 5"),
            (5, "5 is not text"),
            (None, "null is not text"),
        ],
    ),
    (
        {"type": "date", "specs": {}},
        ["1700000000000", 1700000000000, 0, "0"],
        [
            (-1, "-1 is not a date (negative epoch milliseconds)"),
            ("17e11", "'17e11' is not a date"),
            ("", "'' is not a date"),
            ("-5", "'-5' is not a date"),
            (1.7e12, "1700000000000.0 is not a date"),
            (True, "true is not a date"),
            (1_700_000_000_000_000, "after year 9999"),
        ],
    ),
    (
        STRUCT,
        [{"a": 0, "b": "xyz"}, {"b": "", "a": 10}],
        [
            ({"a": 1}, "missing field 'b'"),
            ({"a": 11, "b": "x"}, "field 'a': 11 is above max 10"),
            ({"a": 1, "b": "long"}, "field 'b': text of 4 characters is longer than length 3"),
            ({"a": 1, "b": "x", "c": 0}, "unknown field 'c'"),
            ([1, "x"], "[1, 'x'] is not an object"),
        ],
    ),
    (
        ARRAY,
        [[], [0.5, 1], (0,), [0, 0, 0]],
        [
            ([0.5] * 4, "array of 4 items is longer than size 3"),
            ([0.5, 2], "item 1: 2 is above max 1"),
            ([NAN], "item 0: nan is not a finite number"),
            ("abc", "'abc' is not an array"),
            ({"0": 1}, "{'0': 1} is not an array"),
        ],
    ),
    (
        {"type": "array", "specs": {"size": 2, "item": STRUCT}},
        [[{"a": 1, "b": "x"}]],
        [([{"a": 1, "b": "x"}, {"a": 1}], "item 1: missing field 'b'")],
    ),
]


@pytest.mark.parametrize(
    ("data_type", "valid", "invalid"),
    CASES,
    ids=[f"{i}-{c[0]['type']}" for i, c in enumerate(CASES)],
)
def test_checker_accepts_and_rejects(
    data_type: dict[str, Any], valid: list[Any], invalid: list[tuple[Any, str]]
) -> None:
    prop = prop_of(data_type)
    for value in valid:
        assert prop.check(value) is None, value
    for value, message in invalid:
        reason = prop.check(value)
        assert reason is not None, value
        assert message in reason, (value, reason)


def test_messages_stay_short() -> None:
    reason = prop_of(TEXT).check(["x" * 1000])
    assert reason is not None and len(reason) < 80


def test_normalize_for_commands() -> None:
    boolean = prop_of({"type": "bool", "specs": {"0": "off", "1": "on"}})
    assert boolean.normalize(1) is True and boolean.normalize(0) is False
    number = prop_of(FLOAT).normalize(3)
    assert number == 3.0 and type(number) is float
    assert prop_of(INT).normalize(4) == 4
    assert prop_of({"type": "date"}).normalize(1700000000000) == "1700000000000"
    nested = prop_of(
        {
            "type": "array",
            "specs": {
                "size": 4,
                "item": {
                    "type": "struct",
                    "specs": [
                        {
                            "identifier": "on",
                            "name": "on",
                            "dataType": {"type": "bool", "specs": {"0": "n", "1": "y"}},
                        },
                        {"identifier": "x", "name": "x", "dataType": {"type": "double"}},
                    ],
                },
            },
        }
    )
    out = nested.normalize([{"on": 1, "x": 2}, {"on": False, "x": 0.5}])
    assert out == [{"on": True, "x": 2.0}, {"on": False, "x": 0.5}]
    assert out[0]["on"] is True and type(out[0]["x"]) is float


# -- document errors --------------------------------------------------------------------------


def test_broken_document_reports_every_issue_with_its_pointer() -> None:
    bad_field = {"identifier": "f", "dataType": {"type": "int"}}  # no name
    doc = {
        "profile": {"version": "1.0"},
        "properties": [
            prop_doc("1bad", FLOAT),
            {"identifier": "no_access", "name": "x", "required": False, "dataType": FLOAT},
            prop_doc("wrong_access", FLOAT, access="w"),
            prop_doc("min_max", {"type": "float", "specs": {"min": "10", "max": "5"}}),
            prop_doc("unknown_type", {"type": "string", "specs": {}}),
            prop_doc("min_max", FLOAT),
            prop_doc("bad_enum", {"type": "enum", "specs": {"a/b": "x", "01": "y", "2": ""}}),
            prop_doc("long_text", {"type": "text", "specs": {"length": "20000"}}),
            prop_doc(
                "bad_array",
                {
                    "type": "array",
                    "specs": {"size": 600, "item": {"type": "struct", "specs": [bad_field]}},
                },
            ),
            prop_doc("int_min", {"type": "int", "specs": {"min": "1.5", "max": "abc", "step": 0}}),
            {**prop_doc("not_bool", FLOAT), "required": "no"},
            prop_doc("half_bool", {"type": "bool", "specs": {"0": "off"}}),
        ],
        "events": [
            {
                "identifier": "ev",
                "name": "ev",
                "type": "warning",
                "outputData": [{"identifier": "x", "name": "x"}],
            }
        ],
        "services": [
            {
                "identifier": "svc",
                "name": "svc",
                "callType": "later",
                "inputData": [
                    {"identifier": "p", "name": "p", "dataType": ENUM},
                    {"identifier": "p", "name": "p again", "dataType": ENUM},
                ],
            },
            {"identifier": "svc", "name": "twice", "callType": "sync"},
        ],
    }
    found = {(i.pointer, i.message) for i in issues_of(doc)}
    expected = {
        ("/profile", "missing required key 'productKey'"),
        (
            "/properties/0/identifier",
            "identifier '1bad' must be 1-50 letters, digits or '_', starting with a letter",
        ),
        ("/properties/1", "missing required key 'accessMode'"),
        ("/properties/2/accessMode", "accessMode must be one of 'r', 'rw', not 'w'"),
        ("/properties/3/dataType/specs/min", "min 10 is greater than max 5"),
        (
            "/properties/4/dataType/type",
            "unknown type 'string'; expected one of int, float, double, bool, enum, text, date, struct, array",
        ),
        ("/properties/5/identifier", "duplicate identifier 'min_max' (first at /properties/3)"),
        ("/properties/6/dataType/specs/a~1b", "enum value 'a/b' must be an integer such as '1'"),
        ("/properties/6/dataType/specs/01", "enum value '01' must be an integer such as '1'"),
        ("/properties/6/dataType/specs/2", "name must be a non-empty string"),
        ("/properties/7/dataType/specs/length", "length must be 1..10240, not 20000"),
        ("/properties/8/dataType/specs/size", "size must be 1..512, not 600"),
        ("/properties/8/dataType/specs/item/specs/0", "missing required key 'name'"),
        ("/properties/9/dataType/specs/min", "min '1.5' must be an integer for type int"),
        ("/properties/9/dataType/specs/max", "max 'abc' is not a number"),
        ("/properties/9/dataType/specs/step", "step must be positive, not 0"),
        ("/properties/10/required", "must be true or false"),
        ("/properties/11/dataType/specs", "bool specs need names for both '0' and '1'"),
        ("/events/0/type", "type must be one of 'info', 'alert', 'error', not 'warning'"),
        ("/events/0/outputData/0", "missing required key 'dataType'"),
        ("/services/0/callType", "callType must be one of 'sync', 'async', not 'later'"),
        (
            "/services/0/inputData/1/identifier",
            "duplicate identifier 'p' (first at /services/0/inputData/0)",
        ),
        ("/services/1/identifier", "duplicate identifier 'svc' (first at /services/0)"),
    }
    assert found == expected


def test_model_error_names_source_and_pointers() -> None:
    with pytest.raises(ModelError) as info:
        parse_model(model_with(prop_doc("x", {"type": "nope"})), "models/x.json")
    text = str(info.value)
    assert text.startswith("models/x.json: 1 issue")
    assert "models/x.json#/properties/0/dataType/type: unknown type 'nope'" in text
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ([], [("", "a thing model must be a JSON object")]),
        ({"properties": []}, [("", "missing required key 'profile'")]),
        ({"profile": "x"}, [("/profile", "profile must be an object")]),
        (
            {"profile": {"productKey": "has space"}, "properties": {}, "events": None},
            [
                (
                    "/profile/productKey",
                    "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
                ),
                ("/properties", "must be an array"),
                ("/events", "must be an array"),
            ],
        ),
        (
            model_with("not an object", prop_doc("x", {"type": ["int"]}), prop_doc("y", [])),
            [
                ("/properties/0", "must be an object"),
                (
                    "/properties/1/dataType/type",
                    "unknown type ['int']; expected one of int, float, double, bool, enum, text, date, struct, array",
                ),
                ("/properties/2/dataType", "dataType must be an object with 'type' and 'specs'"),
            ],
        ),
        (
            model_with(
                prop_doc("s", {"type": "struct", "specs": []}),
                prop_doc("a", {"type": "array", "specs": {}}),
                prop_doc("t", {"type": "text"}),
                prop_doc("f", {"type": "float", "specs": {"min": "1e999", "max": True, "unit": 5}}),
                prop_doc("i", {"type": "int", "specs": {"max": 2**31}}),
                prop_doc("b", {"type": "bool", "specs": {"0": "off", "1": "on", "2": "maybe"}}),
                prop_doc("e", {"type": "enum", "specs": {}}),
            ),
            [
                ("/properties/0/dataType/specs", "struct specs need at least one field"),
                ("/properties/1/dataType/specs", "missing required key 'size'"),
                ("/properties/1/dataType/specs", "missing required key 'item'"),
                ("/properties/2/dataType/specs", "text specs must be an object with 'length'"),
                ("/properties/3/dataType/specs/min", "min must be finite"),
                ("/properties/3/dataType/specs/max", "max must be a number or a numeric string"),
                ("/properties/3/dataType/specs/unit", "unit must be a string"),
                ("/properties/4/dataType/specs/max", "max 2147483648 is outside the int32 range"),
                ("/properties/5/dataType/specs/2", "bool specs keys must be '0' and '1', not '2'"),
                ("/properties/6/dataType/specs", "enum specs need at least one value"),
            ],
        ),
    ],
)
def test_structural_errors(doc: Any, expected: list[tuple[str, str]]) -> None:
    assert [(i.pointer, i.message) for i in issues_of(doc)] == expected


def test_nesting_is_bounded() -> None:
    data_type: dict[str, Any] = {"type": "int"}
    for _ in range(12):
        data_type = {"type": "array", "specs": {"size": 1, "item": data_type}}
    issues = issues_of(model_with(prop_doc("deep", data_type)))
    # TSL allows no array of arrays: the first nested level is the one error, nothing deeper
    assert [i.message for i in issues] == [
        "array items must be int, float, double, text or struct, not 'array'"
    ]
    assert issues[0].pointer == "/properties/0/dataType/specs/item/type"


def test_invalid_json_text() -> None:
    with pytest.raises(ModelError) as info:
        load_model_json('{"profile": {\n  "productKey": }', "x.json")
    assert info.value.issues == [
        Issue("", "invalid JSON at line 2 column 17: Expecting value"),
    ]
    with pytest.raises(ModelError, match="NaN is not valid JSON"):
        load_model_json('{"profile": {"productKey": "p"}, "x": NaN}', "x.json")


# -- Alibaba compatibility ----------------------------------------------------------------------

ALIBABA_TSL = """
{
  "schema": "https://iotx-tsl.oss-ap-southeast-1.aliyuncs.com/schema.json",
  "profile": {"version": "1.0", "productKey": "a1B2c3D4e5F"},
  "properties": [
    {"identifier": "Temperature", "name": "温度", "accessMode": "rw", "required": false,
     "dataType": {"type": "double", "specs": {"min": "-40", "max": "120", "unit": "°C",
                  "unitName": "摄氏度", "step": "0.1"}}}
  ],
  "events": [
    {"identifier": "post", "name": "post", "type": "info", "required": true, "desc": "属性上报",
     "method": "thing.event.property.post",
     "outputData": [{"identifier": "Temperature", "name": "温度",
                     "dataType": {"type": "double", "specs": {"min": "-40", "max": "120"}}}]},
    {"identifier": "Overheat", "name": "过热", "type": "alert", "required": false,
     "method": "thing.event.Overheat.post", "outputData": []}
  ],
  "services": [
    {"identifier": "set", "name": "set", "required": true, "callType": "async",
     "desc": "属性设置", "method": "thing.service.property.set",
     "inputData": [{"identifier": "Temperature", "name": "温度",
                    "dataType": {"type": "double", "specs": {"min": "-40", "max": "120"}}}],
     "outputData": []},
    {"identifier": "get", "name": "get", "required": true, "callType": "async",
     "desc": "属性获取", "method": "thing.service.property.get",
     "inputData": ["Temperature"], "outputData": []},
    {"identifier": "Reset", "name": "重置", "required": false, "callType": "async",
     "method": "thing.service.Reset", "inputData": [], "outputData": []}
  ]
}
"""


def test_alibaba_export_loads_and_default_entries_are_ignored() -> None:
    model = load_model_json(ALIBABA_TSL, "aliyun.json")
    assert model.profile.product_key == "a1B2c3D4e5F" and model.profile.version == "1.0"
    assert list(model.events) == ["Overheat"]
    assert list(model.services) == ["Reset"]
    assert model.services["Reset"].call_type is CallType.ASYNC
    temperature = model.properties["Temperature"]
    assert temperature.access_mode is AccessMode.RW
    assert (temperature.data_type.min, temperature.data_type.unit_name) == (-40.0, "摄氏度")


def test_numeric_specs_as_strings_or_numbers_are_equivalent() -> None:
    as_strings = json.loads(ALIBABA_TSL)
    as_numbers = copy.deepcopy(as_strings)
    as_numbers["properties"][0]["dataType"]["specs"].update({"min": -40, "max": 120.0, "step": 0.1})
    assert load_model_json(json.dumps(as_numbers)) == load_model_json(ALIBABA_TSL)


def test_profile_identifier_stands_in_for_product_key() -> None:
    model = parse_model({"profile": {"identifier": "x.y"}})
    assert model == ThingModel(model.profile, {}, {}, {})
    assert model.product_key == "x.y" and model.profile.version is None


# -- command checks -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pump_station() -> ThingModel:
    return load_library_model("pump_station")


def test_service_input_valid(pump_station: ThingModel) -> None:
    assert pump_station.check_service_input("start_pump", {"pump": 2}) == []
    assert pump_station.check_service_input("set_frequency", {"pump": 1, "hz": 25}) == []
    assert pump_station.check_service_input("set_frequency", {"pump": 1, "hz": 50.0}) == []


@pytest.mark.parametrize(
    ("service", "inputs", "problems"),
    [
        ("open_valve", {"valve": 1}, ["unknown service 'open_valve'"]),
        ("start_pump", {}, ["missing input 'pump'"]),
        ("stop_pump", {"pump": 1, "force": True}, ["unknown input 'force'"]),
        ("start_pump", {"pump": 3}, ["input 'pump': 3 is not one of 1 (pump 1), 2 (pump 2)"]),
        (
            "set_frequency",
            {"pump": "1", "hz": 60, "ramp": 5},
            [
                "input 'pump': '1' is not an enum value (an integer)",
                "input 'hz': 60 is above max 50",
                "unknown input 'ramp'",
            ],
        ),
        ("set_frequency", {"pump": 2}, ["missing input 'hz'"]),
        ("set_frequency", {"pump": 2, "hz": NAN}, ["input 'hz': nan is not a finite number"]),
    ],
)
def test_service_input_problems(
    pump_station: ThingModel, service: str, inputs: dict[str, Any], problems: list[str]
) -> None:
    assert pump_station.check_service_input(service, inputs) == problems


def test_property_set(pump_station: ThingModel) -> None:
    assert pump_station.check_property_set({"pump1_frequency_setpoint": 42.5}) == []
    assert pump_station.check_property_set(
        {
            "pump2_frequency_setpoint": 24.9,
            "level": 1.0,
            "pump1_running": True,
            "valve_open": True,
            "pump1_frequency_setpoint": True,
        }
    ) == [
        "property 'pump2_frequency_setpoint': 24.9 is below min 25",
        "property 'level' is read-only",
        "property 'pump1_running' is read-only",
        "unknown property 'valve_open'",
        "property 'pump1_frequency_setpoint': true is not a number",
    ]
