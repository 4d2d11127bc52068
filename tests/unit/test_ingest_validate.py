"""Batch validation: each problem is refused with a message naming stream, record and cause."""

from __future__ import annotations

import math
from typing import Any

import pytest

from mltrail.collector.store.chunks import KIND_INTEGER, KIND_NUMBER
from mltrail.collector.validate import BatchRejected, validate_batch
from mltrail.proto import records_pb2
from tests import builders as b


def rejected(batch: records_pb2.Batch) -> BatchRejected:
    with pytest.raises(BatchRejected) as info:
        validate_batch(batch)
    return info.value


def test_valid_batch_separates_scalars_from_other_records() -> None:
    valid = validate_batch(b.batch("s", [
        b.started(1, "r"), b.scalar(2, "r", "loss", 0.5, step=3), b.log(3, "r", b"x\n"),
        b.scalar(4, "r", "acc", 7)]))
    assert (valid.first_seq, valid.last_seq, valid.count) == (1, 4, 4)
    assert [(run.run_id, run.name, list(run.seqs)) for run in valid.scalars] == [
        ("r", "loss", [2]), ("r", "acc", [4])]
    loss, acc = (run.points for run in valid.scalars)
    assert (loss.steps, loss.kinds, loss.values) == ([3], [KIND_NUMBER], [0.5])
    assert (acc.steps, acc.kinds, acc.values) == ([None], [KIND_INTEGER], [7])
    assert [r.seq for r in valid.others] == [1, 3]


def test_gap_inside_a_batch_is_refused() -> None:
    exc = rejected(b.batch("abc", [b.scalar(1, "r", "m", 1.0), b.scalar(3, "r", "m", 1.0)]))
    assert "stream 'abc'" in str(exc)
    assert "record seq 3 (index 1)" in str(exc)
    assert "nothing of this batch was stored" in str(exc)
    assert exc.reason == "seq"


def test_unknown_run_event_is_refused() -> None:
    rec = b.record(1, "r", run_event=records_pb2.RunEvent())
    exc = rejected(b.batch("s", [rec]))
    assert "unknown run event" in str(exc)


def test_record_without_body_is_refused() -> None:
    exc = rejected(b.batch("s", [b.record(1, "r")]))
    assert "unknown record kind" in str(exc)


def test_nan_in_json_metric_is_refused_but_nan_scalar_is_accepted() -> None:
    json_metric = records_pb2.Metric(name="cm", json=records_pb2.JsonMetric(json='{"v": NaN}'))
    exc = rejected(b.batch("s", [b.record(1, "r", metric=json_metric)]))
    assert "not strict JSON" in str(exc) and "NaN" in str(exc)
    valid = validate_batch(b.batch("s", [b.scalar(1, "r", "loss", math.nan)]))
    assert math.isnan(valid.scalars[0].points.values[0])  # type: ignore[arg-type]


@pytest.mark.parametrize(("batch", "expected"), [
    (b.batch("", [b.scalar(1, "r", "m", 1.0)]), "stream_id is empty"),
    (b.batch("s", []), "no records"),
    (b.batch("s", [b.scalar(0, "r", "m", 1.0)]), "seqs start at 1"),
    (b.batch("s", [b.scalar(1, "", "m", 1.0)]), "run_id is empty"),
    (b.batch("s", [b.scalar(1, "r", "", 1.0)]), "metric name is empty"),
    (b.batch("s", [b.record(1, "r", metric=records_pb2.Metric(
        name="m", scalar=records_pb2.Scalar()))]), "has no value"),
    (b.batch("s", [b.log(1, "r", b"a\nb\n", line_times_unix_nano=[1])]), "2 lines but 1"),
    (b.batch("s", [b.record(1, "r", artifact=records_pb2.ArtifactChunk(
        path="f", last=True, sha256="zz"))]), "no valid sha256"),
    (b.batch("s", [b.ended(1, "r", status=records_pb2.RUNNING)]), "status RUNNING"),
])
def test_each_problem_has_a_clear_message(batch: records_pb2.Batch, expected: str) -> None:
    assert expected in str(rejected(batch))


_TOO_BIG = 2**63  # one past SQLite's largest INTEGER


