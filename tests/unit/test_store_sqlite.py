"""The store contract through its one write primitive and its queries, on SQLite (in
tmp_path) and on PostgreSQL (a fresh database per test); SQLite's own behaviour too."""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mltrail.collector.artifacts import ArtifactStore
from mltrail.collector.store import LogQuery, Store, open_store
from mltrail.collector.store.sqlite import SqliteStore
from mltrail.collector.store.sqlite_reader import SqliteReader
from mltrail.collector.store.sqlite_schema import SCHEMA_VERSION, connect
from mltrail.collector.validate import validate_batch
from mltrail.common.errors import PermanentError
from mltrail.common.lines import LINE_SPLIT_MARKER
from mltrail.proto import collector_pb2, records_pb2
from tests import builders as b
from tests.store_v2 import V2Store


@pytest.fixture
def store(store_url: str, tmp_path: Path) -> Iterator[Store]:
    """The same contract on both backends (PostgreSQL: a fresh database per test)."""
    s = open_store(store_url, ArtifactStore(tmp_path / "art"))
    yield s
    s.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    """For the tests of SQLite's own behaviour (statements, pragmas, files)."""
    s = open_store(f"sqlite:///{tmp_path / 'store.db'}", ArtifactStore(tmp_path / "art"))
    yield s
    s.close()


def write(store: Store, *batches: records_pb2.Batch):  # type: ignore[no-untyped-def]
    return store.write_batch([validate_batch(batch) for batch in batches])


def artifact_records(run_id: str, path: str, data: bytes, first_seq: int, piece: int,
                     sha: str | None = None) -> list[records_pb2.Record]:
    out = []
    offsets = list(range(0, len(data), piece)) or [0]
    for n, offset in enumerate(offsets):
        last = n == len(offsets) - 1
        chunk = records_pb2.ArtifactChunk(
            path=path, offset=offset, data=data[offset:offset + piece], last=last,
            sha256=(sha or hashlib.sha256(data).hexdigest()) if last else "",
            size=len(data) if last else 0)
        out.append(b.record(first_seq + n, run_id, artifact=chunk))
    return out


def test_replayed_batch_is_stored_once(store: Store) -> None:
    batch = b.batch("s", [b.scalar(i, "r", "loss", float(i)) for i in range(1, 6)])
    first = write(store, batch).outcomes[0]
    again = write(store, batch).outcomes[0]
    overlap = write(store, b.batch("s", [b.scalar(i, "r", "loss", float(i))
                                          for i in range(4, 8)])).outcomes[0]
    assert (first.stored, first.duplicates, first.acked_seq) == (5, 0, 5)
    assert (again.stored, again.duplicates, again.acked_seq) == (0, 5, 5)
    assert (overlap.stored, overlap.duplicates, overlap.acked_seq) == (2, 2, 7)
    values = [r.metric.scalar.value.number for r in store.get_metrics("r", "loss")]
    assert values == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]


def test_a_batch_past_the_mark_is_refused_naming_the_expected_seq(store: Store) -> None:
    write(store, b.batch("s", [b.scalar(1, "r", "m", 1.0)]))
    outcome = write(store, b.batch("s", [b.scalar(5, "r", "m", 5.0)])).outcomes[0]
    assert (outcome.expected_seq, outcome.stored, outcome.acked_seq) == (2, 0, 1)
    resent = write(store, b.batch("s", [b.scalar(s, "r", "m", float(s))
                                         for s in range(2, 6)])).outcomes[0]
    assert (resent.expected_seq, resent.stored, resent.acked_seq) == (0, 4, 5)
    values = [r.metric.scalar.value.number for r in store.get_metrics("r", "m")]
    assert values == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_a_gap_record_moves_the_mark_and_explains_the_hole(store: Store, tmp_path: Path
                                                           ) -> None:
    from mltrail.common.gaps import gap_batch

    write(store, b.batch("s", [b.scalar(1, "r", "m", 1.0)]))
    gap = records_pb2.Batch.FromString(gap_batch("s", 2, 4, "dead letter: bad json", 3))
    assert write(store, gap).outcomes[0].gap
    after = write(store, b.batch("s", [b.scalar(5, "r", "m", 5.0)])).outcomes[0]
    assert (after.expected_seq, after.stored, after.acked_seq) == (0, 1, 5)
    query = "SELECT stream_id, first_seq, last_seq, records, reason FROM stream_gaps"
    if isinstance(store, SqliteStore):
        with contextlib.closing(sqlite3.connect(tmp_path / "store.db")) as db:
            rows = db.execute(query).fetchall()
    else:
        with store._pool.connection() as conn:  # type: ignore[attr-defined]
            rows = [tuple(row) for row in conn.execute(query).fetchall()]
    assert rows == [("s", 2, 4, 3, "dead letter: bad json")]


