"""A schema-2 store as the mltrail of that version left it, for migration tests.

The DDL is schema 2's, copied; the rows are what its writer wrote: a row per
scalar point (typed value column, NaN as NULL), a row per other-kind record
(the encoded Metric), and log chunks with plain text and raw int64 line times.
"""

from __future__ import annotations

import sqlite3
from array import array
from pathlib import Path

from mltrail.proto import records_pb2

V2_SCHEMA = """
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


KIND_NUMBER, KIND_INTEGER, KIND_TEXT, KIND_FLAG, KIND_ENCODED = 1, 2, 3, 4, 9


class V2Store:
    """Writes schema-2 rows straight into a new file (no collector of that version)."""

    def __init__(self, path: Path, version: int = 2) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.executescript(V2_SCHEMA)
        self.conn.execute("INSERT INTO schema_version VALUES (?)", (version,))
        self._runs: dict[str, int] = {}
        self._names: dict[str, int] = {}
        self._streams: dict[tuple[int, str], list[int]] = {}
        self.conn.execute("BEGIN")

    def run_key(self, run_id: str) -> int:
        if run_id not in self._runs:
            cur = self.conn.execute("INSERT INTO runs (run_id, status, start_time) "
                                    "VALUES (?, ?, 1)", (run_id, records_pb2.RUNNING))
            self._runs[run_id] = int(cur.lastrowid or 0)
        return self._runs[run_id]

    def name_key(self, name: str) -> int:
        if name not in self._names:
            cur = self.conn.execute("INSERT INTO metric_names (name) VALUES (?)", (name,))
            self._names[name] = int(cur.lastrowid or 0)
        return self._names[name]

    def scalars(self, run_id: str, name: str,
                rows: list[tuple[int, int | None, int, object]]) -> None:
        """(time, step, kind, value) per point, as schema 2 stored them."""
        run_key, name_key = self.run_key(run_id), self.name_key(name)
        self.conn.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?)",
                              [(run_key, name_key, *row) for row in rows])

    def encoded(self, run_id: str, metric: records_pb2.Metric, time_ns: int) -> None:
        self.conn.execute("INSERT INTO metrics VALUES (?, ?, ?, NULL, ?, ?)",
                          (self.run_key(run_id), self.name_key(metric.name), time_ns,
                           KIND_ENCODED, metric.SerializeToString()))

    def log_chunk(self, run_id: str, stream: str, lines: list[str], times: list[int] | None,
                  first_time: int, level: str = "", logger: str = "") -> None:
        run_key = self.run_key(run_id)
        entry = self._streams.get((run_key, stream))
        if entry is None:
            cur = self.conn.execute("INSERT INTO log_streams (run_key, name, next_line) "
                                    "VALUES (?, ?, 0)", (run_key, stream))
            entry = self._streams[(run_key, stream)] = [int(cur.lastrowid or 0), 0]
        last_time = times[-1] if times else first_time
        self.conn.execute("INSERT INTO log_chunks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                          (entry[0], entry[1], len(lines), first_time, last_time,
                           "\n".join(lines), array("q", times).tobytes() if times else None,
                           level, logger))
        entry[1] += len(lines)
        self.conn.execute("UPDATE log_streams SET next_line = ? WHERE stream_key = ?",
                          (entry[1], entry[0]))

    def hwm(self, stream_id: str, seq: int) -> None:
        self.conn.execute("INSERT OR REPLACE INTO streams VALUES (?, ?)", (stream_id, seq))

    def close(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("COMMIT")
        self.conn.close()
