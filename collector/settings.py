"""The collector's settings: defaults < --config TOML < MLTRAIL_COLLECTOR_* env < flags.

Empty ``store`` and ``artifacts`` mean the defaults under ``$MLTRAIL_HOME``
(``~/.mltrail``): ``sqlite:///$MLTRAIL_HOME/collector/store.db`` and
``$MLTRAIL_HOME/collector/artifacts``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

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
    nice: int = 0  # CPU priority below normal, 0-19 (the embedded default uses 10)
    # seconds after which a client's connection is closed (it reconnects, and behind a
    # Service may land on another replica); 0 keeps connections open
    max_connection_age: float = 0.0

    def resolved(self) -> CollectorSettings:
        """With the $MLTRAIL_HOME defaults filled in."""
        home = mltrail_home() / "collector"
        return replace(
            self,
            store=self.store or f"sqlite:///{home / 'store.db'}",
            artifacts=self.artifacts or str(home / "artifacts"),
        )
