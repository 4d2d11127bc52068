"""The SQLite schema, its version, and the one transaction boundary.

Keys are integers (``runs.run_key``, ``metric_names.name_key``,
``log_streams.stream_key``) cached by the writer, because an index on
integers costs half of one on text at 200k records/s. Metric rows keep their
logged order as rowid order. Scalar values live in typed columns; only the
rare kinds (list, row, table, image, json, or a scalar with a description)
are kept as the encoded ``Metric``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from mltrail.common.errors import MltrailError, PermanentError, RetryableError

SCHEMA_VERSION = 3

# metrics.kind: how to read metrics.value back (KIND_ENCODED: value is the
# encoded Metric). A NaN is stored as NULL by SQLite, so (KIND_NUMBER, NULL)
# reads back as NaN. One untyped value column instead of a separate BLOB
# column: a seventh column costs a third more per inserted row.
KIND_NUMBER, KIND_INTEGER, KIND_TEXT, KIND_FLAG, KIND_ENCODED = 1, 2, 3, 4, 9

SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE streams (stream_id TEXT PRIMARY KEY, hwm INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE stream_gaps (
  stream_id TEXT NOT NULL, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,
  records INTEGER NOT NULL, reason TEXT NOT NULL, time INTEGER NOT NULL,
  PRIMARY KEY (stream_id, first_seq)) WITHOUT ROWID;
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
  error BLOB,
  last_write INTEGER NOT NULL DEFAULT 0
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
CREATE TABLE metrics (
  run_key INTEGER NOT NULL,
  name_key INTEGER NOT NULL,
  time INTEGER NOT NULL,
  step INTEGER,
  kind INTEGER NOT NULL,
  value
);
CREATE INDEX metrics_by_run_name ON metrics(run_key, name_key);
CREATE TABLE log_streams (
  stream_key INTEGER PRIMARY KEY,
  run_key INTEGER NOT NULL,
  name TEXT NOT NULL,
  next_line INTEGER NOT NULL,
  UNIQUE (run_key, name));
CREATE TABLE log_chunks (
  stream_key INTEGER NOT NULL,
  first_line INTEGER NOT NULL,
  line_count INTEGER NOT NULL,
  first_time INTEGER NOT NULL,
  last_time INTEGER NOT NULL,
  text TEXT NOT NULL,
  line_times BLOB,
  level TEXT NOT NULL DEFAULT '',
  logger TEXT NOT NULL DEFAULT '');
CREATE UNIQUE INDEX log_chunks_by_line ON log_chunks(stream_key, first_line);
CREATE TABLE artifact_chunks (
  run_key INTEGER NOT NULL, stream_id TEXT NOT NULL, path TEXT NOT NULL,
  offset INTEGER NOT NULL, data BLOB NOT NULL,
  PRIMARY KEY (run_key, stream_id, path, offset));
CREATE TABLE artifacts (
  run_key INTEGER NOT NULL, path TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL,
  content_type TEXT NOT NULL DEFAULT '', time INTEGER NOT NULL,
  PRIMARY KEY (run_key, path));
"""

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
    # 3: the explanation of every hole in a stream's seqs (a gap record); when the
    # collector last stored a record of each run (its agent's last delivery).
    3: """
ALTER TABLE runs ADD COLUMN last_write INTEGER NOT NULL DEFAULT 0;
CREATE TABLE stream_gaps (
  stream_id TEXT NOT NULL, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,
  records INTEGER NOT NULL, reason TEXT NOT NULL, time INTEGER NOT NULL,
  PRIMARY KEY (stream_id, first_seq)) WITHOUT ROWID;
""",
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
    """Create the schema in an empty store, migrate an older one; refuse a newer one."""
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
                _run_script(conn, MIGRATIONS[version])
            conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
    if found > SCHEMA_VERSION:
        raise PermanentError(
            f"store {where} has schema version {found}, newer than this collector's "
            f"({SCHEMA_VERSION}); nothing was changed; upgrade mltrail, or pass --store "
            "with another file"
        )


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    """Statement by statement (executescript would commit the open transaction)."""
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)