def test_scalar_values_round_trip_exactly(store: Store) -> None:
    big = 2**62 + 1
    write(store, b.batch("s", [
        b.scalar(1, "r", "a", math.nan), b.scalar(2, "r", "a", math.inf),
        b.scalar(3, "r", "b", big, step=9), b.scalar(4, "r", "c", "text"),
        b.scalar(5, "r", "d", True)]))
    got = {r.metric.name: r.metric.scalar for r in store.get_metrics("r", "")}
    a = [r.metric.scalar.value.number for r in store.get_metrics("r", "a")]
    assert math.isnan(a[0]) and a[1] == math.inf
    assert got["b"].value.integer == big and got["b"].step == 9
    assert got["c"].value.text == "text"
    assert got["d"].value.flag is True
    assert [r.metric.name for r in store.get_metrics("r", "")] == ["a", "a", "b", "c", "d"]


def test_rare_metric_kinds_round_trip(store: Store) -> None:
    table = records_pb2.Metric(name="t", description="d", table=records_pb2.Table(
        columns=[records_pb2.Column(name="x", values=[b.value(1), b.value(2)])]))
    write(store, b.batch("s", [b.record(1, "r", metric=table)]))
    assert store.get_metrics("r", "t")[0].metric == table


def test_other_metrics_are_the_rare_kinds_alone_and_summaries_the_scalars(
        store: Store) -> None:
    listed = records_pb2.ValueList(values=[b.value(1), b.value(2)])
    write(store, b.batch("s", [
        b.started(1, "r"), *(b.scalar(2 + i, "r", "loss", 1.0 / (i + 1), step=i)
                             for i in range(5000)),
        _metric_with(5002, "counts", list=listed), b.scalar(5003, "r", "loss", float("nan"))]))
    others = store.other_metrics("r")
    assert [(r.metric.name, r.metric.WhichOneof("data")) for r in others] == [("counts", "list")]
    summary = store.metric_summaries(["r"])["r"]["loss"]
    assert (summary.count, summary.min, summary.max) == (5001, 1.0 / 5000, 1.0)
    assert math.isnan(summary.latest)


def _metric_with(seq: int, name: str, description: str = "", **data: Any
                 ) -> records_pb2.Record:
    return b.record(seq, "r", metric=records_pb2.Metric(name=name, description=description,
                                                        **data))


def test_values_of_one_name_keep_their_order_across_metric_kinds(store: Store) -> None:
    """Plain scalars take a fast path; a list or a described scalar of the same name in
    the same batch used to be stored before them (finding 4, invariant 6)."""
    described = records_pb2.Scalar(value=b.value(0.5))
    write(store, b.batch("s", [
        b.scalar(1, "r", "acc", 1),
        _metric_with(2, "acc", list=records_pb2.ValueList(values=[b.value(2), b.value(3)])),
        b.scalar(3, "r", "acc", 4),
        _metric_with(4, "loss", "first", scalar=described),
        b.scalar(5, "r", "loss", 0.4),
        _metric_with(6, "loss", "third", scalar=records_pb2.Scalar(value=b.value(0.3))),
        b.scalar(7, "r", "loss", 0.2)]))
    acc = [r.metric for r in store.get_metrics("r", "acc")]
    assert [m.WhichOneof("data") for m in acc] == ["scalar", "list", "scalar"]
    assert [m.scalar.value.integer for m in (acc[0], acc[2])] == [1, 4]
    loss = [r.metric.scalar.value.number for r in store.get_metrics("r", "loss")]
    assert loss == [0.5, 0.4, 0.3, 0.2]


