"""The SQLite schema, its version, and the one transaction boundary.

Keys are integers (``runs.run_key``, ``metric_names.name_key``,
``log_streams.stream_key``) cached by the writer, because an index on
integers costs half of one on text at 200k records/s. A metric series is rows
of ``metric_chunks`` in logged order as rowid order: chunks of up to
``chunks.CHUNK_POINTS`` scalar points with their summary, and one row per
record of the rare kinds (list, row, table, image, json, or a scalar with a
description) holding the encoded ``Metric``. Log text is kept in compressed
chunks indexed by (stream, first line). Every run belongs to a workspace
(``runs.workspace``) and a stream's high-water mark is kept per workspace
(schema 4), as are the gap records that explain a hole in a stream's seqs
(``stream_gaps``, schema 5). Schema 6 changes no table: it says that chunk
rows may be of chunk encoding version 3 or in the raw form of an open chunk
(``chunks.py``, ``chunk_raw.py``), which a collector of schema 5 cannot read,
so such a collector refuses the store at start instead of failing on those rows.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from mltrail.common.errors import MltrailError, PermanentError, RetryableError

SCHEMA_VERSION = 6

# metrics_v2.kind (schema 2, read by the migration): how to read its value column
# back (KIND_ENCODED: the encoded Metric; a NaN number was stored as NULL).
KIND_NUMBER, KIND_INTEGER, KIND_TEXT, KIND_FLAG, KIND_ENCODED = 1, 2, 3, 4, 9

SCHEMA_BASE = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE streams (stream_id TEXT PRIMARY KEY, hwm INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE runs (
  run_key INTEGER PRIMARY KEY,
  run_id TEXT NOT NULL UNIQUE,
  experiment TEXT NOT NULL DEFAULT '',
  display_name TEXT NOT NULL DEFAULT '',
  status INTEGER NOT NULL,
  start_time INTEGER NOT NULL DEFAULT 0,
  end_time INTEGER NOT NULL DEFAULT 0,
  parent_run_id TEXT NOT NULL DEFAULT '',
  run_type TEXT NOT NULL DEFAULT '',
  error BLOB
);
CREATE INDEX runs_by_parent ON runs(parent_run_id);
CREATE INDEX runs_by_start ON runs(start_time);
CREATE TABLE run_tags (
  run_key INTEGER NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
  PRIMARY KEY (run_key, key)) WITHOUT ROWID;
CREATE TABLE run_properties (
  run_key INTEGER NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
  PRIMARY KEY (run_key, key)) WITHOUT ROWID;
CREATE TABLE metric_names (name_key INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE log_streams (
  stream_key INTEGER PRIMARY KEY,
  run_key INTEGER NOT NULL,
  name TEXT NOT NULL,
  next_line INTEGER NOT NULL,
  UNIQUE (run_key, name));
CREATE TABLE artifact_chunks (
  run_key INTEGER NOT NULL, stream_id TEXT NOT NULL, path TEXT NOT NULL,
  offset INTEGER NOT NULL, data BLOB NOT NULL,
  PRIMARY KEY (run_key, stream_id, path, offset));
CREATE TABLE artifacts (
  run_key INTEGER NOT NULL, path TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL,
  content_type TEXT NOT NULL DEFAULT '', time INTEGER NOT NULL,
  PRIMARY KEY (run_key, path));
"""

