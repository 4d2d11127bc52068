"""common/lines.py: overlong lines are split with a marker and nothing is lost."""

from __future__ import annotations

import pytest

from mltrail.common.lines import LINE_SPLIT_MARKER, join_split_lines, split_long_lines


def test_short_data_is_returned_as_is() -> None:
    data = b"a\nbb\n"
    out, splits = split_long_lines(data, limit=10)
    assert out is data
    assert splits == {}


def test_long_line_is_split_with_marker_and_joins_back() -> None:
    data = b"short\n" + b"x" * 25 + b"\nend"
    out, splits = split_long_lines(data, limit=10)
    lines = out.split(b"\n")
    assert splits == {1: 3}
    assert lines[0] == b"short"
    assert lines[1] == b"x" * 10 + LINE_SPLIT_MARKER
    assert lines[2] == b"x" * 10 + LINE_SPLIT_MARKER
    assert lines[3] == b"x" * 5
    assert lines[4] == b"end"
    assert join_split_lines(out) == data


def test_cut_does_not_split_a_utf8_character() -> None:
    data = "é".encode() * 10  # 20 bytes, 2 per character
    out, _ = split_long_lines(data, limit=7)
    for piece in join_split_lines(out).split(b"\n"):
        piece.decode("utf-8")  # raises if a character was cut
    for piece in out.split(b"\n"):
        piece.replace(LINE_SPLIT_MARKER, b"").decode("utf-8")
    assert join_split_lines(out) == data


def test_invalid_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        split_long_lines(b"abc", limit=0)
