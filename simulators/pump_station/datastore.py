"""pymodbus 3.16 datastore that answers from the live station instead of stored registers.

Why this hook: in 3.16 a ``ModbusDeviceContext`` (subclass or not) is copied into a static
``SimDevice`` when the server is built, so its ``getValues`` never runs; and a
``SimDevice(action=...)`` sees coils only as whole 16-bit words, so it cannot refuse a read
ending past coil 101. The request handler calls the server context's ``async_getValues`` /
``async_setValues`` with the exact function code, address and count, and ``ModbusBaseServer``
uses a ``ModbusServerContext`` as-is when ``old_simulator`` is set.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext

from citytwin.simulators.pump_station import registers
from citytwin.simulators.pump_station.physics import PumpStation

Reader = Callable[[PumpStation, int, int], list[bool] | list[int]]
Writer = Callable[[PumpStation, int, Sequence[int]], None]

# Function code -> table. Writes of one coil/register are read back with their own code.
_READERS: dict[int, Reader] = {
    1: registers.read_coils,
    5: registers.read_coils,
    15: registers.read_coils,
    2: registers.read_discrete_inputs,
    4: registers.read_input_registers,
    3: registers.read_holding_registers,
    6: registers.read_holding_registers,
    16: registers.read_holding_registers,
    22: registers.read_holding_registers,
    23: registers.read_holding_registers,
}
_WRITERS: dict[int, Writer] = {
    5: registers.write_coils,
    15: registers.write_coils,
    6: registers.write_holding_registers,
    16: registers.write_holding_registers,
    22: registers.write_holding_registers,
    23: registers.write_holding_registers,
}


class StationContext(ModbusServerContext):
    """Serves one unit id; other unit ids get exception 11 (gateway target no response)."""

    def __init__(self, station: PumpStation, unit: int) -> None:
        self.station = station
        self.unit = unit
        self.old_simulator = True  # ModbusBaseServer: use this context as-is, no SimCore copy
        self.simdevices = []

    def device_ids(self) -> list[int]:
        return [self.unit]

    async def async_getValues(
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        if device_id != self.unit:
            return ExcCodes.GATEWAY_NO_RESPONSE
        reader = _READERS.get(func_code)
        if reader is None:
            return ExcCodes.ILLEGAL_FUNCTION
        try:
            return reader(self.station, address, count)
        except registers.RegisterMapError as exc:
            return ExcCodes(exc.code)

    async def async_setValues(
        self,
        device_id: int,
        func_code: int,
        address: int,
        values: Sequence[int] | Sequence[bool],
    ) -> ExcCodes | None:
        if device_id != self.unit:
            return ExcCodes.GATEWAY_NO_RESPONSE
        writer = _WRITERS.get(func_code)
        if writer is None:
            return ExcCodes.ILLEGAL_FUNCTION
        try:
            writer(self.station, address, values)
        except registers.RegisterMapError as exc:
            return ExcCodes(exc.code)
        return None
