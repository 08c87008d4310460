"""Config models for a Modbus device (TCP or RTU on a serial line) and its points.

Imports pydantic (and the stdlib-only codec), never pymodbus, so that validating a
config does not load protocol libraries. The models are meant to be subclassed: the
gateway adds its own point fields (scale, offset, deadband) in ``PointConfig(ModbusPoint)``;
subclasses inherit ``extra="forbid"`` and the validators.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from citytwin.drivers.fields import IntRange, Port, PositiveFloat
from citytwin.drivers.modbus.codec import (
    BIT_TABLES,
    MAX_STRING_REGISTERS,
    WRITABLE_TABLES,
    ByteOrder,
    Encoding,
    PointType,
    Table,
    WordOrder,
    value_width,
)

Unit = Annotated[int, IntRange(0, 255)]


def _check_unit(unit: int, broadcast_writes: bool, verify: bool) -> None:
    if unit == 0 and not broadcast_writes:
        raise PydanticCustomError(
            "broadcast_unit",
            "unit 0 is the broadcast address: devices do not answer it, so it cannot be "
            "read; set broadcast_writes: true for a write-only broadcast device",
        )
    if broadcast_writes and unit != 0:
        raise PydanticCustomError(
            "broadcast_unit", "broadcast_writes needs unit 0 (the broadcast address)"
        )
    if broadcast_writes and verify:
        raise PydanticCustomError(
            "broadcast_unit", "verify needs an answer, and a broadcast gets none"
        )


class ModbusTcpConnection(BaseModel):
    """How to reach one Modbus TCP device, and how large its requests may be."""

    model_config = ConfigDict(extra="forbid")

    host: Annotated[str, Field(min_length=1)]
    port: Port = 502
    unit: Unit = 1
    timeout: PositiveFloat = 1.0
    """seconds to wait for the answer to one request"""
    connect_timeout: PositiveFloat = 3.0
    max_gap: Annotated[int, IntRange(0, 2000)] = 8
    """unused registers (or bits) that may be read to join two blocks into one request"""
    max_registers: Annotated[int, IntRange(1, 125)] = 125
    """registers per read request; some devices accept fewer than the standard's 125"""
    max_bits: Annotated[int, IntRange(1, 2000)] = 2000
    """coils or discrete inputs per read request"""
    verify: bool = False
    """read every write back and fail it when the device holds something else"""
    broadcast_writes: bool = False
    """with unit 0 only: send writes to every device on the line, unanswered (no reads)"""
    broadcast_pause: Annotated[float, Field(ge=0.0, le=10.0)] = 0.1
    """seconds the link stays quiet after a broadcast, while the devices act on it"""

    @model_validator(mode="after")
    def _broadcast(self) -> Self:
        _check_unit(self.unit, self.broadcast_writes, self.verify)
        return self


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
    """1..247; 0 is the broadcast address (see broadcast_writes)"""
    timeout: PositiveFloat = 1.0
    """seconds to wait for the answer to one request"""
    connect_timeout: PositiveFloat = 3.0
    max_gap: Annotated[int, IntRange(0, 2000)] = 8
    max_registers: Annotated[int, IntRange(1, 125)] = 125
    max_bits: Annotated[int, IntRange(1, 2000)] = 2000
    verify: bool = False
    broadcast_writes: bool = False
    broadcast_pause: Annotated[float, Field(ge=0.0, le=10.0)] = 0.1

    @model_validator(mode="after")
    def _broadcast(self) -> Self:
        _check_unit(self.unit, self.broadcast_writes, self.verify)
        return self


class ModbusRtuOverTcpConnection(ModbusTcpConnection):
    """RTU frames (unit id and CRC, no MBAP header) over a TCP socket, as serial device
    servers and some RTU-to-Ethernet converters speak them in "transparent" mode."""

    unit: Annotated[int, IntRange(0, 247)] = 1


ModbusLink = ModbusTcpConnection | ModbusRtuConnection
"""The fields the shared request logic uses (unit, timeouts, request sizes) are in both."""


