"""A collector a team can expose: workspaces, tokens and TLS, with real processes.

The collector serves TLS with a certificate from a throwaway CA made in the
test (tests/certs.py) and ``--auth token``; tokens are made with
``mltrail token create`` as an admin would; agents and the CLI run as
separate processes. Nothing here accepts a lost or doubled record.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.agent_client import AgentClient, agent_service, scalar_requests
from tests.certs import ThrowawayCA
from tests.procs import Service, collector_service, mltrail_cli

pytestmark = pytest.mark.slow


def wait_for(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


class Team:
    """A TLS + token collector and the files an admin hands out."""

    def __init__(self, root: Path, *extra: str, store: str = "") -> None:
        self.root = root
        self.ca = ThrowawayCA(root / "ca")
        self.server = self.ca.issue("server")
        self.collector = collector_service(
            root, "--auth", "token", "--tls-cert", str(self.server.cert),
            "--tls-key", str(self.server.key), "--admin-token-file", str(root / "admin.token"),
            *extra, store=store)
        self.collector.start()
        self.cli_outputs: list[str] = []

    @property
    def address(self) -> str:
        return f"https://{self.collector.grpc}"

    def cli(self, *args: str, token_file: Path | None = None, extra_env: dict[str, str] | None
            = None) -> subprocess.CompletedProcess[str]:
        flags = ["--collector", self.address, "--tls-ca", str(self.ca.cert)]
        if token_file is not None:
            flags += ["--token-file", str(token_file)]
        env = {"MLTRAIL_HOME": str(self.root / "cli-home"), **(extra_env or {})}
        done = mltrail_cli(*args, *flags, env=env)
        self.cli_outputs += [done.stdout, done.stderr]
        return done

    def token(self, workspace: str, role: str, name: str) -> Path:
        done = self.cli("token", "create", "--workspace", workspace, "--role", role,
                        "--name", name, token_file=self.root / "admin.token")
        assert done.returncode == 0, done.stderr
        self.cli_outputs.remove(done.stdout)  # the one place a token is meant to be shown
        path = self.root / f"{name}.token"
        path.write_text(done.stdout)
        return path

    def agent(self, name: str, token_file: Path, *extra: str) -> Service:
        workdir = self.root / name
        workdir.mkdir()
        svc = agent_service(workdir, self.address, "--tls-ca", str(self.ca.cert),
                            "--token-file", str(token_file), *extra)
        svc.env["MLTRAIL_AGENT_UNHEALTHY_AFTER_SECONDS"] = "1"
        return svc.start()

    def secrets(self) -> list[str]:
        """Every token's secret part written so far."""
        return [p.read_text().strip().split("_", 2)[2] for p in self.root.glob("*.token")]

    def everything_printed(self, *services: Service) -> str:
        """Logs, CLI output and /metrics of everything, to grep for secrets."""
        texts = [self.collector.output(), *self.cli_outputs, *(s.output() for s in services)]
        for svc in services:
            texts.append(http_get(svc.http, "/metrics")[1])
        return "\n".join(texts)


def http_get(address: str, path: str, token_file: Path | None = None,
             ca: Path | None = None) -> tuple[int, str]:
    """GET over HTTP, or HTTPS trusting ``ca``."""
    request = urllib.request.Request(f"{'https' if ca else 'http'}://{address}{path}")
    if token_file is not None:
        request.add_header("Authorization", f"Bearer {token_file.read_text().strip()}")
    context = ssl.create_default_context(cafile=str(ca)) if ca else None
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metric(svc: Service, name: str) -> float:
    for line in http_get(svc.http, "/metrics")[1].splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


@pytest.fixture
def team(tmp_path: Path) -> Iterator[Team]:
    t = Team(tmp_path)
    yield t
    t.collector.stop()


@pytest.fixture
def team_on_each_store(tmp_path: Path, store_url: str) -> Iterator[Team]:
    """The ``team`` fixture once on SQLite and once on PostgreSQL (tokens in the store)."""
    t = Team(tmp_path, store=store_url)
    yield t
    t.collector.stop()


