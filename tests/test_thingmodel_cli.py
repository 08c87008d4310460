"""``citytwin model ...``: exit codes, text and JSON output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from citytwin.gateway.cli.main import main
from citytwin.thingmodels.library import library_names

CORPUS = Path(__file__).parent / "thingmodel_corpus" / "invalid"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_validate_valid_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "pump.json"
    path.write_text((Path(__file__).parent.parent / "thingmodels/standard/pump.json").read_text())
    code, out, err = run(capsys, "model", "validate", str(path))
    assert (code, out) == (0, f"{path}: OK (citytwin)\n")
    assert "1 file(s) checked: 0 error(s), 0 warning(s)" in err


def test_validate_invalid_file_text(capsys: pytest.CaptureFixture[str]) -> None:
    path = CORPUS / "range-order.json"
    code, out, _err = run(capsys, "model", "validate", str(path))
    assert code == 1
    assert out == f"{path}:16:11 /properties/0/dataType/specs/min: min 10 is greater than max 5 [range-order]\n"


def test_validate_json_output(capsys: pytest.CaptureFixture[str]) -> None:
    paths = [str(CORPUS / "step-range.json"), str(CORPUS / "duplicate-key.yaml")]
    code, out, _err = run(capsys, "model", "validate", "--format", "json", *paths)
    assert code == 1
    doc = json.loads(out)
    assert doc["valid"] is False and doc["unreadable"] == []
    assert [f["file"] for f in doc["files"]] == paths
    assert doc["files"][0]["findings"] == [
        {
            "file": paths[0],
            "line": 18,
            "column": 11,
            "pointer": "/properties/0/dataType/specs/step",
            "rule": "step-range",
            "severity": "error",
            "message": "step 10 is larger than the range 0..6",
        }
    ]
    assert doc["files"][1]["findings"][0]["rule"] == "duplicate-key"
    assert (doc["files"][0]["errors"], doc["files"][0]["warnings"]) == (1, 0)


def test_unreadable_file_is_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "latin1.json"
    bad.write_bytes(b'{"profile": {"productKey": "caf\xe9"}}')
    code, _out, err = run(capsys, "model", "validate", str(CORPUS / "range-order.json"), str(tmp_path / "missing.json"), str(bad))
    assert code == 2
    assert f"{tmp_path / 'missing.json'}: cannot read" in err
    assert f"{bad}: cannot read: not UTF-8" in err
    code, out, _err = run(capsys, "model", "validate", "--format", "json", str(tmp_path / "missing.json"))
    assert code == 2 and json.loads(out)["unreadable"][0].startswith(str(tmp_path / "missing.json"))


def test_usage_errors_are_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "model", "validate")[0] == 2
    assert run(capsys, "model", "validate", "--format", "xml", "x.json")[0] == 2
    assert run(capsys, "model", "frobnicate")[0] == 2


def test_lint_exit_codes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    clean = Path(__file__).parent.parent / "thingmodels/standard/flow_meter.json"
    assert run(capsys, "model", "lint", str(clean))[0] == 0
    doc = json.loads(clean.read_text())
    del doc["properties"][0]["desc"]
    warned = tmp_path / "warned.json"
    warned.write_text(json.dumps(doc, indent=2))
    code, out, _err = run(capsys, "model", "lint", str(warned))
    assert code == 0  # warnings exit 0 unless --strict, for lint as for validate --lint
    assert run(capsys, "model", "lint", "--strict", str(warned))[0] == 1
    assert out.strip().endswith("warning: property 'flow' has no description (desc) [description-missing]")
    code, out, _err = run(capsys, "model", "validate", str(warned))
    assert (code, out) == (0, f"{warned}: OK (citytwin)\n")  # warnings do not make a model invalid
    code, out, _err = run(capsys, "model", "validate", "--lint", str(warned))
    assert code == 0 and "[description-missing]" in out
    assert run(capsys, "model", "validate", "--lint", "--strict", str(warned))[0] == 1


def test_module_references_resolve_beside_the_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "valve.yaml").write_text(
        "profile: {productKey: my.valve}\nproperties:\n  - identifier: open\n    name: Open\n"
        "    accessMode: r\n    desc: Open.\n    dataType: {type: bool, specs: {0: closed, 1: open}}\n"
    )
    station = {
        "profile": {"productKey": "my.station"},
        "modules": [
            {"identifier": "v1", "name": "Valve 1", "model": "valve.yaml"},
            {"identifier": "p1", "name": "Pump 1", "model": "pump"},
        ],
    }
    (tmp_path / "station.json").write_text(json.dumps(station))
    code, out, _err = run(capsys, "model", "validate", str(tmp_path / "station.json"))
    assert (code, out) == (0, f"{tmp_path / 'station.json'}: OK (citytwin)\n")


def test_list_and_show(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _err = run(capsys, "model", "list", "--format", "json")
    rows = json.loads(out)
    assert code == 0 and [r["name"] for r in rows] == library_names()
    assert len(rows) >= 12
    modular = next(r for r in rows if r["name"] == "pump_station_modular")
    assert modular["modules"] == ["pump_1", "pump_2"]
    code, out, _err = run(capsys, "model", "list")
    assert code == 0 and "signal_controller" in out and "Traffic signal controller" in out
    code, out, _err = run(capsys, "model", "show", "street_light")
    assert code == 0 and json.loads(out)["profile"]["productKey"] == "citytwin.lighting.street_light"
    code, out, _err = run(capsys, "model", "show", "pump_station_modular", "--format", "text")
    assert code == 0 and "property pump_2:frequency_setpoint [rw] float 25.0..50.0 Hz" in out
    code, _out, err = run(capsys, "model", "show", "nope")
    assert code == 2 and "no library model 'nope'" in err


def test_console_script_entry_point(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "citytwin"
    result = subprocess.run(
        [str(script), "model", "validate", "--format", "json", str(CORPUS / "enum-key.json")],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert json.loads(result.stdout)["files"][0]["findings"][0]["rule"] == "enum-key"


# -- convert ----------------------------------------------------------------------------------

TSL = Path(__file__).parent / "thingmodel_corpus" / "tsl"


def test_convert_tsl_modules_out_and_back(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    model = Path(__file__).parent.parent / "thingmodels/standard/pump_station_modular.json"
    out = tmp_path / "station.json"
    code, _out, err = run(capsys, "model", "convert", str(model), "--to", "tsl", "-o", str(out), "--verbose")
    assert code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["station.json", "station.pump_1.json", "station.pump_2.json"]
    assert "loss: /properties/0/x-citytwin: x-citytwin extension (semanticType, ucum) has no TSL equivalent" in err
    main_doc = json.loads(out.read_text())
    assert [b["functionBlockId"] for b in main_doc["functionBlocks"]] == ["pump_1", "pump_2"]
    assert "x-citytwin" not in out.read_text()
    code, text, _err = run(capsys, "model", "convert", str(out), str(tmp_path / "station.pump_1.json"),
                           str(tmp_path / "station.pump_2.json"), "--to", "citytwin", "--format", "json")
    doc = json.loads(text)
    assert code == 0 and doc["losses"] == []
    assert [m["identifier"] for m in doc["documents"]["main"]["modules"]] == ["pump_1", "pump_2"]


def test_convert_td_json_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, text, _err = run(capsys, "model", "convert", str(TSL / "lamp_full.json"), "--to", "wot-td",
                           "--format", "json", "--gateway", "gw9", "--device", "lamp-3", "--nosec")
    doc = json.loads(text)
    td = doc["documents"]["main"]
    assert code == 0 and td["id"] == "urn:citytwin:gw9:lamp-3" and td["security"] == ["nosec_sc"]
    assert td["actions"]["Blink"]["forms"][0]["mqv:topic"] == "citytwin/v1/gw9/lamp-3/services/Blink/invoke"
    assert {"pointer": "/properties/3/dataType/type", "what": "float is 32-bit in TSL; WoT numbers have no precision"} in doc["losses"]


def test_convert_tm_in_with_placeholders(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "base.tm.json").write_text(json.dumps({"properties": {"t": {"type": "number", "unit": "Cel", "readOnly": True}}}))
    tm = {
        "@context": ["https://www.w3.org/2022/wot/td/v1.1"], "@type": "tm:ThingModel", "title": "{{NAME}}",
        "properties": {"temp": {"tm:ref": "base.tm.json#/properties/t", "title": "Temperature"}},
    }
    (tmp_path / "sensor.tm.json").write_text(json.dumps(tm))
    code, _text, err = run(capsys, "model", "convert", str(tmp_path / "sensor.tm.json"), "--to", "citytwin")
    assert code == 1 and "placeholders without a value: NAME" in err
    code, text, _err = run(capsys, "model", "convert", str(tmp_path / "sensor.tm.json"), "--to", "citytwin",
                           "--set", "NAME=Room sensor", "--product-key", "acme.room")
    doc = json.loads(text)
    assert code == 0 and doc["profile"] == {"productKey": "acme.room"}
    assert doc["properties"][0]["dataType"] == {"type": "double", "specs": {"unit": "Cel"}}
    assert doc["properties"][0]["accessMode"] == "r" and doc["x-citytwin"]["title"] == "Room sensor"


def test_convert_invalid_input_is_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = run(capsys, "model", "convert", str(CORPUS / "range-order.json"), "--to", "tsl")
    assert code == 1 and "range-order.json:16:11 /properties/0/dataType/specs/min" in err
    assert run(capsys, "model", "convert", str(CORPUS / "nope.json"), "--to", "tsl")[0] == 2
    assert run(capsys, "model", "convert", str(CORPUS / "range-order.json"), "--to", "xml")[0] == 2