@pytest.mark.parametrize(("batch", "expected"), [
    (b.batch("s", [b.scalar(_TOO_BIG, "r", "m", 1.0)]), f"seq {_TOO_BIG}"),
    (b.batch("s", [b.scalar(_TOO_BIG - 1, "r", "m", 1.0), b.scalar(_TOO_BIG, "r", "m", 1.0)]),
     f"seq {_TOO_BIG}"),
    (b.batch("s", [b.record(1, "r", artifact=records_pb2.ArtifactChunk(
        path="f", offset=_TOO_BIG, data=b"x"))]), "offset"),
    (b.batch("s", [b.record(1, "r", artifact=records_pb2.ArtifactChunk(
        path="f", data=b"x", last=True, sha256="a" * 64, size=_TOO_BIG))]), "size"),
], ids=["seq", "last-seq", "artifact-offset", "artifact-size"])
def test_numbers_beyond_the_store_range_are_refused(batch: records_pb2.Batch,
                                                    expected: str) -> None:
    """uint64 fields the store keeps as a signed 64-bit INTEGER: beyond it the write
    would crash instead of answering (finding 1)."""
    exc = rejected(batch)
    assert exc.reason == "range"
    assert expected in str(exc) and "nothing of this batch was stored" in str(exc)


def test_largest_storable_seq_is_accepted() -> None:
    valid = validate_batch(b.batch("s", [b.scalar(_TOO_BIG - 1, "r", "m", 1.0)]))
    assert valid.last_seq == _TOO_BIG - 1


@pytest.mark.parametrize(("field", "make"), [
    ("run_id", lambda bad: b.batch("s", [b.scalar(1, bad, "loss", 1.0)])),
    ("metric name", lambda bad: b.batch("s", [b.scalar(1, "r", bad, 1.0)])),
    ("log stream", lambda bad: b.batch("s", [b.log(1, "r", b"x\n", stream=bad)])),
    ("experiment", lambda bad: b.batch("s", [b.started(1, "r", experiment=bad)])),
    ("stream_id", lambda bad: b.batch(bad, [b.scalar(1, "r", "loss", 1.0)])),
    ("tag key", lambda bad: b.batch("s", [b.started(1, "r", tags={bad: "v"})])),
    ("property key", lambda bad: b.batch("s", [b.started(1, "r", properties={bad: "v"})])),
    ("tag key", lambda bad: b.batch("s", [b.record(1, "r", run_event=records_pb2.RunEvent(
        tags=records_pb2.TagsSet(tags={bad: "v"})))])),
    ("removed tag", lambda bad: b.batch("s", [b.record(1, "r", run_event=records_pb2.RunEvent(
        tags=records_pb2.TagsSet(removed=[bad])))])),
    ("property key", lambda bad: b.batch("s", [b.record(1, "r", run_event=records_pb2.RunEvent(
        properties=records_pb2.PropertiesAdded(properties={bad: "v"})))])),
    ("column name", lambda bad: b.batch("s", [b.record(1, "r", metric=records_pb2.Metric(
        name="row", row=records_pb2.Row(cells=[records_pb2.Cell(column=bad)])))])),
    ("column name", lambda bad: b.batch("s", [b.record(1, "r", metric=records_pb2.Metric(
        name="t", table=records_pb2.Table(columns=[records_pb2.Column(name=bad)])))])),
    ("artifact path", lambda bad: b.batch("s", b.artifact(1, "r", f"outputs/{bad}", b"x"))),
])
@pytest.mark.parametrize("bad", ["nul\x00here", "esc\x1b[31mred", "line\r\nbreak"])
def test_names_with_control_characters_are_refused_naming_the_field(
        field: str, make: Any, bad: str) -> None:
    with pytest.raises(BatchRejected, match=f"{field} .*control character") as refused:
        validate_batch(make(bad))
    assert refused.value.reason == "bad_name"


def test_a_run_id_of_ten_thousand_characters_is_refused() -> None:
    with pytest.raises(BatchRejected, match=r"run_id .* is 10000 characters long, over 255"):
        validate_batch(b.batch("s", [b.scalar(1, "r" * 10_000, "loss", 1.0)]))


@pytest.mark.parametrize("path", ["/etc/passwd", "outputs/../../x", "outputs//x", "./x", "x/"])
def test_artifact_paths_must_be_relative_inside_the_run(path: str) -> None:
    with pytest.raises(BatchRejected, match="not a relative path") as refused:
        validate_batch(b.batch("s", b.artifact(1, "r", path, b"x")))
    assert refused.value.reason == "bad_artifact"


def test_tag_values_are_free_text() -> None:
    """The SDK lets a tag's value hold any text (a commit message, a command line)."""
    valid = validate_batch(b.batch("s", [b.started(1, "r", tags={"msg": "fix\r\nbug\x1b"})]))
    assert valid.count == 1
