"""The raw form of a chunk: a series' open chunk, extended at memory speed.

A series' last chunk stays open while batches extend it (``series_tail.py``).
An open chunk of plain numbers (every value a number, every point or none
with a step: what ``run.log`` of a loss gives) is written in this form, with
no transform and no compression, so that extending it is a copy in C, never
a decode and a compression of the points already in it:

    RAW | varint count | step mode (0: no step, 1: a step each)
        | [count int64 steps] | count int64 times | count float64 values | CRC32

all little-endian, the CRC32 over everything before it (as a compressed
chunk's). Open chunks of other shapes (integers, texts, flags, mixed kinds,
some steps absent) use ``chunks.encode``; the first byte tells the two apart (RAW
is no version of ``chunks``' encoding).
"""

from __future__ import annotations

import sys
import zlib
from array import array
from collections.abc import Sequence
from typing import Any

from mltrail.collector.store.chunk_columns import read_varint, varint

RAW = 0x80
_LITTLE = sys.byteorder == "little"


def encode_raw(steps: Sequence[int | None], times: Sequence[int], values: Sequence[Any]
               ) -> bytes | None:
    """The raw bytes of plain numbers (``values`` all floats), or None when the points
    have another shape (some steps absent, a number past int64)."""
    count = len(times)
    try:
        if steps and steps[0] is not None:
            step_bytes = _wire("q", steps)  # TypeError: a None among them
        elif not any(s is not None for s in steps):
            step_bytes = b""
        else:
            return None
        return raw_bytes(count, step_bytes, _wire("q", times), _wire("d", values))
    except (TypeError, OverflowError):
        return None


def raw_bytes(count: int, steps: bytes, times: bytes, values: bytes) -> bytes:
    """The raw form of the points' columns as little-endian bytes (``steps`` empty: no
    point has a step)."""
    body = b"".join((_header(count, 1 if steps else 0), steps, times, values))
    return body + zlib.crc32(body).to_bytes(4, "little")


def decode_raw(blob: bytes | memoryview) -> tuple[int, array[int] | None, array[int],
                                                   array[float]]:
    """(count, steps or None, times, values) of raw bytes; ValueError if damaged."""
    count, pos, mode = raw_layout(blob)
    pos += 1
    steps = None
    if mode:
        steps, pos = _native("q", blob[pos:pos + 8 * count]), pos + 8 * count
    times = _native("q", blob[pos:pos + 8 * count])
    return count, steps, times, _native("d", blob[pos + 8 * count:len(blob) - 4])


def raw_values(blob: bytes | memoryview) -> tuple[int, bytes, int]:
    """(count, the little-endian doubles, 8) without building the steps and times."""
    count, _, _ = raw_layout(blob)
    end = len(blob) - 4
    return count, bytes(blob[end - 8 * count:end]), 8


def raw_layout(blob: bytes | memoryview) -> tuple[int, int, int]:
    """(count, position of the step mode, step mode) of raw bytes whose size and CRC
    hold; ValueError otherwise."""
    count, pos = read_varint(blob, 1)
    mode = blob[pos] if pos < len(blob) else -1
    if mode not in (0, 1) or len(blob) != pos + 1 + 8 * count * (2 + mode) + 4:
        raise ValueError(f"raw chunk of {len(blob)} bytes does not hold {count} points")
    if zlib.crc32(blob[:-4]) != int.from_bytes(blob[-4:], "little"):
        raise ValueError("raw chunk fails its CRC32")
    return count, pos, mode


def _header(count: int, mode: int) -> bytes:
    out = bytearray([RAW])
    varint(out, count)
    out.append(mode)
    return bytes(out)


def _wire(code: str, numbers: Sequence[Any]) -> bytes:
    out = array(code, numbers)
    if not _LITTLE:
        out.byteswap()
    return out.tobytes()


def _native(code: str, raw: bytes | memoryview) -> array[Any]:
    out = array(code, bytes(raw))
    if not _LITTLE:
        out.byteswap()
    return out
