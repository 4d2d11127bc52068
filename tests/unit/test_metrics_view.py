"""fold_metrics gives the shape Azure ML v1 Run.get_metrics() returns, per metric kind."""

from __future__ import annotations

import json
from typing import Any

from mltrail.proto import collector_pb2, records_pb2
from mltrail.query.metrics_view import fold_metrics, metric_kind, metric_to_python, value_to_python
from tests.builders import value


def scalar(name: str, v: Any, step: int | None = None) -> collector_pb2.MetricRecord:
    s = records_pb2.Scalar(value=value(v))
    if step is not None:
        s.step = step
    return collector_pb2.MetricRecord(
        time_unix_nano=1, metric=records_pb2.Metric(name=name, scalar=s))


def metric(name: str, **data: Any) -> collector_pb2.MetricRecord:
    return collector_pb2.MetricRecord(
        time_unix_nano=1, metric=records_pb2.Metric(name=name, **data))


def vlist(name: str, values: list[Any]) -> collector_pb2.MetricRecord:
    return metric(name, list=records_pb2.ValueList(values=[value(v) for v in values]))


def row(name: str, **cells: Any) -> collector_pb2.MetricRecord:
    return metric(name, row=records_pb2.Row(
        cells=[records_pb2.Cell(column=k, value=value(v)) for k, v in cells.items()]))


def table(name: str, columns: dict[str, list[Any]]) -> collector_pb2.MetricRecord:
    return metric(name, table=records_pb2.Table(columns=[
        records_pb2.Column(name=k, values=[value(v) for v in vs]) for k, vs in columns.items()]))


def image(name: str, path: str) -> collector_pb2.MetricRecord:
    return metric(name, image=records_pb2.ImageRef(artifact_path=path))


def json_metric(name: str, doc: dict[str, Any], schema: str = "confusion_matrix"
                ) -> collector_pb2.MetricRecord:
    return metric(name, json=records_pb2.JsonMetric(
        schema_type=schema, schema_version="1.0.0", json=json.dumps(doc)))


def test_value_to_python_keeps_each_kind_and_type() -> None:
    got = [value_to_python(value(v)) for v in (1.5, 7, "x", True, False, 0)]
    assert got == [1.5, 7, "x", True, False, 0]
    assert [type(v) for v in got] == [float, int, str, bool, bool, int]
    assert value_to_python(records_pb2.Value()) is None


def test_scalar_logged_once_is_the_value() -> None:
    assert fold_metrics([scalar("acc", 0.9)]) == {"acc": 0.9}


def test_scalar_logged_several_times_is_a_list_in_logged_order() -> None:
    recs = [scalar("loss", v, step=i) for i, v in enumerate([3.0, 1.0, 2.0])]
    assert fold_metrics(recs) == {"loss": [3.0, 1.0, 2.0]}


def test_log_list_is_the_list_even_with_one_element() -> None:
    assert fold_metrics([vlist("l", [1, 2, 3])]) == {"l": [1, 2, 3]}
    assert fold_metrics([vlist("one", ["a"])]) == {"one": ["a"]}


def test_log_list_twice_concatenates() -> None:
    assert fold_metrics([vlist("l", [1, 2]), vlist("l", [3])]) == {"l": [1, 2, 3]}


def test_log_row_once_is_column_to_value() -> None:
    assert fold_metrics([row("xy", x=1, y=0.4)]) == {"xy": {"x": 1, "y": 0.4}}


def test_log_row_several_times_is_column_to_list() -> None:
    recs = [row("citrus", fruit=f, size=s) for f, s in [("orange", 10), ("lemon", 7), ("lime", 3)]]
    assert fold_metrics(recs) == {
        "citrus": {"fruit": ["orange", "lemon", "lime"], "size": [10, 7, 3]}}


def test_log_row_with_a_missing_column_pads_with_none() -> None:
    recs = [row("r", a=1), row("r", a=2, b=3), row("r", b=4)]
    assert fold_metrics(recs) == {"r": {"a": [1, 2, None], "b": [None, 3, 4]}}


def test_log_table_is_column_to_list_even_with_one_row() -> None:
    assert fold_metrics([table("t", {"x": [1, 2, 3], "y": [0.6, 0.7, 0.89]})]) == {
        "t": {"x": [1, 2, 3], "y": [0.6, 0.7, 0.89]}}
    assert fold_metrics([table("t1", {"x": [1]})]) == {"t1": {"x": [1]}}


def test_log_table_then_rows_extend_the_columns() -> None:
    recs = [table("t", {"x": [1, 2]}), row("t", x=3)]
    assert fold_metrics(recs) == {"t": {"x": [1, 2, 3]}}


def test_image_is_the_artifact_path() -> None:
    assert fold_metrics([image("plot", "images/plot.png")]) == {"plot": "images/plot.png"}
    assert fold_metrics([image("p", "a.png"), image("p", "b.png")]) == {"p": ["a.png", "b.png"]}


def test_json_metrics_are_parsed_dicts() -> None:
    cm = {"schema_type": "confusion_matrix", "data": {"matrix": [[1, 0], [0, 1]]}}
    at = {"schema_type": "accuracy_table", "data": {"probability_tables": []}}
    res = {"schema_type": "residuals", "data": {"bin_edges": [0, 1], "bin_counts": [3]}}
    pred = {"schema_type": "predictions", "data": {"bin_averages": [0.5]}}
    recs = [json_metric("cm", cm), json_metric("at", at, "accuracy_table"),
            json_metric("res", res, "residuals"), json_metric("pred", pred, "predictions")]
    assert fold_metrics(recs) == {"cm": cm, "at": at, "res": res, "pred": pred}


def test_invalid_json_is_kept_as_text() -> None:
    rec = metric("bad", json=records_pb2.JsonMetric(schema_type="x", json="{nope"))
    assert fold_metrics([rec]) == {"bad": "{nope"}


def test_names_keep_first_logged_order_and_do_not_mix() -> None:
    recs = [scalar("b", 1), scalar("a", 2), scalar("b", 3), vlist("c", [4])]
    folded = fold_metrics(recs)
    assert list(folded) == ["b", "a", "c"]
    assert folded == {"b": [1, 3], "a": 2, "c": [4]}


def test_mixed_families_under_one_name_keep_every_call() -> None:
    recs = [scalar("m", 1), row("m", x=2), image("m", "i.png")]
    assert fold_metrics(recs) == {"m": [1, {"x": 2}, "i.png"]}


def test_bare_metric_messages_fold_too() -> None:
    assert fold_metrics([scalar("a", 1).metric, scalar("a", 2).metric]) == {"a": [1, 2]}


def test_metric_kind_and_single_call_value() -> None:
    rec = table("t", {"x": [1]})
    assert metric_kind(rec.metric) == "table"
    assert metric_to_python(rec.metric) == {"x": [1]}
    assert metric_kind(records_pb2.Metric(name="empty")) == ""
    assert fold_metrics([]) == {}
