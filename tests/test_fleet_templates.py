"""A fleet: templates and inventories expand into devices, errors are placed where they were
written (template, device entry, CSV row and column), and a template's devices share one
validated and compiled point map (in process; a templated gateway polls through tests/harness.py)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from harness import FakeDevice, InProcessGateway

from citytwin.gateway.bootstrap import prepare, prepare_file
from citytwin.gateway.cli.main import main as cli_main
from citytwin.gateway.commandreplies import Context
from citytwin.gateway.config import ConfigError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "deploy" / "examples"


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line and not line.lstrip().startswith("#"))


@pytest.fixture
def fleet_dir(tmp_path: Path) -> Path:
    for name in ("fleet.yaml", "fleet-inventory.csv"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    shutil.copytree(EXAMPLES / "models", tmp_path / "models")
    return tmp_path


def errors_in(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        prepare_file(path)
    return [str(i) for i in info.value.issues]


def test_the_fleet_example_expands_with_overrides_and_shares_what_it_can() -> None:
    config, specs = prepare_file(EXAMPLES / "fleet.yaml")
    assert len(specs) == 8 and sorted(d.template or "" for d in config.devices).count("manhole") == 6
    wanquan, suzhou = specs["ps-wanquan-1"], specs["ps-suzhou-2"]
    # connection defaults from the template, the host (and a unit) from the device
    assert (wanquan.config.connection.host, wanquan.config.connection.port, wanquan.config.connection.unit) == (
        "10.20.3.11", 502, 1)
    assert suzhou.config.connection.unit == 2
    # a point's address and deadband overridden; the point's other fields kept from the template
    pressure = suzhou.points["outlet_pressure"]
    assert (pressure.binding.address, pressure.deadband, pressure.scale) == (20, 1.0, 0.1)  # type: ignore[attr-defined]
    assert wanquan.points["outlet_pressure"].binding.address == 6  # type: ignore[attr-defined]
    # interlock 4's limit overridden, the other rules as in the template
    assert [r.rule.max_change.limit for r in suzhou.interlocks if r.rule.max_change] == [10]
    assert [r.rule.max_change.limit for r in wanquan.interlocks if r.rule.max_change] == [20]
    assert len(suzhou.interlocks) == len(wanquan.interlocks) == 4
    # the points suzhou left alone are the very objects wanquan has: compiled once
    assert suzhou.points["level"] is wanquan.points["level"]
    # the manholes share one point map (validated and compiled), one model, one event list
    manholes = [s for s in specs.values() if s.config.template == "manhole"]
    assert len({id(s.points) for s in manholes}) == 1
    assert len({id(s.config.points) for s in manholes}) == 1
    assert len({id(s.model) for s in manholes}) == 1
    assert len({id(s.config.events) for s in manholes}) == 1
    # groups add to the template's; identity and location come from the row
    mh3 = specs["mh-0003"].config
    assert mh3.groups == ["ponding-points", "low-lying"]
    assert mh3.uid == "MH-110108000303" and mh3.tags == {"basin": "qinghe", "class": "ponding"}
    assert mh3.location is not None and (mh3.location.crs, mh3.location.address) == ("CGCS2000", "Chengfu Rd rail bridge")
    assert specs["mh-0004"].config.connection.port == 5684
    assert specs["mh-0001"].config.connection.port == 5683


def test_config_check_counts_devices_per_template(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["config", "check", str(EXAMPLES / "fleet.yaml")]) == 0
    out = capsys.readouterr().out
    assert "8 device(s)" in out
    assert "template manhole: 6 device(s)" in out and "template pump-station: 2 device(s)" in out


def test_every_error_is_placed_in_its_template_entry_row_or_cell_at_once(fleet_dir: Path) -> None:
    yaml_path, csv_path = fleet_dir / "fleet.yaml", fleet_dir / "fleet-inventory.csv"
    text = (yaml_path.read_text()
            .replace("address: 6, type: uint16", "address: 70000, type: uint16")      # in the template
            .replace("outlet_pressure: {address: 20", "outlet_pressure: {address: -2")  # a device's override
            .replace("4: {max_change: {limit: 10}}", "7: {max_change: {limit: 10}}"))   # no rule 7
    yaml_path.write_text(text)
    rows = csv_path.read_text().splitlines()
    rows[3] = rows[3].replace(",manhole,", ",manhol,")                   # mh-0003: unknown template
    rows[4] = rows[4].replace(",5684,MH-110108000304,39.9555", ",99999,MH-11010800030,99.9555")
    rows[6] = rows[6].replace("mh-0006", "mh-0001")                      # an id used twice
    csv_path.write_text("\n".join(rows) + "\n")
    csv = str(csv_path)
    y = str(yaml_path)
    assert sorted(errors_in(yaml_path)) == sorted([
        f"{y}:{line_of(text, 'address: 70000')}: templates.pump-station.points.outlet_pressure.address: must be 0..65535",
        f"{y}:{line_of(text, 'address: -2')}: devices[1].points.outlet_pressure.address: must be 0..65535",
        f"{y}:{line_of(text, '7: {max_change')}: devices[1].interlocks[7]: template 'pump-station' has 4 interlocks: "
        "override them by number, 1..4",
        f"{csv}:4: column 2 (template): no template 'manhol'; did you mean 'manhole'?",
        f"{csv}:5: column 4 (port): must be 1..65535",
        f"{csv}:5: column 5 (uid): 'MH-11010800030' does not match gateway.uid_pattern '(PS|MH)-[0-9]{{12}}'",
        f"{csv}:5: column 6 (latitude): Input should be less than or equal to 90",
        f"{csv}:7: column 1 (id): device id 'mh-0001' is used twice (first at {csv}:2)",
    ])


TEMPLATED = """
gateway: {id: fleet-gw, data_dir: DATA_DIR}
http: {enabled: false}
templates:
  sensor:
    model: pump_station
    driver: modbus-tcp
    connection: {port: 502}
    poll_period: 0.05
    points:
      level:        {table: input_register, address: 0, scale: 0.01}
      pump1_fault:  {table: discrete_input, address: 1}
      inflow:       {table: input_register, address: 2, type: float32}
