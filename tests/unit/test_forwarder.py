"""The forwarder against a small real grpc.aio Ingest server that answers as told."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest

from mltrail.agent.drain import drain_spool
from mltrail.agent.forwarder import ForwardTally, GrpcForwarder, encode_request
from mltrail.agent.frames import read_ledger
from mltrail.agent.retry import RetryPolicy
from mltrail.agent.spool import Spool
from mltrail.proto import collector_pb2, collector_pb2_grpc, records_pb2
from tests import builders

Decide = Callable[[records_pb2.Batch], collector_pb2.BatchResult | None]


class FakeIngest(collector_pb2_grpc.IngestServicer):
    """Decides per batch (None: OK); records what it stored, like a collector's hwm."""

    def __init__(self, decide: Decide | None = None, busy_requests: int = 0) -> None:
        self.decide = decide or (lambda batch: None)
        self.stored: dict[str, list[int]] = {}
        self.requests = 0
        self.busy_requests = busy_requests  # answer UNAVAILABLE for a whole request

    async def Write(  # gRPC method name
        self, request_iterator: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[collector_pb2.IngestResponse]:
        async for raw in request_iterator:
            try:
                request = collector_pb2.IngestRequest.FromString(raw)
            except Exception:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "undecodable request")
            self.requests += 1
            if self.busy_requests > 0:
                self.busy_requests -= 1
                busy = collector_pb2.BatchResult(code=14, message="store busy",
                                                 retry_after_ms=50)
                yield collector_pb2.IngestResponse(request_id=request.request_id,
                                                   results=[busy] * len(request.batches))
                continue
            yield collector_pb2.IngestResponse(
                request_id=request.request_id, results=[self._one(b) for b in request.batches])

    def _one(self, batch: records_pb2.Batch) -> collector_pb2.BatchResult:
        result = self.decide(batch)
        if result is not None:
            return result
        seqs = self.stored.setdefault(batch.stream_id, [])
        hwm = seqs[-1] if seqs else 0
        new = [r.seq for r in batch.records if r.seq > hwm]
        seqs += new
        return collector_pb2.BatchResult(stream_id=batch.stream_id, acked_seq=seqs[-1],
                                         stored=len(new),
                                         duplicates=len(batch.records) - len(new))


def _raw_handler(servicer: FakeIngest) -> grpc.GenericRpcHandler:
    # Requests arrive as raw bytes so a test can send undecodable ones.
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.Write, request_deserializer=None,
        response_serializer=collector_pb2.IngestResponse.SerializeToString)
    return grpc.method_handlers_generic_handler("mltrail.v1.Ingest", {"Write": handler})


@contextlib.asynccontextmanager
async def ingest_server(servicer: FakeIngest) -> AsyncIterator[str]:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((_raw_handler(servicer),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


def spool_batches(spool: Spool, sid: str, batches: int, per: int = 10) -> None:
    for b in range(batches):
        first = b * per + 1
        batch = builders.batch(sid, [builders.scalar(s, "run", "loss", s, step=s)
                                     for s in range(first, first + per)])
        spool.append(sid, first, first + per - 1, batch.SerializeToString())


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
                              timeout: float = 10.0, **options: int) -> None:
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


async def test_forwards_everything_in_order_and_acks_the_spool(tmp_path: Path) -> None:
    fake = FakeIngest()
    spool = Spool(tmp_path, segment_bytes=4096)
    spool_batches(spool, "s1", 50)
    tally = ForwardTally()
    async with ingest_server(fake) as address:
        await forward_until_empty(spool, address, tally)
    assert fake.stored["s1"] == list(range(1, 501))
    assert tally.records == 500 and tally.dead_batches == 0
    assert spool.segments == 1  # acknowledged segments are gone
    spool.close()


async def test_invalid_batch_is_set_aside_and_the_rest_goes_on(tmp_path: Path) -> None:
    def refuse_seq_21(batch: records_pb2.Batch) -> collector_pb2.BatchResult | None:
        if batch.records[0].seq == 21:
            return collector_pb2.BatchResult(stream_id=batch.stream_id, code=3,
                                             message="seq gap inside the batch")
        return None

    fake = FakeIngest(refuse_seq_21)
    spool = Spool(tmp_path)
    spool_batches(spool, "s1", 5)
    tally = ForwardTally()
    async with ingest_server(fake) as address:
        await forward_until_empty(spool, address, tally)
    assert fake.stored["s1"] == [*range(1, 21), *range(31, 51)]
    assert (tally.dead_batches, tally.dead_records) == (1, 10)
    assert fake.requests <= 5  # no retry loop on the refused batch
    assert "seq gap" in (tmp_path / "dead" / "reasons.log").read_text()
    assert (tmp_path / "dead" / "letters.seg").stat().st_size > 0
    assert read_ledger(tmp_path) == spool.ack_position  # a crash now sets nothing aside twice
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

    good, bad = new_token()[0], new_token()[0]
    token_file = tmp_path / "token"
    token_file.write_text(bad)
    seen: list[str] = []

    class CheckingIngest(FakeIngest):
        async def Write(self, request_iterator: AsyncIterator[bytes],  # type: ignore[override]
                        context: grpc.aio.ServicerContext
                        ) -> AsyncIterator[collector_pb2.IngestResponse]:
            header = dict(context.invocation_metadata() or ()).get("authorization", "")
            seen.append(str(header))
            if header != f"Bearer {good}":
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, "token was revoked")
            async for response in super().Write(request_iterator, context):
                yield response

    monkeypatch.setattr(forwarder_module, "AUTH_RETRY_SECONDS", 30.0)
    fake = CheckingIngest()
    spool = Spool(tmp_path / "spool")
    spool_batches(spool, "s1", 3)
    tally = RefusalTally()
    async with ingest_server(fake) as address:
        forwarder = GrpcForwarder(spool, address, listener=tally,
                                  security=ClientSecurity(token_file=str(token_file)))
        async with running(forwarder), asyncio.timeout(20):
            while not tally.refusals:
                await asyncio.sleep(0.01)
            assert not spool.empty() and tally.dead_records == 0
            token_file.write_text(good)  # the rotated secret: no restart
            while not spool.empty():
                await asyncio.sleep(0.01)
    assert fake.stored["s1"] == list(range(1, 31)) and tally.dead_records == 0
    assert len(tally.refusals) == 1 and "revoked" in tally.refusals[0]
    assert not (tmp_path / "spool" / "dead").exists() or not any(
        (tmp_path / "spool" / "dead").iterdir())
    spool.close()


