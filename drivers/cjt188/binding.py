"""Config models for a CJ/T 188-2018 water, heat or gas meter and its points.

One meter data read (DI 901FH) answers every quantity of the meter at once, so a point names
a ``field`` of that answer; the status bits are fields of their own (``valve_open``,
``valve_state``, ``battery_low``). ``valve_open`` is also the one writable point: writing it
sends the valve control command (DI A017H) and checks the state the meter answers with.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from citytwin.drivers.cjt188.codec import METER_TYPES, NUMERIC_FIELDS, fields_of, parse_address
from citytwin.drivers.serialline import LineConnection

MeterType = Literal["cold_water", "hot_water", "drinking_water", "reclaimed_water", "heat", "cooling",
                    "heat_and_cooling", "gas"]

FieldName = Literal[
    "accumulated_flow", "settlement_flow", "clock", "status", "valve_open", "valve_state", "battery_low",
    "settlement_heat", "heat", "heat_power", "flow_rate", "supply_temperature", "return_temperature",
    "working_hours",
]


class Cjt188Connection(LineConnection):
    """One meter (``meter_type`` and ``address``) on a line shared with any other meters."""

    meter_type: MeterType
    address: str
    """the 14-digit address as printed on the meter (with the maker's code, if it counts one)"""
    di_order: Literal["little", "big"] = "little"
    """how the DI travels: 2018 edition lowest byte first; many 2004-edition meters "big" """
    valve: bool = False
    """the meter has a valve it opens and closes on command (needed to write valve_open)"""

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        try:
            parse_address(value)
        except ValueError as exc:
            raise PydanticCustomError("cjt188_address", str(exc)) from None
        return value.upper()

    @property
    def type_code(self) -> int:
        return METER_TYPES[self.meter_type]


class Cjt188Point(BaseModel):
    """One field of the meter data answer, checked against the meter type in the config check
    of the driver (a heat meter has supply_temperature, a water meter does not)."""

    model_config = ConfigDict(extra="forbid")

    field: FieldName
    meter_type: Annotated[MeterType | None, Field(validate_default=True)] = None
    """optional: repeats the connection's meter_type so this point is checked against it"""

    @field_validator("meter_type")
    @classmethod
    def _field_of_type(cls, value: MeterType | None, info: ValidationInfo) -> MeterType | None:
        name = info.data.get("field")
        if value is not None and name is not None and name not in fields_of(METER_TYPES[value]):
            raise PydanticCustomError(
                "cjt188_field", "a {type} meter has no {field}", {"type": value, "field": name}
            )
        return value

    @property
    def writable(self) -> bool:
        return self.field == "valve_open"

    @property
    def is_text(self) -> bool:
        return self.field in ("clock", "valve_state")

    @property
    def is_integer(self) -> bool:
        return self.field in ("status", "working_hours")

    @property
    def is_numeric(self) -> bool:
        return self.field in NUMERIC_FIELDS
