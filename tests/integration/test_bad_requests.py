"""Bytes that do not decode, sent to every gRPC method of a real collector and a real agent.

Each call is answered INVALID_ARGUMENT naming the method and the message it
takes (not gRPC's generic "Exception deserializing request"), is counted in
``mltrail_<process>_bad_requests_total{method}`` on that process's /metrics,
and good requests keep working; what a stream had accepted before its bad
request is kept.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.descriptor import FileDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from mltrail.proto import agent_pb2, collector_pb2
from tests import builders as b
from tests.agent_client import AgentClient, append_request, scalar_steps
from tests.procs import Service

GARBAGE = b"\xff\xfe\xfd\xfc\x00not a protobuf message"


def methods(*files: FileDescriptor) -> Iterator[tuple[str, str, bool, bool]]:
    """(path, request type, client streams, server streams) of every method in ``files``."""
    for file in files:
        for service in file.services_by_name.values():
            for m in service.methods:
                yield (f"/{service.full_name}/{m.name}", m.input_type.full_name,
                       m.client_streaming, m.server_streaming)


def call_raw(channel: grpc.Channel, path: str, client_streams: bool, server_streams: bool,
             requests: list[bytes]) -> grpc.RpcError:
    kind = {(False, False): channel.unary_unary, (False, True): channel.unary_stream,
            (True, False): channel.stream_unary, (True, True): channel.stream_stream}
    call = kind[client_streams, server_streams](path, request_serializer=None,
                                                response_deserializer=None)
    argument = iter(requests) if client_streams else requests[0]
    with pytest.raises(grpc.RpcError) as info:
        answer = call(argument, timeout=30)
        if server_streams:
            list(answer)
    return info.value


def bad_requests(http: str, family: str) -> dict[str, float]:
    with urllib.request.urlopen(f"http://{http}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {s.labels["method"]: s.value for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == f"{family}_total"}


def check_refusals(channel: grpc.Channel, wanted: list[tuple[str, str, bool, bool]]) -> None:
    for path, message, client_streams, server_streams in wanted:
        error = call_raw(channel, path, client_streams, server_streams, [GARBAGE])
        details = error.details() or ""
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (path, error.code(), details)
        assert path in details and "do not decode" in details, details
        assert message.removeprefix("mltrail.v1.") in details, details
        assert "Exception deserializing" not in details


def test_every_collector_method_refuses_garbage_clearly_and_counts_it(
        collector: Service) -> None:
    wanted = [*methods(collector_pb2.DESCRIPTOR),
              *methods(health_pb2.DESCRIPTOR)]
    assert {"/mltrail.v1.Query/GetRun", "/mltrail.v1.Query/TailLogs",
            "/mltrail.v1.Admin/CreateToken", "/grpc.health.v1.Health/Watch"} <= {
        w[0] for w in wanted}
    with b.IngestClient(collector.grpc) as ingest:  # something stored before, kept after
        assert ingest.write([b.batch("s", [b.started(1, "r1")])]).results[0].code == 0
    channel = grpc.insecure_channel(collector.grpc)
    check_refusals(channel, wanted)
    check_refusals(channel, wanted)  # twice: each one counted
    counted = bad_requests(collector.http, "mltrail_collector_bad_requests")
    assert counted == {w[0]: 2.0 for w in wanted}
    get_run = channel.unary_unary("/mltrail.v1.Query/GetRun",
                                  request_serializer=collector_pb2.GetRunRequest.SerializeToString,
                                  response_deserializer=collector_pb2.RunInfo.FromString)
    assert get_run(collector_pb2.GetRunRequest(run_id="r1"), timeout=30).run_id == "r1"
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(),
                                                      timeout=30)
    assert next(watch).status == health_pb2.HealthCheckResponse.SERVING  # a writing stream
    watch.cancel()
    channel.close()


def test_every_agent_method_refuses_garbage_and_keeps_what_it_accepted(
        agent: Service, collector: Service, tmp_path: Path) -> None:
    wanted = [*methods(agent_pb2.DESCRIPTOR), *methods(health_pb2.DESCRIPTOR)]
    channel = grpc.insecure_channel(f"unix:{tmp_path / 'agent.sock'}")
    check_refusals(channel, wanted)
    # A good batch, then garbage, on one Append stream: the good one is spooled and
    # acknowledged before the stream is refused, and reaches the collector.
    good = append_request(b.batch("s1", [b.started(1, "r1"), b.scalar(2, "r1", "loss", 0.5,
                                                                      step=2)]))
    error = call_raw(channel, "/mltrail.v1.Agent/Append", True, True,
                     [good.SerializeToString(), GARBAGE])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "request 2 of this stream" in (error.details() or "")
    channel.close()
    counted = bad_requests(agent.http, "mltrail_agent_bad_requests")
    assert counted == {w[0]: 1.0 + (w[0].endswith("/Append")) for w in wanted}
    client = AgentClient(str(tmp_path / "agent.sock"))
    later = append_request(b.batch("s1", [b.scalar(3, "r1", "loss", 0.25, step=3)]))
    assert [ack.code for ack in client.append([later])] == [0]
    assert client.wait_forwarded("s1", 3).done
    client.close()
    assert scalar_steps(collector.grpc, "r1") == [2, 3]
