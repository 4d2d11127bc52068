"""``mltrail store copy``: a populated SQLite store into PostgreSQL, resumed after an
interruption, verified, and a second copy stores nothing."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import pytest

from mltrail.collector.artifacts import ArtifactStore
from mltrail.collector.store import LogQuery, Store, ValidBatch, WriteSummary, open_store
from mltrail.collector.store.copy import copy_store
from mltrail.collector.validate import validate_batch
from mltrail.proto import collector_pb2, records_pb2
from tests import builders as b
from tests.procs import mltrail_cli


def populate(store: Store) -> None:
    """Two runs (a parent that failed, a child still running) with every kind of record."""
    big = bytes(range(256)) * 9000  # 2.2 MiB: three artifact chunks
    records = [
        b.started(1, "parent", experiment="e", tags={"t": "1"}, properties={"p": "x"}),
        *[b.scalar(seq, "parent", "loss", 1.0 / seq, step=seq) for seq in range(2, 3002)],
        b.record(3002, "parent", metric=records_pb2.Metric(name="loss", list=records_pb2.
                 ValueList(values=[b.value(1), b.value("a")]))),
        b.scalar(3003, "parent", "loss", float("nan")),
        b.log(3004, "parent", b"one\ntwo\n", line_times_unix_nano=[5, 6]),
        b.log(3005, "parent", b"warned\n", stream="app", level="WARNING", logger="x"),
        *b.artifact(3006, "parent", "outputs/model.bin", big),
        b.started(3009, "child", experiment="e", parent_run_id="parent"),
        b.scalar(3010, "child", "acc", 7),
        b.ended(3011, "parent", records_pb2.FAILED,
                records_pb2.ErrorDetails(code="UserError", message="boom")),
    ]
    store.write_batch([validate_batch(b.batch("agent-stream", records))])
    # another workspace, whose stream id is also used in 'default': kept apart
    store.write_batch([validate_batch(b.batch("agent-stream", [
        b.started(1, "team-run", experiment="e"), b.scalar(2, "team-run", "acc", 0.5)]),
        "team-a")])


def snapshot(store: Store, artifacts: ArtifactStore) -> dict[str, object]:
    out: dict[str, object] = {}
    runs = [(run, workspace) for workspace in ("default", "team-a")
            for run in store.list_runs(collector_pb2.ListRunsRequest(), workspace)]
    for run, workspace in runs:
        details = store.get_run(run.run_id, workspace)
        assert details is not None
        details.ClearField("last_delivery_unix_nano")  # when this store got it: not copied
        lines = [(line.stream, line.line, line.text, line.time_unix_nano, line.level,
                  line.logger) for line in store.read_logs(LogQuery(run.run_id))]
        files = {info.path: hashlib.sha256(b"".join(store.read_artifact(info, 1 << 20)))
                 .hexdigest() for info in store.list_artifacts(run.run_id)}
        out[run.run_id] = (workspace, details, [m.SerializeToString() for m in
                                     store.get_metrics(run.run_id, "")], lines, files)
    return out


class _Interrupted:
    """A destination that fails after ``budget`` writes, as a copy killed mid-way."""

    def __init__(self, inner: Store, budget: int) -> None:
        self._inner, self._budget = inner, budget

    def write_batch(self, batches: Sequence[ValidBatch]) -> WriteSummary:
        if self._budget == 0:
            raise KeyboardInterrupt
        self._budget -= 1
        return self._inner.write_batch(batches)

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


def test_copy_into_postgres_resumes_verifies_and_copies_nothing_twice(
        tmp_path: Path, postgres_url: str) -> None:
    source_path = tmp_path / "source.db"
    art = ArtifactStore(tmp_path / "art")
    art.prepare()
    source = open_store(f"sqlite:///{source_path}", art)
    populate(source)
    expected = snapshot(source, art)
    source.close()

    source = open_store(f"sqlite:///{source_path}", art)
    destination = open_store(postgres_url, ArtifactStore(tmp_path / "art2"))
    with pytest.raises(KeyboardInterrupt):  # killed after two batches
        copy_store(source, str(source_path), art,
                   _Interrupted(destination, 2),  # type: ignore[arg-type]
                   lambda marks, workspace: None)
    source.close()
    destination.close()

    args = ["store", "copy", f"sqlite:///{source_path}", postgres_url,
            "--from-artifacts", str(tmp_path / "art"), "--to-artifacts", str(tmp_path / "art2")]
    first = mltrail_cli(*args)
    assert first.returncode == 0, first.stderr
    assert "counts verified" in first.stdout and "already there" in first.stdout
    assert " 0 already there" not in first.stdout  # the resumed part was skipped
    again = mltrail_cli(*args)
    assert again.returncode == 0, again.stderr
    assert ": 0 records stored" in again.stdout

    destination = open_store(postgres_url, ArtifactStore(tmp_path / "art2"))
    try:
        assert snapshot(destination, ArtifactStore(tmp_path / "art2")) == expected
        duplicate = destination.write_batch([validate_batch(b.batch(
            "agent-stream", [b.scalar(3011, "parent", "loss", 0.0)]))]).outcomes[0]
        assert duplicate.duplicates == 1  # the old agent stream's mark came along
        team = destination.write_batch([validate_batch(b.batch(
            "agent-stream", [b.scalar(2, "team-run", "acc", 0.0),
                             b.scalar(3, "team-run", "acc", 0.7)]), "team-a")]).outcomes[0]
        assert (team.duplicates, team.stored) == (1, 1)  # its workspace's mark, not default's
    finally:
        destination.close()
