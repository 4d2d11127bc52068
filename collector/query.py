"""The mltrail.v1.Query service: runs, metrics, logs (with follow), artifacts.

Store calls run on the reader thread pool. A run-scoped call for a run the
store does not know answers NOT_FOUND ``run 'X' not found``.

TailLogs with ``follow``: loop { note the run's notifier version; read the
run's status; send every line past each stream's position; if nothing was
new and the status (read before the lines) is final, send ``end`` with the
status; else wait for a notification from ingest, or 0.5 s for lines another
replica wrote }. Reading the status before the lines means a run that ended
has had all its lines sent when ``end`` goes out.

Every call needs read access (collector/auth.py) and sees only the runs of
its token's workspace: a run of another workspace is NOT_FOUND, as if it did
not exist.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from typing import Any, NoReturn, TypeVar

import grpc

from mltrail.collector import run_filter
from mltrail.collector.auth import ADMIN, READ, Authenticator, authorize
from mltrail.collector.bundle import RunBundles
from mltrail.collector.notify import LogNotifier
from mltrail.collector.series_pages import pages, series_query
from mltrail.collector.store import LogQuery, Store
from mltrail.collector.store.base import (
    DEFAULT_RUN_PAGE,
    MAX_RUN_PAGE,
    run_page_token,
)
from mltrail.common.errors import MltrailError, PermanentError, RetryableError
from mltrail.proto import collector_pb2, collector_pb2_grpc, records_pb2

T = TypeVar("T")

FOLLOW_POLL_SECONDS = 0.5
DOWNLOAD_CHUNK = 1024 * 1024
PAGE_LINES = 2000
PAGE_BYTES = 1024 * 1024
ARTIFACT_PAGE, MAX_ARTIFACT_PAGE = 1000, 10_000


_ENDED = (records_pb2.COMPLETED, records_pb2.FAILED, records_pb2.CANCELED)


class QueryService(collector_pb2_grpc.QueryServicer):
    def __init__(self, store: Store, readers: Executor, notifier: LogNotifier,
                 closing: asyncio.Event, auth: Authenticator | None = None,
                 bundles: RunBundles | None = None) -> None:
        self._bundles = bundles
        self._store = store
        self._readers = readers
        self._notifier = notifier
        self._closing = closing
        self._auth = auth or Authenticator(None)

    async def _workspace(self, context: grpc.aio.ServicerContext) -> str:
        return (await authorize(self._auth, context, READ, self._readers)).workspace

    async def _call(self, context: grpc.aio.ServicerContext, fn: Callable[..., T],
                    *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._readers, fn, *args)
        except (PermanentError, RetryableError) as exc:
            await _abort(context, exc.code, str(exc))
        except MltrailError as exc:
            await _abort(context, grpc.StatusCode.INTERNAL, str(exc))
        except OSError as exc:  # an artifact file missing or unreadable under --artifacts
            await _abort(context, grpc.StatusCode.DATA_LOSS,
                         f"collector cannot read {exc.filename or 'a stored file'} "
                         f"({exc.strerror}); the store's index is kept; check --artifacts")

    async def _require_run(self, context: grpc.aio.ServicerContext, run_id: str) -> int:
        """The run's status, after checking the caller may read it (NOT_FOUND if not)."""
        workspace = await self._workspace(context)
        status = await self._call(context, self._store.run_status, run_id, workspace)
        if status is None:
            await _abort(context, grpc.StatusCode.NOT_FOUND, f"run {run_id!r} not found")
        return status

    async def ListRuns(self, request: collector_pb2.ListRunsRequest,
                       context: grpc.aio.ServicerContext) -> collector_pb2.ListRunsResponse:
        workspace = await self._workspace(context)
        if run_filter.wants_metrics(request):  # metric conditions: one answer, no pages
            runs = await self._call(context, run_filter.list_matching, self._store, request,
                                    workspace)
            return collector_pb2.ListRunsResponse(runs=runs)
        page = min(request.limit or DEFAULT_RUN_PAGE, MAX_RUN_PAGE)
        asked = collector_pb2.ListRunsRequest()
        asked.CopyFrom(request)
        asked.limit = page + 1  # one more says whether a next page exists
        runs = await self._call(context, self._store.list_runs, asked, workspace)
        more = len(runs) > page
        return collector_pb2.ListRunsResponse(
            runs=runs[:page], next_page_token=run_page_token(runs[page - 1]) if more else "")

    async def GetRun(self, request: collector_pb2.GetRunRequest,
                     context: grpc.aio.ServicerContext) -> collector_pb2.RunInfo:
        workspace = await self._workspace(context)
        info = await self._call(context, self._store.get_run, request.run_id, workspace,
                                not request.without_counts)
        if info is None:
            await _abort(context, grpc.StatusCode.NOT_FOUND, f"run {request.run_id!r} not found")
        if not request.without_counts:
            summaries = await self._call(context, self._store.metric_summaries,
                                         [request.run_id], None)
            for name, summary in summaries.get(request.run_id, {}).items():
                info.metrics[name].CopyFrom(summary)
        return info

    async def GetMetrics(self, request: collector_pb2.GetMetricsRequest,
                         context: grpc.aio.ServicerContext) -> collector_pb2.GetMetricsResponse:
        await self._require_run(context, request.run_id)
        records = await self._call(context, self._store.get_metrics, request.run_id,
                                   request.name)
        return collector_pb2.GetMetricsResponse(records=records)

    async def ReadSeries(self, request: collector_pb2.ReadSeriesRequest,
                         context: grpc.aio.ServicerContext
                         ) -> AsyncIterator[collector_pb2.ReadSeriesResponse]:
        """Pages built on the reader threads one at a time (series_pages): memory stays
        flat however long the series."""
        try:
            query = series_query(request)
        except PermanentError as exc:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        await self._require_run(context, request.run_id)
        answers = pages(self._store.read_series(query))
        try:
            while (page := await self._call(context, next, answers, None)) is not None:
                yield page
        finally:
            with contextlib.suppress(ValueError):  # still running on a reader thread
                answers.close()

    async def ListArtifacts(self, request: collector_pb2.ListArtifactsRequest,
                            context: grpc.aio.ServicerContext
                            ) -> collector_pb2.ListArtifactsResponse:
        await self._require_run(context, request.run_id)
        page = min(request.limit or ARTIFACT_PAGE, MAX_ARTIFACT_PAGE)
        found = await self._call(context, self._store.list_artifacts, request.run_id,
                                 request.page_token, page + 1)
        return collector_pb2.ListArtifactsResponse(
            artifacts=found[:page], next_page_token=found[page - 1].path if len(found) > page
            else "")

    async def DownloadArtifact(self, request: collector_pb2.DownloadArtifactRequest,
                               context: grpc.aio.ServicerContext
                               ) -> AsyncIterator[collector_pb2.ArtifactData]:
        await self._require_run(context, request.run_id)
        info = await self._call(context, self._store.get_artifact, request.run_id, request.path)
        if info is None:
            await _abort(context, grpc.StatusCode.NOT_FOUND,
                         f"artifact {request.path!r} of run {request.run_id!r} not found")
        pieces = self._store.read_artifact(info, DOWNLOAD_CHUNK)
        first = True
        try:
            while (piece := await self._call(context, next, pieces, None)) is not None:
                yield collector_pb2.ArtifactData(data=piece, info=info if first else None)
                first = False
        finally:
            pieces.close()  # a cancelled download closes its file now, not at GC
        if first:  # an empty file still says what it is
            yield collector_pb2.ArtifactData(info=info)

    async def GetRunBundle(self, request: collector_pb2.RunBundleRequest,
                           context: grpc.aio.ServicerContext
                           ) -> AsyncIterator[collector_pb2.BundleChunk]:
        await self._require_run(context, request.run_id)
        if self._bundles is None:
            await _abort(context, grpc.StatusCode.UNIMPLEMENTED, "this server builds no bundles")
        async for chunk in self._bundles.stream(request, context):
            yield chunk

    async def TailLogs(self, request: collector_pb2.TailLogsRequest,
                       context: grpc.aio.ServicerContext
                       ) -> AsyncIterator[collector_pb2.TailLogsResponse]:
        run_id = request.run_id
        await self._require_run(context, run_id)
        positions: dict[str, int] = {}
        while True:
            version = self._notifier.version(run_id)
            status = await self._require_run(context, run_id)
            query = LogQuery(run_id, tuple(request.streams), request.from_line, request.to_line,
                             PAGE_LINES, PAGE_BYTES, positions)
            lines = await self._call(context, self._store.read_logs, query)
            if lines:
                for line in lines:
                    positions[line.stream] = line.line + 1
                yield collector_pb2.TailLogsResponse(lines=lines)
                continue
            if not request.follow or status in _ENDED:  # NotStarted: a submitted run to come
                yield collector_pb2.TailLogsResponse(end=True, run_status=status)
                return
            if self._closing.is_set():
                await _abort(context, grpc.StatusCode.UNAVAILABLE,
                             "collector is shutting down; follow again from the last line seen")
            await self._notifier.wait(run_id, version, FOLLOW_POLL_SECONDS)


async def _abort(context: grpc.aio.ServicerContext, code: grpc.StatusCode,
                 message: str) -> NoReturn:
    await context.abort(code, message)
    raise AssertionError("unreachable: context.abort raises")


class ManageService(collector_pb2_grpc.ManageServicer):
    """Changes that are not records (deleting runs), on the store's writer thread; they
    need an admin token of the runs' workspace when tokens are on."""

    def __init__(self, store: Store, writer: Executor, readers: Executor,
                 auth: Authenticator | None = None) -> None:
        self._store = store
        self._writer = writer
        self._readers = readers
        self._auth = auth or Authenticator(None)

    async def DeleteRuns(self, request: collector_pb2.DeleteRunsRequest,
                         context: grpc.aio.ServicerContext) -> collector_pb2.DeleteRunsResponse:
        caller = await authorize(self._auth, context, ADMIN, self._readers)
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._writer, self._store.delete_runs,
                                              list(request.run_ids), caller.workspace)
        except (PermanentError, RetryableError) as exc:
            await _abort(context, exc.code, str(exc))
