"""Schema 3 in SQLite: series in chunks, compressed logs, and the schema-2 migration."""

from __future__ import annotations

import math
import random
import sqlite3
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mltrail.collector.artifacts import ArtifactStore
from mltrail.collector.store import LogQuery, Store, open_store, sqlite_migrate
from mltrail.collector.store.chunks import CHUNK_BYTES, CHUNK_POINTS
from mltrail.collector.store.series_tail import FLAG_RAW
from mltrail.collector.store.sqlite_chunks import (
    _ZSTD_MAGIC as ZSTD_MAGIC,
)
from mltrail.collector.store.sqlite_chunks import (
    LOG_CHUNK_BYTES,
    compress_text,
    decompress_text,
)
from mltrail.collector.store.sqlite_schema import SCHEMA_VERSION
from mltrail.collector.validate import validate_batch
from mltrail.proto import records_pb2
from tests import builders as b
from tests.store_v2 import KIND_FLAG, KIND_INTEGER, KIND_NUMBER, KIND_TEXT, V2Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'store.db'}", ArtifactStore(tmp_path / "art"))
    yield s
    s.close()


def write(store: Store, *batches: records_pb2.Batch) -> Any:
    return store.write_batch([validate_batch(batch) for batch in batches])


def chunk_counts(path: Path) -> list[int]:
    with sqlite3.connect(path) as conn:
        return [r[0] for r in conn.execute("SELECT count FROM metric_chunks ORDER BY rowid")]


def chunk_rows(path: Path) -> list[tuple[int, bool]]:
    """(count, whether an open chunk in the raw form) of every metric row, in order."""
    with sqlite3.connect(path) as conn:
        return [(r[0], bool(r[1] & FLAG_RAW)) for r in conn.execute(
            "SELECT count, flags FROM metric_chunks ORDER BY rowid")]


def numbers(store: Store, run_id: str, name: str) -> list[tuple[int | None, float]]:
    return [(r.metric.scalar.step if r.metric.scalar.HasField("step") else None,
             r.metric.scalar.value.number) for r in store.get_metrics(run_id, name)]


def test_batches_ending_mid_chunk_extend_it_and_a_replay_adds_nothing(
        store: Store, tmp_path: Path) -> None:
    total, per_batch = 2 * CHUNK_POINTS + 1000, 3000
    batches = list(b.scalar_batches("r", "s", total, per_batch))
    for batch in batches:
        write(store, batch)
    replay = write(store, batches[1], batches[2]).outcomes
    assert [o.stored for o in replay] == [0, 0]
    # the last chunk is the open one, raw; the full ones are compressed
    assert chunk_rows(tmp_path / "store.db") == [(CHUNK_POINTS, False), (CHUNK_POINTS, False),
                                                 (1000, True)]
    assert numbers(store, "r", "loss") == [(s, s * 0.5) for s in range(1, total + 1)]
    info = store.get_run("r")
    assert info is not None and info.metric_records == total


def test_other_kinds_between_scalars_keep_the_logged_order(store: Store) -> None:
    listed = records_pb2.Metric(name="m", list=records_pb2.ValueList(
        values=[b.value(1), b.value(2)]))
    described = records_pb2.Metric(name="m", description="d",
                                   scalar=records_pb2.Scalar(value=b.value(7.5)))
    write(store, b.batch("s", [b.scalar(1, "r", "m", 1.0), b.scalar(2, "r", "m", 2.0)]))
    write(store, b.batch("s", [b.record(3, "r", metric=listed), b.scalar(4, "r", "m", 4.0),
                               b.record(5, "r", metric=described),
                               b.scalar(6, "r", "m", True), b.scalar(7, "r", "m", "x")]))
    got = [(r.metric.WhichOneof("data"), r.metric.description) for r in
           store.get_metrics("r", "m")]
    assert got == [("scalar", ""), ("scalar", ""), ("list", ""), ("scalar", ""),
                   ("scalar", "d"), ("scalar", ""), ("scalar", "")]
    values = store.get_metrics("r", "m")
    assert values[5].metric.scalar.value.flag is True
    assert values[6].metric.scalar.value.text == "x"


