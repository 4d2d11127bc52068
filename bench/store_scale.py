"""Benchmark: the store at scale, against MLflow's SQLite store (issue 15's figures).

One collector process on a fresh SQLite store, then in order: ingest a
series of ``--points`` scalar points (the rate per million, to see it stay
flat), bytes on disk per point, ``get_metrics()`` of 1 million and of all
points through the SDK with the collector's peak memory above its memory at
rest, a 1,000-bucket downsample, bytes per console line for ``--lines``
lines of training output, and listing 100 runs by a rare tag among
``--runs`` runs. The series looks like training: a float32 loss curve with
noise, one step per point, times 1 ms apart with up to 50 us jitter, to the
microsecond as the SDK stamps a metric (Azure ML v1's precision).

With ``--other-venv`` (a venv with mlflow, e.g. /work/wt/venv-peers), MLflow's
SQLite store ingests ``--mlflow-points`` points with log_batch and reads them
with get_metric_history, in the same run. Prints ``name: value unit`` lines.

    python bench/store_scale.py [--points 10000000] [--other-venv /work/wt/venv-peers]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from array import array
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.collector_ingest import push_marks
from mltrail.proto import collector_pb2, records_pb2
from mltrail.query.client import QueryClient
from tests import builders
from tests.procs import Service, vm_kib

T0 = 1_760_000_000_000_000_000


def series_requests(run_id: str, count: int, per_batch: int, stream: str,
                    wire: str = "sdk") -> list[bytes]:
    """The series' requests: ``wire`` "sdk" as the SDK's sender packs float points (a
    ScalarSeries record of up to 5,000), "record" a Record per point."""
    rng = random.Random(15)
    losses = array("f", (2.0 * math.exp(-i / (count / 4)) + rng.gauss(0, 0.02)
                         for i in range(count)))  # float32, as loss.item() gives
    times = [(T0 + i * 1_000_000 + rng.randrange(50_000)) // 1000 * 1000  # as the SDK sends
             for i in range(count)]
    out: list[bytes] = []
    for first in range(0, count, per_batch):
        end = min(first + per_batch, count)
        records: list[records_pb2.Record]
        if wire == "sdk":  # point i has seq i + 1
            records = [builders.series(start + 1, run_id, "loss", losses[start:stop],
                                       steps=range(start, stop), times=times[start:stop])
                       for start, stop in ((s, min(s + 5000, end))
                                           for s in range(first, end, 5000))]
        else:
            records = [records_pb2.Record(
                seq=i + 1, run_id=run_id, time_unix_nano=times[i],
                metric=records_pb2.Metric(name="loss", scalar=records_pb2.Scalar(
                    value=records_pb2.Value(number=losses[i]), step=i)))
                for i in range(first, end)]
        batch = records_pb2.Batch(stream_id=stream, records=records)
        out.append(collector_pb2.IngestRequest(request_id=len(out) + 1,
                                               batches=[batch]).SerializeToString())
    return out


def per_million(marks: list[tuple[float, int]]) -> list[float]:
    rates, start = [], marks[0]
    for mark in marks[1:]:
        if mark[1] - start[1] >= 1_000_000:
            rates.append((mark[1] - start[1]) / (mark[0] - start[0]))
            start = mark
    return rates


def store_bytes(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    wal = path.with_name(path.name + "-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def timed(fn, repeat: int = 1):  # type: ignore[no-untyped-def]
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def _requests(stream: str, records: list[records_pb2.Record], per_request: int) -> list[bytes]:
    return [collector_pb2.IngestRequest(request_id=n + 1, batches=[builders.batch(
        stream, records[first:first + per_request])]).SerializeToString()
        for n, first in enumerate(range(0, len(records), per_request))]


def console_requests(run_id: str, lines: int, per_record: int = 100) -> list[bytes]:
    rng = random.Random(4)
    records = []
    for first in range(0, lines, per_record):
        text = "".join(
            f"epoch {i // 50_000 + 1:3d} step {i % 50_000:6d}/50000 loss={rng.uniform(0, 2):.5f} "
            f"acc={rng.uniform(0.5, 1):.4f} gnorm={rng.uniform(0, 5):.4f} "
            f"lr={1e-3 * 0.99 ** (i // 10_000):.3e} "
            f"{rng.uniform(5, 50):5.1f}ms/step\n" for i in range(first, first + per_record))
        records.append(builders.log(len(records) + 1, run_id, text.encode()))
    return _requests("console", records, 100)


def tagged_runs(count: int) -> list[bytes]:
    records = [builders.started(i + 1, f"run-{i:06d}", experiment=f"e{i % 10}",
                                tags={"team": f"t{i % 7}",
                                      **({"rare": "yes"} if i % 1000 == 0 else {})})
               for i in range(count)]
    return _requests("runs", records, 5000)


MLFLOW = textwrap.dedent("""
    import json, math, os, random, sys, time
    from array import array
    work, count = sys.argv[1], int(sys.argv[2])
    os.chdir(work)
    import mlflow
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient
    uri = "sqlite:///" + os.path.join(work, "mlflow.db")
    client = MlflowClient(tracking_uri=uri)
    run = client.create_run(client.create_experiment("bench"))
    rng = random.Random(15)
    t0 = int(time.time() * 1000)
    losses = array("f", (2.0 * math.exp(-i / (count / 4)) + rng.gauss(0, 0.02)
                         for i in range(count)))
    size0 = os.path.getsize(os.path.join(work, "mlflow.db"))
    start = time.perf_counter()
    for first in range(0, count, 1000):
        client.log_batch(run.info.run_id, metrics=[
            Metric("loss", losses[i], t0 + i, i) for i in range(first, min(first + 1000, count))])
    ingest = time.perf_counter() - start
    size = sum(os.path.getsize(os.path.join(work, f)) for f in os.listdir(work)
               if f.startswith("mlflow.db")) - size0
    start = time.perf_counter()
    history = client.get_metric_history(run.info.run_id, "loss")
    read = time.perf_counter() - start
    print(json.dumps({"ingest": count / ingest, "bytes": size / count, "read": read,
                      "read_points": len(history)}))
