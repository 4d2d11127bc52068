"""Packed pages: the columns round-trip, and the CLI's streamed JSON and CSV agree with
the SDK's fold of the same pages."""

from __future__ import annotations

import csv
import io
import json
import math
import struct
from array import array
from typing import Any

import pytest

from mltrail.cli.metrics_out import write_csv, write_json
from mltrail.common import packed
from mltrail.proto import collector_pb2, records_pb2
from mltrail.query.metrics_view import fold_series, metric_to_python, page_records


def page(name: str, steps: list[int | None], values: list[Any], *, kinds: list[int] | None = None,
         has_records: bool = False) -> collector_pb2.ReadSeriesResponse:
    kinds = kinds or [packed.KIND_NUMBER] * len(values)
    return collector_pb2.ReadSeriesResponse(
        name=name, has_records=has_records,
        points=packed.pack(steps, list(range(len(values))), kinds, values))


def records_page(name: str, *metrics: records_pb2.Metric) -> collector_pb2.ReadSeriesResponse:
    return collector_pb2.ReadSeriesResponse(
        name=name, records=[collector_pb2.MetricRecord(time_unix_nano=5, metric=m)
                            for m in metrics])


def test_packed_columns_round_trip() -> None:
    K = packed
    cases = [
        ([1, 2, 3], [K.KIND_NUMBER] * 3, [1.5, math.inf, -0.0]),
        ([None, None], [K.KIND_NUMBER] * 2, [1.0, 2.0]),
        ([None, 4, -(2 ** 63)], [K.KIND_INTEGER, K.KIND_TEXT, K.KIND_FLAG],
         [2 ** 63 - 1, "é\nx", True]),
    ]
    for steps, kinds, values in cases:
        back = packed.unpack(packed.pack(steps, [7] * len(steps), kinds, values))
        assert back.values == values and back.times == [7] * len(steps)
        assert back.steps == (None if all(s is None for s in steps) else steps)
    with pytest.raises(ValueError, match="disagree"):
        broken = packed.pack([1], [1], [K.KIND_NUMBER], [1.0])
        broken.count = 2
        packed.unpack(broken)


def _pages() -> list[collector_pb2.ReadSeriesResponse]:
    row = records_pb2.Metric(name="mixed", row=records_pb2.Row(cells=[records_pb2.Cell(
        column="x", value=records_pb2.Value(number=1.0))]))
    return [
        page("acc", [None], [0.5]),
        page("loss", [1, 2], [3.0, math.nan]), page("loss", [3], [1.0]),
        page("loss", [4, None], [0.5, 0.25]),
        page("one", [7], [2], kinds=[packed.KIND_INTEGER]),  # one integer: not a list
        page("mixed", [1], [1.0], has_records=True), records_page("mixed", row),
        page("mixed", [3], ["t"], kinds=[packed.KIND_TEXT]),
        page("flags", [None, None], [True, False], kinds=[packed.KIND_FLAG] * 2),
    ]


def test_streamed_json_is_the_fold_of_the_same_pages() -> None:
    pages = _pages()
    out = io.StringIO()
    assert write_json(iter(pages), out) == 5
    got = json.loads(out.getvalue())
    want = fold_series(pages)
    assert list(got) == list(want)
    assert math.isnan(got["loss"][1]) and math.isnan(want["loss"][1])
    got["loss"][1] = want["loss"][1] = 0
    assert got == want
    assert want["acc"] == 0.5 and want["one"] == 2 and want["flags"] == [True, False]
    empty = io.StringIO()
    assert write_json(iter([]), empty) == 0 and json.loads(empty.getvalue()) == {}


def test_csv_has_a_row_per_logged_value() -> None:
    pages = _pages()
    out = io.StringIO()
    count = write_csv(iter(pages), out)
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    records = [r for p in pages for r in page_records(p)]
    assert count == len(records) == len(rows) - 1
    assert rows[0] == ["name", "step", "time_unix_nano", "value"]
    assert rows[2] == ["loss", "1", "0", "3.0"] and rows[1] == ["acc", "", "0", "0.5"]
    assert ["mixed", "", "5", '{"x": 1.0}'] in rows


def test_pages_keep_the_logged_order_across_columns_points_and_records() -> None:
    from array import array

    from mltrail.collector.series_pages import pages
    from mltrail.collector.store.chunks import Columns, Points
    from mltrail.collector.store.series import (
        SeriesColumns,
        SeriesPoints,
        SeriesRecord,
        SeriesStart,
    )

    def cols(first: int, n: int, steps: bool = True) -> SeriesColumns:
        return SeriesColumns("m", Columns(n, array("q", range(first, first + n)) if steps
                                          else None, array("q", range(first, first + n)),
                                          array("d", [float(v) for v in range(first,
                                                                              first + n)])))

    listed = records_pb2.Metric(name="m", list=records_pb2.ValueList(values=[
        records_pb2.Value(number=-1.0)]))
    parts = [SeriesStart("m", True), cols(0, 3), SeriesRecord("m", 9, listed.SerializeToString()),
             cols(3, 2), cols(5, 2, steps=False),
             SeriesPoints("m", Points([7], [7], [packed.KIND_TEXT], ["seven"])), cols(8, 1)]
    out = list(pages(iter(parts)))
    assert out[0].has_records and not any(p.has_records for p in out[2:])
    values = [metric_to_python(r.metric) for p in out for r in page_records(p)]
    assert values == [0.0, 1.0, 2.0, [-1.0], 3.0, 4.0, 5.0, 6.0, "seven", 8.0]
    steps = [r.metric.scalar.step if r.metric.scalar.HasField("step") else None
             for p in out for r in page_records(p) if r.metric.HasField("scalar")]
    assert steps == [0, 1, 2, 3, 4, None, None, 7, 8]


def test_values_only_pages_of_float32s_and_doubles_fold_and_stream_alike() -> None:
    """A values_only read: float32s in ``floats``, doubles in ``numbers``, no times; the
    JSON and get_metrics' fold both give the widened values in order, bit for bit."""
    f32 = array("f", [0.1, -0.0, math.inf, 3.5e38, 1e-45])
    doubles = array("d", [0.1, math.nan, -1.5])
    pages = [collector_pb2.ReadSeriesResponse(name="loss", points=collector_pb2.PackedPoints(
                 count=len(f32), floats=f32.tobytes())),
             collector_pb2.ReadSeriesResponse(name="loss", points=collector_pb2.PackedPoints(
                 count=len(doubles), numbers=doubles.tobytes()))]
    want = f32.tolist() + doubles.tolist()
    got = fold_series(pages)["loss"]
    assert [struct.pack("<d", v) for v in got] == [struct.pack("<d", v) for v in want]
    out = io.StringIO()
    write_json(pages, out)
    assert json.dumps(json.loads(out.getvalue())["loss"]) == json.dumps(want)
    assert packed.unpack(pages[0].points).times == [0] * len(f32)  # left out: shown as 0
    assert packed.values_of(pages[0].points) == f32.tolist()
