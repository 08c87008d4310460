"""Read planning: coalesce a device's points into the fewest Modbus read requests.

One request for 125 registers costs about as much as one for a single register
(pymodbus: 10.4 k vs 15.7 k requests/s), so the number of requests per poll is what
bounds a device's poll rate. Pure: no I/O, no pymodbus.

A compiled plan (blocks, their decoders and ``struct.Struct`` objects) depends only on the
points' bindings and the request limits, so ``shared_plan`` gives every device with equal
bindings the same ``SharedPlan``: 1,000 devices from one template compile one plan.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from citytwin.drivers.errors import BindingError
from citytwin.drivers.modbus.codec import (
    BIT_TABLES,
    TABLES,
    ByteOrder,
    Decoder,
    Encoding,
    PointType,
    RegisterField,
    Table,
    WordOrder,
    bit_decoder,
    register_decoder,
    value_width,
)


class PointSpec(Protocol):
    """What the planner needs of a point; ``ModbusPoint`` and its subclasses fit."""

    @property
    def table(self) -> Table: ...
    @property
    def address(self) -> int: ...
    @property
    def type(self) -> PointType: ...
    @property
    def word_order(self) -> WordOrder: ...
    @property
    def byte_order(self) -> ByteOrder: ...
    @property
    def bit(self) -> int | None: ...
    @property
    def length(self) -> int | None: ...
    @property
    def encoding(self) -> Encoding: ...


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One read request: ``count`` registers (or bits) of ``table`` from ``start``.

    ``points[i]`` starts at ``offsets[i]`` in the answer; ``decode(answer)`` returns
    their values in the same order. When ``fallible``, a value may be a ``codec.BadValue``
    (a string that is not valid text), which makes that one point BAD.
    """

    table: Table
    start: int
    count: int
    points: tuple[str, ...]
    offsets: tuple[int, ...]
    decode: Decoder
    fallible: bool = False

    @property
    def label(self) -> str:
        """How errors name this request, e.g. ``input_register 0..9``."""
        return f"{self.table} {self.start}..{self.start + self.count - 1}"


def plan_reads(
    points: Mapping[str, PointSpec],
    max_gap: int,
    max_registers: int,
    max_bits: int,
) -> list[ReadBlock]:
    """Group points into read blocks, ordered by table then address.

    Per table, points sorted by address are joined greedily into the current block while
    the unused run before the next point is at most ``max_gap`` and the block stays within
    the request limit; a multi-register value is never split across two requests.
    Raises ``BindingError`` for a value wider than the limit.
    """
    by_table: dict[str, list[tuple[int, str, PointSpec]]] = {table: [] for table in TABLES}
    for name, point in points.items():
        by_table[point.table].append((point.address, name, point))
    blocks: list[ReadBlock] = []
    for table in TABLES:
        entries = sorted(by_table[table], key=lambda entry: (entry[0], entry[1]))
        limit = max_bits if table in BIT_TABLES else max_registers
        blocks.extend(_coalesce(table, entries, max_gap, limit))
    return blocks


def _coalesce(
    table: Table, entries: list[tuple[int, str, PointSpec]], max_gap: int, limit: int
) -> Iterable[ReadBlock]:
    group: list[tuple[int, str, PointSpec]] = []
    start = end = 0  # the group covers start..end-1
    for address, name, point in entries:
        width = value_width(point.type, point.length)
        if width > limit:
            raise BindingError(
                f"point {name!r}: a {point.type} needs {width} registers, "
                f"but requests are limited to {limit}"
            )
        stop = address + width
        if group and address - end <= max_gap and max(end, stop) - start <= limit:
            group.append((address, name, point))
            end = max(end, stop)
            continue
        if group:
            yield _block(table, start, end, group)
        group, start, end = [(address, name, point)], address, stop
    if group:
        yield _block(table, start, end, group)


def _block(
    table: Table, start: int, end: int, group: list[tuple[int, str, PointSpec]]
) -> ReadBlock:
    offsets = tuple(address - start for address, _, _ in group)
    fallible = False
    if table in BIT_TABLES:
        decode = bit_decoder(offsets)
    else:
        fields = [
            RegisterField(
                address - start, p.type, p.word_order, p.byte_order, p.bit, p.length or 0,
                p.encoding,
            )
            for address, _, p in group
        ]
        decode = register_decoder(fields)
        fallible = any(p.type == "string" for _, _, p in group)
    return ReadBlock(
        table=table,
        start=start,
        count=end - start,
        points=tuple(name for _, name, _ in group),
        offsets=offsets,
        decode=decode,
        fallible=fallible,
    )


SUBSET_PLANS = 64
"""subset plans kept per shared plan (the oldest goes first)"""

_PointKey = tuple[str, str, int, str, str, str, int | None, int | None, str]
_PlanKey = tuple[int, int, int, tuple[_PointKey, ...]]


class SharedPlan:
    """The read plan of one set of point bindings under one set of request limits.

    Immutable once built and free of anything per device (no unit id, no connection), so
    every driver whose points bind equally holds the same one. ``subset`` plans (for
    ``read(points)``) are kept here too, up to ``SUBSET_PLANS`` of them, shared likewise.
    """

    __slots__ = ("__weakref__", "_limits", "_subsets", "blocks")

    def __init__(self, blocks: Sequence[ReadBlock], limits: tuple[int, int, int]) -> None:
        self.blocks: tuple[ReadBlock, ...] = tuple(blocks)
        self._limits = limits
        self._subsets: dict[tuple[str, ...], tuple[ReadBlock, ...]] = {}

    def subset(self, names: tuple[str, ...], points: Mapping[str, PointSpec]) -> tuple[ReadBlock, ...]:
        """The plan for ``names`` alone; ``points`` are the bindings this plan was made of
        (any equal mapping). Raises ``BindingError`` naming the points ``points`` lacks."""
        blocks = self._subsets.get(names)
        if blocks is None:
            unknown = [name for name in names if name not in points]
            if unknown:
                raise BindingError(f"unknown points: {', '.join(map(repr, unknown))}")
            blocks = tuple(plan_reads({name: points[name] for name in names}, *self._limits))
            if len(self._subsets) >= SUBSET_PLANS:
                del self._subsets[next(iter(self._subsets))]
            self._subsets[names] = blocks
        return blocks


_SHARED: weakref.WeakValueDictionary[_PlanKey, SharedPlan] = weakref.WeakValueDictionary()
"""Weak, not bounded: a plan lives exactly as long as a driver holds it, so a config that is
removed (its drivers gone) leaves nothing behind, and any number of templates in use share."""


def _point_key(name: str, p: PointSpec) -> _PointKey:
    # every field that planning and decoding read, and nothing else (scale, verify, ...)
    return (name, p.table, p.address, p.type, p.word_order, p.byte_order, p.bit, p.length, p.encoding)


def shared_plan(
    points: Mapping[str, PointSpec], max_gap: int, max_registers: int, max_bits: int
) -> SharedPlan:
    """``plan_reads`` of ``points``, compiled once for every mapping of equal bindings."""
    key: _PlanKey = (
        max_gap, max_registers, max_bits, tuple(sorted(_point_key(n, p) for n, p in points.items()))
    )  # fmt: skip
    plan = _SHARED.get(key)
    if plan is None:
        limits = (max_gap, max_registers, max_bits)
        plan = SharedPlan(plan_reads(points, *limits), limits)
        _SHARED[key] = plan
    return plan
