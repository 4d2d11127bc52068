"""A run's end on both stores: the first end wins (Azure ML v1), but for one inferred
when the run's process vanished, which the process's own end corrects when it comes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mltrail.collector.artifacts import ArtifactStore
from mltrail.collector.store import Store, open_store
from mltrail.collector.validate import validate_batch
from mltrail.proto import records_pb2
from tests import builders as b

INFERRED = records_pb2.ErrorDetails(code="ProcessExited", message="exited without a word",
                                    exit_code=-1)
RAISED = records_pb2.ErrorDetails(code="UserError", type="ValueError", message="bad data")


@pytest.fixture
def store(store_url: str, tmp_path: Path) -> Iterator[Store]:
    s = open_store(store_url, ArtifactStore(tmp_path / "art"))
    s.write_batch([validate_batch(b.batch("start", [b.started(1, "r")]))])
    yield s
    s.close()


def end(store: Store, stream: str, status: int,
        error: records_pb2.ErrorDetails | None = None) -> None:
    store.write_batch([validate_batch(b.batch(stream, [b.ended(1, "r", status, error)]))])


def ended_as(store: Store) -> tuple[str, str]:
    run = store.get_run("r", counts=False)
    assert run is not None
    return records_pb2.RunStatus.Name(run.status), run.error.code


def test_the_processs_own_end_corrects_an_inferred_failure(store: Store) -> None:
    end(store, "agent-watch", records_pb2.FAILED, INFERRED)
    assert ended_as(store) == ("FAILED", "ProcessExited")
    end(store, "sdk-spill", records_pb2.COMPLETED)
    assert ended_as(store) == ("COMPLETED", "")


def test_an_inferred_failure_after_the_real_end_changes_nothing(store: Store) -> None:
    end(store, "sdk", records_pb2.COMPLETED)
    end(store, "agent-watch", records_pb2.FAILED, INFERRED)
    assert ended_as(store) == ("COMPLETED", "")


@pytest.mark.parametrize("second", [records_pb2.COMPLETED, records_pb2.CANCELED])
def test_a_real_end_is_final(store: Store, second: int) -> None:
    end(store, "sdk", records_pb2.FAILED, RAISED)
    end(store, "later", second)
    assert ended_as(store) == ("FAILED", "UserError")


def test_a_second_inferred_end_does_not_replace_the_first(store: Store) -> None:
    end(store, "agent-watch", records_pb2.FAILED, INFERRED)
    end(store, "sync", records_pb2.FAILED, INFERRED)
    assert ended_as(store) == ("FAILED", "ProcessExited")
