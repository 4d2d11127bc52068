"""The tail's hand-built Batch bytes parse back to the records protobuf would build."""

from __future__ import annotations

import pytest

from mltrail.agent.sources.encode import BatchBuilder, varint
from mltrail.proto import records_pb2


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 2**32, 2**63 - 1])
def test_varint_matches_protobuf(value: int) -> None:
    encoded = records_pb2.Record(seq=value).SerializeToString()
    assert encoded == (b"\x08" + varint(value) if value else b"")


def test_batch_bytes_parse_back() -> None:
    builder = BatchBuilder("stream-ü")
    builder.add_record(records_pb2.Record(
        seq=1, run_id="r", run_event=records_pb2.RunEvent(
            properties=records_pb2.PropertiesAdded(properties={"k": "v"}))))
    builder.add_log(2, 1_700_000_000_123_456_789, "run-1", "stdout", b"a\nb\n")
    builder.add_log(3, 5, "run-1", "", b"", partial=False)
    builder.add_log(4, 6, "", "err", b"x" * 300 + b"\xff", partial=True)
    batch = records_pb2.Batch.FromString(builder.build())
    assert builder.records == 4
    assert batch.stream_id == "stream-ü"
    assert [r.seq for r in batch.records] == [1, 2, 3, 4]
    assert batch.records[0].run_event.properties.properties == {"k": "v"}
    second = batch.records[1]
    assert (second.time_unix_nano, second.run_id) == (1_700_000_000_123_456_789, "run-1")
    assert (second.log.stream, second.log.data, second.log.partial_tail) == ("stdout",
                                                                             b"a\nb\n", False)
    assert batch.records[2].HasField("log") and batch.records[2].log.data == b""
    last = batch.records[3].log
    assert (last.stream, last.data, last.partial_tail) == ("err", b"x" * 300 + b"\xff", True)
    expected = records_pb2.Batch(stream_id="stream-ü")
    expected.records.add(seq=4, time_unix_nano=6, log=records_pb2.LogChunk(
        stream="err", data=b"x" * 300 + b"\xff", partial_tail=True))
    assert batch.records[3] == expected.records[0]