def test_run_is_derived_from_records(store: Store) -> None:
    write(store, b.batch("s", [b.scalar(1, "child", "m", 1.0)]))
    assert store.get_run("child").status == records_pb2.RUNNING  # type: ignore[union-attr]
    write(store, b.batch("s", [
        b.started(2, "parent", experiment="e", properties={"k": "first"}),
        b.started(3, "child", experiment="e", parent_run_id="parent", tags={"t": "1"}),
        b.record(4, "child", run_event=records_pb2.RunEvent(
            properties=records_pb2.PropertiesAdded(properties={"p": "1"}))),
        b.record(5, "child", run_event=records_pb2.RunEvent(
            properties=records_pb2.PropertiesAdded(properties={"p": "2"}))),
        b.ended(6, "child", records_pb2.FAILED,
                records_pb2.ErrorDetails(code="UserError", message="boom")),
    ]))
    child = store.get_run("child")
    assert child is not None
    assert (child.experiment, child.parent_run_id, child.status) == ("e", "parent",
                                                                     records_pb2.FAILED)
    assert dict(child.properties) == {"p": "1"}  # add-only: the first value stays
    assert dict(child.tags) == {"t": "1"}
    assert child.error.message == "boom" and child.metric_records == 1
    assert list(store.get_run("parent").child_run_ids) == ["child"]  # type: ignore[union-attr]
    failed = store.list_runs(collector_pb2.ListRunsRequest(status=records_pb2.FAILED))
    tagged = store.list_runs(collector_pb2.ListRunsRequest(tags={"t": ""}))
    assert [r.run_id for r in failed] == ["child"] == [r.run_id for r in tagged]
    assert store.get_run("nope") is None


def test_list_runs_reads_no_metric_rows_and_get_run_counts(sqlite_store: Store,
                                                           tmp_path: Path) -> None:
    """Counting a run's metrics scans its whole metric index; list_runs did that for
    every run it listed (finding 10). Counts come from get_run only."""
    write(sqlite_store, b.batch("s", [b.started(1, "r"), *[b.scalar(seq, "r", "m", 1.0)
                                                    for seq in range(2, 52)],
                               b.log(52, "r", b"a\nb\n"),
                               *artifact_records("r", "f", b"abc", 53, 10)]))
    conn = connect(str(tmp_path / "store.db"), readonly=True)
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    reader = SqliteReader(conn)
    try:
        listed = reader.list_runs(collector_pb2.ListRunsRequest())
        list_statements, statements[:] = list(statements), []
        details = reader.get_run("r")
    finally:
        conn.close()
    assert [run.run_id for run in listed] == ["r"]
    assert not [sql for sql in list_statements if "FROM metric_chunks" in sql]
    assert details is not None
    assert (details.metric_records, details.log_lines, details.artifacts) == (50, 2, 1)
    assert [sql for sql in statements if "FROM metric_chunks" in sql]


def test_log_lines_are_numbered_and_ranged_across_chunks(store: Store) -> None:
    write(store, b.batch("s", [b.log(i + 1, "r", f"l{2 * i}\nl{2 * i + 1}\n".encode())
                               for i in range(5)]))
    lines = store.read_logs(LogQuery("r", from_line=3, to_line=7))
    assert [(line.line, line.text) for line in lines] == [
        (3, "l3"), (4, "l4"), (5, "l5"), (6, "l6")]
    assert store.log_positions("r") == {"stdout": 10}


def test_bad_utf8_is_kept_and_long_line_split(store: Store) -> None:
    long_line = b"y" * (2 * 1024 * 1024 + 10)
    write(store, b.batch("s", [b.log(1, "r", b"ok \xff\xfe end\n" + long_line + b"\n",
                                     line_times_unix_nano=[11, 22])]))
    lines = store.read_logs(LogQuery("r"))
    assert lines[0].text == "ok \ufffd\ufffd end" and lines[0].time_unix_nano == 11
    assert len(lines) == 4
    assert all(line.time_unix_nano == 22 for line in lines[1:])
    rebuilt = "".join(line.text for line in lines[1:]).replace(LINE_SPLIT_MARKER.decode(), "")
    assert rebuilt == long_line.decode()


