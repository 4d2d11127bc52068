"""``mltrail agent``: run the sidecar until SIGTERM, then drain and exit 0."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal
from typing import TYPE_CHECKING

from mltrail.cli.bundle import add_service_bundle
from mltrail.common.logs import setup_logging
from mltrail.common.net import write_ready_file
from mltrail.common.settings import SettingsError
from mltrail.common.tuning import keep_large_buffers, lower_priority

if TYPE_CHECKING:
    from mltrail.agent.settings import AgentSettings

log = logging.getLogger("mltrail.agent")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "agent", help="run the agent: receive from SDKs, spool to disk, forward to the collector"
    )
    p.add_argument("--socket", help="unix socket for SDKs (default $MLTRAIL_HOME/agent.sock)")
    p.add_argument("--collector", help="collector HOST:PORT, or several comma-separated; a "
                                       "name with several addresses counts as several "
                                       "(default $MLTRAIL_COLLECTOR or 127.0.0.1:7431)")
    p.add_argument("--spool", dest="spool_dir", help="spool directory "
                                                     "(default $MLTRAIL_HOME/agent/spool)")
    p.add_argument("--http", help="HOST:PORT for /metrics and /healthz (default 127.0.0.1:7433)")
    p.add_argument("--config", help="agent.toml settings file")
    p.add_argument("--drain-timeout", type=float, help="seconds to drain on SIGTERM (default 30)")
    p.add_argument("--source", action="append", metavar="TYPE:TARGET=RUN_ID[:STREAM]",
                   help="tail log files into a run, e.g. file:/logs/*.log=run-1:trainer "
                        "(repeatable; also cri:, logdir:, docker:LABEL=; more in [[sources]])")
    p.add_argument("--ready-file", default=os.environ.get("MLTRAIL_READY_FILE"),
                   help="write {socket, http, collector, pid} JSON here once up "
                        "(default $MLTRAIL_READY_FILE; `mltrail health` reads it)")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")
    p.add_argument("--token-file", help="file holding the collector token (re-read when it "
                                        "changes)")
    p.add_argument("--tls", action="store_true", default=None,
                   help="TLS to the collector (also: --collector https://HOST:PORT)")
    p.add_argument("--tls-ca", help="CA certificate that signed the collector's (PEM)")
    p.add_argument("--tls-cert", help="client certificate for mutual TLS (PEM)")
    p.add_argument("--tls-key", help="the client certificate's key (PEM)")
    p.add_argument("--tls-server-name", help="name expected in the collector's certificate")
    p.set_defaults(func=run_agent)
    add_service_bundle(p, "agent")  # mltrail agent bundle


def run_agent(args: argparse.Namespace) -> int:
    # Imported here, not at the top: every `mltrail` command builds the parser, and
    # `mltrail health` (an exec probe every few seconds) should not load the agent.
    from mltrail.agent.service import AgentStartError
    from mltrail.agent.settings import load_agent_settings
    from mltrail.agent.sources.config import parse_source_flag

    flags = {
        "socket": args.socket, "collector": args.collector, "spool_dir": args.spool_dir,
        "http": args.http, "drain_timeout": args.drain_timeout, "log_level": args.log_level,
        "token_file": args.token_file, "tls": args.tls, "tls_ca": args.tls_ca,
        "tls_cert": args.tls_cert, "tls_key": args.tls_key,
        "tls_server_name": args.tls_server_name,
    }
    try:
        settings = load_agent_settings(args.config, flags)
        extra = tuple(parse_source_flag(spec) for spec in args.source or ())
        settings = dataclasses.replace(settings, sources=settings.sources + extra).validate()
    except SettingsError as exc:
        raise AgentStartError(str(exc)) from None
    setup_logging(settings.log_level, "agent")
    keep_large_buffers()
    lower_priority(settings.nice)
    return asyncio.run(serve(settings, args.ready_file))


async def serve(settings: AgentSettings, ready_file: str | None) -> int:
    from mltrail.agent.service import AgentService

    service = AgentService(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await service.start()
    except BaseException:
        await service.shutdown(0)
        raise
    info = service.ready_info()
    if ready_file:
        write_ready_file(ready_file, info)
    log.info("agent listening on %s (http %s), forwarding to %s", info["socket"], info["http"],
             settings.collector)
    await stop.wait()
    log.info("stopping: draining the spool for up to %.0fs", settings.drain_timeout)
    await service.shutdown(settings.drain_timeout)
    log.info("agent stopped")
    return 0
