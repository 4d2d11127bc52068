"""Benchmark: ingest into PostgreSQL through 1, 2 and 3 collector replicas, against SQLite
with one collector, in the same run.

Each configuration gets fresh collectors and a fresh store (PostgreSQL 15 started
here as in the tests: tests/postgres_env.py, as root) and the same load: ``--writers``
clients, each pushing its own stream of scalar records (pre-encoded) with a few
requests in flight, spread round-robin over the replicas. Prints ``name: value unit``
lines and each figure's ratio to SQLite's, which holds better than the raw figures
on a loaded machine.

    python bench/replicas_ingest.py [--records 600000] [--writers 6] [--batch 5000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.collector_ingest import encoded_requests, push
from tests.postgres_env import PostgresServer
from tests.procs import Service, collector_service


def run_config(name: str, store: str, replicas: int, workdir: Path, writers: int,
               per_writer: int, batch: int, window: int) -> float:
    services: list[Service] = []
    for n in range(replicas):
        home = workdir / f"{name}-{n}"
        home.mkdir(parents=True)
        services.append(collector_service(home, store=store).start())
    loads = [encoded_requests(per_writer, batch) for _ in range(writers)]
    results: list[tuple[float, int]] = []
    threads = [threading.Thread(target=lambda i=i: results.append(
        push(services[i % replicas].grpc, loads[i], window))) for i in range(writers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    for svc in services:
        svc.stop()
    stored = sum(count for _, count in results)
    if stored != writers * per_writer:
        raise SystemExit(f"{name}: stored {stored} of {writers * per_writer}")
    return stored / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=600_000)
    parser.add_argument("--writers", type=int, default=6)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--in-flight", type=int, default=4)
    args = parser.parse_args()
    per_writer = args.records // args.writers
    with tempfile.TemporaryDirectory(prefix="mltrail-bench-") as tmp:
        root = Path(tmp)
        server = PostgresServer().init().start()
        try:
            figures = {"sqlite_1_collector": run_config(
                "sqlite", f"sqlite:///{root / 'store.db'}", 1, root, args.writers, per_writer,
                args.batch, args.in_flight)}
            for replicas in (1, 2, 3):
                figures[f"postgres_{replicas}_replicas"] = run_config(
                    f"pg{replicas}", server.new_database(), replicas, root, args.writers,
                    per_writer, args.batch, args.in_flight)
        finally:
            server.destroy()
    base = figures["sqlite_1_collector"]
    print(f"load: {args.writers} writers x {per_writer} scalar records, batches of "
          f"{args.batch}, {args.in_flight} in flight each")
    for name, rate in figures.items():
        print(f"{name}: {rate:,.0f} records/s ({rate / base:.2f} x sqlite)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
