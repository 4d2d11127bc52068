"""What the Query service answers, as plain typed Python values.

``RunInfo``, ``RunError``, ``LogLine`` and ``ArtifactInfo`` are built from the
mltrail.v1 messages by ``from_pb``; statuses use Azure ML v1's names
(Running, Completed, Failed, Canceled; NotStarted before a run's start record).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from mltrail.proto import collector_pb2, records_pb2

# Azure ML v1 status names, by mltrail.v1.RunStatus number.
STATUS_NAMES = {
    records_pb2.RUN_STATUS_UNSPECIFIED: "NotStarted",
    records_pb2.RUNNING: "Running",
    records_pb2.COMPLETED: "Completed",
    records_pb2.FAILED: "Failed",
    records_pb2.CANCELED: "Canceled",
}
TERMINAL_STATUSES = frozenset({"Completed", "Failed", "Canceled"})


def status_name(status: int) -> str:
    return STATUS_NAMES.get(status, "Unknown")


def status_number(status: str | int) -> int:
    """A RunStatus number from a name (``completed``, ``Completed``, ``COMPLETED``) or number."""
    if isinstance(status, int):
        return status
    wanted = status.strip().lower()
    for number, name in STATUS_NAMES.items():
        if name.lower() == wanted or records_pb2.RunStatus.Name(number).lower() == wanted:
            return number
    choices = ", ".join(n for n in STATUS_NAMES.values() if n != "NotStarted")
    raise ValueError(f"unknown run status {status!r}; use one of {choices}")


@dataclass(frozen=True)
class RunError:
    code: str
    message: str
    type: str = ""
    traceback: str = ""
    exit_code: int = 0

    def summary(self) -> str:
        """One line: ``ValueError: boom (UserError, exit code 1)``."""
        head = f"{self.type}: {self.message}" if self.type else self.message
        exit_code = f"exit code {self.exit_code}" if self.exit_code else ""
        extra = [p for p in (self.code, exit_code) if p]
        first = (head.strip().splitlines() or [""])[0] or "no error message"
        return f"{first} ({', '.join(extra)})" if extra else first


@dataclass(frozen=True)
class MetricSummary:
    """A metric's numeric scalar values in short: the latest, min, max and how many."""

    latest: float
    min: float
    max: float
    count: int

    @classmethod
    def from_pb(cls, pb: collector_pb2.MetricSummary) -> MetricSummary:
        nan = float("nan")
        empty = pb.min > pb.max  # every value was NaN
        return cls(latest=pb.latest, min=nan if empty else pb.min, max=nan if empty else pb.max,
                   count=pb.count)


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    experiment: str
    display_name: str
    status: str
    start_time_unix_nano: int
    end_time_unix_nano: int
    tags: dict[str, str]
    properties: dict[str, str]
    parent_run_id: str
    child_run_ids: list[str]
    error: RunError | None
    run_type: str
    log_lines: int
    metric_records: int
    artifacts: int
    # properties mltrail itself set ("mltrail.environment"), apart from the user's, as
    # Azure ML v1 keeps its "azureml.*" ones
    system_properties: dict[str, str] = dataclasses.field(default_factory=dict)
    # Latest, min and max of numeric scalar metrics: every one from get_run, the ones
    # named by columns, where or order_by from list_runs.
    metrics: dict[str, MetricSummary] = dataclasses.field(default_factory=dict)
    last_delivery_unix_nano: int = 0  # the collector last stored a record of the run

    @classmethod
    def from_pb(cls, pb: collector_pb2.RunInfo) -> RunInfo:
        err = pb.error if pb.HasField("error") else None
        return cls(
            run_id=pb.run_id, experiment=pb.experiment, display_name=pb.display_name,
            status=status_name(pb.status),
            start_time_unix_nano=pb.start_time_unix_nano,
            end_time_unix_nano=pb.end_time_unix_nano,
            tags=dict(pb.tags), properties=user_properties(pb.properties),
            system_properties=system_properties(pb.properties),
            parent_run_id=pb.parent_run_id, child_run_ids=list(pb.child_run_ids),
            error=_run_error(err), run_type=pb.run_type,
            log_lines=pb.log_lines, metric_records=pb.metric_records, artifacts=pb.artifacts,
            metrics={k: MetricSummary.from_pb(v) for k, v in sorted(pb.metrics.items())},
            last_delivery_unix_nano=pb.last_delivery_unix_nano,
        )

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SYSTEM_PREFIX = "mltrail."


def user_properties(properties: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in properties.items() if not k.startswith(SYSTEM_PREFIX)}


def system_properties(properties: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in properties.items() if k.startswith(SYSTEM_PREFIX)}


def _run_error(pb: records_pb2.ErrorDetails | None) -> RunError | None:
    if pb is None or not (pb.code or pb.message or pb.type or pb.traceback or pb.exit_code):
        return None
    return RunError(code=pb.code, message=pb.message, type=pb.type,
                    traceback=pb.traceback, exit_code=pb.exit_code)


class LogLine(NamedTuple):
    """One line; a NamedTuple because a follow of millions of lines builds one per line."""

    stream: str
    line: int
    time_unix_nano: int
    text: str
    level: str = ""
    logger: str = ""

    @classmethod
    def from_pb(cls, pb: collector_pb2.LogLine) -> LogLine:
        return cls(pb.stream, pb.line, pb.time_unix_nano, pb.text, pb.level, pb.logger)


@dataclass(frozen=True)
class ArtifactInfo:
    path: str
    size: int
    sha256: str
    content_type: str = ""
    time_unix_nano: int = 0

    @classmethod
    def from_pb(cls, pb: collector_pb2.ArtifactInfo) -> ArtifactInfo:
        return cls(path=pb.path, size=pb.size, sha256=pb.sha256,
                   content_type=pb.content_type, time_unix_nano=pb.time_unix_nano)
