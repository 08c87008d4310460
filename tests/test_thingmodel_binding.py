"""``citytwin model check-binding``: device bindings against their thing models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from citytwin.gateway.cli.bindingcheck import BINDING_RULES, check_binding_text
from citytwin.gateway.cli.main import main

EXAMPLE = Path(__file__).parent.parent / "deploy" / "examples" / "pump-station.yaml"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_example_config_binds_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "model", "check-binding", str(EXAMPLE)) == (0, f"{EXAMPLE}: OK\n")


def _broken(tmp_path: Path, *edits: tuple[str, str]) -> Path:
    text = EXAMPLE.read_text()
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "station.yaml"
    path.write_text(text)
    return path


EDITS = {
    "range": (
        "outlet_pressure:  {table: input_register, address: 6, type: uint16, scale: 0.1, deadband: 0.5}",
        "outlet_pressure:  {table: input_register, address: 6, type: int16, scale: 0.01}",
    ),
    "writable": (
        "pump1_frequency_setpoint: {table: holding_register, address: 0, type: float32}",
        "pump1_frequency_setpoint: {table: input_register, address: 20, type: float32}",
    ),
    "readonly_write": (
        'writes: [{point: "pump{pump}_run_cmd", value: false}]',
        'writes: [{point: "pump{pump}_run_cmd", value: false}, {point: pump1_running, value: false}]',
    ),
    "unknown": ("      - event: high_level\n", "      - event: overflow\n"),
    "int_on_float": (
        "pump1_current:    {table: input_register, address: 10, type: uint16, scale: 0.1, deadband: 0.2}",
        "pump1_current:    {table: coil, address: 9}",
    ),
}


def test_each_binding_rule(tmp_path: Path) -> None:
    path = _broken(tmp_path, *EDITS.values())
    findings = check_binding_text(path.read_text(), str(path), path.parent)
    found = [(f.rule, f.pointer) for f in findings]
    assert ("binding-range", "/devices/0/points/outlet_pressure/type") in found
    assert ("binding-writable", "/devices/0/points/pump1_frequency_setpoint/table") in found
    assert ("binding-writable", "/devices/0/services/set_frequency/writes/0/point") in found
    assert ("binding-readonly-write", "/devices/0/services/stop_pump/writes/1/point") in found
    assert ("binding-unknown", "/devices/0/events/0/event") in found
    assert ("binding-type", "/devices/0/points/pump1_current/table") in found
    assert {rule for rule, _ in found} <= set(BINDING_RULES)
    text = path.read_text().splitlines()
    for finding in findings:  # each finding points at the offending text
        assert finding.pointer.rsplit("/", 1)[-1] in text[finding.line - 1][finding.column - 1:] or finding.pointer.endswith(("/point", "/event"))
    range_finding = next(f for f in findings if f.rule == "binding-range")
    assert range_finding.message == (
        "property 'outlet_pressure': range 0..1000 does not fit int16 with scale 0.01 and offset 0 (-327.68..327.67)"
    )
    assert str(range_finding).startswith(f"{path}:{range_finding.line}:{range_finding.column} /devices/0/points/outlet_pressure/type: ")


def test_service_input_range_into_a_register(tmp_path: Path) -> None:
    path = _broken(tmp_path, (
        "pump2_frequency_setpoint: {table: holding_register, address: 2, type: float32}",
        "pump2_frequency_setpoint: {table: holding_register, address: 2, type: int16, scale: 0.001}",
    ))
    found = [(f.rule, f.pointer) for f in check_binding_text(path.read_text(), str(path), path.parent)]
    assert ("binding-range", "/devices/0/points/pump2_frequency_setpoint/type") in found
    assert ("binding-range", "/devices/0/services/set_frequency/writes/0/value") in found


def test_config_errors_and_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _broken(tmp_path, ("      port: 5020\n", "      port: 99999\n"))
    code, out = run(capsys, "model", "check-binding", "--format", "json", str(path))
    doc = json.loads(out)
    assert code == 1 and doc["valid"] is False
    assert [(f["rule"], f["pointer"]) for f in doc["findings"]] == [("config", "/devices/0/connection/port")]
    line = path.read_text().splitlines().index("      port: 99999") + 1
    assert (doc["findings"][0]["line"], doc["findings"][0]["column"]) == (line, 7)
    assert run(capsys, "model", "check-binding", str(tmp_path / "missing.yaml"))[0] == 2
    path.write_text("gateway: {id: x\n")
    code, out = run(capsys, "model", "check-binding", str(path))
    assert code == 1 and "[config]" in out


def test_what_the_gateway_refuses_is_classified_by_rule(tmp_path: Path) -> None:
    path = _broken(
        tmp_path,
        ("pump1_run_cmd:     {table: coil, address: 0}", "pump1_run_cmd:     {table: discrete_input, address: 0}"),
        ('writes: [{point: "pump{pump}_run_cmd", value: false}]', "call: {method: stop}"),
    )
    found = [(f.rule, f.pointer) for f in check_binding_text(path.read_text(), str(path), path.parent)]
    assert ("binding-writable", "/devices/0/outputs/pump1_run_cmd") in found
    assert ("binding-call", "/devices/0/services/stop_pump/call") in found