# Schema 3: a scalar series is chunks (chunks.py) with their summary; rows of kind
# CHUNK_ENCODED hold one encoded Metric (the other kinds), in logged order by rowid.
# NaN summary values are stored as NULL by SQLite: with FLAG_ALL_NUMERIC or a
# count of numeric values the reader knows NULL means NaN (see sqlite_series).
# Log chunks hold zstd-compressed UTF-8 text (zlib, written before, is read too) and
# compressed line times.
SERIES_TABLES = """
CREATE TABLE IF NOT EXISTS metric_chunks (
  run_key INTEGER NOT NULL,
  name_key INTEGER NOT NULL,
  kind INTEGER NOT NULL,
  count INTEGER NOT NULL,
  first_step INTEGER, last_step INTEGER, min_step INTEGER, max_step INTEGER,
  first_time INTEGER NOT NULL, last_time INTEGER NOT NULL,
  min_time INTEGER NOT NULL, max_time INTEGER NOT NULL,
  first_value REAL, last_value REAL, min_value REAL, max_value REAL,
  flags INTEGER NOT NULL,
  data BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS metric_chunks_by_series ON metric_chunks(run_key, name_key);
CREATE TABLE IF NOT EXISTS log_chunks (
  stream_key INTEGER NOT NULL,
  first_line INTEGER NOT NULL,
  line_count INTEGER NOT NULL,
  first_time INTEGER NOT NULL,
  last_time INTEGER NOT NULL,
  data BLOB NOT NULL,
  line_times BLOB,
  level TEXT NOT NULL DEFAULT '',
  logger TEXT NOT NULL DEFAULT '');
CREATE UNIQUE INDEX IF NOT EXISTS log_chunks_by_line ON log_chunks(stream_key, first_line);
CREATE INDEX IF NOT EXISTS runs_by_experiment ON runs(experiment, start_time);
CREATE INDEX IF NOT EXISTS run_tags_by_tag ON run_tags(key, value);
"""
# Schema 4: workspaces as tenants (issue 14). Every run belongs to one ('default'
# for what was stored before); a stream's high-water mark is per workspace, so one
# tenant's stream ids can never make another's records look like duplicates;
# tokens are kept as an id and a keyed hash of the secret. A fresh store runs it
# too, after the tables it changes.
TENANT_TABLES = """
ALTER TABLE runs ADD COLUMN workspace TEXT NOT NULL DEFAULT 'default';
CREATE INDEX runs_by_workspace ON runs(workspace, start_time);
CREATE TABLE streams_v4 (
  workspace TEXT NOT NULL, stream_id TEXT NOT NULL, hwm INTEGER NOT NULL,
  PRIMARY KEY (workspace, stream_id)) WITHOUT ROWID;
INSERT INTO streams_v4 SELECT 'default', stream_id, hwm FROM streams;
DROP TABLE streams;
ALTER TABLE streams_v4 RENAME TO streams;
CREATE TABLE workspaces (name TEXT PRIMARY KEY, created INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO workspaces VALUES ('default', 0);
CREATE TABLE tokens (
  token_id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, workspace TEXT NOT NULL,
  role TEXT NOT NULL, digest BLOB NOT NULL, created INTEGER NOT NULL,
  expires INTEGER NOT NULL, revoked INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
"""

# Schema 5 (issue 11): the explanation of every hole in a stream's seqs (a gap
# record), per workspace as the streams' marks are; when the collector last
# stored a record of each run (its agent's last delivery, for ``mltrail show``).
GAP_TABLES = """
ALTER TABLE runs ADD COLUMN last_write INTEGER NOT NULL DEFAULT 0;
CREATE TABLE stream_gaps (
  workspace TEXT NOT NULL, stream_id TEXT NOT NULL, first_seq INTEGER NOT NULL,
  last_seq INTEGER NOT NULL, records INTEGER NOT NULL, reason TEXT NOT NULL,
  time INTEGER NOT NULL,
  PRIMARY KEY (workspace, stream_id, first_seq)) WITHOUT ROWID;
"""

SCHEMA = SCHEMA_BASE + SERIES_TABLES + TENANT_TABLES + GAP_TABLES
CHUNK_SCALAR, CHUNK_ENCODED = 0, 9

# Version -> the statements that bring a store of the version before it up to it,
# applied in order at open, in the schema check's transaction.
MIGRATIONS: dict[int, str] = {
    # 2: artifact chunks keyed by stream too, so two uploads of one path (ranks
    # sharing a run) do not mix. Chunks of an upload in flight keep stream_id
    # '' (never a real stream id); the writer still assembles them.
    2: """
CREATE TABLE artifact_chunks_v2 (
  run_key INTEGER NOT NULL, stream_id TEXT NOT NULL, path TEXT NOT NULL,
  offset INTEGER NOT NULL, data BLOB NOT NULL,
  PRIMARY KEY (run_key, stream_id, path, offset));
INSERT INTO artifact_chunks_v2 SELECT run_key, '', path, offset, data FROM artifact_chunks;
DROP TABLE artifact_chunks;
ALTER TABLE artifact_chunks_v2 RENAME TO artifact_chunks;
""",
    # 3: scalar series in chunks, log text compressed; the rows move in sqlite_migrate.
    3: """
ALTER TABLE metrics RENAME TO metrics_v2;
DROP INDEX log_chunks_by_line;
ALTER TABLE log_chunks RENAME TO log_chunks_v2;
CREATE INDEX log_chunks_v2_by_line ON log_chunks_v2(stream_key, first_line);
""" + SERIES_TABLES,
    4: TENANT_TABLES,
    5: GAP_TABLES,
    # 6: no statement. Chunk rows may from now on be of chunk encoding version 3 or
    # raw open chunks; the version row alone makes collectors of schema 5 refuse the
    # store (they would accept it and then fail on those rows).
    6: "",
}

