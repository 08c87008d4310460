"""The driver registry's hooks: each driver checks its bindings, places its files, discovers.

``check-binding`` runs through the CLI on every example config and on seeded bad bindings of
every driver; ``prepare`` places OPC UA's pki under the data directory; ``discover`` picks
its driver by URL scheme (against the intersection simulator, a real OPC UA server); the
OPC UA trust check reads its files off the event loop (shown with a named pipe, which blocks
its reader until a writer comes: only a loop that keeps running can be that writer).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import eventually, free_port
from pydantic import BaseModel

from citytwin.drivers.errors import ConnectError
from citytwin.drivers.modbus.binding import ModbusPoint
from citytwin.drivers.mqtt_device.binding import MqttCall, MqttPoint
from citytwin.drivers.opcua import security
from citytwin.drivers.opcua.binding import OpcUaConnection, OpcUaPoint
from citytwin.drivers.registry import PropertyUse, binding_models, discover_schemes, discoverer
from citytwin.gateway.bootstrap import prepare_file
from citytwin.gateway.cli.bindingcheck import BINDING_RULES
from citytwin.gateway.cli.main import main
from citytwin.simulators.intersection.server import IntersectionSimulator
from citytwin.thingmodels.types import DataType, Kind

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "deploy" / "examples"


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_every_example_config_binds_cleanly_through_the_cli(example: str) -> None:
    # exactly as the README shows it, from the checkout's root
    config = f"deploy/examples/{example}"
    result = subprocess.run(
        [sys.executable, "-m", "citytwin.gateway.cli", "model", "check-binding", config],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert (result.returncode, result.stdout) == (0, f"{config}: OK\n"), result.stderr


def test_the_examples_cover_every_driver_family() -> None:
    from citytwin.drivers.registry import DRIVER_NAMES

    drivers = set()
    for path in EXAMPLES.glob("*.yaml"):
        doc = yaml.safe_load(path.read_text())
        written = [d.get("driver") for d in doc.get("devices") or []]
        templated = [t.get("driver") for t in (doc.get("templates") or {}).values()]
        drivers |= {d for d in written + templated if d}

    assert {"modbus-tcp", "opcua", "coap", "mqtt"} <= drivers <= set(DRIVER_NAMES)


def _seed(tmp_path: Path, example: str, old: str, new: str) -> tuple[Path, int]:
    """The example with one edit, beside a link to its models; and the edited line's number."""
    text = (EXAMPLES / example).read_text()
    assert text.count(old) == 1, old
    text = text.replace(old, new)
    (tmp_path / "models").symlink_to(EXAMPLES / "models")
    path = tmp_path / example
    path.write_text(text)
    line = next(n for n, row in enumerate(text.splitlines(), 1) if new.splitlines()[0] in row)
    return path, line


SEEDS = {  # driver: example, edit, (rule, pointer, message) of the finding it must give
    "modbus-tcp: writable on a read-only table": (
        "pump-station.yaml",
        "pump1_frequency_setpoint: {table: holding_register, address: 0, type: float32}",
        "pump1_frequency_setpoint: {table: input_register, address: 20, type: float32}",
        ("binding-writable", "/devices/0/points/pump1_frequency_setpoint/table",
         "property 'pump1_frequency_setpoint': writable in the model, but bound to a read-only input_register"),
    ),
    "modbus-tcp: range after scale": (
        "pump-station.yaml",
        "pump1_run_hours:  {table: input_register, address: 8, type: uint32, scale: 0.01}",
        "pump1_run_hours:  {table: input_register, address: 8, type: uint16, scale: 0.01}",
        ("binding-range", "/devices/0/points/pump1_run_hours/type",
         "property 'pump1_run_hours': range 0..1000000 does not fit uint16 with scale 0.01 and offset 0 (0..655.35)"),
    ),
    "opcua: declared type": (
        "intersection.yaml",
        'Controller.GreenExtension", type: Int32, writable: true}',
        'Controller.GreenExtension", type: Boolean, writable: true}',
        ("binding-type", "/devices/0/points/green_extension/type",
         "property 'green_extension': an int value cannot be carried by a Boolean node"),
    ),
    "opcua: range of the declared type": (
        "intersection.yaml",
        'Controller.CycleCount"}',
        'Controller.CycleCount", type: UInt16}',
        ("binding-range", "/devices/0/points/cycle_count/type",
         "property 'cycle_count': range 0..2147483647 does not fit UInt16 (0..65535)"),
    ),
    "opcua: writable property on a read-only node": (
        "intersection.yaml",
        'Controller.GreenExtension", type: Int32, writable: true}',
        'Controller.GreenExtension", type: Int32}',
        ("binding-writable", "/devices/0/points/green_extension/writable",
         "property 'green_extension': writable in the model, but the point is not writable "
         "(set writable: true and its type)"),
    ),
    "coap: writable property on a read-only resource": (
        "city-sensors.yaml",
        "report_interval: {path: /aq/config, pointer: /interval, writable: true}",
        "report_interval: {path: /aq/config, pointer: /interval}",
        ("binding-writable", "/devices/0/points/report_interval/writable",
         "property 'report_interval': writable in the model, but /aq/config is only read (set writable: true)"),
    ),
    "mqtt: set command without the value": (
        "meters.yaml",
        "set: {payload: {cmd: config, report_interval: $value}}",
        "set: {payload: {cmd: config, report_interval: 60}}",
        ("binding-write-value", "/devices/0/points/report_interval/set/payload",
         "property 'report_interval': the 'set' payload never sends the written value (put \"$value\" in it)"),
    ),
    "mqtt: map to a value of another type": (
        "meters.yaml",
        "map: {open: true, closed: false}}",
        "map: {open: true, closed: shut}}",
        ("binding-type", "/devices/0/points/valve_open/map/closed",
         "property 'valve_open': maps to 'shut', which is not a bool value"),
    ),
}


