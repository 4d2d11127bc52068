"""Health as orchestrators ask for it, on real processes: grpc.health.v1, /healthz and
/readyz, and ``mltrail health`` (the exec probe)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.agent_client import AgentClient, agent_service, scalar_requests, scalar_steps
from tests.integration.test_agent_chaos import collector_on, free_port
from tests.procs import MLTRAIL, collector_service, mltrail_cli

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def grpc_status(target: str, service: str = "") -> int:
    with grpc.insecure_channel(target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=10)
    return int(reply.status)


def http_status(address: str, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=10) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


def wait_for(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_collector_with_its_store_gone_is_alive_not_ready_and_loses_nothing(
        tmp_path: Path) -> None:
    data = tmp_path / "volume"
    data.mkdir()
    collector = collector_service(tmp_path)
    collector.args[collector.args.index("--store") + 1] = f"sqlite:///{data / 'store.db'}"
    collector.start()
    agent = agent_service(tmp_path, collector.grpc).start()
    try:
        assert grpc_status(collector.grpc) == SERVING
        assert http_status(collector.http, "/readyz") == (200, "ready\n")
        client = AgentClient(agent.info["socket"])
        list(client.append(scalar_requests("run-h", "s-1", 100, per_batch=50)))
        wait_for(lambda: len(scalar_steps(collector.grpc, "run-h")) == 100, "first records")

        gone = tmp_path / "volume-unmounted"
        data.rename(gone)  # the volume under the store disappears
        wait_for(lambda: grpc_status(collector.grpc) == NOT_SERVING, "not ready")
        status, body = http_status(collector.http, "/readyz")
        assert status == 503 and "store file" in body and "cannot be found" in body, body
        assert http_status(collector.http, "/healthz")[0] == 200  # alive: no restart
        assert grpc_status(collector.grpc, "liveness") == SERVING
        probe = mltrail_cli("health", env={"MLTRAIL_READY_FILE": str(collector.ready_file)})
        assert probe.returncode == 1 and "NOT_SERVING" in probe.stdout, probe

        # Records sent meanwhile are refused as retryable and kept by the agent.
        list(client.append(scalar_requests("run-h", "s-1", 100, per_batch=50, first_seq=102,
                                           started=False)))
        wait_for(lambda: "answering UNAVAILABLE" in collector.output(), "a refused write")
        client.close()
        gone.rename(data)
        wait_for(lambda: grpc_status(collector.grpc) == SERVING, "ready again")
        wait_for(lambda: len(scalar_steps(collector.grpc, "run-h")) == 200, "the rest")
        assert scalar_steps(collector.grpc, "run-h") == list(range(2, 202))
        probe = mltrail_cli("health", collector.grpc)
        assert probe.returncode == 0 and "SERVING" in probe.stdout, probe
    finally:
        agent.stop()
        collector.stop()


def test_agent_health_on_its_socket_and_not_ready_while_draining(tmp_path: Path) -> None:
    collector = collector_on(free_port(), tmp_path).start()
    agent = agent_service(tmp_path, collector.grpc, "--drain-timeout", "120").start()
    target = f"unix:{agent.info['socket']}"
    try:
        assert grpc_status(target) == SERVING
        assert http_status(agent.http, "/readyz")[0] == 200
        probe = mltrail_cli("health", "--liveness",
                            env={"MLTRAIL_READY_FILE": str(agent.ready_file)})
        assert probe.returncode == 0 and "liveness: SERVING" in probe.stdout, probe
        collector.stop()
        client = AgentClient(agent.info["socket"])
        list(client.append(scalar_requests("run-d", "s-d", 50)))
        client.close()
        assert agent.proc is not None
        agent.proc.terminate()  # SIGTERM: it drains, and takes no new work meanwhile
        wait_for(lambda: http_status(agent.http, "/readyz")[0] == 503, "not ready")
        assert http_status(agent.http, "/readyz")[1] == "shutting down\n"
        assert http_status(agent.http, "/healthz")[0] == 200
        collector.start()
        assert agent.proc.wait(timeout=120) == 0
        assert scalar_steps(collector.grpc, "run-d") == list(range(2, 52))
    finally:
        agent.stop()
        collector.stop()


def test_health_command_errors_are_one_clear_line(tmp_path: Path) -> None:
    done = mltrail_cli("health", env={"MLTRAIL_READY_FILE": ""})
    assert done.returncode == 1 and "no ADDRESS given" in done.stderr, done
    done = mltrail_cli("health", env={"MLTRAIL_READY_FILE": str(tmp_path / "none.json")})
    assert done.returncode == 1 and "has started here yet" in done.stderr, done
    done = mltrail_cli("health", "127.0.0.1:1", "--timeout", "2")
    assert done.returncode == 1 and "cannot reach" in done.stdout, done
    done = mltrail_cli("health", f"unix:{tmp_path / 'no.sock'}", "--timeout", "2")
    assert done.returncode == 1 and "cannot reach" in done.stdout, done
    assert "Traceback" not in done.stderr


@contextlib.contextmanager
def collector_as_the_image_runs_it(tmp_path: Path, *extra: str) -> Iterator[Path]:
    """A collector told of its ready file only by $MLTRAIL_READY_FILE; yields that file."""
    ready = tmp_path / "ready.json"
    env = {**os.environ, "MLTRAIL_READY_FILE": str(ready), "MLTRAIL_HOME": str(tmp_path)}
    args = [*collector_service(tmp_path).args, *extra]
    with open(tmp_path / "collector.log", "wb") as log:
        proc = subprocess.Popen([*MLTRAIL, "collector", *args], env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: ready.exists() or proc.poll() is not None, "the ready file")
        yield ready
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0


def test_ready_file_from_the_environment_is_what_health_asks(tmp_path: Path) -> None:
    """As the image runs a service: no --ready-file, $MLTRAIL_READY_FILE names it."""
    with collector_as_the_image_runs_it(tmp_path) as ready:
        done = mltrail_cli("health", env={"MLTRAIL_READY_FILE": str(ready)})
        assert done.returncode == 0 and "readiness: SERVING" in done.stdout, done


def test_health_of_a_tls_collector_with_tokens(tmp_path: Path) -> None:
    """As the TLS deployments run it: the image's `mltrail health` (ready file) asks the
    collector's own HTTPS port; an https:// ADDRESS is checked against $MLTRAIL_TLS_CA."""
    from tests.certs import ThrowawayCA

    ca = ThrowawayCA(tmp_path / "ca")
    server = ca.issue("collector", hosts=("localhost",))  # no 127.0.0.1 in its names
    with collector_as_the_image_runs_it(tmp_path, "--auth", "token", "--tls-cert",
                                        str(server.cert), "--tls-key", str(server.key)
                                        ) as ready:
        own = mltrail_cli("health", env={"MLTRAIL_READY_FILE": str(ready)})
        assert own.returncode == 0 and "readiness: 200" in own.stdout, own
        assert own.stdout.startswith("https://127.0.0.1:"), own.stdout
        address = own.stdout.split()[0]
        by_name = address.replace("127.0.0.1", "localhost")
        checked = mltrail_cli("health", by_name, env={"MLTRAIL_TLS_CA": str(ca.cert)})
        assert checked.returncode == 0 and "readiness: 200" in checked.stdout, checked
        unchecked = mltrail_cli("health", address, "--liveness", env={"MLTRAIL_TLS_CA": ""})
        assert unchecked.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in unchecked.stdout
        missing = mltrail_cli("health", address, env={"MLTRAIL_TLS_CA": str(tmp_path / "no")})
        assert missing.returncode == 1 and "MLTRAIL_TLS_CA" in missing.stdout, missing
        assert "Traceback" not in missing.stderr
