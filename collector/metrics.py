"""The collector's Prometheus metrics, in its own CollectorRegistry.

Besides its own counters, the collector exports the latest value of each
run's numeric scalar metrics as ``mltrail_run_metric{experiment,run,metric}``.
Those series come from ``LatestValues``, a custom collector reading a small
map updated at ingest, so a finished run's series cost a dict entry, not a
Gauge registered forever. The map holds at most ``max_series`` series;
updates to series beyond it are counted in
``mltrail_run_metric_series_dropped_total``.

With tokens, a scrape sees the run series of its token's workspace only
(``scope_to`` is called by the HTTP check in the scrape's own thread; an
admin token, or no auth, sees every workspace).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

DEFAULT_MAX_SERIES = 10_000


class LatestValues(Collector):
    def __init__(self, max_series: int, dropped: Counter) -> None:
        self._max_series = max_series
        self._dropped = dropped
        self._lock = threading.Lock()
        # run_id -> (experiment, {metric name: value})
        self._runs: dict[str, tuple[str, dict[str, float]]] = {}
        self._workspaces: dict[str, str] = {}  # run_id -> workspace (absent: default)
        self._series = 0
        self._scope = threading.local()

    def scope_to(self, workspace: str | None) -> None:
        """The workspace this thread's next scrapes show (None: all)."""
        self._scope.workspace = workspace

    def update(self, latest: Mapping[tuple[str, str], tuple[str, float]],
               workspaces: Mapping[str, str] | None = None) -> None:
        dropped = 0
        with self._lock:
            self._workspaces.update(workspaces or {})
            for (run_id, name), (experiment, value) in latest.items():
                entry = self._runs.get(run_id)
                if entry is None or name not in entry[1]:
                    if self._series >= self._max_series:
                        dropped += 1  # no entry either: past the cap nothing grows
                        continue
                    self._series += 1
                if entry is None or (experiment and entry[0] != experiment):
                    entry = self._runs[run_id] = (experiment, entry[1] if entry else {})
                entry[1][name] = float(value)
        if dropped:
            self._dropped.inc(dropped)

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "mltrail_run_metric", "Latest value of a run's numeric scalar metric",
            labels=["experiment", "run", "metric"])
        scope = getattr(self._scope, "workspace", None)
        with self._lock:
            for run_id, (experiment, values) in self._runs.items():
                if scope is not None and self._workspaces.get(run_id, "default") != scope:
                    continue
                for name, value in values.items():
                    family.add_metric([experiment, run_id, name], value)
        yield family


class CollectorMetrics:
    """Every series the collector exports; one instance per collector."""

    def __init__(self, max_series: int = DEFAULT_MAX_SERIES) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.batches = Counter("mltrail_collector_batches",
                               "Batches acknowledged OK (a replay of stored records included)",
                               registry=r)
        self.records = Counter("mltrail_collector_records", "Records stored, by kind",
                               ["kind"], registry=r)
        self.duplicates = Counter("mltrail_collector_duplicates",
                                  "Records skipped as already stored", registry=r)
        self.rejected = Counter("mltrail_collector_rejected_batches",
                                "Batches refused, by reason", ["reason"], registry=r)
        self.gaps = Counter("mltrail_collector_stream_gaps",
                            "Gap records stored: seqs a sender set aside on purpose, explained",
                            registry=r)
        self.out_of_order = Counter("mltrail_collector_out_of_order_batches",
                                    "Batches refused (retryable) for starting beyond the "
                                    "stream's high-water mark + 1", registry=r)
        self.bad_requests = Counter("mltrail_collector_bad_requests",
                                    "gRPC requests refused: their bytes do not decode as the "
                                    "method's message", ["method"], registry=r)
        self.retryable = Counter("mltrail_collector_retryable_failures",
                                 "Requests answered with a retryable code", registry=r)
        self.prepare_retries = Counter("mltrail_collector_prepare_retries",
                                       "Requests prepared again because an ingest worker "
                                       "process died while preparing them", registry=r)
        self.store_seconds = Histogram("mltrail_collector_store_seconds",
                                       "Time of one store write transaction", registry=r)
        self.series_dropped = Counter("mltrail_run_metric_series_dropped",
                                      "Run metric updates not exported: series cap reached",
                                      registry=r)
        self.latest = LatestValues(max_series, self.series_dropped)
        r.register(self.latest)

    def bad_request(self, method: str) -> None:
        self.bad_requests.labels(method).inc()
