"""``mltrail.v1.PackedPoints``: scalar points as columns, both ways (collector and SDK).

Columns are little-endian fixed-width arrays in bytes fields, so a page of
65,536 points is a handful of C-level copies on each side instead of a
message per point. Field meanings are in proto/collector.proto.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mltrail.proto import collector_pb2

KIND_NUMBER, KIND_INTEGER, KIND_TEXT, KIND_FLAG = 1, 2, 3, 4
_LITTLE = sys.byteorder == "little"


def _array(code: str, numbers: Any) -> bytes:
    out = array(code, numbers)
    if not _LITTLE:
        out.byteswap()
    return out.tobytes()


def _numbers(code: str, data: bytes) -> list[Any]:
    out = array(code, data)
    if not _LITTLE:
        out.byteswap()
    return out.tolist()


def little_endian(numbers: array[Any]) -> bytes:
    """An array's bytes in the wire's order."""
    if not _LITTLE:
        numbers = array(numbers.typecode, numbers)
        numbers.byteswap()
    return numbers.tobytes()


def pack(steps: Sequence[int | None], times: Sequence[int], kinds: Sequence[int],
         values: Sequence[Any]) -> collector_pb2.PackedPoints:
    out = collector_pb2.PackedPoints(count=len(times), times=_array("q", times))
    if None not in steps:
        out.steps = _array("q", steps)
    elif any(s is not None for s in steps):
        out.step_present = bytes(0 if s is None else 1 for s in steps)
        out.steps = _array("q", [0 if s is None else s for s in steps])
    if kinds.count(KIND_NUMBER) == len(kinds):
        out.numbers = _array("d", values)
        return out
    out.kinds = bytes(kinds)
    by_kind: dict[int, list[Any]] = {KIND_NUMBER: [], KIND_INTEGER: [], KIND_TEXT: [],
                                     KIND_FLAG: []}
    for kind, value in zip(kinds, values, strict=True):
        by_kind[kind].append(value)
    out.numbers = _array("d", by_kind[KIND_NUMBER])
    out.integers = _array("q", by_kind[KIND_INTEGER])
    out.texts.extend(by_kind[KIND_TEXT])
    out.flags = bytes(1 if v else 0 for v in by_kind[KIND_FLAG])
    return out


@dataclass
class Unpacked:
    steps: list[int | None] | None  # None: no point has a step
    times: list[int]
    kinds: bytes  # empty: every value is a number
    values: list[Any]


def unpack(packed: collector_pb2.PackedPoints) -> Unpacked:
    """The columns back as Python lists; ValueError if their lengths disagree."""
    count = packed.count
    # a values_only read may leave times out: 0 then (get_metrics folds values only)
    times = _numbers("q", packed.times) if packed.times or not count else [0] * count
    steps: list[int | None] | None = None
    if packed.steps:
        steps = _numbers("q", packed.steps)
        if packed.step_present:
            steps = [s if flag else None
                     for s, flag in zip(steps, packed.step_present, strict=True)]
    if not packed.kinds:
        values = values_of(packed)
    else:
        columns = {KIND_NUMBER: iter(_numbers("d", packed.numbers)),
                   KIND_INTEGER: iter(_numbers("q", packed.integers)),
                   KIND_TEXT: iter(packed.texts),
                   KIND_FLAG: iter(b != 0 for b in packed.flags)}
        try:
            values = [next(columns[k]) for k in packed.kinds]
        except (KeyError, StopIteration):
            raise ValueError("packed points: a kind column is shorter than its kinds") from None
    if len(times) != count or len(values) != count or (steps is not None
                                                        and len(steps) != count):
        raise ValueError(f"packed points: columns disagree with the count {count}")
    return Unpacked(steps, times, packed.kinds, values)


def values_of(packed: collector_pb2.PackedPoints) -> list[Any]:
    """The values alone, as Python values (float32s of a values_only read widened)."""
    if packed.floats:
        return _numbers("f", packed.floats)
    if not packed.kinds:
        return _numbers("d", packed.numbers)
    return unpack(packed).values
