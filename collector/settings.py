"""The collector's settings: defaults < --config TOML < MLTRAIL_COLLECTOR_* env < flags.

Empty ``store`` and ``artifacts`` mean the defaults under ``$MLTRAIL_HOME``
(``~/.mltrail``): ``sqlite:///$MLTRAIL_HOME/collector/store.db`` and
``$MLTRAIL_HOME/collector/artifacts``.

``auth = "none"`` is allowed only while both listen addresses are loopback
(else ``insecure = true`` must say so); ``auth = "token"`` keeps tokens in
the store, hashed with the key in ``auth_key_file`` (default: beside a
SQLite store, else ``$MLTRAIL_HOME/collector/auth.key``), and writes the
first admin token to ``admin_token_file`` (default
``$MLTRAIL_HOME/collector/admin.token``) unless $MLTRAIL_ADMIN_TOKEN gives
it. ``tls_cert`` + ``tls_key`` serve TLS; ``tls_client_ca`` requires client
certificates.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from mltrail.common.settings import mltrail_home

ENV_PREFIX = "MLTRAIL_COLLECTOR_"


@dataclass(frozen=True)
class CollectorSettings:
    store: str = ""
    grpc: str = "127.0.0.1:7431"
    http: str = "127.0.0.1:7432"
    artifacts: str = ""
    log_level: str = "INFO"
    max_metric_series: int = 10_000  # mltrail_run_metric series exported at most
    shutdown_grace: float = 10.0  # seconds in-flight requests get at SIGTERM
    reader_threads: int = 4
    # processes that decode and validate ingest requests; 0: on the store's writer thread
    ingest_workers: int = 2
    nice: int = 0  # CPU priority below normal, 0-19 (the embedded default uses 10)
    auth: str = "none"  # or "token": bearer tokens with a workspace and a role
    insecure: bool = False  # allow auth = "none" on an address that is not loopback
    admin_token_file: str = ""  # where the first start writes the first admin token
    auth_key_file: str = ""  # the key tokens are hashed with (mode 0600)
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""  # set: clients need a certificate signed by this CA
    # seconds after which a client's connection is closed (it reconnects, and behind a
    # Service may land on another replica); 0 keeps connections open
    max_connection_age: float = 0.0

    def resolved(self) -> CollectorSettings:
        """With the $MLTRAIL_HOME defaults filled in."""
        home = mltrail_home() / "collector"
        store = self.store or f"sqlite:///{home / 'store.db'}"
        beside = (Path(store.partition("?")[0][len("sqlite:///"):]).parent
                  if store.startswith("sqlite:///") else home)
        return replace(
            self,
            store=store,
            artifacts=self.artifacts or str(home / "artifacts"),
            admin_token_file=self.admin_token_file or str(home / "admin.token"),
            auth_key_file=self.auth_key_file or str(beside / "auth.key"),
        )
