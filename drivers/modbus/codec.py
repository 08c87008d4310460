"""Modbus data types: their register widths, block decoders and write encoders.

Stdlib only, so both the binding models and the planner can use it without loading
pymodbus. On the wire a register is a 16-bit big-endian word (the Modbus standard);
devices differ in how they lay a value across registers, which two per-point settings
describe: ``word_order`` says which register of a multi-register value comes first
("little" is the common "word swapped" layout) and ``byte_order`` whether the two bytes
inside each register are swapped. For a 32-bit value with bytes A B C D (A most
significant): big/big is ABCD, little/big CDAB, big/little BADC, little/little DCBA.
"""

from __future__ import annotations

import functools
import itertools
import math
import struct
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any, Literal, NamedTuple, cast

from citytwin.drivers.errors import BindingError

Table = Literal["coil", "discrete_input", "holding_register", "input_register"]
PointType = Literal[
    "bool", "uint16", "int16", "uint32", "int32", "float32", "uint64", "int64", "float64",
    "string",
]  # fmt: skip
WordOrder = Literal["big", "little"]
ByteOrder = Literal["big", "little"]
Encoding = Literal["ascii", "utf-8"]

TABLES: tuple[Table, ...] = ("coil", "discrete_input", "holding_register", "input_register")
BIT_TABLES: frozenset[str] = frozenset({"coil", "discrete_input"})
WRITABLE_TABLES: frozenset[str] = frozenset({"coil", "holding_register"})
MAX_STRING_REGISTERS = 123  # what one write-multiple request (function 16) carries

# registers (or bits) one value occupies; a string's width is its ``length``
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

@functools.lru_cache(maxsize=256)
def _struct(fmt: str) -> struct.Struct:
    """One ``Struct`` per format for the whole process: devices' blocks repeat the same few
    formats. Immutable, so sharing is safe; bounded, since a format names a block's layout."""
    return struct.Struct(fmt)


def _format(codes: Sequence[str]) -> str:
    """Big-endian format with runs counted: ``">100HIH"``, not 100 ``H``s, since a ``Struct``
    keeps 32 bytes per code as written (3.4 kB for a 102-value block, 0.2 kB counted)."""
    runs = ((code, len(list(run))) for code, run in itertools.groupby(codes))
    return ">" + "".join(f"{n}{code}" if n > 1 else code for code, n in runs)


Decoder = Callable[[Sequence[Any]], tuple[Any, ...]]
"""Maps a response's register (or bit) list to the values of a block's points, in order."""


class BadValue:
    """Stands in a decoded block for one value that could not be decoded (e.g. a string
    that is not valid in its encoding), so only that point turns BAD."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"BadValue({self.reason!r})"


class RegisterField(NamedTuple):
    """One point of a register block: where it starts in the answer and how it is encoded."""

    offset: int
    type: PointType
    word_order: WordOrder = "big"
    byte_order: ByteOrder = "big"
    bit: int | None = None
    """a bool inside a register: the bit, 0 = least significant"""
    length: int = 0
    """a string's registers"""
    encoding: Encoding = "ascii"


def value_width(type_: PointType, length: int | None = None) -> int:
    """Registers (or bits) a value occupies."""
    if type_ == "string":
        if not length:
            raise BindingError("a string needs a length in registers")
        return length
    return WIDTH[type_]


def swap_bytes(word: int) -> int:
    return ((word >> 8) | (word << 8)) & 0xFFFF


def bit_mask(bit: int, byte_order: ByteOrder = "big") -> int:
    """The register bits (as transmitted) that hold ``bit`` of the value."""
    mask = 1 << bit
    return swap_bytes(mask) if byte_order == "little" else mask


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


def _plain(field: RegisterField) -> bool:
    return field.type in _CODE and field.byte_order == "big"


