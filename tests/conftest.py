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


@pytest.fixture
def agent(tmp_path: Path, collector: Service) -> Iterator[Service]:
    """An agent process forwarding to the ``collector`` fixture; socket in tmp_path."""
    from tests.agent_client import agent_service

    svc = agent_service(tmp_path, collector.grpc).start()
    yield svc
    svc.stop()
