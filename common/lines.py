"""Splitting overlong lines (design.md invariant 4: split with a marker, never lost).

A line longer than ``limit`` bytes is cut into pieces of at most ``limit``
bytes, marker included, so splitting is idempotent: the collector leaves a
line the launcher already split as it is. Every piece but the last ends with
``LINE_SPLIT_MARKER`` and a newline,
so a reader sees where the cut is, and removing ``LINE_SPLIT_MARKER + b"\\n"``
gives the original bytes back. Cuts avoid the middle of a UTF-8 sequence
when the data is UTF-8. The launcher, the file tail and the collector share
this code, so a line is split the same way wherever it is first seen.
"""

from __future__ import annotations

MAX_LINE_BYTES = 1024 * 1024
LINE_SPLIT_MARKER = b" [mltrail: line split, continues on the next line]"

MIN_LINE_LIMIT = len(LINE_SPLIT_MARKER) + 16

# A UTF-8 continuation byte is 0b10xxxxxx; a cut before one splits a character.
_MAX_BACKTRACK = 3


def _cut_point(line: bytes, start: int, limit: int) -> int:
    """Where the piece starting at ``start`` ends: ``limit`` bytes on, moved back off a
    UTF-8 continuation byte (at most 3 bytes) so a character is not split."""
    cut = start + limit
    for back in range(_MAX_BACKTRACK + 1):
        if cut - back <= start:
            break
        if line[cut - back] & 0xC0 != 0x80:
            return cut - back
    return cut


def _split_line(line: bytes, limit: int) -> list[bytes]:
    """Pieces of one line (without its newline), each at most ``limit`` bytes
    once the marker is added to every piece but the last."""
    pieces = []
    start = 0
    room = limit - len(LINE_SPLIT_MARKER)
    while len(line) - start > limit:
        cut = _cut_point(line, start, room)
        pieces.append(line[start:cut])
        start = cut
    pieces.append(line[start:])
    return pieces


def split_long_lines(data: bytes, limit: int = MAX_LINE_BYTES) -> tuple[bytes, dict[int, int]]:
    """Split every line of ``data`` longer than ``limit`` bytes.

    Returns the new data and ``{line index: number of pieces}`` for the lines
    that were split (empty when nothing was, the common case, which costs one
    length check when ``data`` itself is short).
    """
    if limit < MIN_LINE_LIMIT:
        raise ValueError(
            f"line limit must be at least {MIN_LINE_LIMIT} bytes (room for the split marker), "
            f"got {limit}")
    if len(data) <= limit:
        return data, {}
    lines = data.split(b"\n")
    splits: dict[int, int] = {}
    out: list[bytes] = []
    for index, line in enumerate(lines):
        if len(line) <= limit:
            out.append(line)
            continue
        pieces = _split_line(line, limit)
        splits[index] = len(pieces)
        out.append((LINE_SPLIT_MARKER + b"\n").join(pieces))
    if not splits:
        return data, {}
    return b"\n".join(out), splits


def join_split_lines(data: bytes) -> bytes:
    """The inverse of ``split_long_lines`` (for readers that want the original)."""
    return data.replace(LINE_SPLIT_MARKER + b"\n", b"")