def sdk_run(agent: Service, experiment: str) -> str:
    """A real training script with the SDK, through the agent; returns its run id."""
    script = ("import mltrail\n"
              f"run = mltrail.Experiment({experiment!r}).start_logging()\n"
              "for i in range(50):\n    run.log('loss', 1.0 / (i + 1), step=i)\n"
              "run.complete()\nprint(run.id)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, env={**os.environ,
                                            "MLTRAIL_AGENT": agent.info["socket"]})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_roles_and_workspaces_along_the_whole_path(team_on_each_store: Team) -> None:
    team = team_on_each_store
    writer_a = team.token("team-a", "writer", "writer-a")
    reader_a = team.token("team-a", "reader", "reader-a")
    reader_b = team.token("team-b", "reader", "reader-b")
    agent = team.agent("agent-a", writer_a)
    try:
        run_id = sdk_run(agent, "auth-e2e")

        def completed() -> bool:
            done = team.cli("show", run_id, "--json", token_file=reader_a)
            return done.returncode == 0 and json.loads(done.stdout)["status"] == "Completed"

        wait_for("the run to arrive", completed)
        metrics = team.cli("metrics", run_id, "--json", "--name", "loss", token_file=reader_a)
        assert metrics.returncode == 0, metrics.stderr
        assert len(json.loads(metrics.stdout)["loss"]) == 50
        # a writer cannot read; a reader of another workspace does not see the run
        as_writer = team.cli("runs", token_file=writer_a)
        assert as_writer.returncode == 1 and "writer token" in as_writer.stderr
        assert "cannot read runs" in as_writer.stderr and len(as_writer.stderr.splitlines()) == 1
        other = team.cli("show", run_id, token_file=reader_b)
        assert other.returncode == 1 and "not found" in other.stderr
        listed = team.cli("runs", "--json", token_file=reader_b)
        assert listed.returncode == 0 and json.loads(listed.stdout) == []
        no_token = team.cli("runs")
        assert no_token.returncode == 1 and "needs a token" in no_token.stderr
        # /metrics (HTTPS with the same certificate) wants a bearer token; /healthz is open
        http, ca = team.collector.http, team.ca.cert
        assert http_get(http, "/healthz", ca=ca)[0] == 200
        assert http_get(http, "/metrics", ca=ca)[0] == 401
        assert http_get(http, "/metrics", writer_a, ca=ca)[0] == 403
        status, text = http_get(http, "/metrics", reader_a, ca=ca)
        assert status == 200 and "mltrail_collector_batches_total" in text
        assert f'run="{run_id}"' in text  # its workspace's run gauges, and no other's
        assert f'run="{run_id}"' not in http_get(http, "/metrics", reader_b, ca=ca)[1]
        with pytest.raises(OSError):  # no plain HTTP beside HTTPS
            http_get(http, "/healthz")
        printed = team.everything_printed(agent)
    finally:
        agent.stop()
    for secret in team.secrets():
        assert secret not in printed


