"""The per-device series on /metrics, sample by sample: names, types, HELP, labels, bucket
bounds, values and ``_created``, for devices that polled, got pushes, skipped ticks, lagged,
read bad points and failed, were restarted with a changed config, and were removed.

The expected exposition is the one prometheus_client's labelled Counter/Gauge/Histogram
children produced before the series became plain numbers read by a collector (issue 19): this
test passed against that implementation unchanged.
"""

from __future__ import annotations

import time

from prometheus_client import disable_created_metrics, enable_created_metrics, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

from citytwin.drivers.base import Quality, Reading
from citytwin.gateway.devicemetrics import POLL_BUCKETS
from citytwin.gateway.metrics import GatewayMetrics

NOW = "<time>"  # a wall-clock value: checked to lie within the test, then compared as this marker
DEVICE_FAMILIES = [  # (name as parsed, type, HELP), in the order they are exposed
    ("citytwin_device_online", "gauge", "1 while the device answers its polls, else 0"),
    ("citytwin_device_poll_duration_seconds", "histogram", "Duration of one batched driver read"),
    ("citytwin_device_poll_duration_seconds_created", "gauge", "Duration of one batched driver read"),
    ("citytwin_device_points_read", "counter", "Points returned by successful reads (any quality)"),
    ("citytwin_device_points_read_created", "gauge", "Points returned by successful reads (any quality)"),
    ("citytwin_device_read_errors", "counter",
     "Failed reads or connects by error class, and points read with bad quality (bad_point)"),
    ("citytwin_device_read_errors_created", "gauge",
     "Failed reads or connects by error class, and points read with bad quality (bad_point)"),
    ("citytwin_device_last_success_timestamp_seconds", "gauge", "Unix time of the last successful poll"),
    ("citytwin_device_points_reported", "counter", "Properties handed to the hub link in reports"),
    ("citytwin_device_points_reported_created", "gauge", "Properties handed to the hub link in reports"),
    ("citytwin_device_polls_skipped", "counter",
     "Poll ticks skipped because the previous poll ended after they were due (load shed at the source)"),
    ("citytwin_device_polls_skipped_created", "gauge",
     "Poll ticks skipped because the previous poll ended after they were due (load shed at the source)"),
    ("citytwin_device_poll_lag_seconds", "gauge",
     "How late the last poll started after it was due (waiting for the event loop, a slot or queue room)"),
]


def good(n: int) -> list[Reading]:
    return [Reading(f"p{i}", i, 0, Quality.GOOD) for i in range(n)]


def bad(n: int) -> list[Reading]:
    return [Reading(f"b{i}", None, 0, Quality.BAD, "exception 2") for i in range(n)]


def histogram(device: str, observations: list[float]) -> dict[tuple[str, frozenset[tuple[str, str]]], object]:
    """The samples prometheus_client's Histogram gives these observations: cumulative buckets."""
    bounds = [*POLL_BUCKETS, float("inf")]
    out: dict[tuple[str, frozenset[tuple[str, str]]], object] = {}
    for bound in bounds:
        le = floatToGoString(bound)
        out["citytwin_device_poll_duration_seconds_bucket", frozenset({("device", device), ("le", le)})] = float(
            sum(1 for o in observations if o <= bound))
    total = 0.0
    for o in observations:
        total += o
    labels = frozenset({("device", device)})
    out["citytwin_device_poll_duration_seconds_count", labels] = float(len(observations))
    out["citytwin_device_poll_duration_seconds_sum", labels] = total
    out["citytwin_device_poll_duration_seconds_created", labels] = NOW
    return out


def device_series(device: str, *, online: int, points: int, reported: int, skipped: int, lag: float,
                  observations: list[float], errors: dict[str, int], contact: bool) -> dict[
                      tuple[str, frozenset[tuple[str, str]]], object]:
    labels = frozenset({("device", device)})
    out = {
        ("citytwin_device_online", labels): float(online),
        ("citytwin_device_points_read_total", labels): float(points),
        ("citytwin_device_points_read_created", labels): NOW,
        ("citytwin_device_last_success_timestamp_seconds", labels): NOW if contact else 0.0,
        ("citytwin_device_points_reported_total", labels): float(reported),
        ("citytwin_device_points_reported_created", labels): NOW,
        ("citytwin_device_polls_skipped_total", labels): float(skipped),
        ("citytwin_device_polls_skipped_created", labels): NOW,
        ("citytwin_device_poll_lag_seconds", labels): lag,
        **histogram(device, observations),
    }
    for reason, count in errors.items():
        both = frozenset({("device", device), ("reason", reason)})
        out["citytwin_device_read_errors_total", both] = float(count)
        out["citytwin_device_read_errors_created", both] = NOW
    return out


