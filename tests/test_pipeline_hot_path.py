"""The pipeline's hot-path shortcuts keep its behaviour: no per-poll logging, plain ints as is."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import pytest

from citytwin.drivers.base import Quality, Reading
from citytwin.gateway.bootstrap import prepare_file
from citytwin.gateway.devicespec import DeviceSpec
from citytwin.gateway.pipeline import DevicePipeline
from citytwin.gateway.twins import Twin

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def specs(tmp_path: Path) -> dict[str, DeviceSpec]:
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.subjects import Citytwin, Shape
    finally:
        sys.path.remove(str(ROOT))
    path = Citytwin().config(tmp_path, 1883, 502, Shape(3, 4, 0.1))
    return prepare_file(path)[1]


def test_a_value_moving_outside_the_model_logs_once_not_per_poll(
    specs: dict[str, DeviceSpec], caplog: pytest.LogCaptureFixture
) -> None:
    reports: list[dict[str, Any]] = []
    pipe = DevicePipeline(specs["d0000"], Twin("d0000"), lambda kind, payload: reports.append(payload))
    caplog.set_level(logging.INFO, logger="citytwin.pipeline")
    for n in range(5):  # the sentinel's model is an int32: these are all above its max
        pipe.process([Reading("sentinel", 2**31 + n, 100 + n, Quality.GOOD)], now=100 + n)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "outside the model" in warnings[0].getMessage()
    assert [r["properties"]["sentinel"]["quality"] for r in reports] == ["uncertain"] * 5
    pipe.process([Reading("sentinel", 7, 200, Quality.GOOD)], now=200)
    assert any("good again" in r.getMessage() for r in caplog.records)
    assert reports[-1]["properties"]["sentinel"] == {"value": 7, "ts": 200, "quality": "good"}


def test_plain_integers_pass_as_is_and_others_still_convert(specs: dict[str, DeviceSpec]) -> None:
    reports: list[dict[str, Any]] = []
    pipe = DevicePipeline(specs["d0001"], Twin("d0001"), lambda kind, payload: reports.append(payload))
    # an int register value is the int property value; a float raw still rounds to the model's int
    pipe.process([Reading("r_0", 41, 1, Quality.GOOD), Reading("r_1", 41.6, 1, Quality.GOOD)], now=1)
    props = reports[-1]["properties"]
    assert props["r_0"]["value"] == 41 and type(props["r_0"]["value"]) is int
    assert props["r_1"]["value"] == 42 and type(props["r_1"]["value"]) is int
    assert pipe.twin.reported == {"r_0": 41, "r_1": 42}
    pipe.process([Reading("r_0", 41, 2, Quality.GOOD), Reading("r_1", 43, 2, Quality.GOOD)], now=2)
    assert set(reports[-1]["properties"]) == {"r_1"}  # report by exception: r_0 did not move
