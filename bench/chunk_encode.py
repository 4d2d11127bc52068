"""Benchmark: the chunk encoding alone, on chunks of bench/store_scale.py's series.

Six 4,096-point chunks from the start to the end of a ``--points`` series (a
float32 loss curve with noise, one step per point, times 1 ms apart with up
to 50 us jitter), with times to the microsecond (what the SDK sends) and to
the nanosecond. Prints bytes per point and the CPU per point of ``encode``
(the collector's writer thread), ``decode``, ``decode_columns`` and
``decode_values`` (reads), best of a few repeats. Prints ``name: value unit``.

    python bench/chunk_encode.py [--points 10000000]
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import timeit
from array import array
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mltrail.collector.store import chunks
from mltrail.collector.store.chunks import CHUNK_POINTS, KIND_NUMBER, Points

T0 = 1_760_000_000_000_000_000


def chunk_at(start: int, points: int, microseconds: bool) -> Points:
    rng = random.Random(start)
    span = range(start, start + CHUNK_POINTS)
    values = array("f", (2.0 * math.exp(-i / (points / 4)) + rng.gauss(0, 0.02) for i in span))
    times = [T0 + i * 1_000_000 + rng.randrange(50_000) for i in span]
    if microseconds:
        times = [t // 1000 * 1000 for t in times]
    return Points(list(span), times, [KIND_NUMBER] * CHUNK_POINTS, values.tolist())


def per_point(fn, count: int) -> float:  # type: ignore[no-untyped-def]
    return min(timeit.repeat(fn, number=2, repeat=5)) / 2 / count * 1e6


def report(label: str, series: list[Points]) -> None:
    blobs = [chunks.encode(p) for p in series]
    count = len(series) * CHUNK_POINTS
    sizes = [len(b) / CHUNK_POINTS for b in blobs]
    print(f"bytes_per_point_{label}_times: {sum(sizes) / len(sizes):.3f} bytes "
          f"(chunks from {min(sizes):.2f} to {max(sizes):.2f})")
    alone = [Points([None] * CHUNK_POINTS, p.times, p.kinds, [0.0] * CHUNK_POINTS)
             for p in series]  # the times with constant values: what the times take
    print(f"times_bytes_per_point_{label}: "
          f"{sum(len(chunks.encode(p)) for p in alone) / count:.3f} bytes")
    for name, fn in (("encode", lambda: [chunks.encode(p) for p in series]),
                     ("decode", lambda: [chunks.decode(b) for b in blobs]),
                     ("decode_columns", lambda: [chunks.decode_columns(b) for b in blobs]),
                     ("decode_values", lambda: [chunks.decode_values(b) for b in blobs])):
        print(f"{name}_{label}_times: {per_point(fn, count):.3f} us/point")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=10_000_000)
    args = parser.parse_args()
    starts = [k * (args.points - CHUNK_POINTS) // 5 for k in range(6)]
    for label, microseconds in (("us", True), ("ns", False)):
        report(label, [chunk_at(start, args.points, microseconds) for start in starts])
    return 0


if __name__ == "__main__":
    sys.exit(main())
