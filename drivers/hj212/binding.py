"""Config models for an HJ 212-2017 station (a data logger, 数采仪), its points and commands.

Imports pydantic only. The connection holds the listening endpoint the station calls
(shared by every station configured on it) and the station's identity: its ``mn`` and
the access password ``PW`` (inline as a secret, or a file path; never logged).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from citytwin.drivers.fields import IntRange, PositiveFloat

_KEY = re.compile(r"^[A-Za-z0-9]+(-[A-Za-z]+)?$")
_CN = re.compile(r"^\d{4}$")
_INPUT = re.compile(r"^\$[A-Za-z_][A-Za-z0-9_]*$")


class Hj212Connection(BaseModel):
    """The endpoint stations call (``host``/``port``) and this station's identity."""

    model_config = ConfigDict(extra="forbid")

    host: Annotated[str, Field(min_length=1)] = "0.0.0.0"
    port: Annotated[int, IntRange(0, 65535)]
    """0 listens on a free port (tests)"""
    mn: Annotated[str, Field(pattern=r"^[0-9A-Za-z]{1,24}$")]
    """the station's unique identifier MN (6.3.2: up to 24 characters)"""
    password: SecretStr | None = None
    password_file: Path | None = None
    st: Annotated[str, Field(pattern=r"^\d{2}$")] = "22"
    """system code of the commands we send (22 air quality, 39 construction-site dust, …)"""
    crc: Literal["strict", "lenient"] = "strict"
    """lenient accepts packets with a wrong CRC (counted), for loggers known to compute it wrongly"""
    utc_offset: Annotated[float, Field(ge=-12, le=14)] = 8.0
    """hours east of UTC of the station's clock (DataTime, QN); Beijing time by default"""
    timeout: PositiveFloat = 10.0
    """seconds to wait for the station's execution result of a command"""
    max_frame: Annotated[int, IntRange(64, 9999)] = 4096
    """longest data segment accepted (the standard says 1024; real loggers send longer ones)"""
    frame_timeout: PositiveFloat = 10.0
    idle_timeout: PositiveFloat = 600.0

    @model_validator(mode="after")
    def _one_password(self) -> Hj212Connection:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give 'password' or 'password_file', not both")
        return self


class Hj212Point(BaseModel):
    """One CP value: ``key`` is ``code-field`` (``a34004-Rtd``) or a parameter (``RtdInterval``).

    ``cn`` limits which uploads feed the point (2011 real-time, 2051 minute, 2061 hour,
    2031 day; default any); ``set`` makes it writable with that command (1062 sets
    ``RtdInterval``). The value's quality comes from ``code-Flag`` in the same packet.
    """

    model_config = ConfigDict(extra="forbid")

    key: str
    cn: list[Annotated[str, Field(pattern=r"^\d{4}$")]] | None = None
    set: Annotated[str, Field(pattern=r"^\d{4}$")] | None = None
    text: bool = False
    """the value is text (e.g. a status code), not a number"""

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        if not _KEY.match(value):
            raise ValueError("must look like a34004-Rtd (pollutant code and field) or RtdInterval")
        return value


class Hj212Call(BaseModel):
    """One command (6.6): ``cn`` with ``cp`` parameters; ``"$name"`` takes a service input.

    ``output`` maps output names to CP keys of the station's data answer (``SystemTime``);
    ``"#records"`` counts the data packets a history request (2051/2061/2031) returned.
    """

    model_config = ConfigDict(extra="forbid")

    cn: str
    cp: dict[str, str] = {}
    output: dict[str, str] = {}
    timeout: PositiveFloat | None = None

    @field_validator("cn")
    @classmethod
    def _cn(cls, value: str) -> str:
        if not _CN.match(value):
            raise ValueError("must be a 4-digit command code such as 1062")
        return value
