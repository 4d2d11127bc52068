"""Builds the declared log sources and hooks them to the agent's spool and /metrics.

The agent calls ``start_sources`` once its spool is open and ``stop_sources``
first thing at shutdown (before the spool closes), so what a source read is
in the spool and its checkpoint says so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from mltrail.agent.sources.base import Router, SourcesCollector
from mltrail.agent.sources.config import SourceConfig, parse_sources
from mltrail.agent.sources.files import FileRouter
from mltrail.agent.sources.tail import TailSource
from mltrail.agent.spool import Spool
from mltrail.common.errors import MltrailError

log = logging.getLogger("mltrail.agent.sources")

class SourceStartError(MltrailError):
    """A declared source cannot start (its checkpoint directory is unusable)."""


# on_appended(records, bytes, source name): the agent's received counters
Appended = Callable[[int, int, str], None]


def checkpoint_dir_for(spool_dir: str) -> Path:
    """Checkpoints live beside the spool they describe (a checkpoint without its spool
    would skip lines that were never forwarded)."""
    return Path(spool_dir) / "sources"


def _router(config: SourceConfig) -> Router:
    if config.type == "file":
        return FileRouter(config)
    if config.type == "cri":
        from mltrail.agent.sources.cri import CriRouter

        return CriRouter(config)
    if config.type == "logdir":
        from mltrail.agent.sources.logdir import LogDirRouter

        return LogDirRouter(config)
    raise ValueError(f"source {config.name!r}: no router for type {config.type!r}")


def build_source(config: SourceConfig, spool: Spool, checkpoint_dir: Path, *, fsync: bool,
                 on_appended: Appended) -> TailSource:
    def appended(records: int, size: int) -> None:
        on_appended(records, size, config.name)

    if config.type == "docker":
        from mltrail.agent.sources.docker import DockerSource

        return DockerSource(config, spool, checkpoint_dir, fsync=fsync, on_appended=appended)
    return TailSource(config, _router(config), spool, checkpoint_dir, fsync=fsync,
                      on_appended=appended)


async def start_sources(tables: Sequence[Mapping[str, Any]], spool: Spool, spool_dir: str, *,
                        fsync: bool, registry: CollectorRegistry, on_appended: Appended,
                        ) -> list[TailSource]:
    configs = parse_sources(tables)
    if not configs:
        return []
    collector = SourcesCollector()
    registry.register(collector)
    sources: list[TailSource] = []
    for config in configs:
        try:
            source = build_source(config, spool, checkpoint_dir_for(spool_dir), fsync=fsync,
                                  on_appended=on_appended)
            await source.start()
        except OSError as exc:
            await stop_sources(sources, timeout=5.0)
            raise SourceStartError(
                f"log source {config.name!r} cannot start: {exc}; its checkpoints live in "
                f"{checkpoint_dir_for(spool_dir)} (beside the spool): make that writable"
            ) from None
        collector.add(source)
        sources.append(source)
        log.info("source %s (%s) started", config.name, config.type)
    return sources


async def stop_sources(sources: Sequence[TailSource], timeout: float) -> None:
    for source in sources:
        await source.shutdown(timeout)
