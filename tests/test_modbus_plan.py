"""The Modbus read planner, codecs, frame checks and binding models (pure: no I/O)."""

from __future__ import annotations

import math
import random
import struct
from collections.abc import Mapping
from itertools import pairwise
from typing import Annotated, Any

import pytest
from pydantic import BaseModel, ValidationError

from citytwin.drivers.errors import BindingError
from citytwin.drivers.fields import IntRange, PositiveFloat
from citytwin.drivers.modbus.binding import (
    ModbusPoint,
    ModbusRtuConnection,
    ModbusRtuOverTcpConnection,
    ModbusTcpConnection,
)
from citytwin.drivers.modbus.codec import (
    WIDTH,
    BadValue,
    ByteOrder,
    PointType,
    RegisterField,
    WordOrder,
    encode_registers,
    encode_string,
    register_decoder,
)
from citytwin.drivers.modbus.frames import frame_problem
from citytwin.drivers.modbus.plan import ReadBlock, plan_reads

NUMERIC: tuple[PointType, ...] = (
    "uint16",
    "int16",
    "uint32",
    "int32",
    "float32",
    "uint64",
    "int64",
    "float64",
)


def hr(
    address: int, type_: str = "uint16", word_order: str = "big", byte_order: str = "big", **more: Any
) -> ModbusPoint:
    return ModbusPoint.model_validate(
        {"table": "holding_register", "address": address, "type": type_,
         "word_order": word_order, "byte_order": byte_order, **more}
    )  # fmt: skip


def spans(blocks: list[ReadBlock]) -> list[tuple[str, int, int]]:
    return [(b.table, b.start, b.count) for b in blocks]


def plan(
    points: Mapping[str, ModbusPoint], gap: int = 8, regs: int = 125, bits: int = 2000
) -> list[ReadBlock]:
    return plan_reads(points, max_gap=gap, max_registers=regs, max_bits=bits)


# -- planning -------------------------------------------------------------------------


def test_adjacent_points_share_one_request() -> None:
    blocks = plan({"a": hr(10), "b": hr(11, "float32"), "c": hr(13)})
    assert spans(blocks) == [("holding_register", 10, 4)]
    assert blocks[0].points == ("a", "b", "c")
    assert blocks[0].offsets == (0, 1, 3)
    assert blocks[0].label == "holding_register 10..13"


def test_gap_up_to_max_gap_joins_beyond_splits() -> None:
    assert spans(plan({"a": hr(0), "b": hr(9)}, gap=8)) == [("holding_register", 0, 10)]
    assert spans(plan({"a": hr(0), "b": hr(10)}, gap=8)) == [
        ("holding_register", 0, 1),
        ("holding_register", 10, 1),
    ]
    assert len(plan({"a": hr(0), "b": hr(1)}, gap=0)) == 1  # adjacent is no gap


def test_request_limit_splits_and_never_cuts_a_value() -> None:
    points = {f"p{a}": hr(a) for a in range(124)} | {"f": hr(124, "float32")}
    # 0..123 fill 124 registers; the float at 124..125 would make 126: it starts anew
    assert spans(plan(points)) == [("holding_register", 0, 124), ("holding_register", 124, 2)]
    assert spans(plan({f"p{a}": hr(a) for a in range(250)})) == [
        ("holding_register", 0, 125),
        ("holding_register", 125, 125),
    ]


def test_tables_are_planned_apart_in_a_fixed_order() -> None:
    points = {
        "ir": ModbusPoint(table="input_register", address=0),
        "hr": hr(0),
        "di": ModbusPoint(table="discrete_input", address=0),
        "coil": ModbusPoint(table="coil", address=0),
    }
    assert [b.table for b in plan(points)] == [
        "coil",
        "discrete_input",
        "holding_register",
        "input_register",
    ]


def test_bits_use_the_bit_limit() -> None:
    coils = {f"c{a}": ModbusPoint(table="coil", address=a) for a in range(0, 4000, 4)}
    assert spans(plan(coils, gap=8, regs=10, bits=2000)) == [
        ("coil", 0, 1997),
        ("coil", 2000, 1997),
    ]


def test_overlapping_points_share_registers() -> None:
    blocks = plan({"whole": hr(0, "uint32"), "high": hr(0), "low": hr(1), "signed": hr(1, "int16")})
    assert spans(blocks) == [("holding_register", 0, 2)]
    decoded = dict(zip(blocks[0].points, blocks[0].decode([0x0001, 0xFFFF]), strict=True))
    assert decoded == {"whole": 0x0001FFFF, "high": 1, "low": 0xFFFF, "signed": -1}