def test_log_lines_are_compressed_in_merged_chunks_and_read_back(
        store: Store, tmp_path: Path) -> None:
    lines = [f"epoch {i // 100} step {i} loss {1 / (i + 1):.5f} lr 0.001" for i in range(5000)]
    seq = 1
    for start in range(0, len(lines), 37):  # many small records, as a console pump sends
        part = lines[start:start + 37]
        write(store, b.batch("s", [b.log(seq, "r", ("\n".join(part) + "\n").encode())]))
        seq += 1
    read = store.read_logs(LogQuery("r", limit=10_000, max_bytes=1 << 30))
    assert [line.text for line in read] == lines
    assert [line.line for line in read] == list(range(len(lines)))
    window = store.read_logs(LogQuery("r", from_line=1234, to_line=1240))
    assert [line.text for line in window] == lines[1234:1240]
    with sqlite3.connect(tmp_path / "store.db") as conn:
        chunk_rows, stored = conn.execute(
            "SELECT COUNT(*), SUM(LENGTH(data)) FROM log_chunks").fetchone()
    text_bytes = sum(len(line) + 1 for line in lines)
    assert chunk_rows <= text_bytes // LOG_CHUNK_BYTES + 2  # merged, not a row per record
    assert stored < sum(len(line) for line in lines) / 3


