"""Plain-text output helpers of the read commands."""

from __future__ import annotations

import json
import time

from mltrail.cli.table import (
    human_duration,
    human_size,
    iso_time,
    local_time,
    printable,
    render_fields,
    render_table,
    run_duration,
    shorten,
)


def test_table_columns_are_aligned_and_none_is_a_dash() -> None:
    out = render_table(["ID", "STATUS", "TAGS"], [["a", "Completed", None], ["long-id", 3, "x=1"]])
    assert out.splitlines() == [
        "ID       STATUS     TAGS",
        "a        Completed  -",
        "long-id  3          x=1",
    ]


def test_table_cells_stay_on_one_line() -> None:
    assert render_table(["A"], [["x\ny"], [{"k": [1, 2]}]]).splitlines() == [
        "A", "x\\ny", '{"k": [1, 2]}']


def test_control_characters_are_written_out_visibly() -> None:
    stored = "a\x00b\x1b[2Jc\rd\te\x7ff\x9bg\u2028h\u00e9"
    assert printable(stored) == "a\\x00b\\x1b[2Jc\\rd\\te\\x7ff\\x9bg\u2028h\u00e9"
    assert printable(stored, "\t") == "a\\x00b\\x1b[2Jc\\rd\te\\x7ff\\x9bg\u2028h\u00e9"
    assert printable("plain text", "\n") == "plain text"
    as_json = json.dumps({"k": stored}, ensure_ascii=False)
    assert json.loads(printable(as_json, json_text=True)) == {"k": stored}
    assert not any(0x7f <= ord(c) <= 0x9f or ord(c) < 0x20
                   for c in printable(as_json, json_text=True))
    assert render_fields([("Tags", "a=\x1b[31mred\nb=2")]).splitlines() == [
        "Tags: a=\\x1b[31mred", "      b=2"]


def test_fields_indent_multi_line_values() -> None:
    assert render_fields([("Run", "r1"), ("Children", "c1\nc2"), ("Error", None)]).splitlines() == [
        "Run:      r1", "Children: c1", "          c2", "Error:    -"]


def test_durations_read_like_a_person_wrote_them() -> None:
    assert [human_duration(s) for s in (0.25, 12.34, 245, 7380, 3 * 86400 + 4 * 3600, -1)] == [
        "250ms", "12.3s", "4m 05s", "2h 03m", "3d 04h", "0ms"]


def test_run_duration_uses_now_for_a_running_run() -> None:
    assert run_duration(0, 0) is None
    assert run_duration(1_000_000_000, 6_000_000_000) == "5.0s"
    assert run_duration(1_000_000_000, 0, now_nano=61_000_000_000) == "1m 00s"


def test_times_are_local_and_unset_is_none() -> None:
    now = time.time_ns()
    assert local_time(0) is None and iso_time(0) is None
    assert local_time(now) == time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now / 1e9))
    iso = iso_time(now)
    assert iso is not None and iso[10] == "T" and iso[-6] in "+-"


def test_sizes_and_shortening() -> None:
    assert [human_size(n) for n in (0, 1023, 1536, 3 * 1024 * 1024, 5 * 1024**4)] == [
        "0 B", "1023 B", "1.5 KiB", "3.0 MiB", "5120.0 GiB"]
    assert shorten("abcdef", 5) == "ab..." and shorten("abc", 5) == "abc"
