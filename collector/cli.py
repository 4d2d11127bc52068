"""``mltrail collector``: run the collector until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal

from mltrail.collector.server import CollectorServer
from mltrail.collector.settings import ENV_PREFIX, CollectorSettings
from mltrail.common.errors import PermanentError
from mltrail.common.logs import setup_logging
from mltrail.common.net import write_ready_file
from mltrail.common.settings import SettingsError, load_settings
from mltrail.common.tuning import check_nice, keep_large_buffers, lower_priority

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "collector", help="run the collector (ingest, store, query, /metrics)",
        description="Receive records from agents, store them, answer queries.")
    p.add_argument("--store", help="store URL (default sqlite:///$MLTRAIL_HOME/collector/store.db)")
    p.add_argument("--grpc", help="gRPC listen address HOST:PORT (default 127.0.0.1:7431)")
    p.add_argument("--http", help="HTTP listen address for /metrics (default 127.0.0.1:7432)")
    p.add_argument("--artifacts", help="artifact directory "
                                       "(default $MLTRAIL_HOME/collector/artifacts)")
    p.add_argument("--config", help="collector.toml settings file")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    p.add_argument("--ready-file", help="write the bound addresses here (JSON) once listening")
    p.set_defaults(func=run)


def load(args: argparse.Namespace) -> CollectorSettings:
    flags = {"store": args.store, "grpc": args.grpc, "http": args.http,
             "artifacts": args.artifacts, "log_level": args.log_level}
    try:
        settings = load_settings(CollectorSettings, file=args.config, env_prefix=ENV_PREFIX,
                                 flags=flags)
        check_nice(settings.nice)
        return settings
    except SettingsError as exc:
        raise PermanentError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    settings = load(args)
    setup_logging(settings.log_level, "collector")
    keep_large_buffers()
    lower_priority(settings.nice)
    return asyncio.run(serve(settings, args.ready_file))


async def serve(settings: CollectorSettings, ready_file: str | None) -> int:
    server = CollectorServer(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await server.start()
        if ready_file:
            write_ready_file(ready_file, {"grpc": server.grpc_address,
                                          "http": server.http_address, "pid": os.getpid(),
                                          "store": server.settings.store,
                                          "artifacts": server.settings.artifacts})
        await stop.wait()
        log.info("stopping: finishing the requests in hand")
    finally:
        await server.shutdown(server.settings.shutdown_grace)
    log.info("stopped")
    return 0
