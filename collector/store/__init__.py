"""Stores, picked by URL scheme (MLflow's store registry).

``open_store("sqlite:///path/store.db", artifacts)``; a PostgreSQL store
registers ``postgresql`` here and ingest and query code stay as they are.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from mltrail.collector.artifacts import ArtifactStore
from mltrail.collector.store.base import (
    BatchOutcome,
    LogQuery,
    ScalarPoint,
    Store,
    ValidBatch,
    WriteSummary,
)
from mltrail.common.errors import PermanentError

log = logging.getLogger("mltrail.collector.store")

__all__ = [
    "BatchOutcome", "LogQuery", "ScalarPoint", "Store", "ValidBatch", "WriteSummary",
    "open_store",
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


_OPENERS: dict[str, Callable[[str, ArtifactStore], Store]] = {"sqlite": _open_sqlite}


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