def register_decoder(fields: Sequence[RegisterField | tuple[Any, ...]]) -> Decoder:
    """Decoder for the points of a register block, given as ``RegisterField``s (or tuples).

    Precompiled once per block. A block of plain numbers (the common case) decodes with
    one gather of the used words (in big-word order), one ``pack`` and one ``unpack``;
    a block with swapped bytes, bits or strings decodes value by value.
    """
    specs = [RegisterField(*f) for f in fields]
    if not all(_plain(f) for f in specs):
        getters = [_value_decoder(f) for f in specs]
        return lambda registers: tuple([get(registers) for get in getters])
    indices: list[int] = []
    codes: list[str] = []
    for offset, type_, word_order, *_ in specs:
        indices.extend(register_indices(offset, type_, word_order))
        codes.append(_CODE[type_])
    pick = _picker(indices)
    if all(code == "H" for code in codes):
        return pick
    pack = _struct(f">{len(indices)}H").pack
    unpack = _struct(_format(codes)).unpack

    def decode(registers: Sequence[Any]) -> tuple[Any, ...]:
        return unpack(pack(*pick(registers)))

    return decode


ValueDecoder = Callable[[Sequence[Any]], Any]


def _value_decoder(field: RegisterField) -> ValueDecoder:
    offset, type_ = field.offset, field.type
    if type_ == "bool":
        if field.bit is None:
            raise BindingError("type bool in a register table needs a bit (0..15)")
        mask = bit_mask(field.bit, field.byte_order)
        return lambda registers: bool(registers[offset] & mask)
    if type_ == "string":
        return _string_decoder(offset, field.length, field.encoding, field.byte_order)
    pick = _picker(register_indices(offset, type_, field.word_order))
    width = WIDTH[type_]
    endian = "<" if field.byte_order == "little" else ">"
    pack = _struct(f"{endian}{width}H").pack  # "<" swaps the bytes of every word
    unpack = _VALUE_STRUCT[type_].unpack
    return lambda registers: unpack(pack(*pick(registers)))[0]


def _string_decoder(offset: int, length: int, encoding: Encoding, byte_order: ByteOrder) -> ValueDecoder:
    endian = "<" if byte_order == "little" else ">"
    pack = _struct(f"{endian}{length}H").pack
    end = offset + length

    def decode(registers: Sequence[Any]) -> Any:
        raw = pack(*registers[offset:end])
        # a C string ends at its first NUL; fixed fields are often padded with spaces
        text = raw.split(b"\x00", 1)[0].rstrip(b" ")
        try:
            return text.decode(encoding)
        except UnicodeDecodeError as exc:
            return BadValue(f"not valid {encoding}: {exc.reason} at byte {exc.start}")

    return decode


def encode_bit(value: Any) -> bool:
    """Check a raw value for a coil; raises ``BindingError`` (message without point name)."""
    if not isinstance(value, bool):
        raise BindingError(f"expects a bool, got {type(value).__name__} {value!r}")
    return value


def encode_registers(
    type_: PointType, word_order: WordOrder, value: Any, byte_order: ByteOrder = "big"
) -> list[int]:
    """Encode a raw number into register words in wire order; raises ``BindingError``."""
    if type_ not in _CODE:
        raise BindingError(f"{type_} is not a number type")
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
    if byte_order == "little":
        words = [swap_bytes(word) for word in words]
    return words


def encode_string(value: Any, length: int, encoding: Encoding, byte_order: ByteOrder) -> list[int]:
    """Encode text into ``length`` registers, padded with NULs; raises ``BindingError``."""
    if not isinstance(value, str):
        raise BindingError(f"expects a string, got {type(value).__name__} {value!r}")
    try:
        raw = value.encode(encoding)
    except UnicodeEncodeError as exc:
        raise BindingError(f"{value!r} cannot be encoded as {encoding}: {exc.reason}") from None
    if b"\x00" in raw:
        raise BindingError(f"{value!r} contains a NUL character")
    if len(raw) > 2 * length:
        raise BindingError(
            f"{value!r} is {len(raw)} bytes in {encoding}; {length} registers hold {2 * length}"
        )
    endian = "<" if byte_order == "little" else ">"
    return list(struct.unpack(f"{endian}{length}H", raw.ljust(2 * length, b"\x00")))
