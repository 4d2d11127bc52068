"""deploy/kubernetes/overlays: the collector on PostgreSQL and with TLS and tokens, the Job's
agent with the CA and a token. Rendered with ``kubectl kustomize`` from a copy of the tree
whose ``secrets/`` directories hold files as a user makes them (a CA-signed certificate,
a token, a key, a password), validated against the 1.29 and 1.33 schemas, and checked for
what no schema sees: every Secret referenced is rendered with the keys asked for and the
user's files as its data, every file a setting names lies in a mounted Secret, the
settings load with mltrail's own loaders (TLS, tokens, a postgresql:// URL without its
password), and the probes use the schemes the ports serve (no gRPC probe: Kubernetes'
speaks no TLS)."""

from __future__ import annotations

import posixpath
import secrets
import shutil
from pathlib import Path
from typing import Any

import pytest

from mltrail.agent.settings import load_agent_settings
from mltrail.cli import build_parser
from mltrail.collector.cli import load as load_collector_settings
from mltrail.common.tokens import new_token
from tests import k8s_manifests as k8s
from tests.certs import ThrowawayCA
from tests.conftest import require
from tests.integration.test_deploy_kubernetes import FIELDS, VERSIONS


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The files a user puts in the overlays' secrets/ directories (path -> content)."""
    ca = ThrowawayCA(tmp_path_factory.mktemp("ca"))
    server = ca.issue("collector", hosts=("mltrail-collector", "localhost"))
    return {"postgres/secrets/postgres-password": secrets.token_urlsafe(18),
            "tls/secrets/tls.crt": server.cert.read_text(),
            "tls/secrets/tls.key": server.key.read_text(),
            "tls/secrets/ca.crt": ca.cert.read_text(),
            "tls/secrets/auth.key": secrets.token_hex(16),
            "tls/secrets/admin.token": new_token()[0] + "\n",
            **{f"{agents}/secrets/{name}": content
               for agents in ("training-job-tls", "cri-daemonset-tls")
               for name, content in (("ca.crt", ca.cert.read_text()),
                                     ("agent.token", new_token()[0] + "\n"))}}


@pytest.fixture(scope="module")
def rendered(made: dict[str, str], tmp_path_factory: pytest.TempPathFactory
             ) -> dict[str, list[dict[str, Any]]]:
    require(k8s.kubectl() is not None, "kubectl (for kubectl kustomize)")
    root = tmp_path_factory.mktemp("deploy") / "kubernetes"
    shutil.copytree(k8s.KUBERNETES, root, ignore=shutil.ignore_patterns("secrets"))
    for name, content in made.items():
        path = root / "overlays" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return {overlay: k8s.render(overlay, root) for overlay in k8s.OVERLAYS}


def container(docs: list[dict[str, Any]], kind: str, name: str) -> tuple[dict[str, Any],
                                                                            dict[str, Any]]:
    spec = k8s.pod_spec(k8s.one(docs, kind))
    [found] = [c for c in [*(spec.get("initContainers") or []), *spec["containers"]]
               if c["name"] == name]
    return spec, found


def secret_file(spec: dict[str, Any], box: dict[str, Any], docs: list[dict[str, Any]],
                path: str) -> str:
    """The content of the file at ``path`` in the container, from the Secret mounted there."""
    data = k8s.secret_data(docs)
    for volume in spec["volumes"]:
        mount = k8s.mount_path(box, volume["name"])
        if mount is None or "secret" not in volume or posixpath.dirname(path) != mount:
            continue
        name = volume["secret"]["secretName"]
        assert name in data, f"volume {volume['name']} names no Secret rendered: {name}"
        assert volume["secret"]["defaultMode"] & 0o040, "uid 10001 reads it by fsGroup"
        key = posixpath.basename(path)
        assert key in data[name], f"Secret {name} has no key {key} for {path}"
        return data[name][key]
    raise AssertionError(f"{path} is in no mounted Secret of {box['name']}")


@pytest.mark.parametrize("version", VERSIONS)
def test_the_overlays_validate_against_the_schema(
        rendered: dict[str, list[dict[str, Any]]], version: str) -> None:
    for overlay, docs in rendered.items():
        assert any(d["kind"] == "Secret" for d in docs), overlay
    assert not k8s.schema_errors(rendered, version)


