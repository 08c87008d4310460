"""``config check`` and ``run`` as a newcomer meets them: a misspelled driver, overrides of single
settings (``--set``, ``CITYTWIN__…``), and a config path that does not exist."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from conftest import EXAMPLE, Mosquitto, free_port, wait_port


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "citytwin.gateway.cli", *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, **(env or {})}, cwd=cwd)


def line_of(text: str, needle: str) -> int:
    return next(i for i, row in enumerate(text.splitlines(), 1) if needle in row)


def test_a_misspelled_driver_is_named_and_the_rest_of_the_device_still_checked(tmp_path: Path) -> None:
    text = (EXAMPLE.read_text()
            .replace("driver: modbus-tcp", "driver: modbus-tpc")
            .replace("poll_period: 1.0", "poll_period: fast")
            .replace("address: 6, type: uint16", "address: 70000, type: uint16"))
    path = tmp_path / "pump.yaml"
    path.write_text(text)
    result = cli("config", "check", str(path))
    assert result.returncode == 2
    err = result.stderr
    assert (f"{path}:{line_of(text, 'driver: modbus-tpc')}: devices[0].driver: unknown driver 'modbus-tpc'; "
            "did you mean 'modbus-tcp'? (modbus-tcp, modbus-rtu, ") in err, err
    # the same run: the fields every device has, and (as the likely driver) its points
    assert f"{path}:{line_of(text, 'poll_period: fast')}: devices[0].poll_period: " in err, err
    assert f"{path}:{line_of(text, 'address: 70000')}: devices[0].points.outlet_pressure.address: must be 0..65535" in err
    assert "Input tag" not in err and "Traceback" not in err
    assert "3 error(s); nothing was started" in err

    # no driver like it: no suggestion, and still every common field checked
    path.write_text(text.replace("driver: modbus-tpc", "driver: zigbee"))
    result = cli("config", "check", str(path))
    assert result.returncode == 2
    assert "devices[0].driver: unknown driver 'zigbee' (modbus-tcp, " in result.stderr
    assert "did you mean" not in result.stderr
    assert "devices[0].poll_period: " in result.stderr

    path.write_text(text.replace("    driver: modbus-tpc\n", ""))
    result = cli("config", "check", str(path))
    assert "devices[0].driver: required field is missing: one of modbus-tcp, " in result.stderr


def test_overrides_are_validated_like_the_file_and_shown(tmp_path: Path) -> None:
    ok = cli("config", "check", str(EXAMPLE), "--set", "hub.url=mqtt://broker.example:1884",
             "--set", "devices[0].poll_period=2", "--set", "devices.0.connection.port=5021",
             "--set", "hub.password=s3cret", env={"CITYTWIN__HTTP__PORT": "9200"})
    assert ok.returncode == 0, ok.stderr
    lines = ok.stdout.splitlines()
    assert lines[0].endswith("OK: gateway ps-north-01, 1 device(s), 17 bound properties"), ok.stdout
    assert "  http.port = 9200  (from CITYTWIN__HTTP__PORT)" in lines
    assert "  hub.url = mqtt://broker.example:1884  (from --set hub.url=mqtt://broker.example:1884)" in lines
    assert "  devices[0].poll_period = 2  (from --set devices[0].poll_period=2)" in lines
    assert "  devices[0].connection.port = 5021  (from --set devices.0.connection.port=5021)" in lines
    assert any(row.startswith("  hub.password = ***") for row in lines) and "s3cret" not in ok.stdout.split("(from")[0]

    bad = cli("config", "check", str(EXAMPLE), "--set", "hub.url=ftp://broker", "--set", "devices[3].poll_period=1",
              "--set", "devices[0].points.level.address=70000", "--set", "devices[0].points.inflwo.address=3",
              env={"CITYTWIN__HTTP__PORT": "many"})
    assert bad.returncode == 2
    err = bad.stderr
    assert "--set hub.url=ftp://broker: hub.url: must look like mqtt://HOST:PORT" in err, err
    assert "--set devices[3].poll_period=1: devices[3].poll_period: devices has 1 item(s); index 3 is out of range" in err
    assert "--set devices[0].points.level.address=70000: devices[0].points.level.address: must be 0..65535" in err
    assert "CITYTWIN__HTTP__PORT: http.port: " in err
    # what an override created is the override's too: the new point's missing table
    assert "--set devices[0].points.inflwo.address=3: devices[0].points.inflwo.table: required field is missing" in err
    assert f"{EXAMPLE}:" not in err  # no file line is blamed for an override's error
    assert "5 error(s); nothing was started" in err

    # --set wins over the environment
    both = cli("config", "check", str(EXAMPLE), "--set", "http.port=9300", env={"CITYTWIN__HTTP__PORT": "many"})
    assert both.returncode == 0, both.stderr
    malformed = cli("config", "check", str(EXAMPLE), "--set", "hub.url")
    assert malformed.returncode == 2 and "expected PATH=VALUE" in malformed.stderr


def _get(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return dict(json.loads(response.read()))


def test_run_takes_overrides_and_a_reload_keeps_them(tmp_path: Path, mosquitto: Mosquitto) -> None:
    config = tmp_path / "pump.yaml"
    config.write_text(EXAMPLE.read_text())  # as shipped: data in ./data beside it
    http = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "citytwin.gateway.cli", "run", "-c", str(config),
         "--set", f"http.port={http}", "--set", "devices[0].connection.port=1"],
        env={**os.environ, "CITYTWIN__HUB__URL": mosquitto.url}, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_port(http, 20)
        status = _get(f"http://127.0.0.1:{http}/status")
        assert status["hub"]["url"] == mosquitto.url  # type: ignore[index]
        reload = cli("reload", "--url", f"http://127.0.0.1:{http}")
        # the file re-read with the same overrides: nothing differs
        assert reload.returncode == 0 and "no device changed" in reload.stdout, reload.stdout + reload.stderr
        assert "restart" not in reload.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


@pytest.mark.parametrize("command", [("config", "check", "nope.yaml"), ("run", "-c", "nope.yaml"),
                                     ("status", "-c", "nope.yaml"), ("reload", "-c", "nope.yaml")])
def test_a_missing_config_file_is_reported_plainly(tmp_path: Path, command: tuple[str, ...]) -> None:
    result = cli(*command, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == "no such file: nope.yaml", result.stderr
    assert "Errno" not in result.stderr and ":0:" not in result.stderr


def test_override_paths_and_environment_names() -> None:
    from citytwin.gateway.overrides import from_env, from_set, parse_path

    assert parse_path("devices[0].poll_period") == ("devices", 0, "poll_period")
    assert parse_path("devices.0.poll_period") == ("devices", 0, "poll_period")
    assert parse_path("devices[1].points.level.address") == ("devices", 1, "points", "level", "address")
    for bad in ("hub..url", "devices[x]", "hub.url]", ""):
        with pytest.raises(ValueError):
            parse_path(bad)
    env = from_env({"CITYTWIN__HUB__URL": "mqtt://b:1883", "CITYTWIN__DEVICES__0__POLL_PERIOD": "2",
                    "CITYTWIN_BROKER": "not an override", "CITYTWIN__": "x", "PATH": "/bin"})
    assert [(o.path, o.value, o.origin) for o in env] == [
        (("devices", 0, "poll_period"), 2, "CITYTWIN__DEVICES__0__POLL_PERIOD"),
        (("hub", "url"), "mqtt://b:1883", "CITYTWIN__HUB__URL"),
    ]
    [quoted, flag] = from_set(['hub.protocol="5"', "http.enabled=false"])
    assert quoted.value == "5" and flag.value is False
