"""`citytwin run` freezes the heap it keeps after start-up out of the garbage collector's way
(a full collection walked 1,000 devices' worth of objects: 60 ms of CPU, commands waiting),
and thaws it for a reload, so what the old config leaves behind can still be collected."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

from harness import InProcessGateway
from test_overload_runtime import HeldReads, config

from citytwin.gateway.app import Gateway


class Cycle:
    def __init__(self) -> None:
        self.me = self


async def test_the_heap_is_frozen_after_start_and_thawed_for_a_reload(tmp_path: Path) -> None:
    device = HeldReads()
    harness = InProcessGateway(config(["a"]), tmp_path, device.handle)
    gw = Gateway(harness.config, harness.specs, tmp_path / "test.yaml", driver_factory=harness._make_driver,
                 settle_heap=True)
    gw.drain_timeout = 0.1
    try:
        assert gc.get_freeze_count() == 0
        async with gw:
            assert gc.get_freeze_count() > 0
            leftover = Cycle()  # garbage in a cycle, made before a freeze: what a config leaves
            gone = weakref.ref(leftover)
            del leftover
            gw.settle_heap = False
            gc.freeze()  # as if it had been there at start-up
            gw.settle_heap = True
            gc.collect()
            assert gone() is not None  # frozen: never walked
            assert (await gw.reload())["result"] in ("applied", "unchanged")
            assert gone() is None  # thawed for the reload, collected, then the rest frozen again
            assert gc.get_freeze_count() > 0
        # a gateway in a test process leaves the collector as it found it
        plain = Gateway(harness.config, harness.specs, driver_factory=harness._make_driver)
        assert plain.settle_heap is False
    finally:
        gc.unfreeze()
