"""Workspaces as tenants in the store (SQLite and PostgreSQL): stamped per batch, scoped
reads, tokens; SQLite's schema migrations into the default workspace."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from mltrail.collector.artifacts import ArtifactStore
from mltrail.collector.store import Store, TokenRecord, WriteSummary, open_store
from mltrail.collector.store.sqlite_schema import SCHEMA_VERSION
from mltrail.collector.validate import validate_batch
from mltrail.common.errors import PermanentError
from mltrail.proto import collector_pb2, records_pb2
from tests import builders as b
from tests.store_v2 import KIND_INTEGER as V2_KIND_INTEGER
from tests.store_v2 import V2Store


@pytest.fixture
def store(store_url: str, tmp_path: Path) -> Iterator[Store]:
    """The same contract on both backends (PostgreSQL: a fresh database per test)."""
    s = open_store(store_url, ArtifactStore(tmp_path / "art"))
    yield s
    s.close()


def write(store: Store, workspace: str, *batches: records_pb2.Batch) -> WriteSummary:
    return store.write_batch([validate_batch(batch, workspace) for batch in batches])


def test_runs_are_stamped_with_the_batch_workspace_and_read_only_there(store: Store) -> None:
    write(store, "a", b.batch("s1", [b.started(1, "run-a"), b.scalar(2, "run-a", "x", 1.0)]))
    write(store, "b", b.batch("s2", [b.started(1, "run-b")]))
    req = collector_pb2.ListRunsRequest()
    assert [r.run_id for r in store.list_runs(req, "a")] == ["run-a"]
    assert [r.run_id for r in store.list_runs(req, "b")] == ["run-b"]
    assert store.list_runs(req, "default") == []
    assert store.get_run("run-a", "b") is None and store.run_status("run-a", "b") is None
    info = store.get_run("run-a", "a")
    assert info is not None and info.metric_records == 1


def test_a_batch_for_a_run_of_another_workspace_is_denied_with_its_stream(store: Store) -> None:
    write(store, "a", b.batch("sa", [b.started(1, "run-a")]))
    summary = write(store, "b",
                    b.batch("sb", [b.scalar(1, "mine", "x", 1.0)]),
                    b.batch("evil", [b.scalar(1, "run-a", "x", 666.0)]),
                    b.batch("evil", [b.scalar(2, "mine", "x", 2.0)]))
    ok, denied, after = summary.outcomes
    assert ok.error is None and ok.stored == 1
    assert denied.denied and "another workspace" in (denied.error or "")
    # a later batch of the refused stream must not pass its mark over the refused records
    assert after.denied and after.stored == 0
    assert store.get_metrics("run-a", "") == []
    retry = write(store, "a", b.batch("evil", [b.scalar(1, "run-a", "x", 1.0)])).outcomes[0]
    assert retry.error is None and retry.stored == 1  # marks are per workspace


def test_a_denied_batch_leaves_no_run_it_would_have_created(store: Store) -> None:
    write(store, "a", b.batch("sa", [b.started(1, "run-a")]))
    summary = write(store, "b", b.batch("s", [b.scalar(1, "new-run", "x", 1.0),
                                              b.scalar(2, "run-a", "x", 2.0)]))
    assert summary.outcomes[0].denied
    assert store.list_runs(collector_pb2.ListRunsRequest(), "b") == []
    assert store.get_run("new-run", "b") is None


def test_the_same_stream_id_in_two_workspaces_does_not_collide(store: Store) -> None:
    first = write(store, "a", b.batch("s", [b.scalar(1, "ra", "x", 1.0)])).outcomes[0]
    second = write(store, "b", b.batch("s", [b.scalar(1, "rb", "x", 1.0)])).outcomes[0]
    assert (first.stored, second.stored, second.duplicates) == (1, 1, 0)


def test_tokens_are_kept_by_id_and_revoked_by_name(store: Store) -> None:
    token = TokenRecord("0123456789ab", "ci", "a", "writer", b"d" * 32, 10)
    store.put_token(token)
    with pytest.raises(PermanentError, match="named 'ci' exists"):
        store.put_token(TokenRecord("ba9876543210", "ci", "a", "reader", b"e" * 32, 11))
    assert store.find_token("0123456789ab") == token
    assert [t.name for t in store.list_tokens("a")] == ["ci"] and store.list_tokens("b") == []
    revoked = store.revoke_token("ci", 99)
    assert revoked is not None and revoked.revoked == 99
    assert store.revoke_token("nobody", 100) is None


# What schema version 4 (workspaces, tokens) added, undone: a version 3 store.
UNDO_V4 = (
    "DROP INDEX runs_by_workspace; ALTER TABLE runs DROP COLUMN workspace; "
    "CREATE TABLE streams_v3 (stream_id TEXT PRIMARY KEY, hwm INTEGER NOT NULL) WITHOUT ROWID; "
    "INSERT INTO streams_v3 SELECT stream_id, hwm FROM streams; DROP TABLE streams; "
    "ALTER TABLE streams_v3 RENAME TO streams; DROP TABLE workspaces; DROP TABLE tokens; "
    "DELETE FROM schema_version; INSERT INTO schema_version VALUES (3);")


def _check_upgraded(path: Path, art: ArtifactStore) -> None:
    upgraded = open_store(f"sqlite:///{path}", art)
    try:
        assert [r.run_id for r in upgraded.list_runs(collector_pb2.ListRunsRequest())] == [
            "old-run"]
        again = write(upgraded, "default", b.batch("s", [b.scalar(2, "old-run", "x", 1)]))
        assert again.outcomes[0].duplicates == 1  # the stream's mark survived the migration
        assert [r.metric.scalar.value.integer for r in upgraded.get_metrics("old-run", "x")
                ] == [1]
        assert upgraded.list_tokens() == []
    finally:
        upgraded.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == (
            SCHEMA_VERSION)


def test_a_version_3_store_is_migrated_into_the_default_workspace(tmp_path: Path) -> None:
    path, art = tmp_path / "store.db", ArtifactStore(tmp_path / "a")
    old = open_store(f"sqlite:///{path}", art)
    write(old, "default", b.batch("s", [b.started(1, "old-run"), b.scalar(2, "old-run", "x", 1)]))
    old.close()
    with sqlite3.connect(path) as conn:
        conn.executescript(UNDO_V4)
    _check_upgraded(path, art)


def test_a_version_2_store_goes_through_3_to_4(tmp_path: Path) -> None:
    path, art = tmp_path / "store.db", ArtifactStore(tmp_path / "a")
    old = V2Store(path)
    old.run_key("old-run")
    old.scalars("old-run", "x", [(5, 2, V2_KIND_INTEGER, 1)])
    old.hwm("s", 2)
    old.close()
    _check_upgraded(path, art)


def test_delete_removes_a_runs_rows_and_unshared_files_in_its_workspace_only(
        store: Store, tmp_path: Path) -> None:
    shared, own = b"shared bytes", b"only the first run has these"
    for workspace, run_id in (("a", "run-1"), ("b", "run-2")):
        records = [b.started(1, run_id), b.scalar(2, run_id, "loss", 0.5, step=0),
                   b.log(3, run_id, b"a line\nanother\n")]
        records += b.artifact(4, run_id, "model.bin", shared)
        if run_id == "run-1":
            records += b.artifact(5, run_id, "own.bin", own)
        write(store, workspace, b.batch(f"s-{run_id}", records))
    files = {p.name for p in (tmp_path / "art").rglob("*") if p.is_file()}
    assert len(files) == 2

    refused = store.delete_runs(["run-1"], "b")  # another workspace's run is not deleted
    assert list(refused.deleted) == [] and store.get_run("run-1", "a") is not None
    answer = store.delete_runs(["run-1", "nope"], "a")
    assert (list(answer.deleted), answer.metric_records, answer.log_lines, answer.artifacts) == (
        ["run-1"], 1, 2, 2)
    assert store.get_run("run-1", "a") is None and store.get_metrics("run-1", "") == []
    left = {p.name for p in (tmp_path / "art").rglob("*") if p.is_file()}
    assert len(left) == 1  # the shared file stays for run-2, the other one is gone
    info = store.get_run("run-2", "b")
    assert info is not None and info.artifacts == 1
    again = write(store, "a", b.batch("s-run-1", [b.started(1, "run-1")]))
    assert again.outcomes[0].duplicates == 1  # its stream's mark stayed: no resurrection