@pytest.mark.parametrize("seed", sorted(SEEDS))
def test_a_seeded_bad_binding_gives_its_rule_at_file_line(
    seed: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    example, old, new, (rule, pointer, message) = SEEDS[seed]
    path, line = _seed(tmp_path, example, old, new)
    code = main(["model", "check-binding", str(path)])
    findings = capsys.readouterr().out.splitlines()
    assert code == 1
    field = pointer.rsplit("/", 1)[-1]
    mine = [f for f in findings if f" {pointer}: " in f]
    assert len(mine) == 1, findings
    where, _, rest = mine[0].partition(" ")
    file, at_line, at_column = where.rsplit(":", 2)
    assert (file, int(at_line)) == (str(path), line)
    assert rest == f"{pointer}: {message} [{rule}]"
    if field in new:  # the field is written: the finding points at it on that line
        row = path.read_text().splitlines()[line - 1]
        assert row[int(at_column) - 1:].startswith(field)
    assert {f.rsplit("[", 1)[-1].rstrip("]") for f in findings} <= set(BINDING_RULES)


def _findings(driver: str, point: BaseModel, kind: Kind, **use: Any) -> list[tuple[str, tuple[str | int, ...]]]:
    data_type = DataType(kind, min=use.pop("min", None), max=use.pop("max", None), names=use.pop("names", {}))
    return [(f.rule, f.path) for f in binding_models(driver).check(point, PropertyUse(data_type, **use))]


def test_the_three_modbus_drivers_share_one_check() -> None:
    point = ModbusPoint(table="input_register", address=0)
    for driver in ("modbus-tcp", "modbus-rtu", "modbus-rtu-over-tcp"):
        assert _findings(driver, point, Kind.INT, min=0, max=10, writable=True) == [("binding-writable", ("table",))]
        assert _findings(driver, point, Kind.INT, min=0, max=10) == []


def test_opcua_checks_the_declared_type_against_the_model() -> None:
    assert _findings("opcua", OpcUaPoint(node="ns=1;s=Name", type="String"), Kind.TEXT) == []
    assert _findings("opcua", OpcUaPoint(node="ns=1;s=Name", type="Int32"), Kind.TEXT) == [("binding-type", ("type",))]
    assert _findings("opcua", OpcUaPoint(node="ns=1;s=Count", type="String"), Kind.INT) == [("binding-type", ("type",))]
    assert _findings("opcua", OpcUaPoint(node="ns=1;s=Count", type="Double"), Kind.INT) == [("binding-type", ("type",))]
    assert _findings("opcua", OpcUaPoint(node="ns=1;s=Count", type="Double"), Kind.INT, scale=0.1) == []
    assert _findings("opcua", OpcUaPoint(node="ns=1;s=Any"), Kind.INT, min=0, max=10**12) == []  # untyped
    # a service input written into a typed node: only the input's range matters
    plan = OpcUaPoint(node="ns=1;s=Plan", type="Byte", writable=True)
    assert _findings("opcua", plan, Kind.INT, min=0, max=1000, readable=False) == [("binding-range", ("type",))]
    assert _findings("opcua", plan, Kind.ENUM, names={0: "a", 300: "b"}) == [("binding-range", ("type",))]


def test_mqtt_checks_readability_and_enum_maps() -> None:
    write_only = MqttPoint(set=MqttCall(payload={"v": "$value"}))
    assert _findings("mqtt", write_only, Kind.INT, writable=True) == [("binding-readable", ())]
    assert _findings("mqtt", write_only, Kind.INT, writable=True, readable=False) == []
    mapped = MqttPoint(topic="t", map={"auto": 0, "manual": 7})
    assert _findings("mqtt", mapped, Kind.ENUM, names={0: "auto", 1: "manual"}) == [("binding-range", ("map", "manual"))]


def test_prepare_puts_opcua_pki_under_the_data_dir_of_its_device(tmp_path: Path) -> None:
    (tmp_path / "models").symlink_to(EXAMPLES / "models")
    text = (EXAMPLES / "intersection.yaml").read_text()
    (tmp_path / "ix.yaml").write_text(text)
    _, specs = prepare_file(tmp_path / "ix.yaml")
    connection = specs["intersection-1"].config.connection
    assert connection.pki_dir == tmp_path.resolve() / "data" / "intersection-1" / "pki"
    assert not (tmp_path / "data").exists()  # paths only: config check creates nothing
    absolute = tmp_path / "elsewhere"
    (tmp_path / "abs.yaml").write_text(text.replace("pki_dir: ./pki", f"pki_dir: {absolute}"))
    _, specs = prepare_file(tmp_path / "abs.yaml")
    assert specs["intersection-1"].config.connection.pki_dir == absolute
    # a driver with no files of its own keeps its connection as it is
    _, specs = prepare_file(EXAMPLES / "pump-station.yaml")
    spec = next(iter(specs.values()))
    models = binding_models(spec.config.driver)
    assert models.prepare(spec.config.connection, tmp_path, spec.id) is spec.config.connection


def test_discover_refuses_an_unknown_scheme_naming_the_supported_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert discover_schemes() == {"coap": "coap", "opcua": "opcua", "opc.tcp": "opcua", "bacnet": "bacnet"}
    assert main(["discover", "http://10.0.0.7"]) == 2
    err = capsys.readouterr().err
    assert err == ("citytwin discover: unsupported URL 'http://10.0.0.7'; supported schemes: coap://, opcua://, "
                   "opc.tcp://, bacnet://\n")
    with pytest.raises(LookupError, match="supported schemes"):
        discoverer("no-scheme-at-all")
    assert discoverer("OPC.TCP://h:4840") is not None


async def test_discover_dispatches_by_scheme_to_the_opcua_browser() -> None:
    async with IntersectionSimulator(port=free_port()) as sim:
        url = sim.url.replace("opc.tcp://", "opcua://")
        assert discoverer(url).schemes == discoverer(sim.url).schemes == ("opcua", "opc.tcp")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "citytwin.gateway.cli", "discover", url, "--timeout", "5",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    doc = yaml.safe_load(out)
    assert doc["driver"] == "opcua" and doc["connection"]["url"] == sim.url
    assert doc["points"]["controller_green_extension"]["writable"] is True


@pytest.mark.timeout(30)  # a trust check on the loop would wait on the pipe forever
async def test_the_trust_check_reads_certificates_off_the_event_loop(tmp_path: Path) -> None:
    der = bytes(range(256)) * 4  # what the server sent; compared byte for byte
    pipe = tmp_path / "server.der"
    os.mkfifo(pipe)
    conn = OpcUaConnection(url="opc.tcp://127.0.0.1:4840", pki_dir=tmp_path / "pki", server_certificate=pipe)
    check = asyncio.create_task(security.check_trusted(conn, der))

    def writer() -> int | None:  # opens only once the check, in its thread, reads the pipe
        try:
            return os.open(pipe, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            return None

    fd = await eventually(writer, timeout=10)
    os.write(fd, der)
    os.close(fd)
    await asyncio.wait_for(check, 10)  # trusted: returns without raising


async def test_a_pipe_in_trusted_is_skipped_and_an_unknown_certificate_refused(tmp_path: Path) -> None:
    conn = OpcUaConnection(url="opc.tcp://127.0.0.1:4840", pki_dir=tmp_path / "pki")
    (tmp_path / "pki" / "trusted").mkdir(parents=True)
    os.mkfifo(tmp_path / "pki" / "trusted" / "stray.der")
    der = b"not a certificate"
    with pytest.raises(ConnectError, match="is not trusted"):
        await asyncio.wait_for(security.check_trusted(conn, der), 10)
    assert [p.read_bytes() for p in (tmp_path / "pki" / "rejected").iterdir()] == [der]