def test_value_wider_than_the_limit_is_a_binding_error() -> None:
    with pytest.raises(BindingError, match="point 'big': a float64 needs 4 registers"):
        plan({"big": hr(0, "float64")}, regs=3)


def test_empty_plan() -> None:
    assert plan({}) == []


def _feasible(group: list[tuple[int, int]], gap: int, limit: int) -> bool:
    start = min(a for a, _ in group)
    end = max(a + w for a, w in group)
    covered = {x for a, w in group for x in range(a, a + w)}
    run = longest = 0
    for x in range(start, end):
        run = 0 if x in covered else run + 1
        longest = max(longest, run)
    return end - start <= limit and longest <= gap


def _fewest_blocks(items: list[tuple[int, int]], gap: int, limit: int) -> int:
    """Brute force over every partition: the true minimum number of requests."""
    best = len(items)

    def place(i: int, groups: list[list[tuple[int, int]]]) -> None:
        nonlocal best
        if len(groups) >= best:
            return
        if i == len(items):
            if all(_feasible(g, gap, limit) for g in groups):
                best = len(groups)
            return
        for group in groups:
            group.append(items[i])
            place(i + 1, groups)
            group.pop()
        groups.append([items[i]])
        place(i + 1, groups)
        groups.pop()

    place(0, [])
    return best


