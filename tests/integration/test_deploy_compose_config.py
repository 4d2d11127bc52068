"""deploy/docker's overrides as Compose merges them (``config``, no engine needed), in every
combination a user may pick: what the engine test (tests/e2e/test_deploy_docker.py) runs
only once, together. Each file alone still gives a collector whose store, TLS files and
token key are where the merge puts them, and no secret's content is in the merged file."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import deploy_env
from tests.conftest import require

DEPLOY = deploy_env.ROOT / "deploy" / "docker"
COMBINATIONS = (("compose.postgres.yaml",), ("compose.tls.yaml",),
                ("compose.postgres.yaml", "compose.tls.yaml"),
                ("compose.logs.yaml", "compose.tls.yaml", "compose.logs.tls.yaml"))


def merged(files: tuple[str, ...], secrets: Path) -> tuple[dict[str, Any], str]:
    command = deploy_env.compose_command()
    require(command is not None, "docker compose or docker-compose")
    assert command is not None
    flags = [f for name in ("compose.yaml", *files) for f in ("-f", name)]
    done = subprocess.run([*command, *flags, "config"], cwd=DEPLOY, capture_output=True,
                          text=True, timeout=60,
                          env={**os.environ, "MLTRAIL_SECRETS": str(secrets)})
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout), done.stdout


def mounted(service: dict[str, Any], target: str) -> str:
    """The source mounted at ``target`` (a file's directory counts: secrets' files)."""
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            source, _, rest = volume.partition(":")
            volume = {"source": source, "target": rest.split(":")[0]}
        if target == volume["target"] or target.startswith(volume["target"].rstrip("/") + "/"):
            return str(volume["source"])
    for secret in service.get("secrets") or []:
        name = secret if isinstance(secret, str) else secret["source"]
        if target == f"/run/secrets/{name}":
            return f"secret:{name}"
    raise AssertionError(f"nothing is mounted at {target}")


@pytest.mark.parametrize("files", COMBINATIONS, ids="+".join)
def test_every_combination_of_overrides_merges_into_a_working_collector(
        files: tuple[str, ...], tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    password = "pw-that-must-not-show"
    (secrets / "postgres-password").write_text(password + "\n")
    for name in ("tls.crt", "tls.key", "ca.crt"):
        (secrets / name).write_text(f"{name} content that must not show\n")
    config, text = merged(files, secrets)
    assert "must not show" not in text
    services = config["services"]
    collector, agent = services["collector"], services["agent"]
    command = collector["command"]
    store = command[command.index("--store") + 1]
    env = collector.get("environment") or {}
    if "compose.postgres.yaml" in files:
        assert store == "postgresql://mltrail@postgres:5432/mltrail"
        assert mounted(collector, "/run/secrets/postgres-password") == "secret:postgres-password"
        assert "postgres-password" in collector["entrypoint"][2]
        assert collector["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert config["secrets"]["postgres-password"]["file"] == str(
            secrets / "postgres-password")
    else:
        assert store == "sqlite:////data/store.db"
    # The key tokens are hashed with lives in the data volume, whichever the store.
    key = env.get("MLTRAIL_COLLECTOR_AUTH_KEY_FILE") or str(Path(store[len("sqlite:///"):]
                                                                 ).parent / "auth.key")
    assert mounted(collector, key) == "collector-data", key
    if "compose.tls.yaml" in files:
        assert env["MLTRAIL_COLLECTOR_AUTH"] == "token"
        assert env["MLTRAIL_COLLECTOR_INSECURE"] == "false"
        for name in ("MLTRAIL_COLLECTOR_TLS_CERT", "MLTRAIL_COLLECTOR_TLS_KEY",
                     "MLTRAIL_TLS_CA"):
            assert Path(mounted(collector, env[name])).parent == secrets, name
        assert mounted(collector, env["MLTRAIL_COLLECTOR_ADMIN_TOKEN_FILE"]) == "collector-data"
        for sender in (agent, services.get("log-agent")):
            if sender is None:
                continue
            sent = sender["environment"]
            assert sent["MLTRAIL_AGENT_TLS"] == "true"
            assert Path(mounted(sender, sent["MLTRAIL_AGENT_TLS_CA"])).parent == secrets
            assert mounted(sender, sent["MLTRAIL_AGENT_TOKEN_FILE"]) == "agent-token"
            assert sender["depends_on"]["agent-token"]["condition"] == (
                "service_completed_successfully")
        maker = services["agent-token"]
        assert mounted(maker, maker["environment"]["MLTRAIL_TOKEN_FILE"]) == "collector-data"
        assert mounted(maker, "/run/mltrail/agent.token") == "agent-token"
    else:
        assert env["MLTRAIL_COLLECTOR_INSECURE"] == "true" and "agent-token" not in services
