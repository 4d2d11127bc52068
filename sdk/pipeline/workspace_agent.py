"""The agent a workspace's runs go to.

In order: the workspace config's ``agent`` (a socket), ``MLTRAIL_AGENT`` (set
by ``mltrail run`` and sidecar deployments), a local agent forwarding to
the workspace config's ``collector``, else the embedded default
(``mltrail.pipeline.embedded``). The local agent for a collector is started
once per user and address, like the embedded one, and shared::

    $MLTRAIL_HOME/embedded/
      agent-<id>.sock       its socket (<id>: 12 hex of the address's sha256); beside the
                            directory, as a unix socket path is limited to 107 bytes
      collectors/<id>/      lock, agent.json, agent.log, spool/
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from mltrail.pipeline.embedded import (
    START_TIMEOUT,
    _locked,
    _start,
    agent_answers,
    agent_socket_from_env,
    embedded_dir,
)


def agent_socket(connection: Any) -> str | None:
    """The socket for a workspace ``Connection`` (None: the process default)."""
    if connection is None:
        return None
    if connection.agent:
        return str(connection.agent)
    if agent_socket_from_env() or not connection.collector:
        return None
    return ensure_collector_agent(connection.collector, connection=connection)


def ensure_collector_agent(collector: str, home: Path | None = None,
                           timeout: float = START_TIMEOUT, connection: Any = None) -> str:
    """The socket of this user's local agent for ``collector``, started if needed, with
    the connection's token and TLS files (one agent per collector and credentials).
    The credentials go to the agent in a settings file (a token in a file of its own,
    mode 0600), never on its command line."""
    settings = _credential_settings(connection)
    identity = json.dumps([collector, settings, getattr(connection, "token", "")])
    name = hashlib.sha256(identity.encode()).hexdigest()[:12]
    directory = embedded_dir(home) / "collectors" / name
    directory.mkdir(parents=True, exist_ok=True)
    socket_path = embedded_dir(home) / f"agent-{name}.sock"
    with _locked(directory / "lock"):
        if not agent_answers(str(socket_path)):
            args = ["--socket", str(socket_path), "--collector", collector,
                    "--spool", str(directory / "spool"), "--http", "127.0.0.1:0"]
            if connection is not None and (settings or connection.token):
                args += ["--config", str(_write_settings(directory, settings,
                                                         connection.token))]
            _start(directory, "agent", args, timeout)
    return str(socket_path)


def _credential_settings(connection: Any) -> dict[str, str]:
    if connection is None:
        return {}
    names = ("token_file", "tls_ca", "tls_cert", "tls_key", "tls_server_name")
    return {n: str(getattr(connection, n)) for n in names if getattr(connection, n, "")}


def _write_settings(directory: Path, settings: dict[str, str], token: str) -> Path:
    if token and "token_file" not in settings:
        token_file = directory / "token"
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(token + "\n")
        settings = {**settings, "token_file": str(token_file)}
    path = directory / "agent.toml"
    path.write_text("".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items()))
    return path
