"""Benchmark: ingest through a real agent into a real collector, TLS + tokens on vs off.

For each mode (``plain``: no auth, no TLS; ``secure``: ``--auth token``, TLS
with a throwaway CA, the agent sending a writer token from its token file)
starts a collector and an agent, pushes N scalar records over the agent's
socket and times until the collector acknowledged the last one. Modes
alternate ``--rounds`` times so load on a shared machine hits both; prints
``name: value unit`` lines and the ratio secure/plain of the best rounds
(and of collector CPU per record, which load disturbs less).

    python bench/secure_ingest.py [--records 200000] [--batch 1000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.agent_client import AgentClient, agent_service, scalar_requests
from tests.certs import ThrowawayCA
from tests.procs import collector_service, cpu_seconds, mltrail_cli


def one_round(workdir: Path, secure: bool, records: int, batch: int) -> tuple[float, float]:
    """(seconds to the last ack, collector CPU seconds)."""
    workdir.mkdir(parents=True)
    extra: list[str] = []
    agent_extra: list[str] = []
    if secure:
        ca = ThrowawayCA(workdir / "ca")
        server = ca.issue("server")
        extra = ["--auth", "token", "--tls-cert", str(server.cert), "--tls-key",
                 str(server.key), "--admin-token-file", str(workdir / "admin.token")]
    collector = collector_service(workdir, *extra).start()
    address = collector.grpc
    try:
        if secure:
            address = f"https://{collector.grpc}"
            made = mltrail_cli("token", "create", "--workspace", "bench", "--role", "writer",
                               "--collector", address, "--tls-ca", str(ca.cert),
                               "--token-file", str(workdir / "admin.token"))
            if made.returncode:
                raise SystemExit(made.stderr)
            (workdir / "writer.token").write_text(made.stdout)
            agent_extra = ["--tls-ca", str(ca.cert), "--token-file",
                           str(workdir / "writer.token")]
        agent_dir = workdir / "agent"
        agent_dir.mkdir()
        agent = agent_service(agent_dir, address, *agent_extra).start()
        try:
            run_id, stream = uuid.uuid4().hex, uuid.uuid4().hex
            requests = scalar_requests(run_id, stream, records, per_batch=batch)
            client = AgentClient(agent.info["socket"])
            cpu_before = cpu_seconds(collector.info["pid"])
            started = time.perf_counter()
            for ack in client.append(requests):
                if ack.error:
                    raise SystemExit(f"agent refused a batch: {ack.error}")
            if not client.wait_forwarded(stream, records + 1, timeout=600).done:
                raise SystemExit("the collector did not acknowledge everything")
            seconds = time.perf_counter() - started
            cpu = cpu_seconds(collector.info["pid"]) - cpu_before
            client.close()
        finally:
            agent.stop()
    finally:
        collector.stop()
    return seconds, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    best: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="mltrail-bench-") as tmp:
        for n in range(args.rounds):
            for mode in ("plain", "secure"):
                seconds, cpu = one_round(Path(tmp) / f"{mode}-{n}", mode == "secure",
                                         args.records, args.batch)
                print(f"{mode}_round_{n}: {args.records / seconds:.0f} records/s "
                      f"({cpu:.2f} s collector CPU)")
                if mode not in best or seconds < best[mode][0]:
                    best[mode] = (seconds, cpu)
    plain, secure = best["plain"], best["secure"]
    print(f"plain_throughput: {args.records / plain[0]:.0f} records/s")
    print(f"secure_throughput: {args.records / secure[0]:.0f} records/s")
    print(f"ratio_secure_to_plain: {plain[0] / secure[0]:.3f}")
    print(f"collector_cpu_ratio_secure_to_plain: {secure[1] / plain[1]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
