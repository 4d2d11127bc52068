"""Explicit gaps in a stream (design.md invariant 3).

A stream's seqs have no holes, except where records were set aside on
purpose; then the stream carries a gap record (``SeqGap``, alone in its
batch) that says which seqs and why, and the collector stores it as the
explanation of the hole. ``gap_batch`` encodes one.
"""

from __future__ import annotations

import time

from mltrail.proto import records_pb2

MAX_REASON_CHARS = 1000


def gap_batch(stream_id: str, first_seq: int, last_seq: int, reason: str,
              records: int = 0) -> bytes:
    """An encoded Batch of one gap record for seqs ``first_seq..last_seq``."""
    gap = records_pb2.SeqGap(last_seq=last_seq, reason=reason[:MAX_REASON_CHARS],
                             records=records)
    record = records_pb2.Record(seq=first_seq, time_unix_nano=time.time_ns(), gap=gap)
    return records_pb2.Batch(stream_id=stream_id, records=[record]).SerializeToString()
