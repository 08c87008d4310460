"""The pump station served as a Modbus RTU slave on a serial line (the older PLCs' way).

Same station, physics and register map as the TCP server (``server.py``); only the
transport differs. On a serial bus a slave must stay silent for frames addressed to other
unit ids (the master times out), where the TCP server answers exception 11 instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer

from citytwin.simulators.lifecycle import Simulator, tick_forever
from citytwin.simulators.pump_station.datastore import StationContext
from citytwin.simulators.pump_station.physics import PumpStation

log = logging.getLogger(__name__)


class _SerialStationContext(StationContext):
    """Frames for other unit ids get no answer at all."""

    async def async_getValues(
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        if device_id != self.unit:
            raise NoSuchIdException(f"unit {device_id}")
        return await super().async_getValues(device_id, func_code, address, count)

    async def async_setValues(
        self, device_id: int, func_code: int, address: int, values: Sequence[int] | Sequence[bool]
    ) -> ExcCodes | None:
        if device_id != self.unit:
            raise NoSuchIdException(f"unit {device_id}")
        return await super().async_setValues(device_id, func_code, address, values)


class PumpStationRtuSimulator(Simulator):
    """The station on serial ``port`` (a real tty or one end of a ``socat`` pty pair)."""

    def __init__(
        self,
        port: str,
        unit: int = 1,
        baudrate: int = 19200,
        parity: str = "E",
        stopbits: int = 1,
        bytesize: int = 8,
        tick: float = 0.1,
        speed: float = 1.0,
        seed: int | None = None,
        initial_level: float = 2.0,
    ) -> None:
        if tick <= 0.0:
            raise ValueError("tick must be positive")
        self.port = port
        self.unit = unit
        self.serial = (baudrate, parity, stopbits, bytesize)
        self.tick = tick
        self.station = PumpStation(seed=seed, initial_level=initial_level, speed=speed)
        self._server: ModbusSerialServer | None = None
        self._physics: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("simulator already started")
        baudrate, parity, stopbits, bytesize = self.serial
        server = ModbusSerialServer(
            _SerialStationContext(self.station, self.unit),
            framer=FramerType.RTU,
            port=self.port,
            baudrate=baudrate,
            parity=parity,
            stopbits=stopbits,
            bytesize=bytesize,
            ignore_missing_devices=True,
        )
        if not await server.listen():
            raise OSError(f"pump-station RTU simulator cannot open {self.port}")
        self._server = server
        self._physics = asyncio.create_task(
            tick_forever(self.station.step, self.tick), name="pump-station-rtu-physics"
        )

    async def stop(self) -> None:
        server, self._server = self._server, None
        physics, self._physics = self._physics, None
        if physics is not None:
            physics.cancel()
            await asyncio.wait([physics])
        if server is not None:
            server.close()



async def serve_rtu(
    port: str,
    unit: int = 1,
    baudrate: int = 19200,
    parity: str = "E",
    speed: float = 1.0,
    seed: int | None = None,
) -> None:
    """Run the RTU simulator until cancelled (``citytwin sim pump-station --serial PORT``)."""
    sim = PumpStationRtuSimulator(port, unit=unit, baudrate=baudrate, parity=parity, speed=speed, seed=seed)
    async with sim:
        log.info("pump-station RTU simulator on %s unit %d", port, unit)
        await asyncio.Event().wait()
