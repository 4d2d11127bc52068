"""Stores, picked by URL scheme (MLflow's store registry).

``open_store("sqlite:///path/store.db", artifacts)`` or
``open_store("postgresql://user@host/db", artifacts)``; ingest and query code
stay the same for both.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from mltrail.collector.artifacts import ArtifactStore
from mltrail.collector.store.base import (
    DEFAULT_WORKSPACE,
    BatchOutcome,
    LogQuery,
    ScalarRun,
    Store,
    TokenRecord,
    ValidBatch,
    WriteSummary,
)
from mltrail.common.errors import PermanentError

log = logging.getLogger("mltrail.collector.store")

__all__ = [
    "DEFAULT_WORKSPACE", "BatchOutcome", "LogQuery", "ScalarRun", "Store",
    "TokenRecord", "ValidBatch", "WriteSummary", "open_store", "redact_url",
]


def _open_sqlite(url: str, artifacts: ArtifactStore) -> Store:
    """``sqlite:///PATH[?busy_timeout_ms=N][&synchronous=full|normal]`` (four slashes for
    an absolute PATH). ``synchronous=normal`` (the default) keeps every commit through a
    kill -9 but may lose the last ones on a power loss; ``full`` keeps them through a
    power loss too, at an fsync per commit."""
    from mltrail.collector.store.sqlite import DEFAULT_BUSY_TIMEOUT_MS, SqliteStore

    rest, _, query = url.partition("?")
    path = rest[len("sqlite:///"):] if rest.startswith("sqlite:///") else ""
    if not path:
        raise PermanentError(
            f"store URL {url!r} has no file path; use sqlite:///PATH (for example "
            "sqlite:////var/lib/mltrail/store.db, or sqlite:///store.db for a relative path)")
    options = _sqlite_options(url, query)
    return SqliteStore(absolute_store_path(url, path), artifacts,
                       busy_timeout_ms=int(options.get("busy_timeout_ms",
                                                       DEFAULT_BUSY_TIMEOUT_MS)),
                       synchronous=options.get("synchronous", "normal"))


def absolute_store_path(url: str, path: str) -> Path:
    """``path`` made absolute. A relative one (three slashes) is resolved against the
    directory the collector was started in, and said loudly: started elsewhere, the
    same URL names another, empty store."""
    resolved = Path(path).expanduser().absolute()
    if not Path(path).is_absolute():
        log.warning(
            "store URL %r names a relative path (three slashes): using %s, under the "
            "directory this collector started in; a collector started elsewhere with the "
            "same URL opens another, empty store. For an absolute path write four "
            "slashes: sqlite:///%s", url, resolved, resolved)
    log.info("SQLite store: %s", resolved)
    return resolved


def _sqlite_options(url: str, query: str) -> dict[str, str]:
    options = dict(parse_qsl(query))
    unknown = set(options) - {"busy_timeout_ms", "synchronous"}
    if unknown:
        raise PermanentError(f"store URL {url!r}: unsupported option(s) {sorted(unknown)}; "
                             "the options are busy_timeout_ms=MILLISECONDS and "
                             "synchronous=full|normal")
    if not options.get("busy_timeout_ms", "0").isdigit():
        raise PermanentError(f"store URL {url!r}: busy_timeout_ms must be a whole number "
                             "of milliseconds")
    options["synchronous"] = options.get("synchronous", "normal").lower()
    if options["synchronous"] not in ("full", "normal"):
        raise PermanentError(f"store URL {url!r}: use synchronous=full or synchronous=normal "
                             "(full: commits survive a power loss, slower)")
    return options


_POSTGRES_OPTIONS = {"pool_size"}


def _open_postgres(url: str, artifacts: ArtifactStore) -> Store:
    """``postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?pool_size=N][&libpq options]``;
    libpq's own options (sslmode, connect_timeout, ...) pass through, and so do its
    environment variables (PGPASSWORD, PGSSLROOTCERT, ...) and ~/.pgpass."""
    try:
        from mltrail.collector.store.postgres import DEFAULT_POOL_SIZE, PostgresStore
    except ModuleNotFoundError as exc:
        if exc.name not in ("psycopg", "psycopg_pool"):
            raise  # our own module broken: a bug to see, not a missing package
        raise PermanentError(
            "store URL is postgresql://, but psycopg is not installed; nothing was opened; "
            "pip install 'mltrail[postgres]'") from None
    parts = urlsplit(url)
    if not url.startswith(f"{parts.scheme}://") or not parts.path.strip("/"):
        raise PermanentError(
            f"store URL {redact_url(url)!r} names no database; nothing was opened; use "
            "postgresql://USER@HOST[:PORT]/DATABASE (for example "
            "postgresql://mltrail@db.internal/mltrail)")
    query = parse_qsl(parts.query)
    ours = {k: v for k, v in query if k in _POSTGRES_OPTIONS}
    pool_size = ours.get("pool_size", str(DEFAULT_POOL_SIZE))
    if not pool_size.isdigit() or int(pool_size) < 2:
        raise PermanentError(f"store URL {redact_url(url)!r}: pool_size must be a whole "
                             "number of connections, at least 2")
    conninfo = urlunsplit(parts._replace(
        query=urlencode([(k, v) for k, v in query if k not in _POSTGRES_OPTIONS])))
    return PostgresStore(conninfo, artifacts, redact_url(url), pool_size=int(pool_size))


def redact_url(url: str) -> str:
    """The URL without its password, for logs and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


_OPENERS: dict[str, Callable[[str, ArtifactStore], Store]] = {
    "sqlite": _open_sqlite, "postgresql": _open_postgres, "postgres": _open_postgres}


def open_store(url: str, artifacts: ArtifactStore) -> Store:
    """Open the store named by ``url``; an unknown scheme is a clear PermanentError."""
    scheme = urlsplit(url).scheme
    opener = _OPENERS.get(scheme)
    if opener is None:
        known = ", ".join(f"{name}://" for name in sorted(_OPENERS))
        raise PermanentError(
            f"store URL {url!r} has an unknown scheme {scheme!r}; nothing was opened; "
            f"supported: {known} (for example sqlite:///path/to/store.db)")
    return opener(url, artifacts)
