"""Benchmark: scalar metric records/s into a real collector process with SQLite.

Starts ``mltrail collector`` on a temporary store, warms it up (one large
request, which starts its ingest workers), pushes N scalar records
(pre-encoded, so the client's cost stays out of the figure) in batches on one
Ingest.Write stream with a few requests in flight, and prints plain lines
``name: value unit``. ``throughput_per_cpu_second`` divides by the
CPU time of the collector and its ingest worker processes, so it holds on a
machine shared with other work.

    python bench/collector_ingest.py [--records 500000] [--batch 10000] [--in-flight 4]
                                     [--writers 1] [--ingest-workers N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mltrail.pipeline.delivery import MemorySink
from mltrail.pipeline.sender import Sender
from mltrail.pipeline.values import SCALAR
from mltrail.proto import collector_pb2
from tests import builders
from tests.procs import Service, descendants, tree_cpu_seconds, vm_kib


def encoded_requests(count: int, per_request: int, wire: str = "record") -> list[bytes]:
    """One stream's requests (its own run and stream id) of ``per_request`` points."""
    run_id, stream_id = builders.new_stream_id(), builders.new_stream_id()
    if wire == "record":
        batches = builders.scalar_batches(run_id, stream_id, count, per_request)
        return [collector_pb2.IngestRequest(request_id=index + 1, batches=[batch])
                .SerializeToString() for index, batch in enumerate(batches)]
    out, held, points = [], [], 0
    for first, last, batch in sdk_batches(run_id, stream_id, count, per_request):
        held.append(batch)
        points += last - first + 1
        if points >= per_request or last == count:
            request = collector_pb2.IngestRequest(request_id=len(out) + 1)
            out.append(request.SerializeToString() + b"".join(
                _field(2, data) for data in held))  # as an agent concatenates frames
            held, points = [], 0
    return out


def sdk_batches(run_id: str, stream_id: str, count: int, per_flush: int
                ) -> Iterator[tuple[int, int, bytes]]:
    """``run.log("loss", seq * 0.5, step=seq)`` ``count`` times, as the SDK's sender
    encodes it, flushed every ``per_flush`` calls (at most 100,000; what the sender
    takes in one cycle): (first seq, last seq, the Batch's bytes)."""
    sink = MemorySink()
    sender = Sender(sink, memory_limit=1 << 30, interval=0.001, stream_id=stream_id)
    per_flush = min(per_flush, 100_000)
    try:
        for start in range(1, count + 1, per_flush):
            for seq in range(start, min(start + per_flush, count + 1)):
                sender.enqueue((SCALAR, run_id, time.time_ns(), "loss", "", seq * 0.5, seq))
            if sender.flush(60):
                raise SystemExit("the SDK's sender did not encode every point")
            for request in sink.received:
                yield request.first_seq, request.last_seq, request.batch
            sink.received.clear()
    finally:
        sender.close(10)


def _field(number: int, data: bytes) -> bytes:
    """A length-delimited protobuf field."""
    size, header = len(data), bytearray([number << 3 | 2])
    while size > 0x7F:
        header.append(size & 0x7F | 0x80)
        size >>= 7
    header.append(size)
    return bytes(header) + data


def push_marks(address: str, requests: list[bytes], window: int = 4
               ) -> list[tuple[float, int]]:
    """Send every request on one stream, ``window`` in flight; (time, records stored so
    far) at the start and after each response."""
    prepared = [collector_pb2.IngestRequest.FromString(raw) for raw in requests]
    in_flight = threading.Semaphore(window)

    def send() -> Iterator[collector_pb2.IngestRequest]:
        for request in prepared:
            in_flight.acquire()
            yield request

    stored = 0
    with builders.IngestClient(address) as client:
        marks = [(time.perf_counter(), 0)]
        for response in client.write_stream(send()):
            in_flight.release()
            for result in response.results:
                if result.code:
                    raise SystemExit(f"batch refused: {result.message}")
                stored += result.stored
            marks.append((time.perf_counter(), stored))
        return marks


def push_all(address: str, streams: list[list[bytes]], window: int) -> tuple[float, int]:
    """Every stream on its own thread and connection; (seconds, records stored)."""
    marks: list[list[tuple[float, int]]] = [[] for _ in streams]

    def one(index: int) -> None:
        marks[index] = push_marks(address, streams[index], window)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(streams))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if not all(marks):
        raise SystemExit("a writer failed; see above")
    started = min(m[0][0] for m in marks)
    return max(m[-1][0] for m in marks) - started, sum(m[-1][1] for m in marks)


def warm_up(address: str, pid: int, workers: int | None) -> None:
    """One large request on a stream of its own: the collector starts its ingest workers
    with the first request that needs them; wait until they run, so that the figures are
    of the collector at speed, not of its start."""
    push_marks(address, encoded_requests(10_000, 10_000))
    deadline = time.monotonic() + 30
    while workers != 0 and len(descendants(pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # the workers' first answers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--batch", type=int, default=10_000, help="points a request")
    parser.add_argument("--wire", choices=("sdk", "record"), default="sdk",
                        help="sdk: batches as the SDK's sender encodes them (float values "
                             "packed per series); record: a Record per point (older SDKs)")
    parser.add_argument("--in-flight", type=int, default=4)
    parser.add_argument("--writers", type=int, default=1,
                        help="streams sent at once, as several agents do (records split)")
    parser.add_argument("--ingest-workers", type=int, default=None,
                        help="the collector's ingest_workers (default: its own default)")
    args = parser.parse_args()
    streams = [encoded_requests(args.records // args.writers, args.batch, args.wire)
               for _ in range(args.writers)]
    wire_bytes = sum(len(r) for requests in streams for r in requests)
    workers_env = ({} if args.ingest_workers is None
                   else {"MLTRAIL_COLLECTOR_INGEST_WORKERS": str(args.ingest_workers)})
    with tempfile.TemporaryDirectory(prefix="mltrail-bench-") as tmp:
        workdir = Path(tmp)
        svc = Service("collector", ["--store", f"sqlite:///{workdir / 'store.db'}",
                                    "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0",
                                    "--artifacts", str(workdir / "artifacts")], workdir,
                      env=workers_env)
        svc.start()
        try:
            pid = svc.info["pid"]
            warm_up(svc.grpc, pid, args.ingest_workers)
            cpu_before = tree_cpu_seconds(pid)
            client_before = time.process_time()
            seconds, stored = push_all(svc.grpc, streams, args.in_flight)
            cpu = tree_cpu_seconds(pid) - cpu_before
            client_cpu = time.process_time() - client_before
            rss = vm_kib(pid)
            workers_rss = sum(vm_kib(p) for p in descendants(pid))
        finally:
            svc.stop()
    print(f"records: {stored} records")
    print(f"seconds: {seconds:.3f} s")
    print(f"throughput: {stored / seconds:.0f} records/s")
    print(f"wire: {wire_bytes / seconds / 1e6:.2f} MB/s")
    print(f"collector_cpu: {cpu:.2f} s")
    print(f"client_cpu: {client_cpu:.2f} s (this process, on the same machine)")
    print(f"throughput_per_cpu_second: {stored / cpu:.0f} records/s")
    print(f"collector_peak_rss: {rss / 1024:.1f} MiB")
    print(f"ingest_workers_peak_rss: {workers_rss / 1024:.1f} MiB (sum over the processes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
