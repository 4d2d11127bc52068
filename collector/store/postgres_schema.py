"""The PostgreSQL schema, its versions, the connection pool and the error translation.

Same tables as the SQLite store (schema 3 there, see sqlite_schema.py): a
scalar series is chunks of ``chunks.py`` with their summary, log text is
zlib-compressed chunks. The differences: chunk rows carry an ``id`` from a
sequence without a cache, so a series keeps its logged order across
replicas (a series is extended only under its ``metric_series`` row lock,
so a later writer draws later ids); ``metric_series`` exists for that lock.
Version 3 is SQLite's schema 4: runs carry their ``workspace``, stream marks
are keyed by (workspace, stream_id), and ``workspaces`` and ``tokens`` exist.
Version 5 is SQLite's schema 6: no table changes, but chunk rows may be of chunk
encoding version 3 or raw open chunks, which collectors of version 4 cannot read;
so in a rolling upgrade a replica not yet upgraded refuses the store at start.

A fresh database gets ``BASE`` (version 1) and then every migration, so the
migration path is the one every store takes. Replicas starting at once take
an advisory lock, so only one of them creates or migrates.
"""

from __future__ import annotations

from typing import Any

from mltrail.common.errors import MltrailError, PermanentError, RetryableError

SCHEMA_VERSION = 5
_SCHEMA_LOCK = 0x6D6C7472  # pg_advisory_xact_lock key: "mltr"

BASE = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE streams (stream_id TEXT PRIMARY KEY, hwm BIGINT NOT NULL);
CREATE TABLE runs (
  run_key BIGSERIAL PRIMARY KEY,
  run_id TEXT NOT NULL UNIQUE,
  experiment TEXT NOT NULL DEFAULT '',
  display_name TEXT NOT NULL DEFAULT '',
  status INTEGER NOT NULL,
  start_time BIGINT NOT NULL DEFAULT 0,
  end_time BIGINT NOT NULL DEFAULT 0,
  parent_run_id TEXT NOT NULL DEFAULT '',
  run_type TEXT NOT NULL DEFAULT '',
  error BYTEA
);
CREATE INDEX runs_by_parent ON runs(parent_run_id);
CREATE INDEX runs_by_start ON runs(start_time);
CREATE TABLE run_tags (
  run_key BIGINT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
  PRIMARY KEY (run_key, key));
CREATE TABLE run_properties (
  run_key BIGINT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
  PRIMARY KEY (run_key, key));
