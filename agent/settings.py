"""The agent's settings: defaults < agent.toml (--config) < environment < flags.

Environment variables are ``MLTRAIL_AGENT_<KEY>`` (``MLTRAIL_AGENT_SPOOL_DIR``);
``MLTRAIL_COLLECTOR`` also sets ``collector`` (``MLTRAIL_AGENT_COLLECTOR``
wins). Empty paths resolve under ``$MLTRAIL_HOME`` (default ``~/.mltrail``).

Credentials (common/credentials.py): ``token_file`` is re-read when it
changes; ``collector = "https://HOST:PORT"`` or ``tls = true`` (or a
``tls_ca``) uses TLS; ``tls_cert`` + ``tls_key`` present a client
certificate (mutual TLS).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mltrail.agent.sources.config import parse_sources
from mltrail.agent.spool import FSYNC_POLICIES, FULL_POLICIES
from mltrail.agent.targets import COMPRESSIONS, plain_targets, split_targets
from mltrail.common.credentials import ClientSecurity
from mltrail.common.net import parse_hostport
from mltrail.common.settings import SettingsError, load_settings
from mltrail.common.tuning import check_nice

ENV_PREFIX = "MLTRAIL_AGENT_"
MAX_REQUEST_TARGET = 16 * 1024 * 1024  # batch_max_bytes at most


def mltrail_home(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return Path(env.get("MLTRAIL_HOME") or Path.home() / ".mltrail")


@dataclass(frozen=True)
class AgentSettings:
    socket: str = ""  # default $MLTRAIL_HOME/agent.sock
    socket_mode: str = "0600"  # octal; "0660" lets a group write
    # HOST:PORT, or several comma-separated; a name with several addresses counts as
    # several collectors (agent/targets.py)
    collector: str = "127.0.0.1:7431"
    # with several collectors: a session older than this ends (once its requests are
    # answered) and the next goes to the next collector; 0: only on failure
    rebalance_seconds: float = 60.0
    spool_dir: str = ""  # default $MLTRAIL_HOME/agent/spool
    http: str = "127.0.0.1:7433"
    fsync: str = "interval"
    fsync_interval_ms: int = 200
    max_spool_bytes: int = 1 << 30
    full_policy: str = "block"
    segment_bytes: int = 16 << 20
    batch_max_bytes: int = 2 << 20  # target size of one request to the collector
    batch_max_delay_ms: int = 20
    # gzip to the collector: "auto" compresses unless it is on this host (loopback
    # or a unix socket), where compressing only costs CPU
    compression: str = "auto"
    drain_timeout: float = 30.0
    unhealthy_after_seconds: float = 60.0
    log_level: str = "INFO"
    nice: int = 0  # CPU priority below normal, 0-19 (the embedded default uses 10)
    # [[sources]] tables: log files, CRI, log directories, Docker (agent/sources/config.py);
    # their checkpoints live in <spool_dir>/sources
    sources: tuple[dict[str, Any], ...] = ()
    token_file: str = ""  # bearer token for the collector; re-read when it changes
    tls: bool = False
    tls_ca: str = ""  # CA that signed the collector's certificate (default: system roots)
    tls_cert: str = ""  # client certificate for mutual TLS
    tls_key: str = ""
    tls_server_name: str = ""  # the name to expect in the collector's certificate
    workspace: str = ""  # set: the collector checks the token is this workspace's

    def validate(self) -> AgentSettings:
        """Resolve default paths and check every value; raises SettingsError."""
        if self.fsync not in FSYNC_POLICIES:
            raise SettingsError(f"fsync must be one of {', '.join(FSYNC_POLICIES)}: {self.fsync!r}")
        if self.compression not in COMPRESSIONS:
            raise SettingsError(
                f"compression must be one of {', '.join(COMPRESSIONS)}: {self.compression!r}")
        if self.full_policy not in FULL_POLICIES:
            raise SettingsError(
                f"full_policy must be one of {', '.join(FULL_POLICIES)}: {self.full_policy!r}"
            )
        try:
            mode = int(self.socket_mode, 8)
        except ValueError:
            raise SettingsError(f"socket_mode must be octal like 0600: {self.socket_mode!r}"
                                ) from None
        if mode & ~0o777:
            raise SettingsError(f"socket_mode {self.socket_mode!r} is not a permission mode")
        check_nice(self.nice)
        if self.batch_max_bytes > MAX_REQUEST_TARGET:
            # A request may hold this much plus one SDK batch: within gRPC's message.
            raise SettingsError(f"batch_max_bytes must be at most {MAX_REQUEST_TARGET} "
                                f"(16 MiB): {self.batch_max_bytes}")
        for name in ("max_spool_bytes", "segment_bytes", "batch_max_bytes"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name} must be positive")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise SettingsError("tls_cert and tls_key go together: set both for a client "
                                "certificate, or neither")
        try:
            split_targets(plain_targets(self.collector))
            parse_hostport(self.http, "http")
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
        if self.rebalance_seconds < 0:
            raise SettingsError("rebalance_seconds must be 0 (off) or positive")
        parse_sources(self.sources)  # refuse a bad [[sources]] table at start
        home = mltrail_home()
        return dataclasses.replace(
            self,
            socket=self.socket or str(home / "agent.sock"),
            spool_dir=self.spool_dir or str(home / "agent" / "spool"),
        )

    @property
    def security(self) -> ClientSecurity:
        return ClientSecurity(token_file=self.token_file, tls=self.tls, tls_ca=self.tls_ca,
                              tls_cert=self.tls_cert, tls_key=self.tls_key,
                              tls_server_name=self.tls_server_name, workspace=self.workspace)

    @property
    def socket_permissions(self) -> int:
        return int(self.socket_mode, 8)


def load_agent_settings(
    config: str | None = None,
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> AgentSettings:
    env = dict(os.environ if environ is None else environ)
    if "MLTRAIL_COLLECTOR" in env and ENV_PREFIX + "COLLECTOR" not in env:
        env[ENV_PREFIX + "COLLECTOR"] = env["MLTRAIL_COLLECTOR"]
    settings = load_settings(
        AgentSettings, file=config, env_prefix=ENV_PREFIX, environ=env, flags=flags
    )
    return settings.validate()
