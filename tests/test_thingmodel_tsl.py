"""Alibaba TSL in and out: lossless round trips on a corpus of TSL documents and the library."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from citytwin.thingmodels.library import library_document, library_names, load_library_model
from citytwin.thingmodels.loader import parse_model
from citytwin.thingmodels.tsl import from_tsl, is_module_document, to_document, to_tsl
from citytwin.thingmodels.types import Kind

TSL = Path(__file__).parent / "thingmodel_corpus" / "tsl"
PRODUCTS = {
    "lamp_full": ["lamp_full.json"],
    "numbers_and_vendor_keys": ["numbers_and_vendor_keys.json"],
    "minimal": ["minimal.json"],
    "gateway": ["gateway_main.json", "gateway_ups.json", "gateway_meter_1.json"],
}


def _docs(files: list[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    docs = [json.loads((TSL / f).read_text(encoding="utf-8")) for f in files]
    return next(d for d in docs if not is_module_document(d)), [d for d in docs if is_module_document(d)]


def test_corpus_is_complete() -> None:
    assert sorted(p.name for p in TSL.iterdir()) == sorted(f for files in PRODUCTS.values() for f in files)


@pytest.mark.parametrize("product", sorted(PRODUCTS))
def test_tsl_to_ours_to_tsl_is_lossless(product: str) -> None:
    main, modules = _docs(PRODUCTS[product])
    ours = to_document(parse_model(from_tsl(main, modules)))
    text = json.dumps(ours, ensure_ascii=False)  # ours goes through text, as a file would
    export = to_tsl(parse_model(json.loads(text)))
    assert export.main == main  # dict equality: the same JSON up to key order
    assert export.modules == {m["functionBlockId"]: m for m in modules}
    assert export.losses == []


def test_corpus_covers_every_type_and_spec() -> None:
    main, _ = _docs(PRODUCTS["lamp_full"])
    model = parse_model(main)
    kinds = {p.data_type.type for p in model.properties.values()}
    assert kinds == set(Kind)
    items = {p.data_type.item.type for p in model.properties.values() if p.data_type.item is not None}
    assert items == {Kind.INT, Kind.FLOAT, Kind.DOUBLE, Kind.TEXT, Kind.STRUCT}
    fields = {f.data_type.type for f in model.properties["HSVColor"].data_type.fields}
    assert fields == set(Kind) - {Kind.STRUCT, Kind.ARRAY}
    assert {e.type.value for e in model.events.values()} == {"info", "alert", "error"}
    assert {s.call_type.value for s in model.services.values()} == {"sync", "async"}
    assert [entry[:2] for entry in model.written.system] == [("events", 0), ("services", 0), ("services", 1)]
    energy = model.properties["Energy"].data_type
    assert (energy.min, energy.max, energy.step, energy.unit, energy.unit_name) == (0.0, 99999999.999, 0.001, "kW·h", "千瓦·时")
    assert model.properties["WorkMode"].data_type.names[-1] == "未知"


def test_numbers_and_vendor_keys_survive() -> None:
    main, _ = _docs(PRODUCTS["numbers_and_vendor_keys"])
    model = parse_model(main)
    depth = model.properties["Depth"]
    assert depth.written.extra == {"extendConfig": main["properties"][0]["extendConfig"]}
    assert depth.data_type.written.literals["precision"] == "2"
    assert model.properties["Ratio"].data_type.min == -1000.0
    exported = to_tsl(model).main
    assert exported["properties"][0]["dataType"]["specs"]["min"] == 0  # a number stays a number
    assert exported["properties"][2]["dataType"]["specs"]["min"] == "-1e3"  # and a string a string
    assert "required" not in exported["properties"][0]


def test_module_documents_become_modules() -> None:
    main, modules = _docs(PRODUCTS["gateway"])
    model = parse_model(from_tsl(main, modules))
    assert list(model.modules) == ["ups", "meter_1"]
    assert model.modules["meter_1"].name == "Meter 1"
    assert list(model.properties) == ["Uptime", "ups:OnBattery", "ups:Charge", "meter_1:Uptime", "meter_1:Energy"]
    assert list(model.services) == ["ups:SelfTest"]


def test_edited_model_is_written_the_alibaba_way() -> None:
    main, _ = _docs(PRODUCTS["lamp_full"])
    model = parse_model(main)
    brightness = model.properties["Brightness"]
    from dataclasses import replace

    edited = replace(brightness.data_type, max=80)  # the source literal "100" no longer says 80
    specs = to_tsl(replace(model, properties={**model.properties, "Brightness": replace(brightness, data_type=edited)})).main
    assert specs["properties"][1]["dataType"]["specs"]["max"] == "80"


@pytest.mark.parametrize("name", library_names())
def test_library_round_trips(name: str) -> None:
    model = load_library_model(name)
    assert to_document(model) == library_document(name)
    export = to_tsl(model)
    again = to_tsl(parse_model(from_tsl(export.main, list(export.modules.values()))))
    assert (again.main, again.modules) == (export.main, export.modules)
    assert "x-citytwin" not in json.dumps(export.main)
    has_ext = bool(model.ext) or any(p.ext for p in model.properties.values())
    assert bool(export.losses) == has_ext  # every dropped extension block is reported


def test_losses_name_the_extension_blocks() -> None:
    export = to_tsl(load_library_model("pump"))
    pointers = [loss.pointer for loss in export.losses]
    assert pointers[-1] == "/x-citytwin"  # the model-level block, after the features
    assert "/properties/3/x-citytwin" in pointers
    assert "/events/0/outputData/1/x-citytwin" in pointers
    assert all("has no TSL equivalent" in loss.what for loss in export.losses)
