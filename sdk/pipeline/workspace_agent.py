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
    return ensure_collector_agent(connection.collector)


def ensure_collector_agent(collector: str, home: Path | None = None,
                           timeout: float = START_TIMEOUT) -> str:
    """The socket of this user's local agent for ``collector``, started if needed."""
    name = hashlib.sha256(collector.encode()).hexdigest()[:12]
    directory = embedded_dir(home) / "collectors" / name
    directory.mkdir(parents=True, exist_ok=True)
    socket_path = embedded_dir(home) / f"agent-{name}.sock"
    with _locked(directory / "lock"):
        if not agent_answers(str(socket_path)):
            _start(directory, "agent", ["--socket", str(socket_path), "--collector", collector,
                                        "--spool", str(directory / "spool"),
                                        "--http", "127.0.0.1:0"], timeout)
    return str(socket_path)