CREATE TABLE metric_names (name_key SERIAL PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE metric_series (
  run_key BIGINT NOT NULL, name_key INTEGER NOT NULL, PRIMARY KEY (run_key, name_key));
CREATE SEQUENCE chunk_order CACHE 1;
CREATE TABLE metric_chunks (
  id BIGINT NOT NULL DEFAULT nextval('chunk_order'),
  run_key BIGINT NOT NULL,
  name_key INTEGER NOT NULL,
  kind SMALLINT NOT NULL,
  count INTEGER NOT NULL,
  first_step BIGINT, last_step BIGINT, min_step BIGINT, max_step BIGINT,
  first_time BIGINT NOT NULL, last_time BIGINT NOT NULL,
  min_time BIGINT NOT NULL, max_time BIGINT NOT NULL,
  first_value DOUBLE PRECISION, last_value DOUBLE PRECISION,
  min_value DOUBLE PRECISION, max_value DOUBLE PRECISION,
  flags INTEGER NOT NULL,
  data BYTEA NOT NULL);
CREATE INDEX metric_chunks_by_series ON metric_chunks(run_key, name_key, id);
CREATE TABLE log_streams (
  stream_key BIGSERIAL PRIMARY KEY,
  run_key BIGINT NOT NULL,
  name TEXT NOT NULL,
  next_line BIGINT NOT NULL,
  UNIQUE (run_key, name));
CREATE TABLE log_chunks (
  stream_key BIGINT NOT NULL,
  first_line BIGINT NOT NULL,
  line_count INTEGER NOT NULL,
  first_time BIGINT NOT NULL,
  last_time BIGINT NOT NULL,
  data BYTEA NOT NULL,
  line_times BYTEA,
  level TEXT NOT NULL DEFAULT '',
  logger TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (stream_key, first_line));
CREATE TABLE artifact_chunks (
  run_key BIGINT NOT NULL, stream_id TEXT NOT NULL, path TEXT NOT NULL,
  chunk_offset BIGINT NOT NULL, data BYTEA NOT NULL,
  PRIMARY KEY (run_key, stream_id, path, chunk_offset));
CREATE TABLE artifacts (
  run_key BIGINT NOT NULL, path TEXT NOT NULL, size BIGINT NOT NULL, sha256 TEXT NOT NULL,
  content_type TEXT NOT NULL DEFAULT '', time BIGINT NOT NULL,
  PRIMARY KEY (run_key, path));
"""

# Version -> the statements that bring a store of the version before it up to it.
MIGRATIONS: dict[int, str] = {
    # 2: listing runs of one experiment, newest first, reads an index instead of every run.
    2: """CREATE INDEX runs_by_experiment ON runs(experiment, start_time);
CREATE INDEX run_tags_by_tag ON run_tags(key, value)""",
    # 3: workspaces as tenants (issue 14, SQLite's schema 4): every run belongs to one
    # ('default' for what was stored before), a stream's mark is kept per workspace,
    # tokens are an id and a keyed hash of the secret.
    3: """ALTER TABLE runs ADD COLUMN workspace TEXT NOT NULL DEFAULT 'default';
CREATE INDEX runs_by_workspace ON runs(workspace, start_time);
ALTER TABLE streams ADD COLUMN workspace TEXT NOT NULL DEFAULT 'default';
ALTER TABLE streams ALTER COLUMN workspace DROP DEFAULT;
ALTER TABLE streams DROP CONSTRAINT streams_pkey;
ALTER TABLE streams ADD PRIMARY KEY (workspace, stream_id);
CREATE TABLE workspaces (name TEXT PRIMARY KEY, created BIGINT NOT NULL);
INSERT INTO workspaces VALUES ('default', 0);
CREATE TABLE tokens (
  token_id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, workspace TEXT NOT NULL,
  role TEXT NOT NULL, digest BYTEA NOT NULL, created BIGINT NOT NULL,
  expires BIGINT NOT NULL, revoked BIGINT NOT NULL DEFAULT 0)""",
    # 4 (issue 11, SQLite's schema 5): the explanation of every hole in a stream's seqs
    # (a gap record, per workspace as the stream's mark); when the collector last stored
    # a record of each run (its agent's last delivery).
    4: """ALTER TABLE runs ADD COLUMN last_write BIGINT NOT NULL DEFAULT 0;
CREATE TABLE stream_gaps (
  workspace TEXT NOT NULL, stream_id TEXT NOT NULL, first_seq BIGINT NOT NULL,
  last_seq BIGINT NOT NULL, records BIGINT NOT NULL, reason TEXT NOT NULL,
  time BIGINT NOT NULL, PRIMARY KEY (workspace, stream_id, first_seq))""",
    # 5 (SQLite's schema 6): no statement. Chunk rows may from now on be of chunk encoding
    # version 3 or raw open chunks; the version row alone makes replicas of version 4
    # refuse the store (they would accept it and then fail on those rows).
    5: "",
}

RETRY_AFTER_UNAVAILABLE = 1.0


def translate_error(exc: Exception, what: str) -> MltrailError:
    """A driver error as one of the project's two kinds. Lost connections, a server
    restarting, lock and serialization conflicts and a pool with no free connection are
    retryable; the rest (a bug, bad data) is permanent."""
    import psycopg
    import psycopg_pool

    retryable = (psycopg.OperationalError, psycopg.errors.SerializationFailure,
                 psycopg.errors.DeadlockDetected, psycopg.errors.LockNotAvailable,
                 psycopg.errors.AdminShutdown, psycopg.errors.CannotConnectNow,
                 psycopg_pool.PoolTimeout, psycopg.InterfaceError)
    if isinstance(exc, retryable):
        return RetryableError(f"{what}: PostgreSQL unavailable or busy ({_first_line(exc)}); "
                              "nothing was stored; retry later",
                              retry_after=RETRY_AFTER_UNAVAILABLE)
    return PermanentError(f"{what}: {_first_line(exc)}")


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def ensure_schema(conn: Any, where: str) -> None:
    """Create the schema in an empty database, migrate an older one; refuse a newer one.
    ``conn`` is a psycopg connection outside a transaction."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        exists = conn.execute("SELECT to_regclass('schema_version')").fetchone()[0]
        if exists is None:
            _run_script(conn, BASE)
            found = 1
        else:
            found = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0
        if found > SCHEMA_VERSION:
            raise PermanentError(
                f"store {where} has schema version {found}, newer than this collector's "
                f"({SCHEMA_VERSION}); nothing was changed; upgrade mltrail on every replica, "
                "or pass --store with another database")
        for version in range(found + 1, SCHEMA_VERSION + 1):
            _run_script(conn, MIGRATIONS[version])
        if found != SCHEMA_VERSION or exists is None:
            conn.execute("DELETE FROM schema_version")
            conn.execute("INSERT INTO schema_version VALUES (%s)", (SCHEMA_VERSION,))


def schema_version(conn: Any) -> int:
    return int(conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0])


def _run_script(conn: Any, script: str) -> None:
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)
