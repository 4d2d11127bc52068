"""What the forwarder reports as it sends (``ForwardListener``: the agent's metrics,
bundle and SDK source subclass it) and ``ForwardTally``, a listener that counts
(``drain_spool`` and tests)."""

from __future__ import annotations

from collections.abc import Sequence

from mltrail.agent.spool import SpoolFrame


class ForwardListener:
    """What the forwarder reports; the agent's metrics subclass it. No-op here."""

    def connected(self, up: bool) -> None:
        """The stream to the collector opened (True) or broke (False)."""

    def forwarded(self, frame: SpoolFrame, acked_seq: int) -> None:
        """The collector committed ``frame`` (its stream is at ``acked_seq``)."""

    def sent(self, frames: Sequence[SpoolFrame], seconds: float) -> None:
        """A request was answered ``seconds`` after it was written."""

    def retrying(self, error: BaseException, delay: float) -> None:
        """A send failed and will be retried after ``delay`` seconds."""

    def dead_lettered(self, frame: SpoolFrame, message: str) -> None:
        """The collector refused ``frame`` for good; it is set aside."""

    def gap_sent(self, frame: SpoolFrame, reason: str) -> None:
        """The gap record that replaces dead-lettered ``frame`` was committed."""

    def gap_filled(self, stream_id: str, first_seq: int, last_seq: int) -> None:
        """Seqs the collector needed were not in the spool; a gap record says so."""

    def credentials_refused(self, message: str) -> None:
        """The collector refuses the agent's credentials; nothing is sent until fixed."""

    def credentials_accepted(self) -> None:
        """The collector accepted the agent's credentials."""


class ForwardTally(ForwardListener):
    """Counts what was forwarded (``drain_spool`` and tests)."""

    def __init__(self) -> None:
        self.records = 0
        self.batches = 0
        self.bytes = 0
        self.dead_records = 0
        self.dead_batches = 0
        self.retries = 0
        self.missing_records = 0  # needed by the collector, not in the spool (gap records)

    def forwarded(self, frame: SpoolFrame, acked_seq: int) -> None:
        self.records += frame.records
        self.batches += 1
        self.bytes += frame.batch_size

    def retrying(self, error: BaseException, delay: float) -> None:
        self.retries += 1

    def dead_lettered(self, frame: SpoolFrame, message: str) -> None:
        self.dead_records += frame.records
        self.dead_batches += 1

    def gap_filled(self, stream_id: str, first_seq: int, last_seq: int) -> None:
        self.missing_records += last_seq - first_seq + 1
