"""The web API's pure parts: the runs view's parameters and the series' bucket choice."""

from __future__ import annotations

import pytest

from mltrail.collector.store.chunks import CHUNK_POINTS
from mltrail.collector.web import runs_view, series
from mltrail.proto.collector_pb2 import MetricSummary


def test_where_columns_and_sort_parse_as_the_url_writes_them() -> None:
    view = runs_view.parse({"where": ["accuracy >= 0.9", "loss:min<0.2"],
                            "columns": ["accuracy, loss:max"], "sort": ["-loss"],
                            "tag": ["team=vision", "baseline"], "limit": ["10"]})
    assert [(c.column.key, c.op, c.number) for c in view.where] == [
        ("accuracy:last", ">=", 0.9), ("loss:min", "<", 0.2)]
    assert [c.key for c in view.columns] == ["accuracy:last", "loss:max"]
    assert (view.sort, view.descending, view.limit) == ("loss:last", True, 10)
    assert view.tags == {"team": "vision", "baseline": ""}
    assert view.metric_names() == {"accuracy", "loss"}


def test_a_condition_never_holds_for_a_missing_or_nan_value() -> None:
    condition = runs_view.Condition.parse("loss < 1")
    assert condition.holds({"loss": MetricSummary(latest=0.5, min=0.5, max=0.5, count=1)})
    assert not condition.holds({})
    assert not condition.holds({"loss": MetricSummary(latest=float("nan"), count=1)})


@pytest.mark.parametrize("bad", ["loss", "loss ~ 1", "loss > x", "> 1"])
def test_a_bad_condition_is_refused_naming_it(bad: str) -> None:
    with pytest.raises(ValueError, match="where="):
        runs_view.Condition.parse(bad)


def test_a_long_series_is_cut_at_chunk_boundaries_rather_than_decoded() -> None:
    assert series.buckets_to_ask(series.DECODE_AT_MOST, 1000) == 1000  # small: exact cut
    two_million = 2_000_000
    asked = series.buckets_to_ask(two_million, 1000)
    assert asked == two_million // CHUNK_POINTS - 1  # fewer than chunks: whole chunks
    assert series.buckets_to_ask(10_000_000, 1000) == 1000  # more chunks than buckets
