"""Every property, input and service a config names is checked against the device's model at
``config check``, with file:line and path, all at once (before: ``require: levl >= 0.5``
passed ``config check`` and then refused every start at run time)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CONFIG = """\
gateway: {id: names-gw, data_dir: ./data}
devices:
  - id: ps
    model: pump_station
    driver: modbus-tcp
    connection: {host: 127.0.0.1, port: 5020}
    points:
      level:       {table: input_register, address: 0, type: float32}
      pump1_fault: {table: discrete_input, address: 1}
      pump2_fault: {table: discrete_input, address: 3}
      pump1_frequency_setpoint: {table: holding_register, address: 0, type: float32}
      pump2_frequency_setpoint: {table: holding_register, address: 2, type: float32}
    outputs:
      pump1_run_cmd: {table: coil, address: 0}
      pump2_run_cmd: {table: coil, address: 1}
    events:
      - event: high_level
        when: levl >= 4.5
        clear: level < 4.2
        output: {level: $lvel}
    interlocks:
      - services: [start_pump]
        require: levl >= 0.5
      - services: [start_pump]
        require: pump{pmp}_fault == false
      - services: [start_pmp]
        max_per_hour: 12
      - services: [start_pump]
        max_per_hour: 12
        per_input: pmp
      - services: [set_frequency]
        max_change: {input: herz, property: "pump{pump}_frequency_setpont", limit: 20}
    services:
      start_pump:
        writes: [{point: "pump{pmp}_run_cmd", value: true}]
      set_frequency:
        writes: [{point: "pump{pump}_frequency_setpoint", value: $herz}]
"""

EXPECTED = [
    "x.yaml:18: devices[0].events[0].when: 'levl' is not a bound property; did you mean 'level'?",
    "x.yaml:20: devices[0].events[0].output.level: 'lvel' is not a bound property; did you mean 'level'?",
    "x.yaml:23: devices[0].interlocks[0].require: 'levl' is not a bound property; did you mean 'level'?",
    "x.yaml:25: devices[0].interlocks[1].require: service 'start_pump' has no input 'pmp'; did you mean 'pump'?",
    "x.yaml:26: devices[0].interlocks[2].services[0]: model citytwin.water.pump_station has no service "
    "'start_pmp'; did you mean 'start_pump'?",
    "x.yaml:30: devices[0].interlocks[3].per_input: service 'start_pump' has no input 'pmp'; did you mean 'pump'?",
    "x.yaml:32: devices[0].interlocks[4].max_change.input: service 'set_frequency' has no input 'herz'; "
    "did you mean 'hz'?",
    "x.yaml:32: devices[0].interlocks[4].max_change.property: 'pump1_frequency_setpont' is not a bound "
    "property; did you mean 'pump1_frequency_setpoint'?",
    "x.yaml:35: devices[0].services.start_pump.writes[0].point: service 'start_pump' has no input 'pmp'; "
    "did you mean 'pump'?",
    "x.yaml:37: devices[0].services.set_frequency.writes[0].value: service 'set_frequency' has no input "
    "'herz'; did you mean 'hz'?",
]


def test_config_check_names_every_misspelled_name_at_once(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(CONFIG)
    result = subprocess.run([sys.executable, "-m", "citytwin.gateway.cli", "config", "check", str(path)],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line.replace(str(path), "x.yaml") for line in result.stderr.splitlines()]
    for expected in EXPECTED:
        assert expected in lines, "\n".join(lines)
    assert "Traceback" not in result.stderr