def test_artifact_assembled_and_verified(store: Store, tmp_path: Path) -> None:
    data = bytes(range(256)) * 100
    write(store, b.batch("s", artifact_records("r", "out/model.bin", data, 1, 7000)))
    info = store.get_artifact("r", "out/model.bin")
    assert info is not None and info.size == len(data)
    assert b"".join(store.read_artifact(info, 4096)) == data
    digest = hashlib.sha256(data).hexdigest()
    assert (tmp_path / "art" / "sha256" / digest[:2] / digest).read_bytes() == data


def test_uploads_of_one_path_from_two_streams_do_not_mix(store: Store) -> None:
    """Ranks sharing a run upload images/x/1.png at once; their chunks used to be keyed by
    (run, path, offset) only, so they mixed and both batches were refused (finding 11)."""
    first, second = b"A" * 10, b"B" * 10
    a = artifact_records("r", "images/x/1.png", first, 1, 5)
    c = artifact_records("r", "images/x/1.png", second, 1, 5)
    outcomes = [write(store, b.batch(stream, [rec])).outcomes[0]
                for stream, rec in (("a", a[0]), ("b", c[0]), ("a", a[1]), ("b", c[1]))]
    assert [o.error for o in outcomes] == [None] * 4
    info = store.get_artifact("r", "images/x/1.png")
    assert info is not None
    assert b"".join(store.read_artifact(info, 4096)) == second  # the last one completed wins


def test_partial_upload_in_a_version_1_store_completes_after_the_upgrade(
        tmp_path: Path) -> None:
    """A v1 store (artifact chunks keyed without the stream) is migrated at open, and an
    upload it held half-way completes when the rest arrives."""
    path, art = tmp_path / "store.db", ArtifactStore(tmp_path / "a")
    data = b"0123456789"
    head, tail = artifact_records("r", "f.bin", data, 1, 5)
    old = V2Store(path, version=1)  # what version 1 left on disk: the head chunk waiting
    old.conn.executescript(
        "DROP TABLE artifact_chunks; CREATE TABLE artifact_chunks (run_key INTEGER NOT "
        "NULL, path TEXT NOT NULL, offset INTEGER NOT NULL, data BLOB NOT NULL, "
        "PRIMARY KEY (run_key, path, offset));")
    old.conn.execute("INSERT INTO artifact_chunks VALUES (?, ?, ?, ?)",
                     (old.run_key("r"), "f.bin", 0, head.artifact.data))
    old.hwm("s", 1)
    old.close()
    upgraded = open_store(f"sqlite:///{path}", art)
    try:
        assert write(upgraded, b.batch("s", [tail])).outcomes[0].error is None
        info = upgraded.get_artifact("r", "f.bin")
        assert info is not None and b"".join(upgraded.read_artifact(info, 4096)) == data
    finally:
        upgraded.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == (
            SCHEMA_VERSION)
        assert conn.execute("SELECT COUNT(*) FROM artifact_chunks").fetchone()[0] == 0


def test_sha_mismatch_rolls_back_only_that_batch(store: Store) -> None:
    bad = b.batch("bad", [b.scalar(1, "r", "m", 1.0),
                          *artifact_records("r", "f", b"abc", 2, 2, sha="0" * 64)])
    good = b.batch("good", [b.scalar(1, "r", "m", 2.0)])
    summary = write(store, bad, good)
    assert summary.outcomes[0].error is not None
    assert "sha256 mismatch" in summary.outcomes[0].error
    assert "expected " + "0" * 64 in summary.outcomes[0].error
    assert summary.outcomes[1].stored == 1
    assert [r.metric.scalar.value.number for r in store.get_metrics("r", "m")] == [2.0]
    assert store.list_artifacts("r") == []
    retry = write(store, b.batch("bad", [b.scalar(1, "r", "m", 1.0)])).outcomes[0]
    assert retry.stored == 1  # the rolled-back batch left no high-water mark


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    open_store(f"sqlite:///{path}", ArtifactStore(tmp_path / "a")).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(PermanentError, match=f"schema version {SCHEMA_VERSION + 1}, newer"):
        open_store(f"sqlite:///{path}", ArtifactStore(tmp_path / "a"))