def test_refused_writes_are_kept_not_dead_lettered(team: Team) -> None:
    """A reader token cannot write, a writer of B cannot write into A's run: the agent
    keeps everything, says so on /readyz (not ready; still alive on /healthz), and sets
    nothing aside."""
    writer_a = team.token("team-a", "writer", "writer-a")
    reader_a = team.token("team-a", "reader", "reader-a")
    writer_b = team.token("team-b", "writer", "writer-b")
    run_id = uuid.uuid4().hex
    first = team.agent("first", writer_a)
    client = AgentClient(first.info["socket"])
    stream = uuid.uuid4().hex
    assert all(not a.error for a in client.append(scalar_requests(run_id, stream, 100)))
    assert client.wait_forwarded(stream, 101, timeout=30).done
    client.close()
    first.stop()
    for name, token in (("as-reader", reader_a), ("into-a-from-b", writer_b)):
        # its spool cannot drain: stopping waits one second for it, not the default 30
        agent = team.agent(name, token, "--drain-timeout", "1")
        try:
            sender = AgentClient(agent.info["socket"])
            requests = scalar_requests(run_id, uuid.uuid4().hex, 100, started=False)
            assert all(not a.error for a in sender.append(requests))
            sender.close()
            wait_for("the agent to turn unhealthy",
                     lambda agent=agent: http_get(agent.http, "/readyz")[0] == 503)
            body = http_get(agent.http, "/readyz")[1]
            assert "refuses this agent's credentials" in body
            assert metric(agent, "mltrail_agent_dead_lettered_records_total") == 0
            assert metric(agent, "mltrail_agent_sent_records_total") == 0
            assert metric(agent, "mltrail_agent_spool_pending_bytes") > 0
            assert not list((agent.workdir / "spool" / "dead").glob("*"))
        finally:
            agent.stop()
    steps = team.cli("metrics", run_id, "--json", "--name", "loss", token_file=reader_a)
    assert len(json.loads(steps.stdout)["loss"]) == 100  # nothing of B's got in


def test_token_rotation_and_revocation_lose_nothing(team_on_each_store: Team) -> None:
    team = team_on_each_store
    first = team.token("team-a", "writer", "rot-1")
    reader = team.token("team-a", "reader", "reader-a")
    token_file = team.root / "mounted-secret"
    token_file.write_text(first.read_text())
    agent = team.agent("rotating", token_file)
    run_id, stream = uuid.uuid4().hex, uuid.uuid4().hex
    requests = scalar_requests(run_id, stream, 3000, per_batch=100)
    client = AgentClient(agent.info["socket"])
    try:
        assert all(not a.error for a in client.append(requests[:11]))
        assert client.wait_forwarded(stream, 1001, timeout=30).done
        revoked = team.cli("token", "revoke", "rot-1", token_file=team.root / "admin.token")
        assert revoked.returncode == 0, revoked.stderr

        def refused() -> bool:
            done = team.cli("runs", token_file=first, extra_env={})
            return done.returncode == 1 and "was revoked" in done.stderr

        wait_for("the revoked token to be refused", refused, timeout=15)
        listed = team.cli("token", "list", "--json", token_file=team.root / "admin.token")
        states = {t["name"]: bool(t["revoked"]) for t in json.loads(listed.stdout)}
        assert states["rot-1"] and not states["reader-a"]
        assert (team.root / "admin.token").stat().st_mode & 0o777 == 0o600
        assert all(not a.error for a in client.append(requests[11:]))
        wait_for("the agent to notice", lambda: http_get(agent.http, "/readyz")[0] == 503)
        second = team.token("team-a", "writer", "rot-2")
        tmp = token_file.with_suffix(".new")
        tmp.write_text(second.read_text())
        os.replace(tmp, token_file)  # as a Kubernetes secret update swaps the file
        assert client.wait_forwarded(stream, 3001, timeout=60).done
        wait_for("health to come back", lambda: http_get(agent.http, "/readyz")[0] == 200)
        assert metric(agent, "mltrail_agent_dead_lettered_records_total") == 0
        printed = team.everything_printed(agent)
    finally:
        client.close()
        agent.stop()
    done = team.cli("metrics", run_id, "--json", "--name", "loss", token_file=reader)
    values = json.loads(done.stdout)["loss"]
    # every record once, in order: none lost, none doubled (value = seq * 0.5, seq 2..3001)
    assert values == [s * 0.5 for s in range(2, 3002)]
    for secret in team.secrets():
        assert secret not in printed


