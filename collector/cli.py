"""``mltrail collector``: run the collector until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal

from mltrail.cli.bundle import add_service_bundle
from mltrail.collector.auth import AUTH_MODES
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
    p.add_argument("--artifacts", help="artifact store: a directory, file:///DIR or "
                                       "s3://BUCKET/PREFIX[?endpoint=URL] (default "
                                       "$MLTRAIL_HOME/collector/artifacts)")
    p.add_argument("--config", help="collector.toml settings file")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    p.add_argument("--auth", choices=("none", "token"),
                   help="none (default; loopback only) or token (bearer tokens)")
    p.add_argument("--insecure", action="store_true", default=None,
                   help="allow --auth none on an address other than loopback")
    p.add_argument("--admin-token-file", help="where the first start writes the admin token "
                                              "(mode 0600; default $MLTRAIL_HOME/collector/"
                                              "admin.token)")
    p.add_argument("--tls-cert", help="serve TLS with this certificate (PEM)")
    p.add_argument("--tls-key", help="the certificate's private key (PEM)")
    p.add_argument("--tls-client-ca", help="require client certificates signed by this CA "
                                           "(mutual TLS)")
    p.add_argument("--ready-file", default=os.environ.get("MLTRAIL_READY_FILE"),
                   help="write the bound addresses here (JSON) once listening "
                        "(default $MLTRAIL_READY_FILE; `mltrail health` reads it)")
    p.set_defaults(func=run)
    add_service_bundle(p, "collector")  # mltrail collector bundle


def load(args: argparse.Namespace) -> CollectorSettings:
    flags = {"store": args.store, "grpc": args.grpc, "http": args.http,
             "artifacts": args.artifacts, "log_level": args.log_level, "auth": args.auth,
             "insecure": args.insecure, "admin_token_file": args.admin_token_file,
             "tls_cert": args.tls_cert, "tls_key": args.tls_key,
             "tls_client_ca": args.tls_client_ca}
    try:
        settings = load_settings(CollectorSettings, file=args.config, env_prefix=ENV_PREFIX,
                                 flags=flags)
        check_nice(settings.nice)
        if settings.auth not in AUTH_MODES:
            raise SettingsError(f"auth must be one of {', '.join(AUTH_MODES)}: "
                                f"{settings.auth!r}")
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
    # Imported here: every `mltrail` command builds the parser (see agent/cli.py).
    from mltrail.collector.server import CollectorServer
    from mltrail.collector.store import redact_url

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
                                          "tls": server.tls is not None,
                                          "auth": server.settings.auth,
                                          "store": redact_url(server.settings.store),
                                          "artifacts": server.settings.artifacts})
        await stop.wait()
        log.info("stopping: finishing the requests in hand")
    finally:
        await server.shutdown(server.settings.shutdown_grace)
    log.info("stopped")
    return 0
