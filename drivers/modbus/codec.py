"""Modbus data types: their register widths, block decoders and write encoders.

Stdlib only, so both the binding models and the planner can use it without loading
pymodbus. Registers are 16-bit big-endian words (the Modbus standard); ``word_order``
only says which word of a multi-register value comes first ("little" is the common
"word swapped" or CDAB layout).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any, Literal, cast

from citytwin.drivers.errors import BindingError

Table = Literal["coil", "discrete_input", "holding_register", "input_register"]
PointType = Literal[
    "bool", "uint16", "int16", "uint32", "int32", "float32", "uint64", "int64", "float64"
]
WordOrder = Literal["big", "little"]

TABLES: tuple[Table, ...] = ("coil", "discrete_input", "holding_register", "input_register")
BIT_TABLES: frozenset[str] = frozenset({"coil", "discrete_input"})
WRITABLE_TABLES: frozenset[str] = frozenset({"coil", "holding_register"})

# registers (or bits) one value occupies
WIDTH: dict[str, int] = {
    "bool": 1,
    "uint16": 1,
    "int16": 1,
    "uint32": 2,
    "int32": 2,
    "float32": 2,
    "uint64": 4,
    "int64": 4,
    "float64": 4,
}
_CODE: dict[str, str] = {
    "uint16": "H",
    "int16": "h",
    "uint32": "I",
    "int32": "i",
    "float32": "f",
    "uint64": "Q",
    "int64": "q",
    "float64": "d",
}
_INT_RANGE: dict[str, tuple[int, int]] = {
    "uint16": (0, 0xFFFF),
    "int16": (-0x8000, 0x7FFF),
    "uint32": (0, 0xFFFF_FFFF),
    "int32": (-0x8000_0000, 0x7FFF_FFFF),
    "uint64": (0, 0xFFFF_FFFF_FFFF_FFFF),
    "int64": (-0x8000_0000_0000_0000, 0x7FFF_FFFF_FFFF_FFFF),
}
_VALUE_STRUCT = {name: struct.Struct(">" + code) for name, code in _CODE.items()}
_WORDS_STRUCT = {n: struct.Struct(f">{n}H") for n in (1, 2, 4)}

Decoder = Callable[[Sequence[Any]], tuple[Any, ...]]
"""Maps a response's register (or bit) list to the values of a block's points, in order."""


def register_indices(offset: int, type_: PointType, word_order: WordOrder) -> tuple[int, ...]:
    """The response indices holding a value's words, most significant first."""
    width = WIDTH[type_]
    indices = tuple(range(offset, offset + width))
    return indices[::-1] if word_order == "little" else indices


def _picker(indices: Sequence[int]) -> Decoder:
    if len(indices) == 1:
        index = indices[0]
        return lambda seq: (seq[index],)
    # itemgetter with several keys returns a tuple, gathered in C
    return cast(Decoder, itemgetter(*indices))


def bit_decoder(offsets: Sequence[int]) -> Decoder:
    """Decoder for points of a coil or discrete-input block."""
    return _picker(offsets)


def register_decoder(fields: Sequence[tuple[int, PointType, WordOrder]]) -> Decoder:
    """Decoder for points ``(offset, type, word_order)`` of a register block.

    Precompiled once per block: one gather of the used words (in big-word order), one
    ``pack`` and one ``unpack`` decode every point of the block, whatever its types.
    """
    indices: list[int] = []
    codes: list[str] = []
    for offset, type_, word_order in fields:
        if type_ == "bool":
            raise BindingError("type bool needs a coil or discrete_input table")
        indices.extend(register_indices(offset, type_, word_order))
        codes.append(_CODE[type_])
    pick = _picker(indices)
    if all(code == "H" for code in codes):
        return pick
    pack = struct.Struct(f">{len(indices)}H").pack
    unpack = struct.Struct(">" + "".join(codes)).unpack

    def decode(registers: Sequence[Any]) -> tuple[Any, ...]:
        return unpack(pack(*pick(registers)))

    return decode


def encode_bit(value: Any) -> bool:
    """Check a raw value for a coil; raises ``BindingError`` (message without point name)."""
    if not isinstance(value, bool):
        raise BindingError(f"expects a bool, got {type(value).__name__} {value!r}")
    return value


def encode_registers(type_: PointType, word_order: WordOrder, value: Any) -> list[int]:
    """Encode a raw value into register words in wire order; raises ``BindingError``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BindingError(f"expects a number for {type_}, got {type(value).__name__} {value!r}")
    if type_ in _INT_RANGE:
        if isinstance(value, float):
            if not value.is_integer():
                raise BindingError(f"{value!r} is not an integer, as {type_} needs")
            value = int(value)
        lo, hi = _INT_RANGE[type_]
        if not lo <= value <= hi:
            raise BindingError(f"{value} is out of range for {type_} ({lo}..{hi})")
    elif not math.isfinite(value):
        raise BindingError(f"{value!r} is not a finite number")
    try:
        raw = _VALUE_STRUCT[type_].pack(value)
    except (OverflowError, struct.error) as exc:
        raise BindingError(f"{value!r} is out of range for {type_}") from exc
    words = list(_WORDS_STRUCT[WIDTH[type_]].unpack(raw))
    if word_order == "little":
        words.reverse()
    return words
