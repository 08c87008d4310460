"""Config models for an SL 651-2014 remote station (遥测站), its elements and queries.

Imports pydantic only. The connection holds the listening endpoint stations call and
this station's identity: its 5-byte address (10 hex digits) and 2-byte password (4 hex
digits; inline as a secret or a file path, never logged).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from citytwin.drivers.fields import IntRange, PositiveFloat

_FUNCTIONS = {"2F", "30", "31", "32", "33", "34", "37", "38"}


class Sl651Connection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: Annotated[str, Field(min_length=1)] = "0.0.0.0"
    port: Annotated[int, IntRange(0, 65535)]
    station: Annotated[str, Field(pattern=r"^[0-9A-Fa-f]{10}$")]
    """the remote station address, 10 hex digits (5 bytes)"""
    password: SecretStr | None = None
    password_file: Path | None = None
    centre: Annotated[int, IntRange(1, 255)] = 1
    """our centre station address"""
    encoding: Literal["hex", "ascii"] = "hex"
    """the encoding of the queries we send (reports are accepted in either)"""
    crc: Literal["strict", "lenient"] = "strict"
    utc_offset: Annotated[float, Field(ge=-12, le=14)] = 8.0
    timeout: PositiveFloat = 10.0
    frame_timeout: PositiveFloat = 10.0
    idle_timeout: PositiveFloat = 600.0

    @field_validator("station")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()

    @field_validator("password")
    @classmethod
    def _password(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            text = value.get_secret_value()
            if len(text) != 4 or any(c not in "0123456789abcdefABCDEF" for c in text):
                raise ValueError("must be 4 hex digits")
            return SecretStr(text.upper())
        return value

    @model_validator(mode="after")
    def _one_password(self) -> Sl651Connection:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give 'password' or 'password_file', not both")
        return self


class Sl651Point(BaseModel):
    """One element by its ASCII identifier (``PJ``, ``PT``, ``Z``, ``VT``, ``Q``, …);
    ``functions`` limits which messages feed it (hex codes; default: every report and 37 answer)."""

    model_config = ConfigDict(extra="forbid")

    element: Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9]{0,4}$")]
    functions: list[str] | None = None

    @field_validator("functions")
    @classmethod
    def _functions(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            value = [f.upper() for f in value]
            unknown = [f for f in value if f not in _FUNCTIONS]
            if unknown:
                raise ValueError(f"unknown function codes {unknown}; known: {sorted(_FUNCTIONS)}")
        return value


class Sl651Call(BaseModel):
    """A downlink query: 37 real-time data, 38 a period's series, 4A set the clock, 51 read it.

    38 takes ``element`` and inputs ``$begin``/``$end`` (YYMMDDhh) and ``step`` (DDhhmm).
    ``output`` maps output names to elements of the answer (``#time``: the station's clock).
    """

    model_config = ConfigDict(extra="forbid")

    function: Literal["37", "38", "4A", "51"]
    element: str | None = None
    begin: str = "$begin"
    end: str = "$end"
    step: str = "000005"
    output: dict[str, str] = {}
    timeout: PositiveFloat | None = None

    @model_validator(mode="after")
    def _element(self) -> Sl651Call:
        if self.function == "38" and self.element is None:
            raise ValueError("a 38 query needs the 'element' whose series it asks for")
        return self
