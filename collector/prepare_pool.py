"""PreparePool: worker processes that decode and validate Ingest requests.

Decoding and validating a request (``prepare.prepare_request``) costs more
CPU than writing it, and it needs nothing of the store, so it runs here, on
other cores, and the store's single writer thread only writes. Requests of
one stream are still written in order: the Ingest service awaits their
preparations in the order it read them.

    event loop --raw bytes--> [at most 2 x workers in the pool] --PreparedRequest-->
        writer thread (marks, dedupe, one transaction) --> response

Workers start with the first request large enough to need them, in the
background, from a forkserver (never a fork of the collector, whose gRPC
threads a fork would copy in an unusable state) with the preparation code
imported; until they answer, requests are prepared on the writer thread, so
nothing waits for them and a collector that only gets small requests never
starts them. When a worker dies (an out-of-memory kill, a SIGKILL) the
executor breaks and every preparation in it fails; nothing of those requests
was written or acknowledged, so each is prepared again, by new workers or on
the writer thread while they start (counted in
``mltrail_collector_prepare_retries_total``). A small request
(``INLINE_BYTES``) is always prepared on the writer thread with its write. A
worker exits by itself once the collector is gone (then the forkserver too).
``workers = 0`` prepares every request on the writer thread.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from mltrail.collector.metrics import CollectorMetrics
from mltrail.collector.prepare import PreparedRequest, prepare_request

log = logging.getLogger(__name__)

# A smaller request (about 200 scalar records) is prepared on the writer thread with its
# write: handing it to a worker and back costs more CPU than preparing it (measured:
# 100-record requests took about 0.75 ms of worker CPU and 1.1 ms of the event loop's
# each through the pool).
INLINE_BYTES = 16 * 1024
PARENT_POLL_SECONDS = 1.0


class PreparePool:
    def __init__(self, workers: int, metrics: CollectorMetrics) -> None:
        if workers < 0:
            raise ValueError(f"ingest_workers must be 0 or more, not {workers}")
        self.workers = workers
        self._metrics = metrics
        self._executor: ProcessPoolExecutor | None = None
        self._started: list[Future[int]] = []  # each worker's first answer
        self._booting = self._closed = False
        self._lock = threading.Lock()
        self._slots = asyncio.Semaphore(max(2 * workers, 1))  # the bounded queue in front

    async def prepare(self, raw: bytes) -> PreparedRequest | bytes:
        """The prepared request (``DecodeError``: not an IngestRequest), or ``raw`` itself
        for the writer to prepare with the write: a request under INLINE_BYTES, with no
        workers or while they start, or one on which a worker died."""
        if len(raw) < INLINE_BYTES or not self.workers:
            return raw
        executor = self._executor
        if executor is None or not all(f.done() for f in self._started):
            self._boot()
            return raw
        try:
            async with self._slots:
                return await asyncio.get_running_loop().run_in_executor(
                    executor, prepare_request, raw)
        except BrokenProcessPool:
            self._metrics.prepare_retries.inc()
            log.warning("an ingest worker process died while preparing a request; nothing "
                        "of it was written; preparing it again on the store's writer thread "
                        "while new worker processes start")
            self._replace(executor)
            return raw

    def _boot(self) -> None:
        """Start the workers in the background, if not started or starting (starting a
        forkserver blocks until it has imported the preparation code)."""
        with self._lock:
            if self._executor is not None or self._booting or self._closed:
                return
            self._booting = True
        threading.Thread(target=self._start_executor, name="mltrail-ingest-workers",
                         daemon=True).start()

    def _start_executor(self) -> None:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["mltrail.collector.prepare"])
        me = os.getpid()
        executor = ProcessPoolExecutor(self.workers, mp_context=context,
                                       initializer=_exit_with, initargs=(me, _start_time(me)))
        try:
            started = [executor.submit(os.getpid) for _ in range(self.workers)]
        except Exception as exc:  # the forkserver did not start (or we shut down meanwhile)
            started = []
            if not self._closed:
                log.warning("the ingest worker processes did not start (%s); requests are "
                            "prepared on the store's writer thread; trying again with the "
                            "next large request", exc)
        with self._lock:
            self._booting = False
            if not self._closed and started:
                self._executor, self._started = executor, started
                return
        executor.shutdown(wait=False, cancel_futures=True)

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:  # once per broken executor, however many requests it failed
            if self._executor is not broken:
                return
            self._executor = None
        broken.shutdown(wait=False, cancel_futures=True)
        self._boot()

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
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