_RETRYABLE_NAMES = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_IOERR", "SQLITE_FULL",
                    "SQLITE_PROTOCOL")
RETRY_AFTER_BUSY = 0.5


def translate_error(exc: sqlite3.Error, what: str) -> MltrailError:
    """A driver error as one of the project's two kinds."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name.startswith(_RETRYABLE_NAMES) or "locked" in str(exc):
        return RetryableError(f"{what}: store busy or failing ({exc}); nothing was stored; "
                              "retry later", retry_after=RETRY_AFTER_BUSY)
    return PermanentError(f"{what}: {exc}")


def connect(path: str, *, readonly: bool = False, busy_timeout_ms: int = 5000,
            synchronous: str = "normal") -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit) with the pragmas.

    ``synchronous``: "normal" (WAL: a commit survives a crash of the process, and
    may be lost on a power loss) or "full" (an fsync per commit: survives both)."""
    if synchronous not in ("normal", "full"):
        raise ValueError(f"synchronous must be 'normal' or 'full', not {synchronous!r}")
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                           timeout=busy_timeout_ms / 1000)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    if readonly:
        conn.execute("PRAGMA query_only = ON")
    else:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection, what: str) -> Iterator[sqlite3.Connection]:
    """The one transaction boundary: BEGIN IMMEDIATE, COMMIT, or ROLLBACK and translate."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield conn
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        _rollback(conn)
        raise translate_error(exc, what) from exc
    except BaseException:
        _rollback(conn)
        raise


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def ensure_schema(conn: sqlite3.Connection, where: str) -> None:
    """Create the schema in an empty store, migrate an older one; refuse a newer one.

    Up to version 2 a migration is statements in the check's transaction. Version 3
    moves every metric row and log chunk: its statements rename the old tables
    (``metrics_v2``, ``log_chunks_v2``), then ``sqlite_migrate`` moves the rows in
    transactions of its own, deleting what it moved, so an interrupted migration
    goes on where it stopped at the next start. The version is 3 once they are empty.
    Version 4 (workspaces) is statements too, run once (when the store has no
    ``tokens`` table), even while version 3's rows are still moving, and so is
    version 5 (gap records, ``runs.last_write``: when the store has no
    ``stream_gaps`` table). Version 6 has no statement; the version is 6 once all
    are done (one row, written last, so an interrupted start just does it again)."""
    with transaction(conn, f"store {where}"):
        row = conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name='schema_version'"
        ).fetchone()
        if row is None:
            _run_script(conn, SCHEMA)
            conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
            return
        found = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0
        if found < SCHEMA_VERSION:
            for version in range(found + 1, SCHEMA_VERSION + 1):
                if version < 3:
                    _run_script(conn, MIGRATIONS[version])
                    conn.execute("INSERT INTO schema_version VALUES (?)", (version,))
                elif version == 3:
                    if not has_table(conn, "metrics_v2"):  # else: a migration under way
                        _run_script(conn, MIGRATIONS[version])
                elif version == 4:
                    if not has_table(conn, "tokens"):
                        _run_script(conn, MIGRATIONS[version])
                elif version == 5:
                    if not has_table(conn, "stream_gaps"):
                        _run_script(conn, MIGRATIONS[version])
                else:
                    _run_script(conn, MIGRATIONS[version])
    if found > SCHEMA_VERSION:
        raise PermanentError(
            f"store {where} has schema version {found}, newer than this collector's "
            f"({SCHEMA_VERSION}); nothing was changed; upgrade mltrail, or pass --store "
            "with another file"
        )
    if found < 3:
        from mltrail.collector.store.sqlite_migrate import migrate_v2_rows

        migrate_v2_rows(conn, where)
        with transaction(conn, f"store {where}"):
            _run_script(conn, "DROP TABLE metrics_v2; DROP TABLE log_chunks_v2")
            conn.execute("INSERT INTO schema_version VALUES (3)")
    if found < SCHEMA_VERSION:
        with transaction(conn, f"store {where}"):
            conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))


def has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?",
                        (name,)).fetchone() is not None


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    """Statement by statement (executescript would commit the open transaction)."""
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)