def test_mutual_tls_refuses_a_client_without_a_trusted_certificate(tmp_path: Path) -> None:
    """Then the agent's certificate is renewed on disk and it delivers, without a restart."""
    t = Team(tmp_path)
    t.collector.stop()
    client_cert = t.ca.issue("client", client=True)
    t.collector.args += ["--tls-client-ca", str(t.ca.cert)]
    t.collector.start()
    admin = tmp_path / "admin.token"
    try:
        bare = t.cli("token", "list", token_file=admin)
        assert bare.returncode == 1 and len(bare.stderr.strip().splitlines()) == 1
        with_cert = t.cli("token", "list", "--tls-cert", str(client_cert.cert), "--tls-key",
                          str(client_cert.key), token_file=admin)
        assert with_cert.returncode == 0, with_cert.stderr
        stranger = ThrowawayCA(tmp_path / "other-ca", "another CA").issue("agent", client=True)
        agent = t.agent("mtls", admin, "--tls-cert", str(stranger.cert), "--tls-key",
                        str(stranger.key))
        client = AgentClient(agent.info["socket"])
        try:
            stream = uuid.uuid4().hex
            assert all(not a.error for a in client.append(
                scalar_requests(uuid.uuid4().hex, stream, 500, per_batch=100)))
            wait_for("the agent to be refused at the handshake",
                     lambda: metric(agent, "mltrail_agent_retries_total") >= 2)
            assert metric(agent, "mltrail_agent_sent_records_total") == 0
            for src, dst in ((client_cert.key, stranger.key), (client_cert.cert, stranger.cert)):
                os.replace(src, dst)  # the renewed certificate, as cert-manager writes it
            assert client.wait_forwarded(stream, 501, timeout=60).done
            assert metric(agent, "mltrail_agent_sent_records_total") == 501
            assert agent.starts == 1
        finally:
            client.close()
            agent.stop()
    finally:
        t.collector.stop()


def test_a_certificate_replaced_on_disk_is_served_without_a_restart(team: Team) -> None:
    def served() -> bytes:
        context = ssl.create_default_context(cafile=str(team.ca.cert))
        context.set_alpn_protocols(["h2"])
        host, port = team.collector.grpc.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname="localhost") as tls:
            return tls.getpeercert(binary_form=True) or b""

    before = served()
    renewed = team.ca.issue("renewed")
    for src, dst in ((renewed.key, team.server.key), (renewed.cert, team.server.cert)):
        tmp = dst.with_suffix(".tmp")
        tmp.write_bytes(src.read_bytes())
        os.replace(tmp, dst)
    wanted = ssl.PEM_cert_to_DER_cert(renewed.cert.read_text())
    assert wanted != before
    wait_for("the renewed certificate", lambda: served() == wanted, timeout=30)
    assert team.collector.proc is not None and team.collector.proc.poll() is None
    assert team.collector.starts == 1


def test_no_auth_on_a_network_address_needs_insecure(tmp_path: Path) -> None:
    svc = collector_service(tmp_path)
    svc.args[svc.args.index("--grpc") + 1] = "0.0.0.0:0"
    with pytest.raises(RuntimeError, match=r"refusing to listen on 0\.0\.0\.0 with auth"):
        svc.start()
    svc.args.append("--insecure")
    svc.start()
    svc.stop()


def test_tls_and_token_mistakes_are_one_line_that_says_which(team: Team) -> None:
    admin = str(team.root / "admin.token")
    env = {"MLTRAIL_HOME": str(team.root / "cli-home")}
    cases = [
        (["--collector", team.address], "certificate is not trusted"),
        (["--collector", team.address, "--tls-ca", str(team.ca.cert), "--tls-server-name",
          "elsewhere.example"], "does not name this address"),
        (["--collector", team.collector.grpc], "if the collector serves TLS"),
    ]
    for flags, expected in cases:
        done = mltrail_cli("runs", *flags, "--token-file", admin, env=env)
        assert done.returncode == 1 and expected in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    bad = team.root / "bad.secret"
    bad.write_text("hunter2")
    done = team.cli("runs", token_file=bad)
    assert done.returncode == 1 and "not an mltrail token" in done.stderr
    assert "hunter2" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