def test_device_series_exposition() -> None:
    started = time.time()
    metrics = GatewayMetrics("gw-test", process=False)
    a = metrics.device("pump-a", ["start_pump"])
    b = metrics.device("pump-b", [])
    gone = metrics.device("gone", ["start_pump"])

    a.set_online(True)
    a.lag(0.004)
    a.polled(0.003, [*good(2), *bad(2)])
    a.polled(0.02, good(1))
    a.polled(7.0, [])
    a.polled(12.5, bad(1))  # past the last bound: only +Inf
    a.pushed(good(5))
    a.reported(4)
    a.reported(3)
    a.skipped(2)
    a.skipped(1)
    a.lag(0.25)
    a.read_error("RequestTimeout")

    b.read_error("ConnectError")
    b.read_error("ConnectError")
    b.skipped(3)

    gone.set_online(True)
    gone.polled(0.01, bad(1))
    gone.read_error("RequestTimeout")
    gone.skipped(1)
    gone.reported(1)
    metrics.command("gone", "start_pump", "succeeded", 0.01)
    metrics.command("pump-a", "start_pump", "succeeded", 0.01)
    metrics.forget_device("gone")

    # pump-b restarts with a changed config: its series carry on, offline until it answers
    b.set_online(True)
    b2 = metrics.device("pump-b", ["start_pump"])
    b2.polled(0.0001, good(3))
    b2.lag(0.5)
    finished = time.time()

    text = generate_latest(metrics.registry).decode()
    families = list(text_string_to_metric_families(text))
    exposed = [(f.name, f.type, f.documentation) for f in families if f.name.startswith("citytwin_device_")]
    assert exposed == DEVICE_FAMILIES

    samples: dict[tuple[str, frozenset[tuple[str, str]]], object] = {}
    for family in families:
        for s in family.samples:
            if not s.name.startswith("citytwin_device_"):
                continue
            key = (s.name, frozenset(s.labels.items()))
            assert key not in samples, f"{key} exposed twice"
            value: object = s.value
            if s.name.endswith("_created") or s.name == "citytwin_device_last_success_timestamp_seconds":
                if s.value != 0.0:
                    assert started <= s.value <= finished, (key, s.value)
                    value = NOW
            samples[key] = value

    expected = {
        **device_series("pump-a", online=1, points=11, reported=7, skipped=3, lag=0.25,
                        observations=[0.003, 0.02, 7.0, 12.5],
                        errors={"bad_point": 3, "RequestTimeout": 1}, contact=True),
        **device_series("pump-b", online=0, points=3, reported=0, skipped=3, lag=0.5,
                        observations=[0.0001], errors={"ConnectError": 2}, contact=True),
    }
    assert samples == expected

    # the removed device left every family, commands included; the others' commands stay
    assert '"gone"' not in text
    assert 'citytwin_commands_total{device="pump-a",service="start_pump",status="succeeded"} 1.0' in text
    # tests read single samples this way (custom collectors answer too)
    registry = metrics.registry
    assert registry.get_sample_value("citytwin_device_polls_skipped_total", {"device": "pump-b"}) == 3.0
    assert registry.get_sample_value("citytwin_device_polls_skipped_total", {"device": "gone"}) is None
    assert registry.get_sample_value("citytwin_device_read_errors_total",
                                     {"device": "pump-a", "reason": "bad_point"}) == 3.0


def test_a_new_device_exposes_zeros_and_no_error_series() -> None:
    metrics = GatewayMetrics("gw-test", process=False)
    metrics.device("quiet", [])
    text = generate_latest(metrics.registry).decode()
    lines = [line for line in text.splitlines() if line.startswith("citytwin_device_")]
    values = {line.rsplit(" ", 1)[0]: line.rsplit(" ", 1)[1] for line in lines
              if "_created" not in line}
    assert values['citytwin_device_online{device="quiet"}'] == "0.0"
    assert values['citytwin_device_poll_duration_seconds_bucket{device="quiet",le="+Inf"}'] == "0.0"
    assert values['citytwin_device_poll_duration_seconds_bucket{device="quiet",le="0.001"}'] == "0.0"
    assert values['citytwin_device_poll_duration_seconds_count{device="quiet"}'] == "0.0"
    assert values['citytwin_device_last_success_timestamp_seconds{device="quiet"}'] == "0.0"
    assert not any(line.startswith("citytwin_device_read_errors") for line in lines)
    assert len(values) == len(POLL_BUCKETS) + 1 + 2 + 6  # buckets with +Inf, count and sum, 6 more


def test_created_series_follow_prometheus_client_switch() -> None:
    """With ``_created`` switched off, no family carries it: the device series as the others."""
    metrics = GatewayMetrics("gw-test", process=False)
    device = metrics.device("pump-a", ["start_pump"])
    device.polled(0.01, bad(1))
    metrics.command("pump-a", "start_pump", "succeeded", 0.01)
    assert "citytwin_device_points_read_created" in generate_latest(metrics.registry).decode()
    disable_created_metrics()
    try:
        text = generate_latest(metrics.registry).decode()
    finally:
        enable_created_metrics()
    assert "_created" not in text
    assert 'citytwin_device_read_errors_total{device="pump-a",reason="bad_point"} 1.0' in text
    assert 'citytwin_commands_total{device="pump-a",service="start_pump",status="succeeded"} 1.0' in text
