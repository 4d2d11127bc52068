"""ListRuns ``where``, ``order_by`` and ``columns``: runs by what they achieved.

A key names a metric (its latest numeric value: ``accuracy`` or
``metrics.accuracy``), a tag (``tags.team``) or a property
(``properties.git``). Conditions compare as numbers when both sides are
numbers, else as text; a run without the key fails every condition on it.
Sorting by a key puts runs without it last, either way; ties keep the
listing's order (newest first). The summaries come from the store's
``metric_summaries``, for the candidate runs the other filters left.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from typing import Any

from mltrail.collector.store import DEFAULT_WORKSPACE, Store
from mltrail.collector.store.base import every_run
from mltrail.common.errors import PermanentError
from mltrail.proto import collector_pb2

OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq, "==": operator.eq, "!=": operator.ne, "<": operator.lt,
    "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}
# Candidates read before filtering: every run the other filters match, up to this.
MAX_CANDIDATES = 1_000_000
DEFAULT_LIMIT = 100

Summaries = dict[str, dict[str, collector_pb2.MetricSummary]]


def wants_metrics(request: collector_pb2.ListRunsRequest) -> bool:
    return bool(request.where or request.order_by or request.columns)


def split_key(key: str) -> tuple[str, str]:
    """``("metrics" | "tags" | "properties", name)``."""
    space, dot, name = key.partition(".")
    if dot and space in ("metrics", "tags", "properties") and name:
        return space, name
    if not key.strip():
        raise PermanentError("an empty key in --where or --sort; name a metric, "
                             "tags.KEY or properties.KEY")
    return "metrics", key


def metric_names(request: collector_pb2.ListRunsRequest) -> list[str]:
    keys = [c.key for c in request.where] + [request.order_by.lstrip("-")] * bool(
        request.order_by) + list(request.columns)
    return sorted({name for space, name in map(split_key, keys) if space == "metrics"})


def check(request: collector_pb2.ListRunsRequest) -> None:
    for cond in request.where:
        if cond.op not in OPERATORS:
            raise PermanentError(f"unknown operator {cond.op!r} in --where "
                                 f"'{cond.key} {cond.op} {cond.value}'; use one of "
                                 f"{' '.join(OPERATORS)}")
        split_key(cond.key)
    if request.order_by:
        split_key(request.order_by.lstrip("-"))


def list_matching(store: Store, request: collector_pb2.ListRunsRequest,
                  workspace: str = DEFAULT_WORKSPACE) -> list[collector_pb2.RunInfo]:
    """ListRuns with metric conditions over every run of ``workspace`` (at most
    MAX_CANDIDATES) that the other filters keep (blocking: a store reader thread)."""
    check(request)
    base = collector_pb2.ListRunsRequest()
    base.CopyFrom(request)
    del base.where[:]
    base.order_by = ""
    del base.columns[:]
    runs = every_run(store, base, workspace, MAX_CANDIDATES)
    names = metric_names(request)
    summaries = store.metric_summaries([r.run_id for r in runs], names) if names else {}
    kept = [r for r in runs if all(_holds(r, summaries, c) for c in request.where)]
    if request.order_by:
        kept = _sorted(kept, summaries, request.order_by)
    kept = kept[:request.limit or DEFAULT_LIMIT]
    for run in kept:
        for name, summary in summaries.get(run.run_id, {}).items():
            run.metrics[name].CopyFrom(summary)
    return kept


def value_of(run: collector_pb2.RunInfo, summaries: Summaries, key: str) -> Any:
    space, name = split_key(key)
    if space == "metrics":
        summary = summaries.get(run.run_id, {}).get(name)
        return None if summary is None else summary.latest
    found = (run.tags if space == "tags" else run.properties).get(name)
    return None if found is None else _maybe_number(found)


def _maybe_number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def _holds(run: collector_pb2.RunInfo, summaries: Summaries,
           cond: collector_pb2.RunCondition) -> bool:
    have = value_of(run, summaries, cond.key)
    if have is None:
        return False
    want = _maybe_number(cond.value)
    if isinstance(have, float) and isinstance(want, float):
        return not math.isnan(have) and OPERATORS[cond.op](have, want)
    return bool(OPERATORS[cond.op](_text(have), _text(want)))


def _text(value: float | str) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _sorted(runs: Sequence[collector_pb2.RunInfo], summaries: Summaries, order_by: str
            ) -> list[collector_pb2.RunInfo]:
    descending = order_by.startswith("-")
    key = order_by.lstrip("-")
    values = {r.run_id: value_of(r, summaries, key) for r in runs}
    present = [r for r in runs if values[r.run_id] is not None
               and not (isinstance(values[r.run_id], float) and math.isnan(values[r.run_id]))]
    shown = {r.run_id for r in present}
    missing = [r for r in runs if r.run_id not in shown]
    numbers = all(isinstance(values[r.run_id], float) for r in present)
    present.sort(key=lambda r: values[r.run_id] if numbers else _text(values[r.run_id]),
                 reverse=descending)
    return present + missing
