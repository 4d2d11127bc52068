"""Preparing an Ingest request for the store writer: what a write needs besides the store.

``prepare_request(raw)`` decodes an IngestRequest's bytes, validates every
batch (``validate.validate_batch``: the same checks and messages whoever
runs it) and gathers the plain scalar points per series (``ScalarRun``).
None of that depends on the store's state, so it is a pure function of the
bytes: it runs in a worker process (``prepare_pool.PreparePool``), and again
in another one if a worker dies mid-request. What does depend on the state
stays with the store's single writer: high-water marks, duplicates, the
out-of-order refusal, keys, chunks and the one transaction per request.

The result travels between processes pickled; it is compact: per batch a
few lists per series (a range for contiguous seqs), and the encoded records
of the other kinds, which are rare.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from mltrail.collector.store.base import ValidBatch
from mltrail.collector.validate import BatchRejected, validate_batch
from mltrail.proto import collector_pb2


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
    """The request of ``raw``; ``DecodeError`` if it is not an IngestRequest."""
    request = collector_pb2.IngestRequest.FromString(raw)
    prepared = PreparedRequest(request.request_id, len(request.batches))
    for position, batch in enumerate(request.batches):
        try:
            prepared.valid.append((position, validate_batch(batch)))
        except BatchRejected as exc:
            prepared.refused.append(Refusal(position, batch.stream_id, str(exc), exc.reason))
    return prepared
