"""Encoded ``mltrail.v1.Batch`` bytes for log sources, built without protobuf objects.

A source's record is mostly one big ``LogChunk.data``; building it through
protobuf copies it twice (into the message, then out in
``SerializeToString``). Here a record is a few header bytes around the
data, and a batch is one ``b"".join``: the data is copied once. The field
numbers are those of ``proto/records.proto``; ``tests/unit/test_tail_encode.py``
checks the bytes parse back to the same messages.
"""

from __future__ import annotations

from mltrail.proto import records_pb2

# tag bytes: (field number << 3) | wire type (0 varint, 2 length-delimited)
_BATCH_STREAM_ID = b"\x0a"  # Batch.stream_id = 1
_BATCH_RECORD = b"\x12"  # Batch.records = 2
_RECORD_SEQ = b"\x08"  # Record.seq = 1
_RECORD_TIME = b"\x10"  # Record.time_unix_nano = 2
_RECORD_RUN_ID = b"\x1a"  # Record.run_id = 3
_RECORD_LOG = b"\x62"  # Record.log = 12
_CHUNK_STREAM = b"\x0a"  # LogChunk.stream = 1
_CHUNK_DATA = b"\x12"  # LogChunk.data = 2
_CHUNK_PARTIAL = b"\x30\x01"  # LogChunk.partial_tail = 6, true


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def string_field(tag: bytes, text: str) -> bytes:
    raw = text.encode()
    return tag + varint(len(raw)) + raw if raw else b""


class BatchBuilder:
    """Records of one stream, appended as byte parts; ``build()`` joins them once."""

    def __init__(self, stream_id: str) -> None:
        self.parts: list[bytes] = [string_field(_BATCH_STREAM_ID, stream_id)]
        self.records = 0

    def add_log(self, seq: int, time_ns: int, run_id: str, stream: str, data: bytes,
                partial: bool = False) -> None:
        stream_field = string_field(_CHUNK_STREAM, stream)
        data_head = _CHUNK_DATA + varint(len(data)) if data else b""
        tail = _CHUNK_PARTIAL if partial else b""
        chunk_len = len(stream_field) + len(data_head) + len(data) + len(tail)
        head = (_RECORD_SEQ + varint(seq) + _RECORD_TIME + varint(time_ns)
                + string_field(_RECORD_RUN_ID, run_id) + _RECORD_LOG + varint(chunk_len))
        record_len = len(head) + chunk_len
        self.parts += [_BATCH_RECORD + varint(record_len) + head + stream_field + data_head,
                       data, tail]
        self.records += 1

    def add_record(self, record: records_pb2.Record) -> None:
        """Any other record (a run event), through protobuf: they are small."""
        raw = record.SerializeToString()
        self.parts += [_BATCH_RECORD + varint(len(raw)), raw]
        self.records += 1

    def build(self) -> bytes:
        return b"".join(self.parts)