@pytest.mark.parametrize("seed", range(4))
def test_random_plans_are_valid_and_minimal(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(100):
        gap, limit = rng.randint(0, 3), rng.randint(4, 10)
        points = {
            f"p{i}": hr(rng.randint(0, 20), rng.choice(["uint16", "float32", "float64"]))
            for i in range(rng.randint(1, 6))
        }
        blocks = plan(points, gap=gap, regs=limit)
        served = [name for block in blocks for name in block.points]
        assert sorted(served) == sorted(points)  # every point exactly once
        for block in blocks:
            group = [(points[n].address, WIDTH[points[n].type]) for n in block.points]
            assert _feasible(group, gap, limit)
            assert block.start == min(a for a, _ in group)
            assert block.start + block.count == max(a + w for a, w in group)
            assert block.offsets == tuple(a - block.start for a, _ in group)
        items = [(p.address, WIDTH[p.type]) for p in points.values()]
        assert len(blocks) == _fewest_blocks(items, gap, limit)


@pytest.mark.parametrize("seed", range(3))
def test_random_blocks_decode_like_struct(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(50):
        points: dict[str, ModbusPoint] = {}
        plain = rng.random() < 0.5  # half the rounds: the one-pack fast path only
        for i in range(rng.randint(1, 30)):
            address, orders = rng.randint(0, 300), ["big", "little"]
            kind = "number" if plain else rng.choice(["number", "number", "bit", "string"])
            if kind == "bit":
                points[f"p{i}"] = hr(address, "bool", byte_order=rng.choice(orders), bit=rng.randrange(16))
            elif kind == "string":
                points[f"p{i}"] = hr(address, "string", byte_order=rng.choice(orders), length=rng.randint(1, 6))
            else:
                byte_order = "big" if plain else rng.choice(orders)
                points[f"p{i}"] = hr(address, rng.choice(NUMERIC), rng.choice(orders), byte_order)
        registers = [rng.randrange(65536) for _ in range(310)]
        for block in plan(points, gap=rng.randint(0, 10)):
            answer = registers[block.start : block.start + block.count]
            for name, value in zip(block.points, block.decode(answer), strict=True):
                assert _same(value, _reference(points[name], registers)), name


def _reference(point: ModbusPoint, registers: list[int]) -> Any:
    """Decoded the long way: bytes of each register, in the binding's orders."""
    words = registers[point.address : point.address + point.width]
    if point.word_order == "little":
        words = words[::-1]
    byteorder: Any = point.byte_order
    raw = b"".join(word.to_bytes(2, byteorder) for word in words)
    if point.type == "bool":
        assert point.bit is not None
        return bool(int.from_bytes(raw, "big") >> point.bit & 1)
    if point.type == "string":
        text = raw.partition(b"\0")[0].rstrip(b" ")
        try:
            return text.decode("ascii")
        except UnicodeDecodeError:
            return "bad"
    code = {"uint16": "H", "int16": "h", "uint32": "I", "int32": "i", "float32": "f",
            "uint64": "Q", "int64": "q", "float64": "d"}[point.type]  # fmt: skip
    return struct.unpack(">" + code, raw)[0]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, BadValue):
        return b == "bad"
    return (math.isnan(a) and math.isnan(b)) if isinstance(a, float) and math.isnan(a) else a == b


# -- codec ----------------------------------------------------------------------------


@pytest.mark.parametrize("word_order", ["big", "little"])
@pytest.mark.parametrize(
    ("type_", "value"),
    [
        ("uint16", 0),
        ("uint16", 65535),
        ("int16", -32768),
        ("uint32", 0xDEADBEEF),
        ("int32", -123456),
        ("float32", -1234.5),
        ("float32", 3.4028234663852886e38),
        ("uint64", 2**64 - 1),
        ("int64", -(2**63)),
        ("float64", 1234.5678),
    ],
)
@pytest.mark.parametrize("byte_order", ["big", "little"])
def test_encode_then_decode_round_trips(
    type_: PointType, value: Any, word_order: WordOrder, byte_order: ByteOrder
) -> None:
    words = encode_registers(type_, word_order, value, byte_order)
    assert len(words) == WIDTH[type_]
    (decoded,) = register_decoder([RegisterField(0, type_, word_order, byte_order)])(words)
    assert decoded == value


@pytest.mark.parametrize(
    ("word_order", "byte_order", "words"),
    [
        ("big", "big", [0x41AE, 0x0000]),  # ABCD
        ("little", "big", [0x0000, 0x41AE]),  # CDAB
        ("big", "little", [0xAE41, 0x0000]),  # BADC
        ("little", "little", [0x0000, 0xAE41]),  # DCBA
    ],
)
def test_the_four_layouts_of_a_float32(
    word_order: WordOrder, byte_order: ByteOrder, words: list[int]
) -> None:
    assert encode_registers("float32", word_order, 21.75, byte_order) == words
    field = RegisterField(0, "float32", word_order, byte_order)
    assert register_decoder([field])(words) == (21.75,)
    # 0x0102030405060708 as DCBA: every byte in reverse order
    assert encode_registers("uint64", "little", 0x0102030405060708, "little") == [
        0x0807, 0x0605, 0x0403, 0x0201,
    ]  # fmt: skip
    assert encode_registers("int16", "big", -2, "little") == [0xFEFF]


def test_bits_inside_registers() -> None:
    decode = register_decoder([
        RegisterField(0, "bool", bit=0), RegisterField(0, "bool", bit=15),
        RegisterField(0, "bool", bit=1), RegisterField(0, "bool", byte_order="little", bit=0),
        RegisterField(0, "bool", byte_order="little", bit=8),
    ])  # fmt: skip
    assert decode([0x8001]) == (True, True, False, False, True)


def test_strings() -> None:
    assert encode_string("AB", 2, "ascii", "big") == [0x4142, 0x0000]
    assert encode_string("ABC", 2, "ascii", "little") == [0x4241, 0x0043]
    assert encode_string("Zürich", 4, "utf-8", "big") == [0x5AC3, 0xBC72, 0x6963, 0x6800]
    decode = register_decoder([
        RegisterField(0, "string", length=3), RegisterField(0, "string", length=3, encoding="utf-8"),
        RegisterField(0, "string", byte_order="little", length=2),
    ])  # fmt: skip
    assert decode([0x5041, 0x2020, 0x0000]) == ("PA", "PA", "AP")  # trailing spaces, NULs go
    assert decode([0x4100, 0x4243, 0x2020]) == ("A", "A", "")  # a C string ends at its NUL
    (bad, utf8, _) = decode([0xC3BC, 0x0000, 0x0000])
    assert isinstance(bad, BadValue) and "not valid ascii" in bad.reason
    assert utf8 == "ü"
    for value, message in [
        ("ABCDE", "'ABCDE' is 5 bytes in ascii; 2 registers hold 4"),
        ("Zürich", "cannot be encoded as ascii"),
        ("a\0b", "NUL"),
        (12, "expects a string"),
    ]:
        with pytest.raises(BindingError, match=message):
            encode_string(value, 2, "ascii", "big")
    with pytest.raises(BindingError, match="not a number type"):
        encode_registers("string", "big", 1)


def test_word_order_is_word_not_byte_order() -> None:
    assert encode_registers("float32", "big", 21.75) == [0x41AE, 0x0000]
    assert encode_registers("float32", "little", 21.75) == [0x0000, 0x41AE]
    assert encode_registers("uint64", "little", 0x0102030405060708) == [
        0x0708,
        0x0506,
        0x0304,
        0x0102,
    ]
    assert encode_registers("int16", "little", -2) == [0xFFFE]


@pytest.mark.parametrize(
    ("type_", "value", "message"),
    [
        ("uint16", 70000, r"70000 is out of range for uint16 \(0..65535\)"),
        ("uint16", -1, "out of range"),
        ("int16", 32768, "out of range for int16"),
        ("uint32", 2**32, "out of range"),
        ("int64", 2**63, "out of range"),
        ("uint16", 2.5, "not an integer"),
        ("uint16", True, "expects a number"),
        ("float32", "1.0", "expects a number"),
        ("float32", 1e39, "out of range for float32"),
        ("float64", math.inf, "not a finite number"),
        ("float32", math.nan, "not a finite number"),
    ],
)
def test_encode_refuses_bad_values(type_: PointType, value: Any, message: str) -> None:
    with pytest.raises(BindingError, match=message):
        encode_registers(type_, "big", value)


def test_bool_cannot_be_decoded_from_registers() -> None:
    with pytest.raises(BindingError, match="type bool in a register table needs a bit"):
        register_decoder([(0, "bool", "big")])


# -- frame checks ---------------------------------------------------------------------


def frame(pdu: bytes, *, protocol: int = 0, length: int | None = None) -> bytes:
    return struct.pack(">HHHB", 1, protocol, len(pdu) + 1 if length is None else length, 1) + pdu


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00\x01\x00",  # too short to judge yet
        frame(b"\x03\x04\x00\x01\x00\x02"),
        frame(b"\x03\x04\x00\x01\x00\x02")[:9],  # incomplete: more may follow
        frame(b"\x01\x01\x05"),
        frame(b"\x83\x02"),
        frame(b"\x06\x00\x01\x00\x02"),
        frame(b"\x10\x00\x01\x00\x02"),
        frame(b"\x2b\x0e\x01"),  # functions it does not know pass through to pymodbus
    ],
)
def test_frames_without_problems(data: bytes) -> None:
    assert frame_problem(data) is None


