"""Config models for a DL/T 645-2007 meter, its points (one data identifier each) and calls.

Imports pydantic and the stdlib-only codec, never pyserial. A point names its DI as the
standard prints it (``"02010100"``: phase A voltage), quoted, since YAML would read an
unquoted ``02010100`` as a number and lose its leading zero.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from citytwin.drivers.dlt645.codec import parse_address
from citytwin.drivers.dlt645.identifiers import DataFormat, block_members, data_format, number
from citytwin.drivers.fields import IntRange
from citytwin.drivers.serialline import LineConnection

CONTROL_CODES: dict[str, int] = {
    "trip": 0x1A,  # 跳闸
    "close_allow": 0x1B,  # 合闸允许
    "close": 0x1C,  # 直接合闸
    "alarm": 0x2A,
    "alarm_release": 0x2B,
    "hold": 0x3A,  # 保电: the meter will not trip
    "hold_release": 0x3B,
}
"""the remote control command (control code 1CH), N1 byte; each needs the meter's password"""


class Dlt645Connection(LineConnection):
    """One meter (``address``) on a line shared with any other meters on it."""

    address: str
    """the meter's 12-digit address as printed on it; AAAAAAAAAAAA for a meter alone on a line"""
    time_sync: bool = False
    """allow the ``time_sync`` call: a broadcast that sets the clock of every meter on the line"""
    password_file: Path | None = None
    """a file holding the control password (8 digits: level PA, then P2 P1 P0); never in the
    config. Read when a control command is sent; a relative path is the gateway's working
    directory's, so give an absolute one."""
    operator: Annotated[str, Field(pattern=r"^[0-9A-Fa-f]{8}$")] = "00000000"
    """operator code C3 C2 C1 C0 sent with control commands (recorded by the meter)"""

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        try:
            parse_address(value)
        except ValueError as exc:
            raise PydanticCustomError("dlt645_address", str(exc)) from None
        return value.upper()


def _pattern_format(pattern: str, signed: bool) -> DataFormat:
    return number(pattern, "custom", "", signed)


class Dlt645Point(BaseModel):
    """One value: a data identifier, and for a block DI the ``member`` (0: the first)."""

    model_config = ConfigDict(extra="forbid")

    di: Annotated[str, Field(pattern=r"^[0-9A-Fa-f]{8}$")]
    """DI3 DI2 DI1 DI0 as the standard prints it, e.g. "00010000" forward active total energy"""
    member: Annotated[int, IntRange(0, 63)] | None = None
    """for a block DI (FF in one byte): which value of the block"""
    part: Literal["value", "time"] = "value"
    """for a maximum demand DI: the demand, or when it occurred (ISO text)"""
    format: Annotated[str | None, Field(pattern=r"^X+(\.X+)?$")] = None
    """for a DI missing from the codec's table: its BCD layout, e.g. "XXX.XXX" """
    signed: bool = False
    """with ``format``: bit 7 of the top byte is the sign"""

    @field_validator("di", mode="before")
    @classmethod
    def _quoted(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):
            raise PydanticCustomError(
                "dlt645_di", 'quote the DI ("02010100"): as a number it loses its leading zeros'
            )
        return value

    @model_validator(mode="after")
    def _known(self) -> Self:
        if self.format is not None:
            if len(self.format.replace(".", "")) % 2:
                raise PydanticCustomError("dlt645_format", "a BCD format has an even number of digits")
            return self
        if self.signed:
            raise PydanticCustomError("dlt645_format", "signed goes with format (the table knows its DIs)")
        fmt = data_format(self.di_value)
        if fmt is None:
            raise PydanticCustomError(
                "dlt645_di", "DI {di} is not in the codec's table: give its format (e.g. XXX.XX)",
                {"di": self.di},
            )
        members = block_members(self.di_value)
        if (members is None) != (self.member is None):
            raise PydanticCustomError(
                "dlt645_member", "a block DI (FF in one byte) needs member, and only it takes one"
            )
        if members is not None and self.member is not None and self.member >= members:
            raise PydanticCustomError("dlt645_member", "this block has at most {n} members", {"n": members})
        if self.part == "time" and fmt.kind != "demand":
            raise PydanticCustomError("dlt645_part", "part: time is for maximum demand DIs only")
        return self

    @property
    def di_value(self) -> int:
        return int(self.di, 16)

    @property
    def data_format(self) -> DataFormat:
        if self.format is not None:
            return _pattern_format(self.format, self.signed)
        fmt = data_format(self.di_value)
        assert fmt is not None  # checked by the validator
        return fmt

    @property
    def is_text(self) -> bool:
        return self.part == "time" or self.data_format.kind in ("clock", "digits")

    @property
    def is_integer(self) -> bool:
        fmt = self.data_format
        return not self.is_text and (fmt.kind == "word" or fmt.decimals == 0)


class Dlt645Call(BaseModel):
    """A service's call: a broadcast ``time_sync`` or a remote control command."""

    model_config = ConfigDict(extra="forbid")

    command: Literal["time_sync", "trip", "close_allow", "close", "alarm", "alarm_release", "hold", "hold_release"]
    valid_minutes: Annotated[int, IntRange(1, 7 * 24 * 60)] = 10
    """a control command's validity: the meter ignores it after this many minutes"""
