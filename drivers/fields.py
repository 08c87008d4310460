"""Reusable pydantic field constraints whose errors read well in a config error report.

Pydantic's own bounds say "Input should be less than or equal to 65535"; an operator
reading ``devices[0].points.level.address: must be 0..65535`` fixes the file faster.
The markers are classes (not functions returning ``Annotated``) so that mypy accepts
them inside annotations: ``address: Annotated[int, IntRange(0, 65535)]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema


def _reject_bool(message: str) -> core_schema.NoInfoValidatorFunction:
    # bool is an int subclass, and pydantic's lax mode turns True into 1: a YAML
    # `port: yes` must be an error, not port 1.
    def check(value: Any) -> Any:
        if isinstance(value, bool):
            raise PydanticCustomError("not_bool", message)
        return value

    return check


_NOT_BOOL_INT = _reject_bool("must be an integer, not a boolean")
_NOT_BOOL_NUMBER = _reject_bool("must be a number, not a boolean")


@dataclass(frozen=True, slots=True)
class IntRange:
    """An int in ``lo..hi`` inclusive; booleans are rejected."""

    lo: int
    hi: int

    def _check(self, value: int) -> int:
        if not self.lo <= value <= self.hi:
            raise PydanticCustomError(
                "int_range", "must be {lo}..{hi}", {"lo": self.lo, "hi": self.hi}
            )
        return value

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        inner = core_schema.no_info_after_validator_function(self._check, handler(source))
        return core_schema.no_info_before_validator_function(_NOT_BOOL_INT, inner)

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema.update(minimum=self.lo, maximum=self.hi)
        return json_schema


@dataclass(frozen=True, slots=True)
class Positive:
    """A finite number greater than zero; booleans are rejected."""

    def _check(self, value: float) -> float:
        if not (value > 0 and math.isfinite(value)):
            raise PydanticCustomError("positive", "must be a positive number")
        return value

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        inner = core_schema.no_info_after_validator_function(self._check, handler(source))
        return core_schema.no_info_before_validator_function(_NOT_BOOL_NUMBER, inner)

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema.update(exclusiveMinimum=0)
        return json_schema


PositiveFloat = Annotated[float, Positive()]
Port = Annotated[int, IntRange(1, 65535)]
