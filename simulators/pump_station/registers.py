"""The station's Modbus register map (register_map.md): state to words, writes to commands.

Protocol-neutral on purpose (no pymodbus here), so the map can be read and tested on its
own; errors carry the Modbus exception code the server must answer with.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import TypeVar

from citytwin.simulators.pump_station.physics import SETPOINT_MAX_HZ, SETPOINT_MIN_HZ, PumpStation

ILLEGAL_DATA_ADDRESS = 2
ILLEGAL_DATA_VALUE = 3

# Table sizes: reads must end inside the table; unmapped addresses inside it read as 0.
COIL_COUNT = 102
INPUT_REGISTER_COUNT = 22
HOLDING_REGISTER_COUNT = 4

COIL_RUN_CMD = {0: 1, 1: 2}  # address -> pump number
COIL_FAULT_RESET = {2: 1, 3: 2}
COIL_SIM_FAULT = {100: 1, 101: 2}
HOLDING_SETPOINT = {0: 1, 2: 2}  # first register of each float32 -> pump number

_T = TypeVar("_T")


class RegisterMapError(Exception):
    """A request the map refuses; ``code`` is the Modbus exception code to answer with."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def read_coils(station: PumpStation, address: int, count: int) -> list[bool]:
    image = [False] * COIL_COUNT
    for addr, number in COIL_RUN_CMD.items():
        image[addr] = station.pump(number).run_cmd
    for addr, number in COIL_SIM_FAULT.items():
        image[addr] = station.pump(number).fault
    return _window(image, address, count)  # fault-reset coils are momentary: read back 0


def read_discrete_inputs(station: PumpStation, address: int, count: int) -> list[bool]:
    pump1, pump2 = station.pumps
    image = [pump1.running, pump1.fault, pump2.running, pump2.fault, station.high_level_float]
    return _window(image, address, count)


def read_input_registers(station: PumpStation, address: int, count: int) -> list[int]:
    pump1, pump2 = station.pumps
    image = [0] * INPUT_REGISTER_COUNT
    image[0:2] = _float32(station.level)
    image[2:4] = _float32(station.inflow)
    image[4:6] = _float32(station.outflow)
    image[6] = _scaled16(station.outlet_pressure, 0.1)
    for base, pump in ((8, pump1), (12, pump2)):
        image[base : base + 2] = _uint32(int(pump.run_hours * 100.0))  # truncate: never runs ahead
        image[base + 2] = _scaled16(pump.current, 0.1)
        image[base + 3] = _scaled16(pump.frequency, 0.01)
    image[20:22] = _uint32(station.write_count)
    return _window(image, address, count)


def read_holding_registers(station: PumpStation, address: int, count: int) -> list[int]:
    image = [0] * HOLDING_REGISTER_COUNT
    for addr, number in HOLDING_SETPOINT.items():
        image[addr : addr + 2] = _float32(station.pump(number).setpoint)
    return _window(image, address, count)


def write_coils(station: PumpStation, address: int, values: Sequence[int]) -> None:
    """Apply a coil write; all-or-nothing, so a refused request changes no state."""
    addresses = range(address, address + len(values))
    writable = COIL_RUN_CMD.keys() | COIL_FAULT_RESET.keys() | COIL_SIM_FAULT.keys()
    if not values or any(addr not in writable for addr in addresses):
        raise RegisterMapError(ILLEGAL_DATA_ADDRESS, f"coils {address}+{len(values)} not writable")
    for addr, value in zip(addresses, values, strict=True):
        if addr in COIL_RUN_CMD:
            station.set_run(COIL_RUN_CMD[addr], bool(value))
        elif addr in COIL_FAULT_RESET and value:
            station.reset_fault(COIL_FAULT_RESET[addr])
        elif addr in COIL_SIM_FAULT and value:
            station.inject_fault(COIL_SIM_FAULT[addr])
    station.write_count += 1


def write_holding_registers(station: PumpStation, address: int, values: Sequence[int]) -> None:
    """Apply a setpoint write; each float32 must be written whole, and all-or-nothing."""
    end = address + len(values)
    if not values or address % 2 or len(values) % 2 or address < 0 or end > HOLDING_REGISTER_COUNT:
        raise RegisterMapError(
            ILLEGAL_DATA_ADDRESS,
            f"holding {address}+{len(values)}: write whole float32 pairs in 0..3",
        )
    setpoints = {}
    for addr in range(address, end, 2):
        hz = struct.unpack(
            ">f", struct.pack(">HH", values[addr - address], values[addr - address + 1])
        )[0]
        if not (math.isfinite(hz) and SETPOINT_MIN_HZ <= hz <= SETPOINT_MAX_HZ):
            raise RegisterMapError(
                ILLEGAL_DATA_VALUE, f"setpoint {hz} Hz outside {SETPOINT_MIN_HZ}..{SETPOINT_MAX_HZ}"
            )
        setpoints[HOLDING_SETPOINT[addr]] = hz
    for number, hz in setpoints.items():
        station.set_setpoint(number, hz)
    station.write_count += 1


def _window(image: list[_T], address: int, count: int) -> list[_T]:
    if count < 1 or address < 0 or address + count > len(image):
        raise RegisterMapError(
            ILLEGAL_DATA_ADDRESS, f"{address}+{count} outside 0..{len(image) - 1}"
        )
    return image[address : address + count]


def _float32(value: float) -> list[int]:
    high, low = struct.unpack(">HH", struct.pack(">f", value))  # big-endian words, "ABCD"
    return [high, low]


def _uint32(value: int) -> list[int]:
    value = min(max(value, 0), 0xFFFFFFFF)
    return [value >> 16, value & 0xFFFF]


def _scaled16(value: float, resolution: float) -> int:
    return min(max(round(value / resolution), 0), 0xFFFF)
