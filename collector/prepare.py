"""Preparing an Ingest request for the store writer: what a write needs besides the store.

``prepare_request(raw)`` decodes an IngestRequest's bytes, validates every
batch (``validate.validate_batch``: the same checks and messages whoever
runs it) and gathers the plain scalar points per series (``ScalarRun``).
None of that depends on the store's state, so it is a pure function of the
bytes: it runs in a worker process (``prepare_pool.PreparePool``) or, for a
small request and again if a worker dies mid-request, on the writer thread.
What does depend on the state stays with the store's single writer:
high-water marks, duplicates, the out-of-order refusal, keys, chunks and the
one transaction per request.

The result travels between processes pickled; it is compact: per batch a
few lists per series (a range for contiguous seqs), and the encoded records
of the other kinds, which are rare.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from google.protobuf.message import DecodeError

from mltrail.collector.scalar_wire import scalar_batch
from mltrail.collector.series_wire import series_batch
from mltrail.collector.store.base import ValidBatch
from mltrail.collector.validate import BatchRejected, validate_batch
from mltrail.proto import collector_pb2, records_pb2


@dataclass(frozen=True)
class Refusal:
    """A batch that failed validation: answered INVALID_ARGUMENT with ``message``."""

    position: int  # in the request
    stream_id: str
    message: str
    reason: str  # the rejected-batches counter's label


@dataclass
class PreparedRequest:
    """An IngestRequest validated and ready for ``Store.write_batch``."""

    request_id: int
    size: int  # batches in the request: one result each, in request order
    valid: list[tuple[int, ValidBatch]] = field(default_factory=list)  # (position, batch)
    refused: list[Refusal] = field(default_factory=list)

    def batches(self, workspace: str) -> list[ValidBatch]:
        """The valid batches, stamped with the workspace of the caller's credentials
        (checked when the request reaches the writer, not when it was prepared)."""
        return [replace(batch, workspace=workspace) for _, batch in self.valid]


def prepare_request(raw: bytes) -> PreparedRequest:
    """The request of ``raw``; ``DecodeError`` if it is not an IngestRequest. Batches of
    plain scalar numbers are read from their bytes (``scalar_wire``), the others
    through protobuf; both give the same batches and refusals."""
    layout = _layout(raw)
    if layout is None:
        return _prepared(collector_pb2.IngestRequest.FromString(raw))
    request_id, spans = layout
    prepared = PreparedRequest(request_id, len(spans))
    for position, (start, end) in enumerate(spans):
        data = raw[start:end]
        fast = _scalar_batch(data)
        if fast is not None:
            prepared.valid.append((position, fast))
            continue
        try:
            batch = records_pb2.Batch.FromString(data)
        except DecodeError:
            collector_pb2.IngestRequest.FromString(raw)  # raises, as it always did
            raise
        _add(prepared, position, batch)
    return prepared


def _prepared(request: collector_pb2.IngestRequest) -> PreparedRequest:
    prepared = PreparedRequest(request.request_id, len(request.batches))
    for position, batch in enumerate(request.batches):
        _add(prepared, position, batch)
    return prepared


def _add(prepared: PreparedRequest, position: int, batch: records_pb2.Batch) -> None:
    try:
        prepared.valid.append((position, validate_batch(batch)))
    except BatchRejected as exc:
        prepared.refused.append(Refusal(position, batch.stream_id, str(exc), exc.reason))


def _scalar_batch(data: bytes) -> ValidBatch | None:
    """``scalar_wire.scalar_batch`` or ``series_wire.series_batch`` of a batch whose
    stream_id comes first, as serializers write it (None: the general path)."""
    if len(data) < 2 or data[0] != 0x0A:
        return None
    length, start = _read_varint(data, 1)
    if length is None or start + length > len(data):
        return None
    return (scalar_batch(data, start, start + length)
            or series_batch(data, start, start + length))


def _layout(raw: bytes) -> tuple[int, list[tuple[int, int]]] | None:
    """The request id and where each batch's bytes are, when the request holds nothing
    but those two fields (None: let protobuf read it)."""
    request_id, spans, pos = 0, [], 0
    while pos < len(raw):
        tag = raw[pos]
        value, pos = _read_varint(raw, pos + 1)
        if value is None:
            return None
        if tag == 0x08:
            request_id = value
        elif tag == 0x12 and pos + value <= len(raw):
            spans.append((pos, pos + value))
            pos += value
        else:
            return None
    return request_id, spans


def _read_varint(data: bytes, pos: int) -> tuple[int | None, int]:
    number = shift = 0
    for index in range(pos, min(pos + 10, len(data))):
        byte = data[index]
        number |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (number if number < 2**64 else None), index + 1
        shift += 7
    return None, pos
