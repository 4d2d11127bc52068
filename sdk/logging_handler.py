"""``mltrail.LogHandler``: Python logging records as ``LogChunk``s of a run.

Each record becomes one line in the run's stream ``"log"`` with its level,
logger name and time, sent through the run's queue like a metric (so it
never waits on the network). The handler never raises into the caller: a
formatting error goes to ``logging``'s own ``handleError``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from mltrail.pipeline.values import LOG
from mltrail.proto import records_pb2

if TYPE_CHECKING:
    from mltrail.run import Run

# mltrail's own records (an unreachable agent, the offline spool) and gRPC's
# would loop back into the queue they are about.
_OWN_LOGGERS = ("mltrail", "grpc")


class LogHandler(logging.Handler):
    """Send Python logging records to ``run`` as log lines of stream ``stream``."""

    def __init__(self, run: Run, level: int = logging.NOTSET, stream: str = "log") -> None:
        super().__init__(level)
        self.run = run
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(_OWN_LOGGERS):
            return
        try:
            line = self.format(record).replace("\n", "\n  ") + "\n"
            chunk = records_pb2.LogChunk(
                stream=self.stream, data=line.encode("utf-8", "replace"),
                level=record.levelname, logger=record.name)
            time_ns = int(record.created * 1_000_000_000)
            self.run._enqueue((LOG, self.run.id, time_ns, chunk))
        except Exception:
            self.handleError(record)
