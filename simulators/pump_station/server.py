"""The pump station served as a Modbus TCP server, with its physics ticking alongside.

``rtu_over_tcp=True`` frames the same answers as Modbus RTU (unit id and CRC, no MBAP
header) on the TCP socket, as a serial device server in transparent mode passes an RTU
line through.
"""

from __future__ import annotations

import asyncio
import logging

from pymodbus.framer import FramerType
from pymodbus.server import ModbusTcpServer

from citytwin.simulators.lifecycle import Simulator, tick_forever
from citytwin.simulators.pump_station.datastore import StationContext
from citytwin.simulators.pump_station.physics import PumpStation

log = logging.getLogger(__name__)



class PumpStationSimulator(Simulator):
    """Start/stop-able simulator; ``station`` is the live model for in-process inspection.

    ``port=0`` binds a free port; ``port`` then holds the bound one, and a restart reuses it.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 5020,
        unit: int = 1,
        tick: float = 0.1,
        speed: float = 1.0,
        seed: int | None = None,
        initial_level: float = 2.0,
        rtu_over_tcp: bool = False,
    ) -> None:
        if tick <= 0.0:
            raise ValueError("tick must be positive")
        self.rtu_over_tcp = rtu_over_tcp
        self.host = host
        self.port = port
        self.unit = unit
        self.tick = tick
        self.station = PumpStation(seed=seed, initial_level=initial_level, speed=speed)
        self._server: ModbusTcpServer | None = None
        self._physics: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("simulator already started")
        server = ModbusTcpServer(
            StationContext(self.station, self.unit),
            framer=FramerType.RTU if self.rtu_over_tcp else FramerType.SOCKET,
            address=(self.host, self.port),
        )
        try:
            await server.serve_forever(background=True)
        except RuntimeError as exc:  # pymodbus reports a failed bind this way
            raise OSError(
                f"pump-station simulator cannot listen on {self.host}:{self.port}"
            ) from exc
        sockets = getattr(server.transport, "sockets", None) or ()
        if sockets:
            self.port = sockets[0].getsockname()[1]
        self._server = server
        self._physics = asyncio.create_task(
            tick_forever(self.station.step, self.tick), name="pump-station-physics"
        )

    async def stop(self) -> None:
        server, self._server = self._server, None
        physics, self._physics = self._physics, None
        if physics is not None:
            physics.cancel()
            await asyncio.wait([physics])  # unlike ``await physics``, keeps our own cancellation
        if server is not None:
            # Closes the listener and every client connection at once; ``shutdown()`` would
            # only add resolving ``serving``, which background mode never awaits.
            server.close()



async def serve(
    host: str = "127.0.0.1",
    port: int = 5020,
    unit: int = 1,
    speed: float = 1.0,
    seed: int | None = None,
    rtu_over_tcp: bool = False,
) -> None:
    """Run the simulator until cancelled (``citytwin sim pump-station``)."""
    sim = PumpStationSimulator(
        host=host, port=port, unit=unit, speed=speed, seed=seed, rtu_over_tcp=rtu_over_tcp
    )
    async with sim:
        framing = "RTU over TCP" if rtu_over_tcp else "Modbus TCP"
        log.info(
            "pump-station simulator (%s) listening on %s:%d unit %d",
            framing, sim.host, sim.port, sim.unit,
        )
        await asyncio.Event().wait()