def populate_chunk_forms(store: Store) -> tuple[list[tuple[int, float]], list[str]]:
    """A series of a closed chunk (chunk encoding 3) and a raw open chunk, log lines and
    a gap record: what only schema 6 (PostgreSQL 5) says a store may hold. Returns the
    points (step, value) and the log lines, as written."""
    from mltrail.collector.store.chunks import CHUNK_POINTS
    from mltrail.common.gaps import gap_batch

    points = [(i, i * 0.25 - 7.5) for i in range(CHUNK_POINTS + 10)]
    records = [b.started(1, "r"),
               *(b.scalar(n + 2, "r", "loss", v, step=step)
                 for n, (step, v) in enumerate(points))]
    lines = ["first line", "second line"]
    records.append(b.log(len(records) + 1, "r", "".join(f"{x}\n" for x in lines).encode()))
    assert write(store, b.batch("s", records)).outcomes[0].error is None
    gap = gap_batch("s", len(records) + 1, len(records) + 3, "dead letter: bad json", 3)
    assert write(store, records_pb2.Batch.FromString(gap)).outcomes[0].gap
    return points, lines


def read_back(store: Store) -> tuple[list[tuple[int, float]], list[str]]:
    points = [(m.metric.scalar.step, m.metric.scalar.value.number)
              for m in store.get_metrics("r", "loss")]
    return points, [line.text for line in store.read_logs(LogQuery("r"))]


def _rows(path: Path) -> list[str]:
    """Every row of the store but its version rows, as SQL."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return [line for line in conn.iterdump() if "schema_version" not in line]


def test_a_version_5_store_is_migrated_to_6_changing_only_its_version(tmp_path: Path) -> None:
    """Schema 6 records that chunk rows may be of chunk encoding 3 or raw; a store at 5
    (written by the code that began writing them before the bump) keeps every row."""
    path, art = tmp_path / "store.db", ArtifactStore(tmp_path / "a")
    store = open_store(f"sqlite:///{path}", art)
    try:
        written = populate_chunk_forms(store)
    finally:
        store.close()
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        forms = {row[0] for row in conn.execute("SELECT substr(data, 1, 1) FROM metric_chunks")}
        assert forms == {bytes([3]), bytes([0x80])}  # a compressed v3 chunk, the raw one
        conn.executescript("DELETE FROM schema_version; INSERT INTO schema_version VALUES (5);")
    before = _rows(path)
    for _ in range(2):  # a second start finds nothing left to do
        upgraded = open_store(f"sqlite:///{path}", art)
        try:
            assert read_back(upgraded) == written
        finally:
            upgraded.close()
        assert _rows(path) == before
        with contextlib.closing(sqlite3.connect(path)) as conn:
            assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == 6
    assert SCHEMA_VERSION == 6


def test_a_collector_of_schema_5_refuses_a_version_6_store(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A collector that cannot read chunk encoding 3 or raw chunks (schema 5) stops at
    start with the message it always had, and leaves the store as it was."""
    from mltrail.collector.store import sqlite_schema

    path = tmp_path / "store.db"
    store = open_store(f"sqlite:///{path}", ArtifactStore(tmp_path / "a"))
    populate_chunk_forms(store)
    store.close()
    before = _rows(path)
    monkeypatch.setattr(sqlite_schema, "SCHEMA_VERSION", 5)
    with pytest.raises(PermanentError) as refused:
        open_store(f"sqlite:///{path}", ArtifactStore(tmp_path / "a"))
    assert ("schema version 6, newer than this collector's (5); nothing was changed; "
            "upgrade mltrail") in str(refused.value)
    assert _rows(path) == before


@pytest.mark.parametrize(("url", "expected"), [
    ("mysql://x/y", "unknown scheme 'mysql'"),
    ("sqlite://", "has no file path"),
    ("/just/a/path", "unknown scheme ''"),
    ("sqlite:///s.db?synchronous=sometimes", "synchronous=full or synchronous=normal"),
    ("sqlite:///s.db?fsync=1", "unsupported option"),
])
def test_bad_store_url(tmp_path: Path, url: str, expected: str) -> None:
    with pytest.raises(PermanentError, match=expected):
        open_store(url, ArtifactStore(tmp_path / "a"))


@pytest.mark.parametrize(("query", "level", "pragma"), [
    ("", "normal", 1), ("?synchronous=full", "full", 2),
    ("?synchronous=NORMAL&busy_timeout_ms=10", "normal", 1)])
