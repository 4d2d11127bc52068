"""deploy/docker on the real engine: the image built offline from a local base, the compose
deployments started as a user would (on the host network: this engine has no bridge).

- Sidecar: the trainer runs ``mltrail run -- python train.py``; its metrics, file and
  console reach the collector though the agent container is SIGKILLed and started
  again mid-run; ``compose down`` keeps the collector's volume.
- Trainer that knows nothing: the log agent records the labelled container's console
  as a run with the container's metadata.
- PostgreSQL and TLS (compose.postgres.yaml, compose.tls.yaml): the store is a postgres
  container (an image made offline like the base, compatible with the official one), the
  agent sends by TLS with a token made at the first start; the run is read back through
  TLS with the admin token, and is still there after ``down`` and ``up``, when the same
  agent token still writes.
"""

from __future__ import annotations

import math
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mltrail.query.client import QueryClient
from tests import deploy_env, docker_env
from tests.conftest import require
from tests.integration.test_agent_chaos import free_port

pytestmark = [pytest.mark.docker, pytest.mark.slow]
DEPLOY = deploy_env.ROOT / "deploy" / "docker"
HOSTNET = {"compose.yaml": "compose.hostnet.yaml", "compose.logs.yaml": "compose.logs.hostnet.yaml",
           "compose.postgres.yaml": "compose.postgres.hostnet.yaml",
           "compose.tls.yaml": "compose.tls.hostnet.yaml"}


@dataclass
class Compose:
    """One compose project of deploy/docker, with its own name and ports."""

    command: list[str]
    files: list[str]
    env: dict[str, str]
    project: str

    def __call__(self, *args: str, timeout: float = 300, check: bool = True
                 ) -> subprocess.CompletedProcess[str]:
        flags = [f for name in self.files for f in ("-f", name)]
        done = subprocess.run([*self.command, "-p", self.project, *flags, *args], cwd=DEPLOY,
                              env={**os.environ, **self.env}, capture_output=True, text=True,
                              timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"compose {' '.join(args)} failed:\n{done.stdout[-3000:]}\n"
                                 f"{done.stderr[-3000:]}")
        return done

    def container(self, service: str) -> str:
        ids = self("ps", "-a", "-q", service).stdout.split()
        assert ids, f"no container for {service}"
        return ids[0]

    def logs(self) -> str:
        return self("logs", "--no-color", check=False).stdout[-6000:]


def built(what: str, make: Callable[[], str]) -> str:
    """An image made on the engine by ``make`` (once: later calls find it)."""
    require(docker_env.ensure_engine(), "a Docker engine")
    try:
        return make()
    except (RuntimeError, subprocess.SubprocessError) as exc:
        require(False, f"{what} ({exc})")
        raise


@pytest.fixture(scope="module")
def image() -> str:
    return built("the mltrail image", deploy_env.ensure_image)


@pytest.fixture
def compose(image: str) -> Iterator[Callable[..., Compose]]:
    command = deploy_env.compose_command()
    require(command is not None, "docker compose or docker-compose")
    assert command is not None
    made: list[Compose] = []

    def make(*files: str) -> Compose:
        grpc = free_port()
        env = {"MLTRAIL_IMAGE": image, "MLTRAIL_GRPC_PORT": str(grpc),
               "MLTRAIL_HTTP_PORT": str(free_port()), "MLTRAIL_AGENT_HTTP_PORT": str(free_port()),
               "MLTRAIL_LOG_AGENT_HTTP_PORT": str(free_port()),
               "MLTRAIL_COLLECTOR": f"127.0.0.1:{grpc}"}
        names = [n for f in files for n in (f, HOSTNET[f])]
        project = f"mltrailtest{uuid.uuid4().hex[:10]}"
        made.append(Compose(command, names, env, project))
        return made[-1]

    yield make
    for project in made:
        project("down", "--volumes", "--timeout", "5", check=False)