async def test_retryable_results_are_retried_with_the_servers_delay(tmp_path: Path) -> None:
    fake = FakeIngest(busy_requests=3)
    spool = Spool(tmp_path)
    spool_batches(spool, "s1", 3)
    tally = ForwardTally()
    async with ingest_server(fake) as address:
        await forward_until_empty(spool, address, tally)
    assert fake.stored["s1"] == list(range(1, 31))
    assert tally.retries >= 3
    spool.close()


async def test_an_undecodable_batch_is_found_and_set_aside(tmp_path: Path) -> None:
    fake = FakeIngest()
    spool = Spool(tmp_path)
    spool_batches(spool, "s1", 2)
    spool.append("s1", 21, 21, b"\xff\xff\xff garbage")  # aborts the whole stream
    spool_batches_from = builders.batch("s1", [builders.scalar(22, "run", "loss", 1.0)])
    spool.append("s1", 22, 22, spool_batches_from.SerializeToString())
    tally = ForwardTally()
    async with ingest_server(fake) as address:
        await forward_until_empty(spool, address, tally)
    assert fake.stored["s1"] == [*range(1, 21), 22]
    assert tally.dead_batches == 1
    spool.close()


async def test_collector_down_then_up_loses_nothing(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool_batches(spool, "s1", 10)
    fake = FakeIngest()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((_raw_handler(fake),))
    port = server.add_insecure_port("127.0.0.1:0")
    tally = ForwardTally()
    forwarding = asyncio.create_task(forward_until_empty(spool, f"127.0.0.1:{port}", tally))
    await asyncio.sleep(0.5)  # nobody listens yet: retries
    assert tally.retries >= 1 and not spool.empty()
    await server.start()
    await forwarding
    await server.stop(0)
    assert fake.stored["s1"] == list(range(1, 101))
    spool.close()


async def test_drain_spool_forwards_a_directory_and_counts(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool_batches(spool, "s1", 4)
    spool.close()
    fake = FakeIngest()
    async with ingest_server(fake) as address:
        result = await drain_spool(tmp_path, address, timeout=10)
    assert result.complete and result.records == 40 and result.remaining_bytes == 0
    again = Spool(tmp_path)
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


async def test_records_lost_to_an_out_of_order_commit_are_counted(tmp_path: Path) -> None:
    # Request 1 is answered UNAVAILABLE while pipelined request 2 (later seqs of the
    # same stream) is committed: the collector then skips request 1's resend.
    fake = FakeIngest(busy_requests=1)
    spool = Spool(tmp_path)
    spool_batches(spool, "s1", 4)
    tally = ForwardTally()
    async with ingest_server(fake) as address:
        await forward_until_empty(spool, address, tally, batch_max_bytes=1)
    lost = 40 - len(fake.stored["s1"])
    assert lost > 0  # the hazard happened (the fake, like the collector, accepts gaps)
    assert tally.superseded_records == lost
    spool.close()


def test_compression_is_off_for_a_collector_on_this_host_unless_asked() -> None:
    from mltrail.agent.forwarder import wants_compression

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


async def test_dead_collector_is_failed_over_without_backoff_and_sessions_rebalance(
        tmp_path: Path) -> None:
    """A dead address in the list costs one immediate failover (delay 0), never the
    backoff; with rebalancing every session after the first moves on, so both live
    collectors get batches, and each batch is stored once across them."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{probe.getsockname()[1]}"
    first, second = FakeIngest(), FakeIngest()
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
    stored = sorted(first.stored.get("s1", []) + second.stored.get("s1", []))
    assert stored == list(range(1, sent + 1))


def spool_batches_from(spool: Spool, sid: str, first: int, per: int) -> None:
    batch = builders.batch(sid, [builders.scalar(s, "run", "loss", s, step=s)
                                 for s in range(first, first + per)])
    spool.append(sid, first, first + per - 1, batch.SerializeToString())
