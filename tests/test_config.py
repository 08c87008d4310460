"""Config validation: every example loads; every error names file, line and field path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from citytwin.gateway.bootstrap import prepare, prepare_file
from citytwin.gateway.config import ConfigError

ROOT = Path(__file__).resolve().parent.parent
# every gateway config under deploy/ (compose files are YAML too, but not gateway configs)
EXAMPLES = sorted(p for p in (ROOT / "deploy").rglob("*.yaml") if p.name != "compose.yaml")


def test_there_are_example_configs() -> None:
    assert any(p.name == "pump-station.yaml" for p in EXAMPLES)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_example_config_loads(path: Path) -> None:
    _, specs = prepare_file(path)
    assert specs and all(spec.points for spec in specs.values())
    for spec in specs.values():
        # every property of the model is bound in the examples
        assert set(spec.points) == set(spec.model.properties)
        assert set(spec.services) == set(spec.model.services)


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        prepare(text, "gw.yaml", ROOT / "deploy" / "examples")
    return [str(i) for i in info.value.issues]


def example_text() -> str:
    return (ROOT / "deploy" / "examples" / "pump-station.yaml").read_text()


def line_of(text: str, needle: str) -> int:
    """The first line containing ``needle`` that is not a comment."""
    return next(
        i for i, line in enumerate(text.splitlines(), 1)
        if needle in line and not line.lstrip().startswith("#")
    )


def test_address_out_of_range_names_line_and_path() -> None:
    text = example_text().replace("address: 6, type: uint16", "address: 65536, type: uint16")
    line = line_of(text, "address: 65536")
    assert errors_of(text) == [f"gw.yaml:{line}: devices[0].points.outlet_pressure.address: must be 0..65535"]


def test_every_error_is_reported_at_once() -> None:
    text = (
        example_text()
        .replace("unit: 1", "unit: 300")
        .replace("poll_period: 1.0", "poll_period: -1")
        .replace("table: discrete_input, address: 4", "table: discrete_inpt, address: 4")
    )
    errors = errors_of(text)
    assert len(errors) == 3, errors
    assert any(".connection.unit: must be 0..255" in e for e in errors)
    assert any(".poll_period:" in e for e in errors)
    assert any("points.high_level_float.table" in e for e in errors)


def test_unknown_field_and_missing_field() -> None:
    text = example_text().replace("    poll_period: 1.0", "    poll_perod: 1.0")
    errors = errors_of(text)
    assert errors == [f"gw.yaml:{line_of(text, 'poll_perod')}: devices[0].poll_perod: unknown field"]
    text = example_text().replace("  id: ps-north-01\n", "")
    errors = errors_of(text)
    assert errors == [f"gw.yaml:{line_of(text, 'gateway:')}: gateway.id: required field is missing"]


def test_binding_to_a_property_the_model_lacks() -> None:
    text = example_text().replace("      inflow:  ", "      inflwo:  ")
    assert errors_of(text) == [
        f"gw.yaml:{line_of(text, 'inflwo')}: devices[0].points.inflwo: model citytwin.water.pump_station has no property 'inflwo'"
    ]


def test_service_writing_a_read_only_table_and_unknown_event() -> None:
    text = (example_text()
            .replace('value: $hz}', 'value: $hz}, {point: "level", value: 1}')
            .replace("event: high_level", "event: hihg_level"))
    errors = errors_of(text)
    assert any("services.set_frequency.writes[1].point: 'level' is bound to a read-only point (table='input_register'" in e for e in errors), errors
    assert any("events[0].event: model citytwin.water.pump_station has no event 'hihg_level'" in e for e in errors), errors


def test_event_condition_syntax() -> None:
    text = example_text().replace("when: level >= 4.5", "when: level is high")
    (error,) = errors_of(text)
    assert f"gw.yaml:{line_of(text, 'level is high')}: devices[0].events[0].when: must look like" in error


def test_broken_yaml_reports_its_line() -> None:
    text = example_text().replace("  prefix: citytwin/v1", "  prefix: [citytwin/v1")
    (error,) = errors_of(text)
    assert error.startswith("gw.yaml:") and "invalid YAML" in error


def test_duplicate_device_ids() -> None:
    doc = yaml.safe_load(example_text())
    doc["devices"].append(doc["devices"][0])
    (error,) = errors_of(yaml.safe_dump(doc))
    assert "device id 'pump-station-1' is used twice" in error


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "citytwin.gateway.cli", *args], capture_output=True, text=True, timeout=60)


def test_config_check_command(tmp_path: Path) -> None:
    ok = run_cli("config", "check", str(ROOT / "deploy" / "examples" / "pump-station.yaml"))
    assert ok.returncode == 0 and "OK" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(example_text().replace("address: 6, type: uint16", "address: 99999, type: uint16"))
    result = run_cli("config", "check", str(bad))
    assert result.returncode == 2
    assert f"{bad}:{line_of(bad.read_text(), '99999')}: devices[0].points.outlet_pressure.address: must be 0..65535" in result.stderr
    assert "Traceback" not in result.stderr
    missing = run_cli("config", "check", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and f"no such file: {tmp_path / 'nope.yaml'}" in missing.stderr


def test_config_schema_command() -> None:
    result = run_cli("config", "schema")
    assert result.returncode == 0 and '"devices"' in result.stdout


def test_modular_models_bind_and_trigger_by_module_address() -> None:
    text = """
gateway: {id: gw}
devices:
  - id: ps
    model: pump_station_modular
    driver: modbus-tcp
    connection: {host: 127.0.0.1, port: 5020}
    points:
      level: {table: input_register, address: 0, type: float32}
      "pump_1:fault": {table: discrete_input, address: 1}
      "pump_1:running": {table: discrete_input, address: 0}
    outputs:
      run_1: {table: coil, address: 0}
    events:
      - event: "pump_1:trip"
        when: "pump_1:fault == true"
    services:
      "pump_1:start": {writes: [{point: run_1, value: true}]}
"""
    _, specs = prepare(text, "gw.yaml", ROOT)
    spec = specs["ps"]
    assert spec.events[0].when.prop == "pump_1:fault"
    assert "pump_1:start" in spec.services
    bad = text.replace('when: "pump_1:fault == true"', 'when: "pump_9:fault == true"')
    (error,) = errors_of(bad)
    assert "devices[0].events[0].when: 'pump_9:fault' is not a bound property" in error


def test_only_the_drivers_a_config_uses_are_loaded() -> None:
    """Loading the config module and a Modbus-only config imports the Modbus bindings and no
    other driver's (every driver's cost ~0.15 s of CPU at start-up and ~10 MB); the JSON Schema
    still describes every driver."""
    probe = """
import sys
from citytwin.gateway.config import GatewayConfig, parse_config
bindings = lambda: sorted(m.split(".")[2] for m in sys.modules if m.startswith("citytwin.drivers.") and m.endswith(".binding"))
print(bindings())
parse_config('''gateway: {id: g, data_dir: /tmp/x}
devices:
  - {id: a, driver: modbus-tcp, model: pump_station, connection: {host: h}, points: {level: {table: input_register, address: 0}}}
''', "x.yaml")
print(bindings())
print(sorted(GatewayConfig.model_json_schema()["$defs"]))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    at_import, after_parse, defs = out.stdout.splitlines()
    assert at_import == "[]"
    assert after_parse == "['modbus']"
    for model in ("ModbusTcpDeviceConfig", "OpcuaDeviceConfig", "Sl651DeviceConfig", "BacnetDeviceConfig"):
        assert model in defs