""")


def mlflow_figures(venv: Path, points: int) -> dict[str, float] | None:
    python = venv / "bin" / "python"
    if not python.exists():
        return None
    with tempfile.TemporaryDirectory(prefix="mltrail-bench-mlflow-") as work:
        done = subprocess.run([str(python), "-c", MLFLOW, work, str(points)],
                              capture_output=True, text=True, timeout=3600)
    if done.returncode:
        print(f"mlflow: failed: {done.stderr.strip().splitlines()[-1:]}")
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=10_000_000)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--other-venv", type=Path, default=None)
    parser.add_argument("--mlflow-points", type=int, default=1_000_000)
    parser.add_argument("--wire", choices=("sdk", "record"), default="sdk",
                        help="sdk: points packed per series as the SDK sends them; "
                             "record: a Record per point")
    args = parser.parse_args()
    million = min(1_000_000, args.points)
    big, mid = series_requests("big", args.points, 10_000, "big", args.wire), series_requests(
        "mid", million, 10_000, "mid", args.wire)
    with tempfile.TemporaryDirectory(prefix="mltrail-bench-") as tmp:
        work = Path(tmp)
        db = work / "store.db"
        svc = Service("collector", ["--store", f"sqlite:///{db}", "--grpc", "127.0.0.1:0",
                                    "--http", "127.0.0.1:0", "--artifacts",
                                    str(work / "artifacts")], work)
        svc.start()
        try:
            pid = svc.info["pid"]
            marks = push_marks(svc.grpc, big)
            rates = per_million(marks)
            seconds = marks[-1][0] - marks[0][0]
            print(f"ingest_points: {marks[-1][1]} points")
            print(f"ingest_rate: {marks[-1][1] / seconds:.0f} points/s")
            if rates:
                print(f"ingest_rate_first_million: {rates[0]:.0f} points/s")
                print(f"ingest_rate_last_million: {rates[-1]:.0f} points/s")
                print(f"ingest_rate_per_million_min_max: {min(rates):.0f} {max(rates):.0f} "
                      "points/s")
            size = store_bytes(db)
            print(f"bytes_per_point: {size / args.points:.2f} bytes ({args.points} points)")
            push_marks(svc.grpc, mid)
            with QueryClient(svc.grpc, timeout=600) as client:
                client.get_metrics("mid", "loss")  # warm: connection, caches
                read_mid, values = timed(lambda: client.get_metrics("mid", "loss")["loss"])
                assert len(values) == million
                print(f"get_metrics_{million}: {read_mid:.2f} s")
                del values
                Path(f"/proc/{pid}/clear_refs").write_text("5")
                rest = vm_kib(pid, "VmRSS")
                read_big, values = timed(lambda: client.get_metrics("big", "loss")["loss"])
                peak = vm_kib(pid, "VmHWM")
                assert len(values) == args.points
                del values
                print(f"get_metrics_{args.points}: {read_big:.2f} s")
                print(f"collector_rest_rss: {rest / 1024:.1f} MiB")
                print(f"collector_peak_above_rest_during_read: {(peak - rest) / 1024:.1f} MiB")
                down, buckets = timed(lambda: [b for page in client.read_series(
                    "big", "loss", buckets=1000) for b in page.buckets], repeat=5)
                print(f"downsample_1000_of_{args.points}: {down * 1000:.1f} ms "
                      f"({len(buckets)} buckets)")
                before = store_bytes(db)
                push_marks(svc.grpc, console_requests("console", args.lines))
                print(f"bytes_per_console_line: {(store_bytes(db) - before) / args.lines:.1f} "
                      f"bytes ({args.lines} lines of about 93 bytes)")
                push_marks(svc.grpc, tagged_runs(args.runs))
                rare, found = timed(lambda: client.list_runs(tags={"rare": "yes"}, limit=100),
                                    repeat=20)
                print(f"list_runs_rare_tag_in_{args.runs}: {rare * 1000:.1f} ms "
                      f"({len(found)} runs, round trip)")
                if args.other_venv:  # the series MLflow reads, read here too
                    push_marks(svc.grpc, series_requests("peer", args.mlflow_points, 10_000,
                                                         "peer"))
                    read_peer, _ = timed(lambda: client.get_metrics("peer", "loss"), repeat=3)
                    print(f"get_metrics_{args.mlflow_points}: {read_peer:.2f} s")
        finally:
            svc.stop()
    if args.other_venv:
        other = mlflow_figures(args.other_venv, args.mlflow_points)
        if other:
            print(f"mlflow_ingest_rate: {other['ingest']:.0f} points/s")
            print(f"mlflow_bytes_per_point: {other['bytes']:.1f} bytes")
            print(f"mlflow_get_metric_history_{args.mlflow_points}: {other['read']:.2f} s")
            print(f"ratio_ingest: {marks[-1][1] / seconds / other['ingest']:.1f}x")
            print(f"ratio_bytes: {other['bytes'] / (size / args.points):.1f}x smaller")
            print(f"ratio_read_{args.mlflow_points}: {other['read'] / read_peer:.1f}x faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
