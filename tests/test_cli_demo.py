"""``citytwin demo --broker`` on a plain mosquitto, read as a newcomer reads it.

The narrative alone on the console (the gateway's log lines in the file the demo names), a twin
line for every device with units and the thing model's precision, the plan switch explained
after ``set_plan``, and the TCP_NODELAY hint exactly when a round trip took over 30 ms. The
broker is mosquitto as installed, without ``set_tcp_nodelay``: the configuration the hint is for.
(tests/test_e2e_pump_station.py runs the demo on its embedded broker.)
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Mosquitto


@pytest.fixture
def plain_mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path)
    broker.conf.write_text(f"listener {broker.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    broker.start()
    yield broker
    broker.stop()


def test_demo_tells_its_story_with_units_and_hints(plain_mosquitto: Mosquitto, tmp_path: Path) -> None:
    log = tmp_path / "demo.log"
    result = subprocess.run(
        [sys.executable, "-m", "citytwin.gateway.cli", "demo", "--duration", "13", "--broker", plain_mosquitto.url,
         "--log-file", str(log)],
        capture_output=True, text=True, timeout=120,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    # logs: in the named file, not between the story's lines
    assert f"the gateway's log lines go to {log}" in out
    assert " INFO " not in out + result.stderr, out + result.stderr
    assert "replaying a backlog" not in out + result.stderr
    assert "gateway ps-north-01 started" in log.read_text()
    # a twin line for every device, values with the model's unit and step
    twins = [row for row in out.splitlines() if row.startswith("twin  ")]
    for device in ("pump-station-1", "intersection-1", "air-quality-1", "manhole-12", "meter-1"):
        assert any(row.startswith(f"twin  {device} ") for row in twins), f"no twin line for {device}:\n{out}"
    pumps = [row for row in twins if row.startswith("twin  pump-station-1")]
    assert re.search(r"level \d+\.\d\d m +in \d+\.\d m³/h", pumps[-1]), pumps[-1]  # step 0.01 m, 0.1 m³/h
    assert re.search(r"P1 \w+ +\d+\.\d\d Hz", pumps[-1]), pumps[-1]
    manhole = [row for row in twins if row.startswith("twin  manhole-12")][-1]
    assert re.search(r"level \d+\.\d+ m\b", manhole), manhole
    assert re.search(r"temperature -?\d+\.\d+ °C", next(r for r in twins if r.startswith("twin  air-quality-1")))
    # after set_plan the twin line says what the controller will do
    after = out[out.index("invoke set_plan"):]
    assert "changes plans only at the end of its cycle" in after
    plan_lines = [row for row in after.splitlines() if row.startswith("twin  intersection-1")]
    assert plan_lines and all("plan 2" in row for row in plan_lines), plan_lines
    # the hint exactly when a round trip took over 30 ms
    rtts = [float(ms) for ms in re.findall(r"^hub ← \S+ \w+ in (\d+\.\d) ms", out, re.M)]
    assert len(rtts) == 6, out
    hinted = "set_tcp_nodelay true" in out
    assert hinted == (max(rtts) > 30.0), (rtts, out)
