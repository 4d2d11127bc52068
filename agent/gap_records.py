"""What a request carries in place of seqs a stream cannot send: gap records.

A frame set aside as a dead letter goes out as a gap record for its seqs (why it
was set aside), and seqs the collector needs that are not in the spool (cut from
a damaged spool, lost before it) go out as a gap record before the frame that
follows them, so that every hole in a stream's seqs is explained in the store.
"""

from __future__ import annotations

from mltrail.agent.spool import Position, Spool, SpoolFrame
from mltrail.common.gaps import gap_batch


def request_parts(spool: Spool, fills: dict[Position, int], frames: list[SpoolFrame]
                  ) -> tuple[list[SpoolFrame], list[bytes], dict[int, str]]:
    """Headers and batches to send; gap records where seqs are missing or set aside.

    ``fills``: frame start -> the seq its stream needs first (taken from it once
    sent); the dict that comes back maps an index in the headers to the gap's reason.
    """
    headers: list[SpoolFrame] = []
    batches: list[bytes] = []
    gaps: dict[int, str] = {}
    head = frames[0]
    expected = fills.pop(head.start, None) if fills else None
    if expected is not None:  # an empty header at the frame's start: acks nothing
        missing = (f"not in the agent's spool {spool.directory} when the collector "
                   "needed them (cut from a damaged spool, or lost before it)")
        gaps[0] = missing
        headers.append(SpoolFrame(head.start, head.start, head.stream_id, expected,
                                  head.first_seq - 1, False, b""))
        batches.append(gap_batch(head.stream_id, expected, head.first_seq - 1, missing,
                                 head.first_seq - expected))
    dead = spool.dead
    for frame in frames:
        reason = dead.get(frame.start) if dead else None
        if reason is None:
            batches.append(frame.batch)
        else:
            gaps[len(headers)] = reason
            batches.append(gap_batch(frame.stream_id, frame.first_seq, frame.last_seq,
                                     f"set aside as a dead letter: {reason}", frame.records))
        headers.append(frame.without_batch())
    return headers, batches, gaps
