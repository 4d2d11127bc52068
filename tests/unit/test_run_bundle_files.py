"""How a run's metrics and artifact names become bundle files."""

from __future__ import annotations

from mltrail.bundle.run_bundle import _csv_rows, _inside, _metric_row
from mltrail.proto import collector_pb2, records_pb2


def record(metric: records_pb2.Metric, time: int = 5) -> collector_pb2.MetricRecord:
    return collector_pb2.MetricRecord(time_unix_nano=time, metric=metric)


def value(number: float) -> records_pb2.Value:
    return records_pb2.Value(number=number)


def test_artifact_names_stay_inside_the_bundle() -> None:
    assert _inside("../../etc/passwd") == "etc/passwd"
    assert _inside("outputs/model.pkl") == "outputs/model.pkl"
    assert _inside("/a/./b c.txt") == "a/b_c.txt"
    assert _inside("..") == "artifact"


def test_a_csv_row_per_value_row_and_table_row() -> None:
    scalar = record(records_pb2.Metric(name="loss", scalar=records_pb2.Scalar(
        value=value(0.5), step=3)))
    listed = record(records_pb2.Metric(name="c", list=records_pb2.ValueList(
        values=[value(1), value(2)])))
    row = record(records_pb2.Metric(name="r", row=records_pb2.Row(cells=[
        records_pb2.Cell(column="acc", value=value(0.9))])))
    table = record(records_pb2.Metric(name="t", table=records_pb2.Table(columns=[
        records_pb2.Column(name="x", values=[value(1), value(2), value(3)])])))
    rows = list(_csv_rows([scalar, listed, row, table]))
    assert rows[0] == {"record": 0, "time_unix_nano": 5, "kind": "scalar", "step": 3,
                       "value": 0.5}
    assert [r["value"] for r in rows[1:3]] == [1, 2] and rows[2]["index"] == 1
    assert rows[3]["column:acc"] == 0.9
    assert [r["column:x"] for r in rows[4:]] == [1, 2, 3]
    assert _metric_row(scalar) == {"time_unix_nano": 5, "kind": "scalar", "step": 3,
                                   "value": 0.5}
