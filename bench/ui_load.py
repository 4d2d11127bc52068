"""Benchmark: the web UI on large data, in Debian's Chromium, against a real collector.

Fills a collector's SQLite store through Ingest (pre-built batches, so the
client's cost stays out): ``--runs`` runs (10,000) with tags and two metrics
each, and one run with a ``--points``-point series (10 million). Then, in a
headless browser, prints how long each page takes from navigation to
interactive (the view's data fetched and drawn: ``window.__mltrailReadyAt``),
the best and median of ``--repeat`` loads, and the JSON API's time alone:

- the runs table of every run, sorted by a metric column (a filter over all);
- the page of the run with the long series (its chart from a downsample).

    python bench/ui_load.py [--runs 10000] [--points 10000000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mltrail.proto import collector_pb2, records_pb2
from tests import builders
from tests.procs import Service, collector_service
from tests.ui.browser import Browser


def runs_requests(count: int, per_request: int = 500) -> Iterator[collector_pb2.IngestRequest]:
    batches = []
    for index in range(count):
        run_id = f"bench-run-{index:05d}"
        stream = builders.new_stream_id()
        records = [builders.started(1, run_id, experiment=f"exp-{index % 20}",
                                    display_name=f"trial {index}")]
        records[0].run_event.started.tags.update({"team": f"t{index % 7}", "lr": str(index)})
        records += [builders.scalar(2 + i, run_id, name, value, step=i) for i, (name, value) in
                    enumerate((("accuracy", (index * 7919 % 1000) / 1000.0),
                               ("loss", 1.0 / (1 + index))))]
        records.append(builders.ended(len(records) + 1, run_id))
        batches.append(builders.batch(stream, records))
        if len(batches) == per_request:
            yield collector_pb2.IngestRequest(batches=batches)
            batches = []
    if batches:
        yield collector_pb2.IngestRequest(batches=batches)


def long_requests(run_id: str, points: int) -> Iterator[collector_pb2.IngestRequest]:
    stream = builders.new_stream_id()
    yield collector_pb2.IngestRequest(batches=[builders.batch(stream, [
        builders.started(1, run_id, experiment="long", display_name="10M points")])])
    for batch in builders.scalar_batches(run_id, stream, points, 20_000, first_seq=2):
        yield collector_pb2.IngestRequest(batches=[batch])
    yield collector_pb2.IngestRequest(batches=[builders.batch(stream, [
        builders.ended(points + 2, run_id, records_pb2.COMPLETED)])])


def ingest(address: str, requests: Iterator[collector_pb2.IngestRequest]) -> None:
    with builders.IngestClient(address) as client:
        for response in client.write_stream(requests, timeout=3600):
            for result in response.results:
                if result.code:
                    raise SystemExit(f"batch refused: {result.message}")


def timed_loads(browser: Browser, url: str, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        browser.open(url, timeout=600)
        times.append(float(browser.js("return window.__mltrailReadyAt")) / 1000)
    return times


def api_seconds(url: str, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        with urllib.request.urlopen(url, timeout=600) as answer:
            answer.read()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--points", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mltrail-bench-ui-") as tmp:
        svc: Service = collector_service(Path(tmp)).start()
        browser = Browser()
        try:
            started = time.perf_counter()
            ingest(svc.grpc, runs_requests(args.runs))
            ingest(svc.grpc, long_requests("bench-long", args.points))
            print(f"filled: {args.runs} runs and a {args.points}-point series in "
                  f"{time.perf_counter() - started:.1f} s")
            base = f"http://{svc.http}"
            pages = {
                "runs_table": "#/runs?columns=accuracy,loss:min&sort=-accuracy",
                "long_run_page": "#/run/bench-long",
            }
            apis = {
                "runs_table": "/api/v1/runs?columns=accuracy,loss:min&sort=-accuracy&limit=50",
                "long_run_page": "/api/v1/runs/bench-long/metrics/loss?buckets=1000",
            }
            for name, fragment in pages.items():
                times = timed_loads(browser, f"{base}/{fragment}", args.repeat)
                print(f"{name}_interactive_best: {min(times):.3f} s")
                print(f"{name}_interactive_median: {statistics.median(times):.3f} s")
                print(f"{name}_api_best: {api_seconds(base + apis[name], args.repeat):.3f} s")
            browser.check()
        finally:
            browser.close()
            svc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