devices:
DEVICES
"""


def test_an_error_in_a_template_is_reported_once_for_all_its_devices(tmp_path: Path) -> None:
    devices = "\n".join(f"  - {{id: d{i}, template: sensor, connection: {{host: 10.0.0.{i}}}}}" for i in range(5))
    text = TEMPLATED.replace("DEVICES", devices).replace("type: float32", "type: float33")
    with pytest.raises(ConfigError) as info:
        prepare(text, "gw.yaml", tmp_path)
    (issue,) = info.value.issues
    assert str(issue).startswith(f"gw.yaml:{line_of(text, 'float33')}: templates.sensor.points.inflow.type: ")
    assert issue.message.endswith("(in 5 devices)")


def test_a_model_check_in_a_template_is_placed_in_the_template_once(tmp_path: Path) -> None:
    devices = "\n".join(f"  - {{id: d{i}, template: sensor, connection: {{host: 10.0.0.{i}}}}}" for i in range(3))
    text = TEMPLATED.replace("DEVICES", devices).replace("inflow:", "inflw:")
    with pytest.raises(ConfigError) as info:
        prepare(text, "gw.yaml", tmp_path)
    assert [str(i) for i in info.value.issues] == [
        f"gw.yaml:{line_of(text, 'inflw:')}: templates.sensor.points.inflw: model citytwin.water.pump_station has no "
        "property 'inflw' (in 3 devices)"]


def test_template_fields_that_belong_to_a_device_and_a_changed_driver_are_refused(tmp_path: Path) -> None:
    text = (TEMPLATED.replace("    poll_period: 0.05", "    poll_period: 0.05\n    uid: X-1")
            .replace("DEVICES", "  - {id: d1, template: sensor, driver: coap, connection: {host: h}}"))
    with pytest.raises(ConfigError) as info:
        prepare(text, "gw.yaml", tmp_path)
    assert [str(i) for i in info.value.issues] == [
        f"gw.yaml:{line_of(text, 'uid: X-1')}: templates.sensor.uid: 'uid' belongs to each device, not to a template",
        f"gw.yaml:{line_of(text, 'id: d1')}: devices[0].driver: a device made from template 'sensor' uses its driver",
    ]


def test_null_removes_a_point_and_a_yaml_inventory_is_placed_by_its_lines(tmp_path: Path) -> None:
    (tmp_path / "more.yaml").write_text(
        "devices:\n"
        "  - {id: y1, template: sensor, connection: {host: 10.0.1.1}, points: {inflow: null}}\n"
        "  - id: y2\n"
        "    template: sensor\n"
        "    connection: {host: 10.0.1.2, port: 0}\n"
        "    location: {latitude: 39.9, longitude: 181}\n")
    text = TEMPLATED.replace("DEVICES", "  - {id: d1, template: sensor, connection: {host: h}}") + "inventory: [more.yaml]\n"
    with pytest.raises(ConfigError) as info:
        prepare(text, "gw.yaml", tmp_path)
    more = str(tmp_path / "more.yaml")
    assert [str(i) for i in info.value.issues] == [
        f"{more}:5: devices[1].connection.port: must be 1..65535",
        f"{more}:6: devices[1].location.longitude: Input should be less than or equal to 180",
    ]
    (tmp_path / "more.yaml").write_text(
        "- {id: y1, template: sensor, connection: {host: 10.0.1.1}, points: {inflow: null}}\n")
    _, specs = prepare(text, "gw.yaml", tmp_path)
    assert set(specs["y1"].points) == {"level", "pump1_fault"}
    assert set(specs["d1"].points) == {"level", "pump1_fault", "inflow"}


def test_csv_structure_errors_name_the_header_and_rows(tmp_path: Path) -> None:
    (tmp_path / "inv.csv").write_text(
        "id,template,host,connection.host,tags\n"
        "a1,sensor,10.0.0.1,,district=north\n"
        "a2,sensor,10.0.0.2,,north\n"
        "a3,sensor,10.0.0.3,,,extra\n")
    text = TEMPLATED.replace("DEVICES", "  []").replace("devices:\n  []", "devices: []") + "inventory: inv.csv\n"
    with pytest.raises(ConfigError) as info:
        prepare(text, "gw.yaml", tmp_path)
    inv = str(tmp_path / "inv.csv")
    assert [str(i) for i in info.value.issues] == [
        f"{inv}:1: column 4 (connection.host): fills the same field as column 3 (host)",
        f"{inv}:3: column 5 (tags): tags are key=value pairs separated by ';', not 'north'",
        f"{inv}:4: column 6: 6 cells, but the header names 5 columns",
    ]


def test_a_missing_inventory_is_placed_at_the_config_key(tmp_path: Path) -> None:
    text = TEMPLATED.replace("DEVICES", "  - {id: d1, template: sensor, connection: {host: h}}") + "inventory: nope.csv\n"
    with pytest.raises(ConfigError) as info:
        prepare(text, "gw.yaml", tmp_path)
    (issue,) = info.value.issues
    assert str(issue).startswith(f"gw.yaml:{line_of(text, 'inventory:')}: inventory: cannot read inventory 'nope.csv'")


async def test_devices_of_one_template_poll_each_their_own_values(tmp_path: Path) -> None:
    (tmp_path / "inv.csv").write_text("id,template,host\n" + "".join(f"s{i},sensor,10.0.0.{i}\n" for i in range(3)))
    text = TEMPLATED.replace("DEVICES", "  - {id: s9, template: sensor, connection: {host: h},"
                                        " points: {level: {scale: 0.1}}}") + "inventory: inv.csv\n"
    fakes = {f"s{i}": FakeDevice({"level": 100 * (i + 1), "pump1_fault": False, "inflow": 1.5}) for i in (0, 1, 2, 9)}
    async with InProcessGateway(text, tmp_path, fakes) as gw:
        twins = gw.gw.twins
        await gw.wait_for(lambda: all("level" in twins[d].reported for d in fakes), what="every device reporting")
        assert {d: twins[d].reported["level"] for d in fakes} == {"s0": 1.0, "s1": 2.0, "s2": 3.0, "s9": 100.0}
        assert gw.gw.specs["s0"].points is gw.gw.specs["s2"].points


def test_the_fleet_memory_benchmark_runs_and_writes_a_record(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.fleet_memory", "--devices", "30", "--points", "10", "--rows", "60",
         "--output", str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    (path,) = tmp_path.glob("fleet_memory-*.json")
    record = json.loads(path.read_text())
    cases = {c["case"]: c for c in record["cases"]}
    assert set(cases) == {"flat", "template", "template-2x", "inventory"}
    assert (cases["flat"]["devices"], cases["template-2x"]["devices"], cases["inventory"]["devices"]) == (30, 60, 60)
    # the same devices, written out or from one template: equal point maps compile to one shared map
    assert cases["flat"]["points"] == cases["template"]["points"] == 300
    assert cases["flat"]["distinct_point_maps"] == 1 and cases["template"]["distinct_point_maps"] == 1
    assert "template vs flat" in result.stdout


def test_the_fleet_push_benchmark_runs_and_writes_a_record(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.fleet_push", "--devices", "10", "--add", "10", "--warmup", "0.5",
         "--after", "0.5", "--output", str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    (path,) = tmp_path.glob("fleet_push-*.json")
    record = json.loads(path.read_text())
    assert record["added"] == 10 and record["points_read"] > 0 and record["lost"] == 0
    assert "longest poll gap" in result.stdout


async def test_a_command_during_start_up_waits_for_its_device_instead_of_unknown(tmp_path: Path) -> None:
    # 40 devices start in batches of 16 (the loop yields between them, and the hub link is up):
    # a command for the last one arrives before its runner exists, and must not be refused
    (tmp_path / "inv.csv").write_text("id,template,host\n" + "".join(f"s{i},sensor,10.0.0.{i}\n" for i in range(40)))
    text = (TEMPLATED.replace("DEVICES", "  []").replace("devices:\n  []", "devices: []")
            + "inventory: inv.csv\naccess: {grants: [{operators: [tester], role: viewer}]}\n")
    fakes = {f"s{i}": FakeDevice({"level": 100, "pump1_fault": False, "inflow": 1.5}) for i in range(40)}
    harness = InProcessGateway(text, tmp_path, fakes)
    replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    seen_unbuilt: list[bool] = []

    async def command_while_starting() -> None:
        while harness.gateway is None or not harness.gateway.relay.starting:
            await asyncio.sleep(0)
        seen_unbuilt.append("s39" not in harness.gateway.runners)
        harness.gateway.relay.submit(Context("get", "s39", None, b'{"id": "early-1"}', "tester", replies.put_nowait))

    early = asyncio.create_task(command_while_starting())
    async with harness as gw:
        await early
        async with asyncio.timeout(10):
            reply = await replies.get()
            while reply["status"] == "accepted":
                reply = await replies.get()
        assert seen_unbuilt == [True], "the command must arrive before the device is built"
        assert reply["status"] == "succeeded" and reply["id"] == "early-1", reply
        assert gw.gw.relay.starting == frozenset()


ALIASED = """
gateway: {id: gw, data_dir: DATA_DIR}
devices:
  - id: a0
    model: pump_station
    driver: modbus-tcp
    connection: {host: 10.0.0.1}
    points: &shared
      level:        {table: input_register, address: 0, scale: 0.01}
      inflow:       {table: input_register, address: 2, type: TYPE}
  - {id: a1, model: pump_station, driver: modbus-tcp, connection: {host: 10.0.0.2}, points: *shared}
  - {id: a2, model: pump_station, driver: modbus-tcp, connection: {host: 10.0.0.3}, points: *shared}
"""


def test_devices_aliasing_one_yaml_map_share_it_validated_once(tmp_path: Path) -> None:
    _, specs = prepare(ALIASED.replace("TYPE", "float32"), "gw.yaml", tmp_path)
    a0, a1, a2 = (specs[d] for d in ("a0", "a1", "a2"))
    assert a1.config.points is a2.config.points  # the part validated once, for the aliases
    assert a0.points is a1.points is a2.points  # and one compiled map for all three
    assert a2.config.points["inflow"].type == "float32" and a2.points["level"].scale == 0.01


def test_an_error_in_an_aliased_map_is_reported_where_it_is_written(tmp_path: Path) -> None:
    text = ALIASED.replace("TYPE", "float33")
    with pytest.raises(ConfigError) as info:
        prepare(text, "gw.yaml", tmp_path)
    issues = [str(i) for i in info.value.issues]
    assert issues and all(i.startswith(f"gw.yaml:{line_of(text, 'float33')}:") for i in issues), issues
    assert any("devices[2].points.inflow.type" in i for i in issues), issues