class ModbusPoint(BaseModel):
    """Where one point lives on the device and how its registers encode it.

    Bit tables (coil, discrete_input) hold only ``bool`` and default to it; register
    tables default to ``uint16``, and hold a ``bool`` only as one ``bit`` of a register.
    A ``string`` spans ``length`` registers, two bytes each, first character in the high
    byte (``byte_order: little``: in the low byte).
    """

    model_config = ConfigDict(extra="forbid")

    table: Table
    type: PointType = "uint16"
    length: Annotated[int | None, Field(validate_default=True)] = None
    """string only: the registers the string occupies (two bytes each)"""
    address: Annotated[int, IntRange(0, 65535)]
    bit: Annotated[int | None, Field(validate_default=True)] = None
    """bool in a holding or input register: the bit, 0 (least significant) .. 15"""
    word_order: WordOrder = "big"
    """for multi-register types: "big" sends the most significant word first"""
    byte_order: ByteOrder = "big"
    """"little" swaps the two bytes inside every register (BADC, DCBA layouts)"""
    encoding: Encoding = "ascii"
    """string only"""
    write_mode: Literal["read_modify_write", "mask"] = "read_modify_write"
    """how a bit inside a holding register is written: read the register, change the bit
    and write it back (under the driver's lock), or one mask write (function 22)"""
    verify: bool | None = None
    """read this point back after writing it; None follows the connection's ``verify``"""

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
        return value

    @field_validator("length")
    @classmethod
    def _length_for_strings(cls, value: int | None, info: ValidationInfo) -> int | None:
        type_ = info.data.get("type")
        if type_ == "string":
            if value is None:
                raise PydanticCustomError("string_length", "a string needs its length in registers")
            if isinstance(value, bool) or not 1 <= value <= MAX_STRING_REGISTERS:
                raise PydanticCustomError(
                    "string_length", "must be 1..{hi}", {"hi": MAX_STRING_REGISTERS}
                )
        elif value is not None and type_ is not None:
            raise PydanticCustomError("string_length", "only a string has a length")
        return value

    @field_validator("address")
    @classmethod
    def _fits_address_space(cls, value: int, info: ValidationInfo) -> int:
        type_ = info.data.get("type")
        if type_ is None or (type_ == "string" and info.data.get("length") is None):
            return value
        width = value_width(type_, info.data.get("length"))
        last = 65536 - width
        if value > last:
            raise PydanticCustomError(
                "address_space",
                "a {type} needs {width} registers, so must be 0..{last}",
                {"type": type_, "width": width, "last": last},
            )
        return value

    @field_validator("bit")
    @classmethod
    def _bit_in_register(cls, value: int | None, info: ValidationInfo) -> int | None:
        table, type_ = info.data.get("table"), info.data.get("type")
        if table is None or type_ is None:
            return value
        if value is None:
            if type_ == "bool" and table not in BIT_TABLES:
                raise PydanticCustomError(
                    "register_bit",
                    "a bool in a {table} needs bit: 0..15 (or use a coil or discrete_input)",
                    {"table": table},
                )
            return value
        if isinstance(value, bool) or not 0 <= value <= 15:
            raise PydanticCustomError("register_bit", "must be 0..15")
        if type_ != "bool" or table in BIT_TABLES:
            raise PydanticCustomError(
                "register_bit", "bit is for a bool inside a holding or input register"
            )
        return value

    @model_validator(mode="after")
    def _options_fit_type(self) -> Self:
        if self.type != "string" and self.encoding != "ascii":
            raise PydanticCustomError("point_option", "encoding is for strings only")
        if self.type == "string" and self.word_order != "big":
            raise PydanticCustomError(
                "point_option", "a string's characters run in address order: no word_order"
            )
        if self.write_mode == "mask" and (self.bit is None or self.table != "holding_register"):
            raise PydanticCustomError(
                "point_option", "write_mode mask is for a bit inside a holding register"
            )
        return self

    @property
    def width(self) -> int:
        """Registers (or bits) the value occupies."""
        return value_width(self.type, self.length)

    @property
    def writable(self) -> bool:
        return self.table in WRITABLE_TABLES
