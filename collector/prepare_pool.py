"""PreparePool: worker processes that decode and validate Ingest requests.

Decoding and validating a request (``prepare.prepare_request``) costs more
CPU than writing it, and it needs nothing of the store, so it runs here, on
other cores, and the store's single writer thread only writes. Requests of
one stream are still written in order: the Ingest service awaits their
preparations in the order it read them.

    event loop --raw bytes--> [at most 2 x workers in the pool] --PreparedRequest-->
        writer thread (marks, dedupe, one transaction) --> response

Workers start from a forkserver (never a fork of the collector, whose gRPC
threads a fork would copy in an unusable state) with the preparation code
imported, so a replacement starts in milliseconds. When a worker dies (an
out-of-memory kill, a SIGKILL) the executor breaks and every preparation in
it fails; nothing of those requests was written or acknowledged, so each is
prepared again in a fresh pool (counted in
``mltrail_collector_prepare_retries_total``). A request on which workers
died ``ATTEMPTS`` times, and a small one (``INLINE_BYTES``), is prepared on
the writer thread with its write. A worker exits by itself once the collector is gone (then the
forkserver too).
``workers = 0`` prepares every request on the writer thread.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from mltrail.collector.metrics import CollectorMetrics
from mltrail.collector.prepare import PreparedRequest, prepare_request

log = logging.getLogger(__name__)

ATTEMPTS = 3
# A smaller request (about 200 scalar records) is prepared on the writer thread with its
# write: handing it to a worker and back costs more CPU than preparing it (measured:
# 100-record requests took about 0.75 ms of worker CPU and 1.1 ms of the event loop's
# each through the pool).
INLINE_BYTES = 16 * 1024
PARENT_POLL_SECONDS = 1.0
STARTUP_SECONDS = 60


class PreparePool:
    def __init__(self, workers: int, writer: Executor, metrics: CollectorMetrics) -> None:
        if workers < 0:
            raise ValueError(f"ingest_workers must be 0 or more, not {workers}")
        self.workers = workers
        self._writer = writer
        self._metrics = metrics
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._slots = asyncio.Semaphore(max(2 * workers, 1))  # the bounded queue in front

    def start(self) -> None:
        """Start the workers and wait until they answer (the collector is ready to serve
        at speed once it says so)."""
        if self.workers:
            self._executor = executor = self._new_executor()
            try:
                for _ in as_completed([executor.submit(os.getpid)
                                       for _ in range(self.workers)], timeout=STARTUP_SECONDS):
                    pass
            except TimeoutError:
                log.warning("the ingest worker processes did not start within %ds; "
                            "requests wait for them", STARTUP_SECONDS)

    async def prepare(self, raw: bytes) -> PreparedRequest | bytes:
        """The prepared request (``DecodeError``: not an IngestRequest), or ``raw`` itself
        for the writer to prepare with the write (no workers, a request under
        INLINE_BYTES, or one on which workers died ATTEMPTS times)."""
        if len(raw) < INLINE_BYTES:
            return raw
        loop = asyncio.get_running_loop()
        for attempt in range(ATTEMPTS):
            executor = self._executor
            if executor is None:
                break
            try:
                async with self._slots:
                    return await loop.run_in_executor(executor, prepare_request, raw)
            except BrokenProcessPool:
                self._metrics.prepare_retries.inc()
                log.warning("an ingest worker process died while preparing a request "
                            "(attempt %d of %d); nothing of it was written; preparing it "
                            "again in new worker processes", attempt + 1, ATTEMPTS)
                self._replace(executor)
        return raw

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:  # once per broken executor, however many requests it failed
            if self._executor is broken:
                broken.shutdown(wait=False, cancel_futures=True)
                self._executor = self._new_executor()

    def _new_executor(self) -> ProcessPoolExecutor:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["mltrail.collector.prepare"])
        me = os.getpid()
        executor = ProcessPoolExecutor(self.workers, mp_context=context,
                                       initializer=_exit_with, initargs=(me, _start_time(me)))
        for _ in range(self.workers):  # start them now, not at the first requests
            executor.submit(os.getpid)
        return executor

    def shutdown(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)


def _exit_with(collector: int, started: str | None) -> None:
    """In a worker: exit once the collector (pid ``collector``, started at ``started``)
    is gone, even if it died by SIGKILL. Not the parent: that is the forkserver, which
    lives as long as any of its children does."""

    def watch() -> None:
        while _alive(collector, started):
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(0)

    threading.Thread(target=watch, name="mltrail-collector-watch", daemon=True).start()


def _start_time(pid: int) -> str | None:
    """The process's start time from /proc (None without /proc): a reused pid differs."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return "" if fields[0] == "Z" else fields[19]  # a zombie is gone too


def _alive(pid: int, started: str | None) -> bool:
    if started is not None:
        return _start_time(pid) == started
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