@pytest.mark.parametrize(
    ("data", "desync", "reason"),
    [
        (b"HTTP/1.1 400 Bad Request\r\n", True, "protocol id"),
        (frame(b"\x03\x02\x00\x01", length=1), True, "length field 1"),
        (frame(b"\x03\x02\x00\x01", length=300), True, "length field 300"),
        (frame(b"\x03\x06\x00\x01\x00\x02"), False, "byte count 6 in an answer carrying 4"),
        (frame(b"\x03\x03\x00\x01\x00"), False, "odd byte count 3"),
        (frame(b"\x03"), False, "without a byte count"),
        (frame(b"\x83\x02\x00"), False, "exception answer of 3 bytes"),
        (frame(b"\x06\x00\x01"), False, "write answer of 3 bytes"),
    ],
)
def test_frames_with_problems(data: bytes, desync: bool, reason: str) -> None:
    problem = frame_problem(data)
    assert problem is not None
    assert problem.desync is desync
    assert reason in problem.reason


# -- binding models and fields --------------------------------------------------------


def errors(model: type[BaseModel], data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    return [(".".join(map(str, e["loc"])), e["msg"]) for e in info.value.errors()]


def test_point_defaults_follow_the_table() -> None:
    assert ModbusPoint.model_validate({"table": "coil", "address": 1}).type == "bool"
    assert ModbusPoint.model_validate({"table": "discrete_input", "address": 1}).type == "bool"
    point = ModbusPoint.model_validate({"table": "input_register", "address": 1})
    assert (point.type, point.word_order) == ("uint16", "big")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"table": "holding_register", "address": 65536}, [("address", "must be 0..65535")]),
        ({"table": "holding_register", "address": True}, [("address", "must be an integer, not a boolean")]),
        ({"table": "coil", "address": 1, "type": "uint16"}, [("type", "a coil holds only bool, not uint16")]),
        (
            {"table": "input_register", "address": 1, "type": "bool"},
            [("bit", "a bool in a input_register needs bit: 0..15 (or use a coil or discrete_input)")],
        ),
        ({"table": "holding_register", "address": 1, "type": "bool", "bit": 16}, [("bit", "must be 0..15")]),
        ({"table": "coil", "address": 1, "bit": 2}, [("bit", "bit is for a bool inside a holding or input register")]),
        ({"table": "holding_register", "address": 1, "bit": 2}, [("bit", "bit is for a bool inside a holding or input register")]),
        ({"table": "holding_register", "address": 1, "type": "string"}, [("length", "a string needs its length in registers")]),
        ({"table": "holding_register", "address": 1, "type": "string", "length": 124}, [("length", "must be 1..123")]),
        ({"table": "holding_register", "address": 1, "length": 2}, [("length", "only a string has a length")]),
        (
            {"table": "holding_register", "address": 65530, "type": "string", "length": 8},
            [("address", "a string needs 8 registers, so must be 0..65528")],
        ),
        ({"table": "holding_register", "address": 1, "encoding": "utf-8"}, [("", "encoding is for strings only")]),
        (
            {"table": "holding_register", "address": 1, "type": "string", "length": 2, "word_order": "little"},
            [("", "a string's characters run in address order: no word_order")],
        ),
        (
            {"table": "input_register", "address": 1, "type": "bool", "bit": 1, "write_mode": "mask"},
            [("", "write_mode mask is for a bit inside a holding register")],
        ),
        ({"table": "holding_register", "address": 1, "byte_order": "middle"}, [("byte_order", "Input should be 'big' or 'little'")]),
        (
            {"table": "holding_register", "address": 65534, "type": "float64"},
            [("address", "a float64 needs 4 registers, so must be 0..65532")],
        ),
        ({"table": "holding_register", "address": 1, "word_order": "middle"}, [("word_order", "Input should be 'big' or 'little'")]),
        ({"table": "coil", "address": 1, "scale": 2}, [("scale", "Extra inputs are not permitted")]),
    ],
)  # fmt: skip
def test_point_errors_read_well(data: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    assert errors(ModbusPoint, data) == expected


def test_last_addresses_are_usable() -> None:
    assert hr(65535).address == 65535
    assert hr(65532, "float64").address == 65532


def test_points_are_subclassable() -> None:
    class PointConfig(ModbusPoint):
        scale: float = 1.0

    point = PointConfig.model_validate({"table": "discrete_input", "address": 4, "scale": 2})
    assert (point.type, point.scale) == ("bool", 2.0)
    assert errors(PointConfig, {"table": "holding_register", "address": 0, "scal": 2}) == [
        ("scal", "Extra inputs are not permitted")
    ]
    assert plan({"p": point})[0].points == ("p",)


def test_connection_defaults_and_errors() -> None:
    conn = ModbusTcpConnection(host="plc.local")
    assert (conn.port, conn.unit, conn.timeout, conn.max_gap, conn.max_registers, conn.max_bits) == (
        502, 1, 1.0, 8, 125, 2000,
    )  # fmt: skip
    assert errors(
        ModbusTcpConnection,
        {"host": "", "port": 0, "unit": 256, "timeout": 0, "max_registers": 126, "retries": 3},
    ) == [
        ("host", "String should have at least 1 character"),
        ("port", "must be 1..65535"),
        ("unit", "must be 0..255"),
        ("timeout", "must be a positive number"),
        ("max_registers", "must be 1..125"),
        ("retries", "Extra inputs are not permitted"),
    ]


def test_unit_zero_is_broadcast_and_only_for_writes() -> None:
    for model, extra in [
        (ModbusTcpConnection, {"host": "h"}),
        (ModbusRtuConnection, {"port": "/dev/ttyS0"}),
        (ModbusRtuOverTcpConnection, {"host": "h"}),
    ]:
        (error,) = errors(model, {**extra, "unit": 0})
        assert error[1].startswith("unit 0 is the broadcast address")
        assert model.model_validate({**extra, "unit": 0, "broadcast_writes": True}).unit == 0
        assert errors(model, {**extra, "broadcast_writes": True}) == [
            ("", "broadcast_writes needs unit 0 (the broadcast address)")
        ]
        assert errors(model, {**extra, "unit": 0, "broadcast_writes": True, "verify": True}) == [
            ("", "verify needs an answer, and a broadcast gets none")
        ]
    assert errors(ModbusRtuOverTcpConnection, {"host": "h", "unit": 248}) == [("unit", "must be 0..247")]


def test_fields_reject_bools_and_non_finite_numbers() -> None:
    class Model(BaseModel):
        count: Annotated[int, IntRange(1, 3)] = 1
        period: PositiveFloat = 1.0

    assert Model.model_validate({"count": "2", "period": 3}).count == 2
    assert errors(Model, {"count": False}) == [("count", "must be an integer, not a boolean")]
    assert errors(Model, {"period": True}) == [("period", "must be a number, not a boolean")]
    assert errors(Model, {"period": float("inf")}) == [("period", "must be a positive number")]
    assert errors(Model, {"period": -1}) == [("period", "must be a positive number")]
    schema = Model.model_json_schema()["properties"]
    assert (schema["count"]["minimum"], schema["count"]["maximum"]) == (1, 3)
    assert schema["period"]["exclusiveMinimum"] == 0


def test_blocks_are_in_address_order() -> None:
    blocks = plan({f"p{a}": hr(a) for a in (500, 3, 200, 40, 41)}, gap=0)
    assert [b.start for b in blocks] == [3, 40, 200, 500]
    assert all(a.start + a.count <= b.start for a, b in pairwise(blocks))
