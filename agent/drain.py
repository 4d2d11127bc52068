"""``drain_spool(spool_dir, collector_address, timeout) -> DrainResult``.

Forwards everything in a spool directory (an offline run written by the
SDK, for ``mltrail sync DIR``) with a ``GrpcForwarder`` and returns the
counts; what is not acknowledged by the deadline stays on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mltrail.agent.forward_listener import ForwardTally
from mltrail.agent.forwarder import GrpcForwarder
from mltrail.agent.spool import Spool
from mltrail.common.credentials import ClientSecurity


@dataclass(frozen=True)
class DrainResult:
    """What ``drain_spool`` forwarded, set aside and left on disk."""

    records: int
    batches: int
    dead_records: int
    dead_batches: int
    retries: int
    remaining_bytes: int
    complete: bool
    missing_records: int = 0  # the collector needed them; not in the spool (gap records)


async def drain_spool(
    spool_dir: str | Path, collector_address: str, timeout: float = 60.0,
    security: ClientSecurity | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> DrainResult:
    """Forward everything in ``spool_dir`` to ``collector_address`` within ``timeout``.

    Retries transient failures until the deadline; whatever the collector has
    not acknowledged by then stays in the spool for the next call. Seqs the
    collector needs before this spool's (an online run's records still in
    its agent's spool) are waited for, never declared missing.
    ``on_progress(acknowledged_bytes, total_bytes)`` is called as it goes.
    """
    spool = await asyncio.to_thread(Spool, spool_dir, fsync="never")
    total = spool.pending_bytes
    tally = ForwardTally()
    forwarder = GrpcForwarder(spool, collector_address, listener=tally, security=security,
                              fill_gaps=False)
    task = asyncio.create_task(forwarder.run())
    deadline = time.monotonic() + timeout
    try:
        while not spool.empty() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            if on_progress is not None:
                on_progress(max(0, total - spool.pending_bytes), total)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await forwarder.close()
        complete = spool.empty()
        remaining = spool.pending_bytes
        await asyncio.to_thread(spool.close)
    return DrainResult(tally.records, tally.batches, tally.dead_records, tally.dead_batches,
                       tally.retries, remaining, complete, tally.missing_records)
