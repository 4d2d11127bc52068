"""PostgresStore's own behaviour on a real PostgreSQL 15: schema versions, exactly-once
and lock order across two stores (as two replicas), wake-ups, a server restart."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from mltrail.collector.artifacts import ArtifactStore
from mltrail.collector.store import Store, open_store, redact_url
from mltrail.collector.store import postgres_schema as schema
from mltrail.collector.validate import validate_batch
from mltrail.common.errors import PermanentError, RetryableError
from mltrail.proto import records_pb2
from tests import builders as b
from tests.postgres_env import PostgresServer
from tests.unit.test_store_sqlite import populate_chunk_forms, read_back


@pytest.fixture
def stores(postgres_url: str, tmp_path: Path) -> Iterator[list[Store]]:
    """Two stores on one database: what two collector replicas hold."""
    opened = [open_store(postgres_url, ArtifactStore(tmp_path / "art")) for _ in range(2)]
    yield opened
    for store in opened:
        store.close()


def write(store: Store, *batches: records_pb2.Batch):  # type: ignore[no-untyped-def]
    return store.write_batch([validate_batch(batch) for batch in batches])


def in_two_threads(replica: Callable[[int], None]) -> list[BaseException]:
    """``replica(0)`` and ``replica(1)`` at once; what they raised."""
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            replica(index)
        except BaseException as exc:  # returned to the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return errors


def test_fresh_database_gets_the_current_schema_and_a_newer_one_is_refused(
        postgres_url: str, tmp_path: Path) -> None:
    open_store(postgres_url, ArtifactStore(tmp_path / "a")).close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        assert schema.schema_version(conn) == schema.SCHEMA_VERSION
        conn.execute("UPDATE schema_version SET version = %s", (schema.SCHEMA_VERSION + 1,))
    with pytest.raises(PermanentError) as refused:
        open_store(postgres_url, ArtifactStore(tmp_path / "a"))
    assert (f"schema version {schema.SCHEMA_VERSION + 1}, newer than this collector's "
            f"({schema.SCHEMA_VERSION})") in str(refused.value)


def _rows(url: str) -> dict[str, list[str]]:
    """Every row of every table but the version's, as text, sorted."""
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [row[0] for row in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename <> 'schema_version'").fetchall()]
        return {t: [row[0] for row in conn.execute(
            f"SELECT t::text FROM {t} AS t ORDER BY 1").fetchall()] for t in tables}


def test_version_4_store_is_migrated_to_5_changing_only_its_version(
        postgres_url: str, tmp_path: Path) -> None:
    """Version 5 records that chunk rows may be of chunk encoding 3 or raw; a store at 4
    (written by the code that began writing them before the bump) keeps every row."""
    art = ArtifactStore(tmp_path / "a")
    store = open_store(postgres_url, art)
    try:
        written = populate_chunk_forms(store)
    finally:
        store.close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        forms = {bytes(row[0]) for row in conn.execute(
            "SELECT substring(data from 1 for 1) FROM metric_chunks").fetchall()}
        assert forms == {bytes([3]), bytes([0x80])}  # a compressed v3 chunk, the raw one
        conn.execute("UPDATE schema_version SET version = 4")
    before = _rows(postgres_url)
    assert before["metric_chunks"] and before["log_chunks"] and before["stream_gaps"]
    for _ in range(2):  # a second start finds nothing left to do
        upgraded = open_store(postgres_url, art)
        try:
            assert read_back(upgraded) == written
        finally:
            upgraded.close()
        assert _rows(postgres_url) == before
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            assert schema.schema_version(conn) == 5
    assert schema.SCHEMA_VERSION == 5


def test_a_replica_of_version_4_refuses_a_version_5_store(
        postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rolling upgrade: a replica not yet upgraded (version 4, which cannot read chunk
    encoding 3 or raw chunks) stops at start instead of failing on those rows later."""
    store = open_store(postgres_url, ArtifactStore(tmp_path / "a"))
    try:
        populate_chunk_forms(store)
    finally:
        store.close()
    before = _rows(postgres_url)
    monkeypatch.setattr(schema, "SCHEMA_VERSION", 4)
    with pytest.raises(PermanentError) as refused:
        open_store(postgres_url, ArtifactStore(tmp_path / "a"))
    assert ("schema version 5, newer than this collector's (4); nothing was changed; "
            "upgrade mltrail on every replica") in str(refused.value)
    assert _rows(postgres_url) == before


def test_version_1_store_is_migrated_forward_keeping_its_rows(postgres_url: str,
                                                              tmp_path: Path) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:  # what version 1 created
        for statement in schema.BASE.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("INSERT INTO schema_version VALUES (1)")
        conn.execute("INSERT INTO runs (run_id, status, experiment) VALUES ('old', 1, 'e')")
    store = open_store(postgres_url, ArtifactStore(tmp_path / "a"))
    try:
        assert store.get_run("old") is not None
    finally:
        store.close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        assert schema.schema_version(conn) == schema.SCHEMA_VERSION
        index = conn.execute("SELECT to_regclass('runs_by_experiment')").fetchone()
        assert index is not None and index[0] is not None


def test_version_2_store_moves_into_the_default_workspace(postgres_url: str,
                                                          tmp_path: Path) -> None:
    """Schema 3 (workspaces): the runs and stream marks stored before belong to 'default'."""
    with psycopg.connect(postgres_url, autocommit=True) as conn:  # what version 2 created
        for statement in (schema.BASE + ";" + schema.MIGRATIONS[2]).split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("INSERT INTO schema_version VALUES (2)")
        conn.execute("INSERT INTO runs (run_id, status, experiment) VALUES ('old', 1, 'e')")
        conn.execute("INSERT INTO streams VALUES ('s', 3)")
    store = open_store(postgres_url, ArtifactStore(tmp_path / "a"))
    try:
        assert store.get_run("old") is not None and store.get_run("old", "other") is None
        again = write(store, b.batch("s", [b.scalar(3, "old", "x", 1.0)])).outcomes[0]
        assert again.duplicates == 1  # the stream's mark survived, in 'default'
        assert store.list_tokens() == []
    finally:
        store.close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        assert schema.schema_version(conn) == schema.SCHEMA_VERSION


def test_a_token_made_through_one_replica_holds_on_the_other(stores: list[Store]) -> None:
    from mltrail.collector.store import TokenRecord

    stores[0].put_token(TokenRecord("0123456789ab", "ci", "a", "writer", b"d" * 32, 10))
    found = stores[1].find_token("0123456789ab")
    assert found is not None and found.workspace == "a" and found.digest == b"d" * 32
    with pytest.raises(PermanentError, match="named 'ci' exists"):
        stores[1].put_token(TokenRecord("ba9876543210", "ci", "b", "reader", b"e" * 32, 11))
    assert stores[1].revoke_token("ci", 99) is not None
    revoked = stores[0].find_token("0123456789ab")
    assert revoked is not None and revoked.revoked == 99


def test_same_batch_through_two_replicas_at_once_is_stored_once(stores: list[Store]) -> None:
    """Each round, both stores get the same batch at the same moment: one stores it, the
    other sees duplicates (the high-water-mark row is locked in the transaction)."""
    rounds, per_batch = 40, 50
    outcomes: list[list[tuple[int, int]]] = [[], []]
    barrier = threading.Barrier(2)

    def replica(index: int) -> None:
        for n in range(rounds):
            first = n * per_batch + 1
            batch = b.batch("s", [b.scalar(seq, "r", "m", float(seq))
                                  for seq in range(first, first + per_batch)])
            barrier.wait(timeout=30)
            outcome = write(stores[index], batch).outcomes[0]
            outcomes[index].append((outcome.stored, outcome.duplicates))

    threads = [threading.Thread(target=replica, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for n in range(rounds):
        assert sorted([outcomes[0][n], outcomes[1][n]]) == [(0, per_batch), (per_batch, 0)]
    values = [r.metric.scalar.value.number for r in stores[0].get_metrics("r", "m")]
    assert values == [float(seq) for seq in range(1, rounds * per_batch + 1)]


def test_one_stream_id_in_two_workspaces_through_two_replicas_is_two_streams(
        stores: list[Store]) -> None:
    """Marks are per (workspace, stream id): the same stream id written at once through
    two replicas for two workspaces stores both, and a replay in either is a duplicate."""
    rounds, per_batch = 20, 20
    barrier = threading.Barrier(2)

    def replica(index: int) -> None:
        for n in range(rounds):
            first = n * per_batch + 1
            batch = b.batch("s", [b.scalar(seq, f"run-{index}", "m", float(seq))
                                  for seq in range(first, first + per_batch)])
            barrier.wait(timeout=30)
            outcome = stores[index].write_batch([validate_batch(batch, f"ws{index}")])
            assert outcome.outcomes[0].stored == per_batch

    assert in_two_threads(replica) == []
    for index in range(2):
        assert len(stores[1 - index].get_metrics(f"run-{index}", "m")) == rounds * per_batch
        replay = stores[1 - index].write_batch([validate_batch(b.batch("s", [
            b.scalar(1, f"run-{index}", "m", 0.0)]), f"ws{index}")]).outcomes[0]
        assert replay.duplicates == 1


def test_requests_locking_streams_in_opposite_orders_do_not_deadlock(
        stores: list[Store]) -> None:
    """One replica writes streams (a, b), the other (b, a), with log lines of one run
    in both: the marks and log streams are locked in a fixed order, so neither request
    fails with a deadlock and every line is numbered once."""
    rounds = 60
    errors: list[BaseException] = []

    def replica(index: int, order: tuple[str, str]) -> None:
        try:
            for n in range(1, rounds + 1):
                write(stores[index], *[b.batch(f"{stream}{index}", [
                    b.log(n, "r", f"{stream}{index}-{n}\n".encode())]) for stream in order])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=replica, args=(0, ("a", "b"))),
               threading.Thread(target=replica, args=(1, ("b", "a")))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert stores[1].log_positions("r") == {"stdout": 4 * rounds}
    from mltrail.collector.store import LogQuery

    lines = stores[0].read_logs(LogQuery("r", limit=10 * rounds))
    assert [line.line for line in lines] == list(range(4 * rounds))
    assert sorted(line.text for line in lines) == sorted(
        f"{s}{i}-{n}" for s in "ab" for i in (0, 1) for n in range(1, rounds + 1))


def test_lines_written_through_one_replica_wake_the_other(stores: list[Store]) -> None:
    woken: list[set[str]] = []
    arrived = threading.Event()

    def callback(runs: set[str]) -> None:
        woken.append(runs)
        arrived.set()

    stores[1].watch(callback)
    deadline = 30.0
    # the listener may connect after the first write: keep writing until it wakes
    for seq in range(1, 300):
        write(stores[0], b.batch("s", [b.log(seq, "run-x", b"line\n")]))
        if arrived.wait(0.1):
            break
        deadline -= 0.1
        assert deadline > 0
    assert {"run-x"} in woken


def test_text_with_nul_bytes_is_kept_with_replacement(stores: list[Store]) -> None:
    # (a NUL in a tag key is refused before the store: keys are names)
    write(stores[0], b.batch("s", [b.started(1, "r", tags={"k": "v\x00"}),
                                   b.log(2, "r", b"a\x00b\n"),
                                   b.scalar(3, "r", "m", "x\x00y")]))
    run = stores[0].get_run("r")
    assert run is not None and dict(run.tags) == {"k": "v\ufffd"}
    from mltrail.collector.store import LogQuery

    assert [line.text for line in stores[0].read_logs(LogQuery("r"))] == ["a\x00b"]
    assert stores[0].get_metrics("r", "m")[0].metric.scalar.value.text == "x\x00y"


def test_writes_fail_retryable_while_postgres_restarts_then_carry_on(
        tmp_path: Path) -> None:
    """A server of its own (restarted here): while it is down a write is retryable, and
    once it is back the pool replaces its dead connections without a failed request."""
    server = PostgresServer().init().start()
    try:
        store = open_store(server.new_database(), ArtifactStore(tmp_path / "a"))
        try:
            assert write(store, b.batch("s", [b.scalar(1, "r", "m", 1.0)])).outcomes[0].stored
            server.stop("fast")
            with pytest.raises(RetryableError, match="PostgreSQL unavailable"):
                write(store, b.batch("s", [b.scalar(2, "r", "m", 2.0)]))
            server.start()
            assert write(store, b.batch("s", [b.scalar(2, "r", "m", 2.0)])).outcomes[0].stored
            values = [r.metric.scalar.value.number for r in store.get_metrics("r", "m")]
            assert values == [1.0, 2.0]
        finally:
            store.close()
    finally:
        server.destroy()


def test_url_password_is_never_shown(tmp_path: Path) -> None:
    url = "postgresql://mltrail:s3cret@127.0.0.1:1/nowhere?connect_timeout=1"
    assert redact_url(url) == "postgresql://mltrail:***@127.0.0.1:1/nowhere?connect_timeout=1"
    with pytest.raises(PermanentError) as refused:
        open_store(url, ArtifactStore(tmp_path / "a"))
    assert "s3cret" not in str(refused.value) and "cannot open store" in str(refused.value)
    with pytest.raises(PermanentError, match="pool_size must be"):
        open_store("postgresql://u@h/d?pool_size=one", ArtifactStore(tmp_path / "a"))


def test_two_replicas_extending_one_series_keep_every_point_once(
        stores: list[Store], postgres_url: str) -> None:
    """Two streams (ranks) log the same metric of one run through two replicas at once:
    the series' open chunk is extended under a lock, so no point is lost or doubled,
    each stream's points keep their order, and every chunk but the open last one is
    full and compressed (series_tail.py)."""
    from mltrail.collector.store.chunks import CHUNK_POINTS
    from mltrail.collector.store.series_tail import FLAG_RAW

    rounds, per_batch = 30, 300

    def replica(index: int) -> None:
        for n in range(rounds):
            first = n * per_batch + 1
            write(stores[index], b.batch(f"rank{index}", [
                b.scalar(seq, "r", "m", index * 1_000_000 + seq)
                for seq in range(first, first + per_batch)]))

    assert in_two_threads(replica) == []
    values = [r.metric.scalar.value.integer for r in stores[0].get_metrics("r", "m")]
    total = rounds * per_batch
    assert len(values) == 2 * total
    for index in range(2):
        mine = [v - index * 1_000_000 for v in values if v // 1_000_000 == index]
        assert mine == list(range(1, total + 1))
    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute("SELECT count, flags FROM metric_chunks ORDER BY id").fetchall()
    assert sum(count for count, _ in rows) == 2 * total
    assert [count for count, _ in rows[:-1]] == [CHUNK_POINTS] * (len(rows) - 1)
    assert not any(flags & FLAG_RAW for _, flags in rows[:-1])  # integers: never raw


def test_get_run_without_counts_skips_them(stores: list[Store]) -> None:
    write(stores[0], b.batch("s", [b.started(1, "r"), b.scalar(2, "r", "m", 1.0)]))
    counted = stores[0].get_run("r")
    cheap = stores[1].get_run("r", "default", False)  # type: ignore[call-arg]
    assert counted is not None and counted.metric_records == 1
    assert cheap is not None and cheap.run_id == "r" and cheap.metric_records == 0
