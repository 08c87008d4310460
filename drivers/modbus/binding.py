"""Config models for a Modbus device (TCP or RTU on a serial line) and its points.

Imports pydantic (and the stdlib-only codec), never pymodbus, so that validating a
config does not load protocol libraries. The models are meant to be subclassed: the
gateway adds its own point fields (scale, offset, deadband) in ``PointConfig(ModbusPoint)``;
subclasses inherit ``extra="forbid"`` and the validators.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from citytwin.drivers.fields import IntRange, Port, PositiveFloat
from citytwin.drivers.modbus.codec import BIT_TABLES, WIDTH, PointType, Table, WordOrder


class ModbusTcpConnection(BaseModel):
    """How to reach one Modbus TCP device, and how large its requests may be."""

    model_config = ConfigDict(extra="forbid")

    host: Annotated[str, Field(min_length=1)]
    port: Port = 502
    unit: Annotated[int, IntRange(0, 255)] = 1
    timeout: PositiveFloat = 1.0
    """seconds to wait for the answer to one request"""
    connect_timeout: PositiveFloat = 3.0
    max_gap: Annotated[int, IntRange(0, 2000)] = 8
    """unused registers (or bits) that may be read to join two blocks into one request"""
    max_registers: Annotated[int, IntRange(1, 125)] = 125
    """registers per read request; some devices accept fewer than the standard's 125"""
    max_bits: Annotated[int, IntRange(1, 2000)] = 2000
    """coils or discrete inputs per read request"""


class ModbusRtuConnection(BaseModel):
    """One device (``unit``) on a serial line; devices naming the same ``port`` share it.

    Every device on one line must use the same serial settings: the line is opened once,
    with the settings of the first device that connects.
    """

    model_config = ConfigDict(extra="forbid")

    port: Annotated[str, Field(min_length=1)]
    """the serial device, e.g. /dev/ttyUSB0"""
    baudrate: Annotated[int, IntRange(50, 4_000_000)] = 19200
    parity: Literal["N", "E", "O"] = "E"
    """Modbus over serial line: even parity is the standard's default"""
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    unit: Annotated[int, IntRange(0, 247)] = 1
    timeout: PositiveFloat = 1.0
    """seconds to wait for the answer to one request"""
    connect_timeout: PositiveFloat = 3.0
    max_gap: Annotated[int, IntRange(0, 2000)] = 8
    max_registers: Annotated[int, IntRange(1, 125)] = 125
    max_bits: Annotated[int, IntRange(1, 2000)] = 2000


ModbusLink = ModbusTcpConnection | ModbusRtuConnection
"""The fields the shared request logic uses (unit, timeouts, request sizes) are in both."""


class ModbusPoint(BaseModel):
    """Where one point lives on the device and how its registers encode it.

    Bit tables (coil, discrete_input) hold only ``bool`` and default to it; register
    tables default to ``uint16``.
    """

    model_config = ConfigDict(extra="forbid")

    table: Table
    type: PointType = "uint16"
    address: Annotated[int, IntRange(0, 65535)]
    word_order: WordOrder = "big"
    """for multi-register types: "big" sends the most significant word first"""

    @model_validator(mode="before")
    @classmethod
    def _default_type(cls, data: Any) -> Any:
        if isinstance(data, dict) and "type" not in data and data.get("table") in BIT_TABLES:
            return {**data, "type": "bool"}
        return data

    @field_validator("type")
    @classmethod
    def _type_fits_table(cls, value: PointType, info: ValidationInfo) -> PointType:
        table = info.data.get("table")
        if table is None:  # the table itself was invalid and is reported on its own
            return value
        if table in BIT_TABLES and value != "bool":
            raise PydanticCustomError(
                "bit_table_type",
                "a {table} holds only bool, not {type}",
                {"table": table, "type": value},
            )
        if table not in BIT_TABLES and value == "bool":
            raise PydanticCustomError(
                "register_table_type",
                "bool needs a coil or discrete_input table, not {table}",
                {"table": table},
            )
        return value

    @field_validator("address")
    @classmethod
    def _fits_address_space(cls, value: int, info: ValidationInfo) -> int:
        type_ = info.data.get("type")
        if type_ is None:
            return value
        last = 65536 - WIDTH[type_]
        if value > last:
            raise PydanticCustomError(
                "address_space",
                "a {type} needs {width} registers, so must be 0..{last}",
                {"type": type_, "width": WIDTH[type_], "last": last},
            )
        return value
