"""The per-device data path on its own: scaling, quality, report by exception, events, twin."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from citytwin.drivers.base import Quality, Reading
from citytwin.gateway.bootstrap import prepare_file
from citytwin.gateway.devicespec import DeviceSpec
from citytwin.gateway.pipeline import DevicePipeline
from citytwin.gateway.twins import Twin, merge_patch

EXAMPLE = Path(__file__).resolve().parent.parent / "deploy" / "examples" / "pump-station.yaml"


@pytest.fixture
def spec() -> DeviceSpec:
    _, specs = prepare_file(EXAMPLE)
    return specs["pump-station-1"]


class Sink:
    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, kind: str, payload: dict[str, Any]) -> None:
        self.messages.append((kind, payload))

    def reports(self) -> list[dict[str, Any]]:
        return [p for k, p in self.messages if k == "report"]

    def events(self) -> list[tuple[str, dict[str, Any]]]:
        return [(k, p) for k, p in self.messages if k.startswith("event:")]


def good(point: str, value: Any, ts: int = 1000) -> Reading:
    return Reading(point, value, ts, Quality.GOOD)


def test_scaling_rounding_and_types(spec: DeviceSpec) -> None:
    sink, twin = Sink(), Twin("d")
    pipe = DevicePipeline(spec, twin, sink)
    pipe.process([
        good("outlet_pressure", 1234),        # uint16 × 0.1 kPa
        good("pump1_run_hours", 123456),      # uint32 × 0.01 h
        good("pump1_running", 1),
        good("level", 2.0999999046325684),    # float32 as decoded
    ], now=2000)
    (report,) = sink.reports()
    props = report["properties"]
    assert props["outlet_pressure"] == {"value": 123.4, "ts": 1000, "quality": "good"}
    assert props["pump1_run_hours"]["value"] == 1234.56
    assert props["pump1_running"]["value"] is True
    assert props["level"]["value"] == 2.1
    assert twin.reported["outlet_pressure"] == 123.4 and twin.version == 1


def test_deadband_and_report_by_exception(spec: DeviceSpec) -> None:
    sink, twin = Sink(), Twin("d")
    pipe = DevicePipeline(spec, twin, sink)
    pipe.process([good("level", 2.0), good("pump1_running", False)], now=1)
    pipe.process([good("level", 2.004), good("pump1_running", False)], now=2)  # within 0.005 m
    pipe.process([good("level", 2.006), good("pump1_running", True)], now=3)
    reports = sink.reports()
    assert len(reports) == 2
    assert set(reports[1]["properties"]) == {"level", "pump1_running"}
    pipe.process([good("level", 2.006), good("pump1_running", True)], now=4, full=True)
    assert set(sink.reports()[-1]["properties"]) == {"level", "pump1_running"}
    assert len(sink.reports()) == 3


def test_out_of_range_is_uncertain_and_bad_is_reported_once(spec: DeviceSpec) -> None:
    sink, twin = Sink(), Twin("d")
    pipe = DevicePipeline(spec, twin, sink)
    pipe.process([good("level", 7.5)], now=1)
    entry = sink.reports()[-1]["properties"]["level"]
    assert entry["quality"] == "uncertain" and entry["value"] == 7.5 and "above max 6" in entry["error"]
    bad = Reading("level", None, 2, Quality.BAD, "modbus exception 2 (illegal data address)")
    pipe.process([bad], now=2)
    pipe.process([bad], now=3)
    bad_reports = [r for r in sink.reports() if r["properties"].get("level", {}).get("quality") == "bad"]
    assert len(bad_reports) == 1
    assert bad_reports[0]["properties"]["level"]["value"] is None
    assert twin.reported_meta["level"][1] == "bad"
    assert twin.reported["level"] == 7.5  # the last value stays, its quality says it is stale


def test_events_fire_on_the_rising_edge_with_hysteresis(spec: DeviceSpec) -> None:
    sink, twin = Sink(), Twin("d")
    pipe = DevicePipeline(spec, twin, sink)
    for level in (4.0, 4.6, 4.7, 4.4, 4.6, 4.1, 4.55):
        pipe.process([good("level", level)], now=1)
    events = [p for k, p in sink.events() if k == "event:high_level"]
    # raised at 4.6; 4.4 is above the clear level 4.2 so 4.6 again does not re-raise; 4.1 re-arms
    assert [e["output"]["level"] for e in events] == [4.6, 4.55]
    assert all(e["type"] == "alert" for e in events)
    pipe.process([good("pump2_fault", True), good("pump2_current", 123)], now=5)
    (fault,) = [p for k, p in sink.events() if k == "event:pump_fault"]
    assert fault["output"] == {"pump": 2, "current": 12.3} and fault["type"] == "error"


def test_twin_delta_merge_patch_and_restore() -> None:
    twin = Twin("d")
    twin.update_reported({"a": (1, 10, "good"), "b": (2, 10, "good")}, now=10)
    twin.patch_desired({"a": 5, "b": 2, "c": {"x": 1}}, now=11)
    assert twin.delta == {"a": 5, "c": {"x": 1}}
    twin.patch_desired({"a": None, "c": {"y": 2}}, now=12)
    assert twin.desired == {"b": 2, "c": {"x": 1, "y": 2}}
    assert twin.version == 3
    restored = Twin.restore("d", twin.snapshot())
    assert restored.document() | {"state": "x"} == twin.document() | {"state": "x"}
    assert merge_patch({"k": [1, 2]}, {"k": [3]}) == {"k": [3]}


def test_a_full_snapshot_repeats_pushed_values_too(spec: DeviceSpec) -> None:
    sink, twin = Sink(), Twin("d")
    pipe = DevicePipeline(spec, twin, sink)
    pipe.process([good("level", 2.5, ts=123), good("pump1_running", True, ts=124)], now=4000)
    # a push-only device: its poll returns nothing, but the periodic snapshot still carries all
    pipe.process([], now=5000, full=True)
    snapshot = sink.reports()[-1]["properties"]
    assert snapshot["level"] == {"value": 2.5, "ts": 123, "quality": "good"}
    assert snapshot["pump1_running"]["value"] is True
    pipe.process([], now=6000)
    assert len(sink.reports()) == 2  # nothing new outside a snapshot