def _populate_v2(path: Path) -> tuple[dict[tuple[str, str], list[Any]],
                                       dict[tuple[str, str], list[str]]]:
    """A v2 store with scalars of every kind, NaN and infinities, steps out of order,
    other kinds in between, and log chunks with and without line times."""
    rng = random.Random(3)
    old = V2Store(path)
    expected: dict[tuple[str, str], list[Any]] = {}
    for run_id in ("run-a", "run-b"):
        for name, count in (("loss", 9_000), ("acc", 5), ("odd", 700)):
            rows: list[tuple[int, int | None, int, object]] = []
            for i in range(count):
                kind = KIND_NUMBER if name != "odd" else rng.choice(
                    [KIND_NUMBER, KIND_INTEGER, KIND_TEXT, KIND_FLAG])
                value: object = rng.choice([rng.random(), math.inf, -math.inf, None,
                                            1.7976931348623157e308, 5e-324])
                if kind == KIND_INTEGER:
                    value = rng.randint(-(2 ** 63), 2 ** 63 - 1)
                elif kind == KIND_TEXT:
                    value = f"t{i}"
                elif kind == KIND_FLAG:
                    value = i % 2
                step = rng.choice([None, i, i - 5, 3])
                rows.append((1000 + i, step, kind, value))
            old.scalars(run_id, name, rows[:count // 2])
            listed = records_pb2.Metric(name=name, list=records_pb2.ValueList(
                values=[b.value(1.5)]))
            old.encoded(run_id, listed, 5)
            old.scalars(run_id, name, rows[count // 2:])
            expected[(run_id, name)] = [*rows[:count // 2], "list", *rows[count // 2:]]
    logs: dict[tuple[str, str], list[str]] = {}
    for stream in ("stdout", "stderr"):
        lines = [f"{stream} line {i} ✓" for i in range(3000)]
        for start in range(0, len(lines), 250):
            part = lines[start:start + 250]
            times = [7_000 + start + i for i in range(len(part))] if start % 500 else None
            old.log_chunk("run-a", stream, part, times, 7_000 + start)
        logs[("run-a", stream)] = lines
    old.hwm("s", 10)
    old.close()
    return expected, logs


def _as_stored(record: Any) -> Any:
    metric = record.metric
    if metric.WhichOneof("data") != "scalar":
        return metric.WhichOneof("data")
    scalar = metric.scalar
    which = scalar.value.WhichOneof("kind")
    value = getattr(scalar.value, which)
    kind = {"number": KIND_NUMBER, "integer": KIND_INTEGER, "text": KIND_TEXT,
            "flag": KIND_FLAG}[which]
    if kind == KIND_NUMBER and math.isnan(value):
        value = None
    if kind == KIND_FLAG:
        value = int(value)
    return (record.time_unix_nano, scalar.step if scalar.HasField("step") else None, kind,
            value)


def _check_migrated(path: Path, expected: dict[tuple[str, str], list[Any]],
                    logs: dict[tuple[str, str], list[str]]) -> None:
    store = open_store(f"sqlite:///{path}", ArtifactStore(path.parent / "art"))
    try:
        for (run_id, name), rows in expected.items():
            assert [_as_stored(r) for r in store.get_metrics(run_id, name)] == rows
        for (run_id, stream), lines in logs.items():
            got = store.read_logs(LogQuery(run_id, (stream,), limit=100_000,
                                           max_bytes=1 << 30))
            assert [line.text for line in got] == lines
            assert [line.line for line in got] == list(range(len(lines)))
        info = store.get_run("run-a")
        assert info is not None
        assert info.metric_records == sum(len(rows) for (run, _), rows in expected.items()
                                          if run == "run-a")
        assert info.log_lines == 6000
        more = store.write_batch([validate_batch(b.batch("s", [b.scalar(11, "run-a", "acc",
                                                                         9.0)]))])
        assert more.outcomes[0].stored == 1 and more.outcomes[0].duplicates == 0
    finally:
        store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == (
            SCHEMA_VERSION)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert "metrics_v2" not in tables and "log_chunks_v2" not in tables


def test_a_populated_schema_2_store_is_migrated_keeping_every_point_and_line(
        tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    expected, logs = _populate_v2(path)
    _check_migrated(path, expected, logs)
    # the migration compressed every open chunk; the raw one is "acc"'s, reopened by the
    # point written after it (its 3 migrated points and that one)
    assert [row for row in chunk_rows(path) if row[1]] == [(4, True)]


class _Crash(Exception):
    pass


def test_an_interrupted_migration_goes_on_at_the_next_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash between steps (the step's transaction rolled back) loses and doubles
    nothing: the next open moves the rest."""
    path = tmp_path / "store.db"
    expected, logs = _populate_v2(path)
    monkeypatch.setattr(sqlite_migrate, "STEP_ROWS", 1000)
    monkeypatch.setattr(sqlite_migrate, "STEP_LOG_CHUNKS", 3)
    real_step, steps = sqlite_migrate._metric_step, []

    def crashing_step(conn: sqlite3.Connection, where: str) -> int | None:
        steps.append(1)
        if len(steps) == 7:
            conn.execute("BEGIN IMMEDIATE")  # the step's transaction, then the crash
            conn.execute("DELETE FROM metrics_v2")
            conn.execute("ROLLBACK")
            raise _Crash
        return real_step(conn, where)

    monkeypatch.setattr(sqlite_migrate, "_metric_step", crashing_step)
    with pytest.raises(_Crash):
        open_store(f"sqlite:///{path}", ArtifactStore(tmp_path / "art"))
    with sqlite3.connect(path) as conn:
        left = conn.execute("SELECT COUNT(*) FROM metrics_v2").fetchone()[0]
        assert 0 < left < sum(len(rows) for rows in expected.values())
        assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == 2
    monkeypatch.setattr(sqlite_migrate, "_metric_step", real_step)
    _check_migrated(path, expected, logs)


def test_closed_log_chunks_are_zstd_and_zlib_chunks_written_before_still_read(
        store: Store, tmp_path: Path) -> None:
    rng = random.Random(9)
    lines = [f"step {i:6d} loss={rng.uniform(0, 2):.5f} acc={rng.uniform(0.5, 1):.4f} é ∑"
             for i in range(6000)]
    for seq, start in enumerate(range(0, len(lines), 100), start=1):
        text = ("\n".join(lines[start:start + 100]) + "\n").encode()
        write(store, b.batch("s", [b.log(seq, "r", text)]))
    db = tmp_path / "store.db"
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT rowid, data FROM log_chunks ORDER BY first_line").fetchall()
        assert len(rows) >= 3 and all(bytes(d)[:4] == ZSTD_MAGIC for _, d in rows)
        # the last chunk is still open (compressed fast); the others hard, once
        assert [closed_size(bytes(d)) for _, d in rows[:-1]] == [len(d) for _, d in rows[:-1]]
        assert closed_size(bytes(rows[-1][1])) < len(rows[-1][1])
        # a chunk as the collector wrote it before zstd: zlib, read as it is
        rowid, data = rows[1]
        text = decompress_text(bytes(data))
        conn.execute("UPDATE log_chunks SET data = ? WHERE rowid = ?",
                     (zlib.compress(text.encode(), 6), rowid))
    read = store.read_logs(LogQuery("r", limit=10_000, max_bytes=1 << 30))
    assert [line.text for line in read] == lines


def closed_size(data: bytes) -> int:
    """The size of a chunk's text compressed as a closed chunk is."""
    return len(compress_text(decompress_text(data), closed=True))


def test_a_series_of_long_strings_closes_its_chunk_by_bytes(store: Store, tmp_path: Path
                                                              ) -> None:
    """Long strings close a series' tail at CHUNK_BYTES: chunks stay about that size
    instead of 4,096 strings each."""
    rng = random.Random(7)
    texts = ["".join(rng.choices("abcdefghij", k=20_000)) for _ in range(120)]
    for first in range(0, len(texts), 10):  # batches of 10 strings, 200 kB each
        write(store, b.batch("s", [b.scalar(first + i + 1, "r", "caption", t, step=first + i)
                                   for i, t in enumerate(texts[first:first + 10])]))
    with sqlite3.connect(tmp_path / "store.db") as conn:
        sizes = [len(r[0]) for r in conn.execute("SELECT data FROM metric_chunks")]
    assert len(sizes) > 1 and max(sizes) < CHUNK_BYTES + 300_000  # at most one batch over
    got = [(r.metric.scalar.step, r.metric.scalar.value.text)
           for r in store.get_metrics("r", "caption")]
    assert got == list(enumerate(texts))
