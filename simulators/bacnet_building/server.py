"""The building served as one BACnet/IP device (bacpypes3 application on its own UDP port)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from bacpypes3.app import Application
from bacpypes3.local.device import DeviceObject
from bacpypes3.local.networkport import NetworkPortObject

from citytwin.simulators.bacnet_building.building import Building
from citytwin.simulators.lifecycle import Simulator, tick_forever

log = logging.getLogger(__name__)

TICK_S = 0.5


class BuildingSimulator(Simulator):
    """One device at ``host:port`` (distinct from any client's port on the same host)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 47808, device_id: int = 1001,
                 zones: int = 4, speed: float = 1.0, seed: int | None = None,
                 building: Building | None = None) -> None:
        self.host, self.port, self.device_id = host, port, device_id
        self.speed = speed
        self.building = building or Building(zones, seed)
        self.app: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        device = DeviceObject(
            objectIdentifier=("device", self.device_id),
            objectName=f"citytwin-building-{self.device_id}",
            vendorIdentifier=999,
            modelName="citytwin bacnet-building simulator",
        )
        port = NetworkPortObject(
            f"{self.host}:{self.port}",
            objectIdentifier=("network-port", 1),
            objectName="NetworkPort-1",
            networkNumber=0,
            networkNumberQuality="unknown",
        )
        self.app = Application.from_object_list([device, port, *self.building.objects.values()])
        self._task = asyncio.create_task(
            tick_forever(lambda dt: self.building.step(dt * self.speed), TICK_S), name="bacnet-building"
        )
        log.info("bacnet-building: device %d on %s:%d (%d zones)", self.device_id, self.host,
                 self.port, self.building.zones)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self.app is not None:
            app, self.app = self.app, None
            # the objects outlive this application (a restart serves them again): detach them
            for obj in self.building.objects.values():
                obj._app = None
            app.close()


async def serve(host: str, port: int, device_id: int, zones: int, speed: float, seed: int | None) -> None:
    """``citytwin sim bacnet-building``: serve until cancelled."""
    async with BuildingSimulator(host, port, device_id, zones, speed, seed):
        await asyncio.Event().wait()
