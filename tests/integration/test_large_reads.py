"""A series of 10 million points and a log of 2 million lines (both far past the old
one-message limit) read back whole through the SDK and the CLI, with the collector's
memory flat (real collector process, real SQLite store)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from mltrail.collector.artifacts import ArtifactStore
from mltrail.collector.store import ScalarRun, ValidBatch, open_store
from mltrail.collector.store.chunks import KIND_NUMBER, Points
from mltrail.query.client import QueryClient
from tests import builders as b
from tests.procs import Service, collector_service, mltrail_cli, vm_kib

POINTS = 10_000_000  # one GetMetrics answer of ~1.8 million points passed the 64 MiB limit
LINES = 2_000_000
RUN = "big-run"


def line(n: int) -> str:
    return f"epoch {n // 10_000} step {n} loss={n * 0.5}"


def _fill(path: Path) -> None:
    """The store as ingest leaves it, written through the store's one write primitive."""
    store = open_store(f"sqlite:///{path / 'store.db'}", ArtifactStore(path / "artifacts"))
    try:
        per = 200_000
        for first in range(1, POINTS + 1, per):
            last = min(first + per - 1, POINTS)
            seqs = range(first, last + 1)
            points = Points(list(seqs), [1_000 * s for s in seqs], [KIND_NUMBER] * len(seqs),
                            [s * 0.5 for s in seqs])
            store.write_batch([ValidBatch("s", first, last, [ScalarRun(RUN, "loss", seqs,
                                                                       points)], ())])
        per_record = 20_000
        records = [b.log(1 + i, RUN, "".join(f"{line(n)}\n" for n in range(
            first, first + per_record)).encode()) for i, first in
            enumerate(range(0, LINES, per_record))]
        store.write_batch([ValidBatch("logs", 1, len(records), [], records)])
    finally:
        store.close()


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    path = tmp_path_factory.mktemp("big")
    _fill(path)
    svc = collector_service(path)
    svc.start()
    yield svc
    svc.stop()


def _reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS now


def test_get_metrics_reads_every_point_with_the_collector_memory_flat(big: Service) -> None:
    pid = big.proc.pid
    with QueryClient(big.grpc) as client:
        assert client.get_metrics(RUN, "nope") == {}
        _reset_peak(pid)
        rest = vm_kib(pid, "VmRSS")
        values = client.get_metrics(RUN, "loss")["loss"]
        peak = vm_kib(pid, "VmHWM")
    assert len(values) == POINTS
    assert values == [s * 0.5 for s in range(1, POINTS + 1)]
    assert peak - rest < 64 * 1024, f"collector grew {(peak - rest) // 1024} MiB during a read"


def test_cli_json_and_csv_stream_every_point(big: Service) -> None:
    done = mltrail_cli("metrics", RUN, "--name", "loss", "--json", "--collector", big.grpc,
                       timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["loss"] == [s * 0.5 for s in range(1, POINTS + 1)]
    done = mltrail_cli("metrics", RUN, "--format", "csv", "--collector", big.grpc,
                       timeout=300)
    assert done.returncode == 0, done.stderr
    rows = csv.reader(io.StringIO(done.stdout))
    assert next(rows) == ["name", "step", "time_unix_nano", "value"]
    count = 0
    for count, row in enumerate(rows, start=1):
        if count in (1, POINTS):
            assert row == ["loss", str(count), str(1_000 * count), str(count * 0.5)]
    assert count == POINTS


def test_a_range_and_a_downsample_through_the_sdk(big: Service) -> None:
    with QueryClient(big.grpc) as client:
        ranged = [page for page in client.read_series(RUN, "loss", step_min=1_500_000,
                                                      step_max=1_500_009)]
        buckets = [bk for page in client.read_series(RUN, "loss", buckets=1000)
                   for bk in page.buckets]
    from mltrail.common import packed

    values = [v for page in ranged for v in packed.unpack(page.points).values]
    assert values == [s * 0.5 for s in range(1_500_000, 1_500_010)]
    assert 0 < len(buckets) <= 1000
    assert sum(bk.count for bk in buckets) == POINTS
    assert buckets[0].first_step == 1 and buckets[-1].last_step == POINTS
    assert all(bk.min == bk.first and bk.max == bk.last for bk in buckets)  # rising series


def test_a_two_million_line_log_reads_back_whole_through_the_sdk_and_the_cli(
        big: Service) -> None:
    with QueryClient(big.grpc) as client:
        got = [entry.text for entry in client.tail_logs(RUN)]
    assert len(got) == LINES
    assert got == [line(n) for n in range(LINES)]
    done = mltrail_cli("logs", RUN, "--collector", big.grpc, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == got
