"""End-to-end throughput through a real agent to a real collector.

    python bench/agent_throughput.py [--records 1000000] [--per-batch 1000] [--streams 2]

Starts a collector and an agent (SQLite in a temp dir), streams N scalar
records (encoded Batches of ``--per-batch`` records) over the agent's unix
socket, and reports:
- records/s end to end: until the collector acknowledged every record
  (``WaitForwarded`` on each stream);
- the agent's added latency: Append sent -> AppendAck, median and p99;
- the agent's peak RSS (VmHWM) and its RSS at rest after the run.
Targets: >= 100,000 records/s, < 60 MB at rest.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.agent_client import AgentClient, agent_service, scalar_requests
from tests.procs import Service


def rss_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def stream(client: AgentClient, requests: list, latencies: list[float], window: int = 16
           ) -> None:
    sent_at: list[float] = []
    for i, ack in enumerate(client.append(requests, window=window, timeout=600,
                                          sent_at=sent_at)):
        latencies.append(time.perf_counter() - sent_at[i])
        if ack.error:
            raise RuntimeError(ack.error)


def unloaded_latency(socket_path: str, appends: int = 300) -> list[float]:
    """Append -> ack of one 1,000-record batch at a time: the agent's own latency."""
    sid = uuid.uuid4().hex
    requests = scalar_requests(uuid.uuid4().hex, sid, appends * 1000, 1000)
    client = AgentClient(socket_path)
    latencies: list[float] = []
    stream(client, requests, latencies, window=1)
    client.close()
    return sorted(latencies)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--per-batch", type=int, default=1000)
    parser.add_argument("--streams", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mltrail-bench-") as tmp:
        workdir = Path(tmp)
        collector = Service("collector", [
            "--store", f"sqlite:///{workdir / 'store.db'}", "--grpc", "127.0.0.1:0",
            "--http", "127.0.0.1:0", "--artifacts", str(workdir / "artifacts")], workdir).start()
        agent = agent_service(workdir, collector.grpc).start()
        try:
            return run(args, workdir, agent)
        finally:
            agent.stop()
            collector.stop()


def run(args: argparse.Namespace, workdir: Path, agent: Service) -> int:
    per_stream = args.records // args.streams
    print(f"encoding {per_stream * args.streams:,} records in batches of {args.per_batch} ...")
    work = []
    for _ in range(args.streams):
        sid = uuid.uuid4().hex
        work.append((sid, scalar_requests(uuid.uuid4().hex, sid, per_stream, args.per_batch)))
    latencies: list[float] = []
    clients = [AgentClient(str(workdir / "agent.sock")) for _ in work]
    started = time.perf_counter()
    threads = [threading.Thread(target=stream, args=(c, reqs, latencies))
               for c, (_, reqs) in zip(clients, work, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    spooled = time.perf_counter() - started
    for client, (sid, reqs) in zip(clients, work, strict=True):
        done = client.wait_forwarded(sid, reqs[-1].last_seq, timeout=600)
        assert done.done, f"stream {sid} not forwarded: {done}"
    elapsed = time.perf_counter() - started
    total = sum(r.last_seq for _, r in ((s, reqs[-1]) for s, reqs in work))
    pid = int(agent.info["pid"])
    peak = rss_kb(pid, "VmHWM")
    time.sleep(2.5)  # the agent trims its heap once the spool is drained
    rest = rss_kb(pid, "VmRSS")
    lat = sorted(latencies)
    print(f"records:            {total:,} in {len(lat)} appends ({args.streams} streams)")
    print(f"spooled (all acks): {spooled:.2f}s = {total / spooled:,.0f} records/s")
    print(f"end to end:         {elapsed:.2f}s = {total / elapsed:,.0f} records/s (target 100,000)")
    print(f"append->ack loaded: median {statistics.median(lat) * 1000:.2f} ms, "
          f"p99 {lat[int(len(lat) * 0.99) - 1] * 1000:.2f} ms (16 in flight per stream)")
    idle = unloaded_latency(str(workdir / "agent.sock"))
    print(f"append->ack alone:  median {statistics.median(idle) * 1000:.2f} ms, "
          f"p99 {idle[int(len(idle) * 0.99) - 1] * 1000:.2f} ms (one 1,000-record batch "
          "at a time)")
    print(f"agent RSS:          peak {peak / 1024:.1f} MB, at rest {rest / 1024:.1f} MB "
          "(target < 60)")
    for client in clients:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