def test_synchronous_is_a_store_url_option(tmp_path: Path, query: str, level: str,
                                           pragma: int) -> None:
    """FULL makes a commit survive a power loss, at a cost per commit; NORMAL (the
    default) survives a kill -9 of the collector but may lose the last commits on power
    loss (finding 12)."""
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}{query}",
                       ArtifactStore(tmp_path / "a"))
    try:
        assert store.synchronous == level  # type: ignore[attr-defined]
        assert write(store, b.batch("s", [b.scalar(1, "r", "m", 1.0)])).outcomes[0].stored == 1
    finally:
        store.close()
    conn = connect(str(tmp_path / "store.db"), synchronous=level)
    try:
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == pragma
    finally:
        conn.close()


class _RecordingFsync:
    """os.fsync that remembers what it synced: (is a directory, inode)."""

    def __init__(self) -> None:
        self.synced: list[tuple[bool, int]] = []

    def __call__(self, fd: int) -> None:
        info = os.fstat(fd)
        self.synced.append((stat.S_ISDIR(info.st_mode), info.st_ino))
        os.fsync(fd)


def test_artifact_put_syncs_the_file_then_its_directory_entries(tmp_path: Path) -> None:
    """The rename is durable only once the directory holding it is synced, and a
    directory just created only once its parent is (finding 12)."""
    fsync = _RecordingFsync()
    artifacts = ArtifactStore(tmp_path / "art", fsync=fsync)
    artifacts.prepare()
    digest = artifacts.put(b"model bytes")
    target = artifacts.path_for(digest)
    inode = {path: path.stat().st_ino for path in (target, target.parent,
                                                   target.parent.parent, tmp_path / "art")}
    assert fsync.synced[-2:] == [(False, inode[target]), (True, inode[target.parent])]
    assert (True, inode[target.parent.parent]) in fsync.synced  # holds the new ab/ directory
    assert (True, inode[tmp_path / "art"]) in fsync.synced  # holds the new sha256/ directory
    fsync.synced.clear()
    artifacts.put(b"other bytes" * 7)
    assert [is_dir for is_dir, _ in fsync.synced][-2:] == [False, True]  # file, then dir