def test_the_collector_loads_postgres_tls_and_tokens_from_its_secrets(
        rendered: dict[str, list[dict[str, Any]]], made: dict[str, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    docs = rendered["overlays/tls"]
    spec, collector = container(docs, "Deployment", "collector")
    [tls] = [d for d in docs if d["kind"] == "Secret" and d["type"] == "kubernetes.io/tls"]
    assert set(tls["data"]) == {"tls.crt", "tls.key", "ca.crt"}
    env = k8s.env_of(collector, FIELDS, k8s.secret_data(docs))
    assert env["PGPASSWORD"] == made["postgres/secrets/postgres-password"]
    assert env["MLTRAIL_ADMIN_TOKEN"] == made["tls/secrets/admin.token"]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    args = build_parser().parse_args(k8s.mltrail_args(collector, env))
    settings = load_collector_settings(args)
    assert settings.auth == "token" and settings.insecure is False
    assert settings.store.startswith("postgresql://mltrail@")
    assert made["postgres/secrets/postgres-password"] not in " ".join(collector["args"])
    for path, made_as in ((settings.tls_cert, "tls/secrets/tls.crt"),
                          (settings.tls_key, "tls/secrets/tls.key"),
                          (settings.auth_key_file, "tls/secrets/auth.key"),
                          (env["MLTRAIL_TOKEN_FILE"], "tls/secrets/admin.token"),
                          (env["MLTRAIL_TLS_CA"], "tls/secrets/ca.crt")):
        assert secret_file(spec, collector, docs, path) == made[made_as], path
    # A CLI exec'd in the container reaches this collector by TLS under a name it holds.
    assert env["MLTRAIL_COLLECTOR"].startswith("https://")
    assert env["MLTRAIL_TLS_SERVER_NAME"] == "mltrail-collector"
    assert env["MLTRAIL_COLLECTOR"].rpartition(":")[2] == settings.grpc.rpartition(":")[2]


def test_probes_use_https_on_the_collectors_http_port(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["overlays/tls"]
    _, collector = container(docs, "Deployment", "collector")
    args = k8s.mltrail_args(collector, {})
    http = int((k8s.flag(args, "--http") or "").rpartition(":")[2])
    probes = [collector[kind] for kind in ("livenessProbe", "readinessProbe")]
    for probe in probes:
        assert "grpc" not in probe and probe["httpGet"]["scheme"] == "HTTPS", probe
        assert k8s.port_number(collector, probe["httpGet"]["port"]) == http
    assert [p["httpGet"]["path"] for p in probes] == ["/healthz", "/readyz"]
    annotations = k8s.pod_metadata(k8s.one(docs, "Deployment"))["annotations"]
    assert annotations["prometheus.io/scheme"] == "https"
    assert int(annotations["prometheus.io/port"]) == http
    # Without TLS (the postgres overlay alone) the probes stay as the base has them.
    _, plain = container(rendered["overlays/postgres"], "Deployment", "collector")
    assert plain["readinessProbe"]["grpc"]["port"] == int(
        (k8s.flag(args, "--grpc") or "").rpartition(":")[2])
    assert plain["livenessProbe"]["httpGet"].get("scheme", "HTTP") == "HTTP"


@pytest.mark.parametrize(("overlay", "kind", "name"), [
    ("training-job-tls", "Job", "mltrail-agent"), ("cri-daemonset-tls", "DaemonSet", "agent")])
def test_agents_send_by_tls_with_their_token(
        rendered: dict[str, list[dict[str, Any]]], made: dict[str, str], overlay: str,
        kind: str, name: str) -> None:
    docs = rendered[f"overlays/{overlay}"]
    spec, agent = container(docs, kind, name)
    env = k8s.env_of(agent, FIELDS, k8s.secret_data(docs))
    parsed = build_parser().parse_args(k8s.mltrail_args(agent, env))
    flags = {"collector": parsed.collector, "socket": parsed.socket, "spool_dir": parsed.spool_dir,
             "http": parsed.http}
    settings = load_agent_settings(None, flags, environ=env)
    security = settings.security
    assert security.uses_tls(settings.collector), settings.collector
    assert secret_file(spec, agent, docs, security.tls_ca) == made[f"{overlay}/secrets/ca.crt"]
    assert secret_file(spec, agent, docs, security.token_file) == made[
        f"{overlay}/secrets/agent.token"]
    if kind != "Job":
        return
    # The sidecar is still one: the overlay kept its shape and the trainer's socket.
    _, trainer = container(docs, "Job", "trainer")
    assert agent["restartPolicy"] == "Always" and agent["startupProbe"]
    assert k8s.env_of(trainer, FIELDS)["MLTRAIL_AGENT"] == k8s.flag(
        k8s.mltrail_args(agent, env), "--socket")


def test_a_missing_secret_file_is_a_clear_render_error(tmp_path: Path) -> None:
    require(k8s.kubectl() is not None, "kubectl (for kubectl kustomize)")
    root = tmp_path / "kubernetes"
    shutil.copytree(k8s.KUBERNETES, root, ignore=shutil.ignore_patterns("secrets"))
    with pytest.raises(AssertionError, match="postgres-password"):
        k8s.render("overlays/postgres", root)