def wait_for(check: Callable[[], Any], what: str, timeout: float = 120.0,
             context: Callable[[], str] = lambda: "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except Exception:  # the collector not up yet, a run not there yet
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{context()}")
        time.sleep(0.25)


def only_run(client: QueryClient, experiment: str) -> Any:
    runs = client.list_runs(experiment=experiment)
    return runs[0] if len(runs) == 1 else None


def steps(client: QueryClient, run_id: str, name: str) -> list[int]:
    return [r.metric.scalar.step for r in client.get_metric_records(run_id, name)]


def stdout_lines(client: QueryClient, run_id: str) -> list[str]:
    return [line.text for line in client.tail_logs(run_id, ["stdout"])]


def test_sidecar_deployment_loses_nothing_across_an_agent_kill(
        compose: Callable[..., Compose], tmp_path: Path) -> None:
    total = 150
    experiment = f"compose-{uuid.uuid4().hex[:8]}"
    job = compose("compose.yaml")
    job.env.update(MLTRAIL_EXPERIMENT=experiment, TRAIN_STEPS=str(total), TRAIN_DELAY="0.1")
    job("up", "-d", "collector", "agent")
    client = QueryClient(job.env["MLTRAIL_COLLECTOR"], timeout=10)
    job("up", "-d", "--no-recreate", "trainer")  # waits until the agent is healthy

    run = wait_for(lambda: only_run(client, experiment), "the run", context=job.logs)
    wait_for(lambda: len(steps(client, run.run_id, "loss")) >= 20, "20 steps", context=job.logs)
    agent = job.container("agent")
    deploy_env.docker("kill", "--signal", "KILL", agent)
    seen = len(steps(client, run.run_id, "loss"))
    trainer = job.container("trainer")
    # The trainer goes on while its agent is gone: its SDK keeps what is not acknowledged.
    wait_for(lambda: f"step {seen + 15}/" in deploy_env.docker("logs", trainer).stdout,
             "the trainer to go on without its agent", context=job.logs)
    deploy_env.docker("start", agent)

    exit_code = deploy_env.docker("wait", trainer, timeout=300).stdout.strip()
    assert exit_code == "0", job.logs()
    done = wait_for(lambda: client.get_run(run.run_id).status == "Completed" and
                    len(steps(client, run.run_id, "loss")) == total, "all of the run",
                    context=job.logs)
    assert done
    assert steps(client, run.run_id, "loss") == list(range(1, total + 1))
    assert steps(client, run.run_id, "accuracy") == list(range(1, total + 1))
    lines = stdout_lines(client, run.run_id)
    assert [ln for ln in lines if ln.startswith("step ")] == [
        f"step {i}/{total} loss={2.0 * math.exp(-i / 30.0):.4f}" for i in range(1, total + 1)]
    assert lines[-1] == "training done"
    [model] = [a for a in client.list_artifacts(run.run_id) if a.path == "outputs/model.txt"]
    client.download_artifact(run.run_id, model.path, tmp_path / "model.txt")
    assert (tmp_path / "model.txt").read_text() == f"weights after {total} steps\n"
    listed = job("exec", "-T", "collector", "mltrail", "runs", "--experiment", experiment)
    assert run.run_id in listed.stdout and "Completed" in listed.stdout, listed.stdout

    # `compose down` keeps the data volume: a new collector on it still has the run.
    job("down", "--timeout", "30")
    client.close()
    volumes = deploy_env.docker("volume", "ls", "-q").stdout.split()
    assert f"{job.project}_collector-data" in volumes
    job("up", "-d", "collector")
    again = wait_for(lambda: client.get_run(run.run_id), "the run after down and up",
                     context=job.logs)
    assert again.status == "Completed"
    assert steps(client, run.run_id, "loss") == list(range(1, total + 1))
    client.close()


def test_trainer_that_knows_nothing_is_recorded_from_its_container_log(
        compose: Callable[..., Compose]) -> None:
    run_id = f"plain-{uuid.uuid4().hex[:8]}"
    job = compose("compose.yaml", "compose.logs.yaml")
    job.env.update(RUN_ID=run_id, TRAIN_STEPS="40")
    job("up", "-d", "collector", "log-agent")
    job("up", "-d", "--no-recreate", "plain-trainer")
    client = QueryClient(job.env["MLTRAIL_COLLECTOR"], timeout=10)
    trainer = job.container("plain-trainer")
    assert deploy_env.docker("wait", trainer, timeout=300).stdout.strip() == "0"

    def streams() -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for line in client.tail_logs(run_id):
            out.setdefault(line.stream.rsplit("/", 1)[-1], []).append(line.text)
        return out

    wait_for(lambda: streams().get("stdout", [])[-1:] == ["finished"], "the console",
             context=job.logs)
    got = streams()
    assert got["stdout"] == [f"epoch {i}/40" for i in range(1, 41)] + ["finished"]
    assert got["stderr"] == [f"checkpoint at epoch {i}" for i in range(10, 41, 10)]
    shown = job("exec", "-T", "collector", "mltrail", "logs", run_id)
    assert "epoch 40/40" in shown.stdout and "finished" in shown.stdout, shown.stdout
    props = client.get_run(run_id).properties
    assert props["docker.container.id"] == trainer, props
    assert props["docker.image"] == job.env["MLTRAIL_IMAGE"], props
    assert props["docker.container.name"].startswith(job.project), props
    assert props["docker.label.mltrail.run_id"] == run_id, props
    client.close()


@pytest.fixture(scope="module")
def postgres_image() -> str:
    return built("the PostgreSQL image", deploy_env.ensure_postgres_image)


def user_secrets(directory: Path) -> tuple[Path, str]:
    """The files the README has a user make for compose.postgres.yaml and compose.tls.yaml
    (a CA-signed certificate, a password), readable by the containers' uid 10001 in a
    directory only its owner opens; the CA's certificate and the password."""
    from tests.certs import ThrowawayCA

    directory.mkdir(mode=0o700)
    ca = ThrowawayCA(directory / "ca")
    server = ca.issue("collector", hosts=("collector", "localhost", "127.0.0.1"))
    password = uuid.uuid4().hex
    for name, content in (("tls.crt", server.cert.read_bytes()),
                          ("tls.key", server.key.read_bytes()),
                          ("ca.crt", ca.cert.read_bytes()),
                          ("postgres-password", f"{password}\n".encode())):
        (directory / name).write_bytes(content)
        (directory / name).chmod(0o644)
    return directory / "ca.crt", password


def test_postgres_and_tls_deployment_keeps_its_runs_across_down_and_up(
        compose: Callable[..., Compose], postgres_image: str, tmp_path: Path) -> None:
    import grpc

    from mltrail.common.credentials import ClientSecurity
    from mltrail.common.errors import PermanentError, RetryableError

    ca, password = user_secrets(tmp_path / "secrets")
    experiment = f"secure-{uuid.uuid4().hex[:8]}"
    job = compose("compose.yaml", "compose.postgres.yaml", "compose.tls.yaml")
    pg_port = free_port()
    job.env.update(MLTRAIL_SECRETS=str(tmp_path / "secrets"), POSTGRES_IMAGE=postgres_image,
                   MLTRAIL_POSTGRES_PORT=str(pg_port), MLTRAIL_POSTGRES=f"127.0.0.1:{pg_port}",
                   MLTRAIL_EXPERIMENT=experiment, TRAIN_STEPS="60", TRAIN_DELAY="0.02")

    def train() -> None:
        job("up", "-d", "agent")  # postgres, collector, the agent's token, the agent
        job("up", "-d", "--no-recreate", "trainer")
        assert deploy_env.docker("wait", job.container("trainer"), timeout=300
                                 ).stdout.strip() == "0", job.logs()
        job("rm", "-f", "trainer")  # the next `up trainer` is a new run

    train()
    admin = job("exec", "-T", "collector", "cat", "/data/admin.token").stdout.strip()
    address = f"https://{job.env['MLTRAIL_COLLECTOR']}"
    client = QueryClient(address, timeout=10,
                         security=ClientSecurity(token=admin, tls_ca=str(ca)))
    run = wait_for(lambda: only_run(client, experiment), "the run", context=job.logs)
    wait_for(lambda: client.get_run(run.run_id).status == "Completed" and
             len(steps(client, run.run_id, "loss")) == 60, "all of the run", context=job.logs)
    assert steps(client, run.run_id, "accuracy") == list(range(1, 61))
    lines = stdout_lines(client, run.run_id)
    assert [ln for ln in lines if ln.startswith("step ")] == [
        f"step {i}/60 loss={2.0 * math.exp(-i / 30.0):.4f}" for i in range(1, 61)]
    assert "outputs/model.txt" in [a.path for a in client.list_artifacts(run.run_id)]
    listed = job("exec", "-T", "collector", "mltrail", "runs", "--experiment", experiment)
    assert run.run_id in listed.stdout and "Completed" in listed.stdout, listed.stdout

    # TLS and tokens are in force: plaintext, or TLS without a token, gets nothing.
    for where, security, code in (
            (job.env["MLTRAIL_COLLECTOR"], ClientSecurity(), grpc.StatusCode.UNAVAILABLE),
            (address, ClientSecurity(tls_ca=str(ca)), grpc.StatusCode.UNAUTHENTICATED)):
        stranger = QueryClient(where, timeout=10, security=security)
        with pytest.raises((PermanentError, RetryableError)) as refused:
            stranger.get_run(run.run_id)
        stranger.close()
        assert refused.value.code == code, refused.value
    # The runs are in PostgreSQL, whose password is in no command line, environment or log.
    ready = job("exec", "-T", "collector", "cat", "/tmp/mltrail-ready.json").stdout
    assert f'"store": "postgresql://mltrail@127.0.0.1:{pg_port}/mltrail"' in ready, ready
    counted = job("exec", "-T", "postgres", "psql", "--username", "mltrail", "--dbname",
                  "mltrail", "--tuples-only", "--command",
                  f"SELECT count(*) FROM runs WHERE run_id = '{run.run_id}'")
    assert counted.stdout.strip() == "1", counted.stdout
    inspected = deploy_env.docker("inspect", job.container("collector")).stdout
    for secret in (password, admin):
        assert secret not in inspected and secret not in job.logs()

    # down keeps the volumes; up again: the runs are there, and the agent's token (kept in
    # its volume, hashed with the key in the collector's) still writes the next run.
    job("down", "--timeout", "30")
    client.close()
    volumes = deploy_env.docker("volume", "ls", "-q").stdout.split()
    assert {f"{job.project}_{v}" for v in ("postgres-data", "agent-token")} <= set(volumes)
    job.env.update(TRAIN_STEPS="10")
    train()
    again = wait_for(lambda: client.get_run(run.run_id), "the run after down and up",
                     context=job.logs)
    assert again.status == "Completed"
    assert steps(client, run.run_id, "loss") == list(range(1, 61))
    [second] = wait_for(lambda: [r for r in client.list_runs(experiment=experiment)
                                 if r.run_id != run.run_id], "the second run", context=job.logs)
    wait_for(lambda: steps(client, second.run_id, "loss") == list(range(1, 11)),
             "the second run's steps", context=job.logs)
    client.close()
