"""Benchmark: what escaping control characters costs `mltrail logs` when it prints.

Formats N typical console lines (default 1,000,000; one in a hundred carries
an escape sequence or a ``\\r`` progress step) the way `mltrail logs` does,
with the escaping (``table.printable`` per line) and without it (the plain
join it replaced), alternating, a few times each. Prints the median seconds
of each and the ratio; the rest of `mltrail logs` (reading from the
collector) is not in either figure, so the ratio is an upper bound of what
the escaping adds to the command.

    python bench/cli_escape.py [--lines 1000000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

from mltrail.cli import logs
from mltrail.query.types import LogLine


def lines(count: int) -> list[LogLine]:
    out = []
    for i in range(count):
        text = (f"epoch {i // 1000} step {i} loss {1 / (i + 1):.6f} lr 0.001"
                if i % 100 else f"\x1b[32m{i % 100}%\x1b[0m |####      |\r")
        out.append(LogLine("stdout", i, 1_700_000_000_000_000_000 + i, text + "\n"))
    return out


def plain(batch: list[LogLine]) -> str:
    return "".join(logs._text(line) + "\n" for line in batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    batch = lines(args.lines)
    timings: dict[str, list[float]] = {"escaped": [], "plain": []}
    for _ in range(args.repeat):
        for name, fn in (("escaped", lambda: logs._format_lines(batch, False, False)),
                         ("plain", lambda: plain(batch))):
            started = time.perf_counter()
            fn()
            timings[name].append(time.perf_counter() - started)
    escaped, base = (statistics.median(timings[k]) for k in ("escaped", "plain"))
    print(f"{args.lines:,} lines: escaped {escaped:.3f} s ({args.lines / escaped:,.0f} "
          f"lines/s), plain {base:.3f} s; ratio {escaped / base:.2f}")


if __name__ == "__main__":
    main()
