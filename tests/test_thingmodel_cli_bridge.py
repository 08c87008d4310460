"""``citytwin model`` with every format: detection by content named in messages, an unknown
format refused as such, library names for convert, loss summaries, the TD's assumed broker,
one exit rule for warnings (issue 14, item 7), and SDF references across files."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from citytwin.gateway.cli.main import main

ROOT = Path(__file__).resolve().parent.parent
INVALID_SDF = Path(__file__).parent / "thingmodel_corpus" / "invalid-sdf"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_convert_takes_a_library_name_like_show(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "model", "convert", "pump_station", "--to", "wot-td")
    assert code == 0, err
    td = json.loads(out)
    assert td["citytwin:productKey"] == "citytwin.water.pump_station"
    # the TD says which broker it assumed, in the document and on stderr
    assert td["citytwin:assumedBroker"] == "mqtt://127.0.0.1:1883"
    assert "no --broker given; the TD assumes mqtt://127.0.0.1:1883" in err
    schema = json.loads((ROOT / "thingmodels" / "schemas" / "td-schema.json").read_text(encoding="utf-8"))
    assert list(jsonschema.Draft7Validator(schema).iter_errors(td)) == []  # still a valid TD
    code, out, err = run(capsys, "model", "convert", "pump_station", "--to", "wot-td", "--broker", "mqtts://hub.example:8883")
    assert code == 0 and "citytwin:assumedBroker" not in json.loads(out) and "assumes" not in err
    assert json.loads(out)["forms"][0]["href"] == "mqtts://hub.example:8883"


def test_losses_are_summarised_by_kind_unless_verbose(capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = run(capsys, "model", "convert", "pump_station_modular", "--to", "tsl")
    lines = [line for line in err.splitlines() if line.startswith("loss")]
    assert code == 0 and lines and all(line.startswith("loss ×") for line in lines)
    assert len(lines) < 10 and "(--verbose lists each)" in err
    total = sum(int(line.split("×")[1].split(":")[0]) for line in lines)
    assert f"{total} thing(s) the tsl format cannot express, converting from citytwin" in err
    code, _out, err = run(capsys, "model", "convert", "pump_station_modular", "--to", "tsl", "--verbose")
    assert len([line for line in err.splitlines() if line.startswith("loss: /")]) == total


def test_json_losses_are_machine_readable(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _err = run(capsys, "model", "convert", "pump", "--to", "sdf", "--format", "json")
    doc = json.loads(out)
    assert code == 0 and (doc["from"], doc["to"]) == ("citytwin", "sdf")
    assert {"pointer": "/services/0/callType", "what": "SDF has no service call type (sync)"} in doc["losses"]
    assert sum(k["count"] for k in doc["loss_kinds"]) == len(doc["losses"])
    assert (doc["lost_reading"], doc["lost_writing"]) == (0, len(doc["losses"]))
    assert "sdfObject" in doc["documents"]["main"]


@pytest.mark.parametrize("target", ["sdf", "iotda", "onenet"])
def test_every_format_converts_out_and_back(target: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / f"street_light.{target}.json"
    code, _o, err = run(capsys, "model", "convert", "street_light", "--to", target, "-o", str(out))
    assert code == 0, err
    code, text, err = run(capsys, "model", "validate", str(out))
    assert (code, text) == (0, f"{out}: OK ({target})\n"), err
    code, text, _err = run(capsys, "model", "convert", str(out), "--to", "citytwin", "--format", "json")
    assert code == 0 and json.loads(text)["from"] == target
    assert json.loads(text)["documents"]["main"]["profile"]["productKey"] == "citytwin.lighting.street_light"


def test_unknown_format_is_refused_as_such(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    odd = tmp_path / "odd.json"
    odd.write_text('{"hello": "world"}')
    code, out, _err = run(capsys, "model", "validate", str(odd))
    assert code == 1 and "unknown format" in out and "profile" not in out and "[format-unknown]" in out
    code, _out, err = run(capsys, "model", "convert", str(odd), "--to", "tsl")
    assert code == 1 and "unknown format" in err


def test_sdf_is_checked_by_the_sdf_rules_not_as_tsl(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _err = run(capsys, "model", "validate", str(INVALID_SDF / "sdf-type.sdf.json"))
    assert code == 1 and "[sdf-type]" in out and "profile" not in out


def test_legacy_odm_is_refused_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = run(capsys, "model", "convert", str(INVALID_SDF / "sdf-legacy.sdf.json"), "--to", "tsl")
    assert code == 1 and "pre-RFC OneDM keywords odmObject" in err and "[sdf-legacy]" in err


def test_sdfref_across_files_on_the_command_line_and_search_path(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    types = {"namespace": {"t": "https://example.com/types"}, "defaultNamespace": "t",
             "sdfData": {"Level": {"type": "number", "minimum": 0, "maximum": 5, "unit": "m"}}}
    (lib / "types.sdf.json").write_text(json.dumps(types))
    product = {"namespace": {"t": "https://example.com/types", "me": "https://example.com/me"}, "defaultNamespace": "me",
               "sdfObject": {"tank": {"sdfProperty": {"level": {"sdfRef": "t:#/sdfData/Level"}}}}}
    (tmp_path / "tank.sdf.json").write_text(json.dumps(product))
    code, _out, err = run(capsys, "model", "convert", str(tmp_path / "tank.sdf.json"), "--to", "citytwin")
    assert code == 0 and "remote references are not fetched" in err  # refused, said, the rest converts
    for extra in ([str(lib / "types.sdf.json")], ["--search-path", str(lib)]):
        code, out, err = run(capsys, "model", "convert", str(tmp_path / "tank.sdf.json"), *extra, "--to", "citytwin")
        assert code == 0, err
        level = json.loads(out)["properties"][0]
        assert level["dataType"]["specs"]["max"] == "5" and level["x-citytwin"]["ucum"] == "m"
    code, _out, _err = run(capsys, "model", "validate", "--strict", str(tmp_path / "tank.sdf.json"), "--search-path", str(lib))
    assert code == 0


def test_one_exit_rule_for_warnings(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    doc = json.loads((ROOT / "thingmodels/standard/flow_meter.json").read_text())
    del doc["properties"][0]["desc"]
    warned = tmp_path / "warned.json"
    warned.write_text(json.dumps(doc))
    for argv in (["lint"], ["validate", "--lint"]):
        assert run(capsys, "model", *argv, str(warned))[0] == 0
        assert run(capsys, "model", *argv, "--strict", str(warned))[0] == 1
    assert run(capsys, "model", "validate", "--strict", str(warned))[0] == 1  # --strict implies --lint


def test_detect_format_by_content() -> None:
    from citytwin.thingmodels.formats import Format, detect_format
    from citytwin.thingmodels.library import library_document, library_names

    tsl = Path(__file__).parent / "thingmodel_corpus" / "tsl"
    assert {detect_format(json.loads(p.read_text(encoding="utf-8"))) for p in tsl.glob("*.json")} == {Format.TSL}
    assert {detect_format(library_document(n)) for n in library_names()} <= {Format.CITYTWIN, Format.TSL}
    assert detect_format(library_document("pump_station_modular")) is Format.CITYTWIN
    assert detect_format({"@context": ["https://www.w3.org/2022/wot/td/v1.1"], "@type": "tm:ThingModel"}) is Format.WOT_TM
    assert detect_format({"@context": "https://www.w3.org/2022/wot/td/v1.1", "title": "x"}) is Format.WOT_TD
    assert detect_format({"sdfObject": {}}) is Format.SDF and detect_format({"odmObject": {}}) is Format.SDF
    assert detect_format({"service_capabilities": []}) is Format.IOTDA
    assert detect_format({"data": {"properties": [{"identifier": "a", "functionType": "u"}]}}) is Format.ONENET
    assert detect_format({"properties": [{"identifier": "a", "dataType": {"type": "int"}}]}) is Format.TSL
    assert detect_format({}) is None and detect_format([1]) is None and detect_format({"hello": 1}) is None