def test_run_pages_cover_every_run_once_in_a_few_queries(tmp_path: Path) -> None:
    """Pages by token list each run once, newest first (ties by run id); a page costs
    the same number of queries whatever its size; tag and experiment filters hold."""
    path = tmp_path / "store.db"
    store = open_store(f"sqlite:///{path}", ArtifactStore(tmp_path / "a"))
    try:
        records = []
        for i in range(250):
            tags = {"team": "a" if i % 2 else "b", **({"rare": "yes"} if i % 97 == 0 else {})}
            records.append(b.started(i + 1, f"run-{i:03d}", experiment=f"e{i % 3}",
                                     tags=tags, properties={"p": str(i)},
                                     parent_run_id="run-000" if i in (5, 6) else ""))
        batch = b.batch("s", records)
        for rec in batch.records:
            rec.time_unix_nano = 1_000 + rec.seq // 2  # pairs of runs share a start time
        write(store, batch)
        seen: list[str] = []
        request = collector_pb2.ListRunsRequest(limit=40)
        while True:
            page = store.list_runs(request)
            seen.extend(r.run_id for r in page)
            if len(page) < 40:
                break
            request.page_token = f"{page[-1].start_time_unix_nano}:{page[-1].run_id}"
        assert len(seen) == len(set(seen)) == 250
        want = sorted(((1_000 + (i + 1) // 2, f"run-{i:03d}") for i in range(250)),
                      reverse=True)
        assert seen == [run_id for _, run_id in want]
        rare = store.list_runs(collector_pb2.ListRunsRequest(tags={"rare": "yes"}))
        assert sorted(r.run_id for r in rare) == ["run-000", "run-097", "run-194"]
        assert {r.tags["team"] for r in rare} == {"a", "b"}
        first = next(r for r in rare if r.run_id == "run-000")
        assert list(first.child_run_ids) == ["run-005", "run-006"]
        assert first.properties["p"] == "0"
        in_e1 = store.list_runs(collector_pb2.ListRunsRequest(experiment="e1", limit=1000))
        assert len(in_e1) == 83 and {r.experiment for r in in_e1} == {"e1"}
        with pytest.raises(PermanentError, match="page_token"):
            store.list_runs(collector_pb2.ListRunsRequest(page_token="garbage"))
    finally:
        store.close()
    conn = connect(str(path), readonly=True)
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        for limit in (5, 200):
            statements.clear()
            assert len(SqliteReader(conn).list_runs(
                collector_pb2.ListRunsRequest(limit=limit))) == limit
            assert len(statements) == 4, statements
    finally:
        conn.close()
def test_a_registered_run_is_not_started_until_its_launcher_starts_it(store: Store) -> None:
    registered = b.started(1, "sub", display_name="nice name", tags={"via": "submit"},
                           properties={"mltrail.run_definition": "{}"}, registered=True)
    write(store, b.batch("submitter", [registered]))
    info = store.get_run("sub")
    assert info is not None and info.status == records_pb2.RUN_STATUS_UNSPECIFIED
    launcher_start = b.record(1, "sub", run_event=records_pb2.RunEvent(
        started=records_pb2.RunStarted()))  # empty fields: keep the registered ones
    write(store, b.batch("launcher", [launcher_start]))
    info = store.get_run("sub")
    assert info is not None and info.status == records_pb2.RUNNING
    assert (info.experiment, info.display_name, dict(info.tags)) == (
        "exp", "nice name", {"via": "submit"})


def test_the_first_end_of_a_run_is_final(store: Store) -> None:
    write(store, b.batch("a", [b.started(1, "r"), b.ended(2, "r", records_pb2.FAILED)]))
    write(store, b.batch("b", [b.ended(1, "r", records_pb2.COMPLETED),
                               b.record(2, "r", run_event=records_pb2.RunEvent(
                                   started=records_pb2.RunStarted()))]))
    info = store.get_run("r")
    assert info is not None and info.status == records_pb2.FAILED  # not revived, not rewritten


def test_tags_are_removed_and_a_display_name_tag_renames_the_run(store: Store) -> None:
    tags = records_pb2.TagsSet(tags={"mltrail.display_name": "renamed", "keep": "1"})
    write(store, b.batch("s", [
        b.started(1, "r", tags={"gone": "x"}), b.record(2, "r", run_event=records_pb2.RunEvent(
            tags=tags)),
        b.record(3, "r", run_event=records_pb2.RunEvent(tags=records_pb2.TagsSet(
            removed=["gone"])))]))
    info = store.get_run("r")
    assert info is not None and info.display_name == "renamed"
    assert dict(info.tags) == {"keep": "1"}


def test_a_rare_and_a_common_tag_list_the_same_runs_as_a_scan(store: Store) -> None:
    """In SQLite a tag under RARE_TAG runs is listed from the tag index, a common one by
    walking the runs in start order: both give what filtering every run gives, newest
    first, children included (PostgreSQL plans by its own statistics)."""
    from mltrail.collector.store.sqlite_reader import RARE_TAG

    total = RARE_TAG + 600
    records = [b.started(i + 1, f"run-{i:05d}", experiment=f"e{i % 3}",
                         t=1_000_000 + (i * 7919) % total,  # start order is not seq order
                         tags={"team": "common", **({"rare": "yes"} if i % 97 == 0 else {})},
                         **({"parent_run_id": "run-00000"} if i % 500 == 1 else {}))
               for i in range(total)]
    for first in range(0, total, 1000):
        store.write_batch([validate_batch(b.batch("s", records[first:first + 1000]))])
    for tags, experiment in (({"rare": "yes"}, ""), ({"rare": "yes"}, "e1"),
                             ({"team": "common"}, ""), ({"team": "common"}, "e2")):
        want = sorted((r for r in records if all(
            r.run_event.started.tags.get(k) == v for k, v in tags.items())
            and (not experiment or r.run_event.started.experiment == experiment)),
            key=lambda r: (-r.time_unix_nano, [-ord(c) for c in r.run_id]))
        request = collector_pb2.ListRunsRequest(limit=100, tags=tags, experiment=experiment)
        got = store.list_runs(request)
        assert [run.run_id for run in got] == [r.run_id for r in want[:100]], tags
    parent = next(run for run in store.list_runs(collector_pb2.ListRunsRequest(
        limit=1000, tags={"rare": "yes"})) if run.run_id == "run-00000")
    assert parent.child_run_ids == [f"run-{i:05d}" for i in range(total) if i % 500 == 1]
