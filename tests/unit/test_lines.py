"""common/lines.py: overlong lines are split with a marker and nothing is lost."""

from __future__ import annotations

import pytest

from mltrail.common.lines import LINE_SPLIT_MARKER, join_split_lines, split_long_lines


def test_short_data_is_returned_as_is() -> None:
    data = b"a\nbb\n"
    out, splits = split_long_lines(data, limit=100)
    assert out is data
    assert splits == {}


def test_long_line_is_split_with_marker_and_joins_back() -> None:
    data = b"short\n" + b"x" * 250 + b"\nend"
    room = 100 - len(LINE_SPLIT_MARKER)  # a piece with its marker fits the limit
    out, splits = split_long_lines(data, limit=100)
    lines = out.split(b"\n")
    assert splits == {1: 4}
    assert lines[0] == b"short"
    assert lines[1] == lines[2] == lines[3] == b"x" * room + LINE_SPLIT_MARKER
    assert lines[4] == b"x" * (250 - 3 * room)
    assert lines[5] == b"end"
    assert join_split_lines(out) == data


def test_cut_does_not_split_a_utf8_character() -> None:
    data = "é".encode() * 100  # 200 bytes, 2 per character
    out, _ = split_long_lines(data, limit=len(LINE_SPLIT_MARKER) + 17)
    for piece in join_split_lines(out).split(b"\n"):
        piece.decode("utf-8")  # raises if a character was cut
    for piece in out.split(b"\n"):
        piece.replace(LINE_SPLIT_MARKER, b"").decode("utf-8")
    assert join_split_lines(out) == data


def test_invalid_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="room for the split marker"):
        split_long_lines(b"abc", limit=0)


def test_splitting_is_idempotent_and_pieces_fit_the_limit() -> None:
    data = b"x" * 10_000 + b"\nshort\n" + "é".encode() * 4000 + b"\n"
    once, splits = split_long_lines(data, limit=1000)
    assert splits and all(len(piece) <= 1000 for piece in once.split(b"\n"))
    assert split_long_lines(once, limit=1000) == (once, {})
