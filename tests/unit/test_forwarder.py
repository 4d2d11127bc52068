"""The forwarder against a real collector process (SQLite store in tmp_path).

The collector produces every condition itself: a batch it refuses, a stream
it aborts, a busy store (a test holds the write lock), out-of-order batches,
an outage (stopped, then started again on the same port).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest

from mltrail.agent.drain import drain_spool
from mltrail.agent.forward_listener import ForwardTally
from mltrail.agent.forwarder import GrpcForwarder, encode_request
from mltrail.agent.frames import read_ledger
from mltrail.agent.retry import RetryPolicy
from mltrail.agent.spool import Spool
from mltrail.proto import collector_pb2, collector_pb2_grpc, records_pb2
from tests import builders
from tests.procs import Service, collector_service


def spool_batches(spool: Spool, sid: str, batches: int, per: int = 10, first: int = 1,
                  broken: int = 0) -> None:
    """Scalar batches (step = seq); batch number ``broken`` (1-based) has a record without
    a run id, which the collector refuses for good."""
    for b in range(batches):
        seqs = range(first + b * per, first + (b + 1) * per)
        records = [builders.scalar(s, "run", "loss", s, step=s) for s in seqs]
        if b + 1 == broken:
            records[1].run_id = ""
        spool.append(sid, seqs[0], seqs[-1], builders.batch(sid, records).SerializeToString())


def steps(collector: Service, token_file: Path | None = None) -> list[int]:
    """The steps of run "run"'s loss, in stored order, read back through the collector's
    Query API: one per record stored."""
    from mltrail.common.credentials import ClientSecurity
    from mltrail.query.client import QueryClient, RunNotFound

    security = ClientSecurity(token_file=str(token_file) if token_file else "")
    with QueryClient(collector.grpc, security=security) as client:
        try:
            return [r.metric.scalar.step for r in client.metric_records("run", "loss")]
        except RunNotFound:
            return []


def gaps(collector: Service) -> list[tuple[str, int, int, int, str]]:
    with contextlib.closing(sqlite3.connect(collector.workdir / "store.db")) as db:
        return db.execute("SELECT stream_id, first_seq, last_seq, records, reason "
                          "FROM stream_gaps ORDER BY stream_id, first_seq").fetchall()


async def wait_until(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(forwarder: GrpcForwarder) -> AsyncIterator[GrpcForwarder]:
    task = asyncio.create_task(forwarder.run())
    try:
        yield forwarder
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await forwarder.close()


async def forward_until_empty(spool: Spool, address: str, tally: ForwardTally,
                              timeout: float = 60.0, **options: int) -> None:
    forwarder = GrpcForwarder(spool, address, listener=tally, **options,  # type: ignore[arg-type]
                              retry=RetryPolicy(initial=0.01, maximum=0.1,
                                                on_retry=tally.retrying))
    async with running(forwarder), asyncio.timeout(timeout):
        while not spool.empty():
            await asyncio.sleep(0.01)


def test_request_bytes_are_a_valid_ingest_request() -> None:
    b1 = builders.batch("s", [builders.scalar(1, "r", "m", 1.0)]).SerializeToString()
    b2 = builders.batch("s", [builders.scalar(2, "r", "m", 2.0)]).SerializeToString()
    request = collector_pb2.IngestRequest.FromString(encode_request(300, [b1, b2]))
    assert request.request_id == 300
    assert [b.records[0].seq for b in request.batches] == [1, 2]


async def test_forwards_everything_in_order_and_acks_the_spool(
        tmp_path: Path, collector: Service) -> None:
    spool = Spool(tmp_path / "spool", segment_bytes=4096)
    spool_batches(spool, "s1", 50)
    tally = ForwardTally()
    await forward_until_empty(spool, collector.grpc, tally)
    assert steps(collector) == list(range(1, 501))
    assert tally.records == 500 and tally.dead_batches == 0
    assert spool.segments == 1  # acknowledged segments are gone
    spool.close()


async def test_a_refused_batch_is_set_aside_and_a_gap_record_explains_it(
        tmp_path: Path, collector: Service) -> None:
    spool = Spool(tmp_path / "spool")
    spool_batches(spool, "s1", 5, broken=3)  # seqs 21-30 refused for good
    tally = ForwardTally()
    await forward_until_empty(spool, collector.grpc, tally)
    assert steps(collector) == [*range(1, 21), *range(31, 51)]
    [(stream, first, last, records, reason)] = gaps(collector)
    assert (stream, first, last, records) == ("s1", 21, 30, 10)
    assert "dead letter" in reason and "run_id is empty" in reason
    assert (tally.dead_batches, tally.dead_records) == (1, 10)
    dead = tmp_path / "spool" / "dead"
    assert "run_id is empty" in (dead / "reasons.log").read_text()
    assert (dead / "letters.seg").stat().st_size > 0
    assert read_ledger(tmp_path / "spool") == spool.ack_position  # nothing set aside twice
    spool.close()


class RefusalTally(ForwardTally):
    def __init__(self) -> None:
        super().__init__()
        self.refusals: list[str] = []

    def credentials_refused(self, message: str) -> None:
        self.refusals.append(message)


async def test_a_refused_token_sets_nothing_aside_and_resumes_when_the_file_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mltrail.agent import forwarder as forwarder_module
    from mltrail.common.credentials import ClientSecurity
    from mltrail.common.tokens import new_token

    admin = tmp_path / "admin.token"
    collector = collector_service(tmp_path, "--auth", "token",
                                  "--admin-token-file", str(admin)).start()
    token_file = tmp_path / "token"
    token_file.write_text(new_token()[0])  # well formed, never issued by this collector
    monkeypatch.setattr(forwarder_module, "AUTH_RETRY_SECONDS", 30.0)
    spool = Spool(tmp_path / "spool")
    spool_batches(spool, "s1", 3)
    tally = RefusalTally()
    try:
        forwarder = GrpcForwarder(spool, collector.grpc, listener=tally,
                                  security=ClientSecurity(token_file=str(token_file)))
        async with running(forwarder), asyncio.timeout(60):
            while not tally.refusals:
                await asyncio.sleep(0.01)
            assert not spool.empty() and tally.dead_records == 0
            token_file.write_text(admin.read_text())  # the right secret: no restart
            while not spool.empty():
                await asyncio.sleep(0.01)
        assert steps(collector, admin) == list(range(1, 31)) and tally.dead_records == 0
    finally:
        collector.stop()
    assert len(tally.refusals) == 1 and "UNAUTHENTICATED" in tally.refusals[0]
    assert not (tmp_path / "spool" / "dead").exists() or not any(
        (tmp_path / "spool" / "dead").iterdir())
    spool.close()


async def test_a_busy_store_is_retried_and_pipelined_batches_lose_nothing(
        tmp_path: Path, collector: Service) -> None:
    # One frame per request, four in flight: while the store is locked the first is
    # answered UNAVAILABLE; none of the later ones may commit past it.
    spool = Spool(tmp_path / "spool")
    spool_batches(spool, "s1", 8)
    tally = ForwardTally()
    lock = sqlite3.connect(collector.workdir / "store.db", isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    forwarding = asyncio.create_task(
        forward_until_empty(spool, collector.grpc, tally, batch_max_bytes=1))
    try:
        await wait_until(lambda: tally.retries >= 1, "a retry on the busy store")
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    await forwarding
    assert steps(collector) == list(range(1, 81))
    assert gaps(collector) == [] and tally.missing_records == 0
    spool.close()


async def test_an_undecodable_batch_is_found_and_set_aside(
        tmp_path: Path, collector: Service) -> None:
    spool = Spool(tmp_path / "spool")
    spool_batches(spool, "s1", 2)
    spool.append("s1", 21, 21, b"\xff\xff\xff garbage")  # aborts the whole stream
    after = builders.batch("s1", [builders.scalar(22, "run", "loss", 1.0, step=22)])
    spool.append("s1", 22, 22, after.SerializeToString())
    tally = ForwardTally()
    await forward_until_empty(spool, collector.grpc, tally)
    assert steps(collector) == [*range(1, 21), 22]
    assert [g[:4] for g in gaps(collector)] == [("s1", 21, 21, 1)]
    assert tally.dead_batches == 1
    spool.close()


async def test_collector_down_then_up_loses_nothing(tmp_path: Path) -> None:
    first = collector_service(tmp_path).start()
    port = first.grpc.rpartition(":")[2]
    first.stop()
    spool = Spool(tmp_path / "spool")
    spool_batches(spool, "s1", 10)
    tally = ForwardTally()
    forwarding = asyncio.create_task(forward_until_empty(spool, first.grpc, tally))
    again = collector_service(tmp_path)
    again.args[again.args.index("127.0.0.1:0")] = f"127.0.0.1:{port}"
    try:
        await wait_until(lambda: tally.retries >= 1, "a retry while nobody listens")
        assert not spool.empty()
        await asyncio.to_thread(again.start)
        await forwarding
        assert steps(again) == list(range(1, 101))
    finally:
        again.stop()
    spool.close()


async def test_drain_spool_forwards_a_directory_and_counts(
        tmp_path: Path, collector: Service) -> None:
    spool = Spool(tmp_path / "spool")
    spool_batches(spool, "s1", 4)
    spool.close()
    result = await drain_spool(tmp_path / "spool", collector.grpc, timeout=30)
    assert result.complete and result.records == 40 and result.remaining_bytes == 0
    again = Spool(tmp_path / "spool")
    assert again.empty()  # the ledger says all was acknowledged
    again.close()


async def test_drain_spool_keeps_what_it_could_not_send(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool_batches(spool, "s1", 2)
    spool.close()
    result = await drain_spool(tmp_path, "127.0.0.1:1", timeout=0.5)
    assert not result.complete and result.records == 0 and result.remaining_bytes > 0


@pytest.mark.parametrize("per", [1, 1000])
def test_encode_request_handles_large_varints(per: int) -> None:
    batch = b"\x0a\x01s" + b"x" * per * 200
    request = encode_request(2**40, [batch])
    assert request.endswith(batch)
    assert collector_pb2.IngestRequest.FromString(request).request_id == 2**40


async def test_seqs_missing_from_the_spool_get_a_gap_record_then_the_rest_commits(
        tmp_path: Path, collector: Service) -> None:
    # Seqs 11-20 are not in the spool (a frame cut from a damaged spool): the collector
    # refuses 21-30 as out of order, naming seq 11; the forwarder says 11-20 are
    # missing, with a gap record, and resends 21-30.
    spool = Spool(tmp_path / "spool")
    spool_batches(spool, "s1", 1)
    spool_batches(spool, "s1", 2, first=21)
    tally = ForwardTally()
    await forward_until_empty(spool, collector.grpc, tally)
    assert steps(collector) == [*range(1, 11), *range(21, 41)]
    [(stream, first, last, records, reason)] = gaps(collector)
    assert (stream, first, last, records) == ("s1", 11, 20, 10)
    assert "not in the agent's spool" in reason
    assert tally.missing_records == 10
    spool.close()


async def test_an_out_of_order_batch_is_refused_and_sent_again_once_its_turn_comes(
        tmp_path: Path, collector: Service) -> None:
    # `mltrail sync` of a spool holding seqs 11-20 while 1-10 are still in another
    # spool: refused (nothing stored, nothing declared missing), kept, and stored
    # once the other spool was delivered.
    later, earlier = Spool(tmp_path / "later"), Spool(tmp_path / "earlier")
    spool_batches(later, "s1", 1, first=11)
    spool_batches(earlier, "s1", 1)
    later.close()
    earlier.close()
    refused = await drain_spool(tmp_path / "later", collector.grpc, timeout=1.0)
    assert not refused.complete and refused.records == 0 and steps(collector) == []
    assert (await drain_spool(tmp_path / "earlier", collector.grpc, timeout=30)).complete
    resent = await drain_spool(tmp_path / "later", collector.grpc, timeout=30)
    assert resent.complete and resent.records == 10 and resent.missing_records == 0
    assert steps(collector) == list(range(1, 21)) and gaps(collector) == []


def test_compression_is_off_for_a_collector_on_this_host_unless_asked() -> None:
    from mltrail.agent.targets import wants_compression

    assert not wants_compression("auto", "127.0.0.1:7431")
    assert not wants_compression("auto", "localhost:7431")
    assert not wants_compression("auto", "[::1]:7431")
    assert wants_compression("auto", "collector.mltrail.svc:7431")
    assert wants_compression("gzip", "127.0.0.1:7431")
    assert not wants_compression("none", "collector:7431")


class _Delays(ForwardTally):
    def __init__(self) -> None:
        super().__init__()
        self.delays: list[float] = []

    def retrying(self, error: BaseException, delay: float) -> None:
        super().retrying(error, delay)
        self.delays.append(delay)


class SharedStoreIngest(collector_pb2_grpc.IngestServicer):
    """Replicas on one shared store (as collectors on one PostgreSQL are): every server
    of a test shares ``stored``; a batch not starting at mark + 1 is refused ABORTED with
    the expected seq, as the real collector does. Two real replicas need PostgreSQL;
    this test is about which replica the agent picks."""

    def __init__(self, stored: dict[str, list[int]]) -> None:
        self.stored = stored
        self.requests = 0

    async def Write(  # gRPC method name
        self, request_iterator: AsyncIterator[collector_pb2.IngestRequest],
        context: grpc.aio.ServicerContext
    ) -> AsyncIterator[collector_pb2.IngestResponse]:
        async for request in request_iterator:
            self.requests += 1
            yield collector_pb2.IngestResponse(
                request_id=request.request_id, results=[self._one(b) for b in request.batches])

    def _one(self, batch: records_pb2.Batch) -> collector_pb2.BatchResult:
        seqs = self.stored.setdefault(batch.stream_id, [])
        hwm = seqs[-1] if seqs else 0
        if batch.records[0].seq > hwm + 1:
            return collector_pb2.BatchResult(stream_id=batch.stream_id, acked_seq=hwm,
                                             code=10, expected_seq=hwm + 1,
                                             message="out of order")
        new = [r.seq for r in batch.records if r.seq > hwm]
        seqs += new
        return collector_pb2.BatchResult(stream_id=batch.stream_id, acked_seq=seqs[-1],
                                         stored=len(new),
                                         duplicates=len(batch.records) - len(new))


@contextlib.asynccontextmanager
async def ingest_server(servicer: SharedStoreIngest) -> AsyncIterator[str]:
    server = grpc.aio.server()
    collector_pb2_grpc.add_IngestServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


async def test_dead_collector_is_failed_over_without_backoff_and_sessions_rebalance(
        tmp_path: Path) -> None:
    """A dead address in the list costs one immediate failover (delay 0), never the
    backoff; with rebalancing every session after the first moves on, so both live
    collectors get batches, and each batch is stored once across them."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{probe.getsockname()[1]}"
    stored: dict[str, list[int]] = {}
    first, second = SharedStoreIngest(stored), SharedStoreIngest(stored)
    spool = Spool(tmp_path, segment_bytes=4096)
    async with ingest_server(first) as one, ingest_server(second) as two:
        tally = _Delays()
        forwarder = GrpcForwarder(spool, f"{dead},{one},{two}", listener=tally,
                                  retry=RetryPolicy(initial=5.0, maximum=5.0,
                                                    on_retry=tally.retrying),
                                  rebalance_seconds=0.05, batch_max_bytes=2048)
        sent = 0
        async with running(forwarder), asyncio.timeout(20):  # every address has its turn
            while not (tally.delays and first.requests and second.requests):
                spool_batches_from(spool, "s1", sent + 1, 10)
                sent += 10
                await asyncio.sleep(0.02)
            while not spool.empty():
                await asyncio.sleep(0.01)
    assert set(tally.delays) == {0.0}  # failovers only, no backoff
    assert stored["s1"] == list(range(1, sent + 1)) and tally.missing_records == 0


def spool_batches_from(spool: Spool, sid: str, first: int, per: int) -> None:
    batch = builders.batch(sid, [builders.scalar(s, "run", "loss", s, step=s)
                                 for s in range(first, first + per)])
    spool.append(sid, first, first + per - 1, batch.SerializeToString())
