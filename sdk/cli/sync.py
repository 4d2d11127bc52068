"""``mltrail sync DIR``: upload an offline run (or spilled records) to a collector.

DIR is a spool directory (``$MLTRAIL_HOME/offline/<run>/``) or a directory of
them (``$MLTRAIL_HOME/offline``). The agent's ``drain_spool`` forwards what
the collector has not acknowledged; the spool's ledger and the collector's
dedupe by (stream_id, seq) make a second sync send nothing new.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

from mltrail.cli.connection import add_security_flags, security_from_args
from mltrail.cli.table import printable
from mltrail.common.credentials import ClientSecurity
from mltrail.common.errors import MltrailError


class SyncIncomplete(MltrailError):
    """Some records were not acknowledged before the timeout; they stay on disk."""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sync", help="upload offline runs to a collector",
        description="Upload an offline run's spool directory (or a directory of them) to a "
                    "collector. Safe to repeat: records already stored are skipped.")
    parser.add_argument("directory", metavar="DIR", help="a spool directory, or a directory "
                        "of them such as ~/.mltrail/offline")
    parser.add_argument("--collector", metavar="HOST:PORT", default=None,
                        help="collector address (default: MLTRAIL_COLLECTOR, else the "
                             "embedded collector, else 127.0.0.1:7431)")
    parser.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                        help="give up after this long; what is left stays on disk")
    add_security_flags(parser)
    parser.set_defaults(func=run_sync)


def spool_dirs(root: Path) -> list[Path]:
    """``root`` if it is a spool, else the spools directly under it."""
    if (root / "segments").is_dir():
        return [root]
    if not root.is_dir():
        raise MltrailError(f"{root} is not a directory; give the directory that "
                           "`mltrail: ... logging offline to DIR` named")
    found = sorted(p for p in root.iterdir() if (p / "segments").is_dir())
    if not found:
        raise MltrailError(f"{root} holds no mltrail spool (no segments/ directory in it or "
                           "in its subdirectories)")
    return found


def run_sync(args: argparse.Namespace) -> int:
    """One deadline for the whole command: N directories never take N x --timeout."""
    from mltrail.cli.target import collector_address

    address = collector_address(args.collector)[0]
    deadline = time.monotonic() + args.timeout
    unfinished = []
    for directory in spool_dirs(Path(args.directory)):
        left = _sync_one(directory, address, max(0.0, deadline - time.monotonic()),
                         security_from_args(args))
        if left:
            unfinished.append(f"{directory} ({left})")
    if unfinished:
        raise SyncIncomplete(
            f"not everything reached {address} within {args.timeout:g} s; what is left stays "
            f"on disk in {', '.join(unfinished)}; run `mltrail sync` again when the "
            "collector is reachable and the runs using a spool have ended")
    return 0


def _sync_one(directory: Path, address: str, timeout: float,
              security: ClientSecurity | None = None) -> str:
    """Drain one spool; returns what is left of it ("" when all of it was sent)."""
    from mltrail.agent.drain import drain_spool
    from mltrail.agent.spool import SpoolLockedError
    from mltrail.cli.progress import Progress
    from mltrail.pipeline.offline import end_abandoned_runs

    progress = Progress(f"sending {directory.name}", unit="bytes")

    def advance(sent: int, total: int) -> None:
        progress.total = total
        progress.advance(sent - progress.count)

    try:
        for run_id in end_abandoned_runs(directory):
            print(f"{directory}: run {printable(run_id)} was never ended (its process was killed); "
                  "recorded as failed")
        result = asyncio.run(drain_spool(directory, address, timeout, security,
                                         on_progress=advance))
        progress.done()
    except SpoolLockedError:  # a run still writing it: the others go on
        print(f"{directory}: in use by another process, skipped")
        return "in use"
    print(f"{directory}: sent {result.records} records in {result.batches} batches to "
          f"{address}" + (f"; {result.dead_records} records refused by the collector, "
                          f"kept in {directory / 'dead'}" if result.dead_records else ""))
    return "" if result.complete else f"{result.remaining_bytes} bytes"
