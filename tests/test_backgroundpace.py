"""Background work (twin publication and persistence) paced to a share of the CPU budget."""

from __future__ import annotations

import asyncio

import pytest

from citytwin.gateway.backgroundpace import BackgroundPace


class Budget:
    def __init__(self, cores: float | None) -> None:
        self.cores = cores


def test_the_gap_keeps_the_work_at_its_share_of_the_budget() -> None:
    pace = BackgroundPace(Budget(0.25), share=0.2)
    # 5 ms of CPU at a fifth of a quarter core (0.05 core): 100 ms per piece, 95 ms of it waiting
    assert pace.gap(0.005) == pytest.approx(0.095)
    assert BackgroundPace(Budget(2.0), share=0.2).gap(0.005) == pytest.approx(0.0075)
    assert BackgroundPace(Budget(None)).gap(0.005) == 0.0  # not controlled: no wait
    assert BackgroundPace(None).gap(0.005) == 0.0


async def test_pause_waits_for_the_cpu_measured_since_start_or_the_spread_if_longer() -> None:
    clock = [10.0]
    pace = BackgroundPace(Budget(1.0), share=0.5, clock=lambda: clock[0])
    loop = asyncio.get_running_loop()
    pace.start()
    clock[0] += 0.02  # 20 ms of CPU: as long again to wait at half a core
    began = loop.time()
    await pace.pause()
    assert loop.time() - began >= 0.02 * 0.99
    pace.start()
    assert pace.spent() == 0.0
    began = loop.time()
    await pace.pause(at_least=0.03, spent=0.001)  # the caller's own count; the spread is longer
    assert loop.time() - began >= 0.03 * 0.99
