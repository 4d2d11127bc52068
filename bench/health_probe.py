"""Benchmark: what one health probe costs, by the way an orchestrator asks.

Starts a real collector, then asks its readiness N times each way and prints
``name: value unit`` lines: an exec probe (``mltrail health HOST:PORT``, a new
Python process: what Docker's HEALTHCHECK and Kubernetes ``exec`` probes pay),
a gRPC ``grpc.health.v1`` Check on one channel (Kubernetes ``grpc`` probes), and
an HTTP ``GET /readyz`` (``httpGet`` probes). CPU seconds of the probing side
are the figure that holds on a shared machine; ``ratio`` compares it with HTTP.

    python bench/health_probe.py [--count 20]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.procs import MLTRAIL, collector_service


def cpu_now(children: bool) -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(name: str, count: int, ask: Callable[[], None], children: bool = False
            ) -> tuple[float, float]:
    cpu0, wall0 = cpu_now(children), time.perf_counter()
    for _ in range(count):
        ask()
    wall = (time.perf_counter() - wall0) / count
    cpu = (cpu_now(children) - cpu0) / count
    print(f"{name}_wall: {wall * 1000:.2f} ms")
    print(f"{name}_cpu: {cpu * 1000:.2f} ms")
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        collector = collector_service(Path(tmp)).start()
        try:
            target = collector.grpc
            env = {**os.environ, "MLTRAIL_HOME": tmp}

            def exec_probe() -> None:
                subprocess.run([*MLTRAIL, "health", target], check=True, env=env,
                               stdout=subprocess.DEVNULL)

            channel = grpc.insecure_channel(target)
            stub = health_pb2_grpc.HealthStub(channel)

            def grpc_probe() -> None:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING

            def http_probe() -> None:
                with urllib.request.urlopen(f"http://{collector.http}/readyz", timeout=5) as r:
                    assert r.status == 200

            _, exec_cpu = measure("exec_probe", args.count, exec_probe, children=True)
            _, grpc_cpu = measure("grpc_probe", args.count * 10, grpc_probe)
            _, http_cpu = measure("http_probe", args.count * 10, http_probe)
            channel.close()
            print(f"ratio_exec_to_http_cpu: {exec_cpu / max(http_cpu, 1e-9):.0f} x")
            print(f"ratio_grpc_to_http_cpu: {grpc_cpu / max(http_cpu, 1e-9):.2f} x")
        finally:
            collector.stop()


if __name__ == "__main__":
    main()
