"""The agent's self-metrics (its own registry) and its health.

Counters the spool keeps as plain ints are exported by a collector that
reads them at scrape time, so the spool stays free of Prometheus.
``/healthz`` turns unhealthy when sends have failed for longer than
``unhealthy_after`` seconds (a collector down for a minute is worth paging
on; a reconnect is not), and at once while the collector refuses the
agent's credentials (a wrong token does not fix itself).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from mltrail.agent.forward_listener import ForwardListener
from mltrail.agent.spool import Spool, SpoolFrame


class _SpoolCollector(Collector):
    def __init__(self, spool: Spool, missing: Callable[[], int]) -> None:
        self._spool = spool
        self._missing = missing

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        spool = self._spool
        c = spool.counters
        dropped = CounterMetricFamily(
            "mltrail_agent_dropped_records", "Records dropped, by reason", labels=["reason"]
        )
        dropped.add_metric(["spool_full"], c.dropped_records)
        dropped.add_metric(["dead_letter"], c.dead_letter_records)
        dropped.add_metric(["not_in_spool"], self._missing())
        yield dropped
        yield CounterMetricFamily("mltrail_agent_dropped_batches",
                                  "Batches dropped by drop_newest", value=c.dropped_batches)
        yield CounterMetricFamily("mltrail_agent_spool_cut_bytes",
                                  "Corrupt or torn spool bytes cut", value=c.cut_bytes)
        yield CounterMetricFamily("mltrail_agent_spool_cut_records",
                                  "Records in the corrupt or torn spool bytes cut",
                                  value=c.cut_records)
        yield CounterMetricFamily("mltrail_agent_spool_corrupt_frames",
                                  "Corrupt frames skipped", value=c.corrupt_frames)
        yield CounterMetricFamily("mltrail_agent_spool_disk_full_errors",
                                  "Appends refused: disk full", value=c.disk_full_errors)
        yield CounterMetricFamily("mltrail_agent_spool_blocked_waits",
                                  "Waits of appenders on a full spool", value=c.blocked_appends)
        yield GaugeMetricFamily("mltrail_agent_spool_disk_full",
                                "1 while the spool's disk refuses writes (senders keep their "
                                "batches and retry)", value=1 if spool.disk_full else 0)
        yield CounterMetricFamily("mltrail_agent_spool_ledger_errors",
                                  "Ledger writes that failed (the ledger lags)",
                                  value=c.ledger_errors)
        yield GaugeMetricFamily("mltrail_agent_spool_bytes", "Bytes in spool segments",
                                value=spool.bytes)
        yield GaugeMetricFamily("mltrail_agent_spool_pending_bytes",
                                "Spooled bytes the collector has not acknowledged",
                                value=spool.pending_bytes)
        yield GaugeMetricFamily("mltrail_agent_spool_segments", "Spool segment files",
                                value=spool.segments)


class AgentMetrics(ForwardListener):
    """Prometheus metrics of one agent; also the forwarder's listener."""

    def __init__(self, spool: Spool, unhealthy_after: float = 60.0) -> None:
        self.registry = CollectorRegistry()
        self.unhealthy_after = unhealthy_after
        r = self.registry
        self.received_records = Counter("mltrail_agent_received_records", "Records received",
                                        ["source"], registry=r)
        self.received_bytes = Counter("mltrail_agent_received_bytes", "Batch bytes received",
                                      ["source"], registry=r)
        self.refused = Counter("mltrail_agent_refused_batches",
                               "Appends refused (bad request, disk full)", ["reason"], registry=r)
        self.bad_requests = Counter("mltrail_agent_bad_requests",
                                    "gRPC requests refused: their bytes do not decode as the "
                                    "method's message", ["method"], registry=r)
        self.sent_records = Counter("mltrail_agent_sent_records",
                                    "Records the collector acknowledged", registry=r)
        self.sent_bytes = Counter("mltrail_agent_sent_bytes", "Batch bytes acknowledged",
                                  registry=r)
        self.retries = Counter("mltrail_agent_retries", "Failed sends that will be retried",
                               registry=r)
        self.dead_records = Counter("mltrail_agent_dead_lettered_records",
                                    "Records the collector refused for good (kept in dead/)",
                                    registry=r)
        self.dead_batches = Counter("mltrail_agent_dead_lettered_batches",
                                    "Batches the collector refused for good", registry=r)
        self.send_latency = Histogram(
            "mltrail_agent_send_latency_seconds", "From request sent to collector ack",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=r)
        self.runs_failed = Counter("mltrail_agent_runs_failed_on_exit",
                                   "Runs recorded as failed because their SDK process exited "
                                   "without ending them", registry=r)
        self.connected_gauge = Gauge("mltrail_agent_collector_connected",
                                     "1 while the ingest stream is open", registry=r)
        self.auth_refusals = Counter("mltrail_agent_auth_refusals",
                                     "Sessions the collector refused for the credentials",
                                     registry=r)
        self._failing_since: float | None = None
        self._refused: str | None = None
        self._missing_records = 0
        r.register(_SpoolCollector(spool, lambda: self._missing_records))
        self.is_connected = False

    # ---- receiver --------------------------------------------------------

    def received(self, records: int, size: int, source: str = "sdk") -> None:
        self.received_records.labels(source).inc(records)
        self.received_bytes.labels(source).inc(size)

    def refused_batch(self, reason: str) -> None:
        self.refused.labels(reason).inc()

    def bad_request(self, method: str) -> None:
        self.bad_requests.labels(method).inc()

    # ---- ForwardListener -------------------------------------------------

    def connected(self, up: bool) -> None:
        self.connected_gauge.set(1 if up else 0)
        self.is_connected = up
        if up:
            self._failing_since = None
        elif self._failing_since is None:
            self._failing_since = time.monotonic()

    def forwarded(self, frame: SpoolFrame, acked_seq: int) -> None:
        self.sent_records.inc(frame.records)
        self.sent_bytes.inc(frame.batch_size)
        self._failing_since = None
        self._refused = None

    def sent(self, frames: Sequence[SpoolFrame], seconds: float) -> None:
        self.send_latency.observe(seconds)

    def retrying(self, error: BaseException, delay: float) -> None:
        self.retries.inc()
        if self._failing_since is None:
            self._failing_since = time.monotonic()

    def dead_lettered(self, frame: SpoolFrame, message: str) -> None:
        self.dead_records.inc(frame.records)
        self.dead_batches.inc()

    def gap_filled(self, stream_id: str, first_seq: int, last_seq: int) -> None:
        self._missing_records += last_seq - first_seq + 1

    def credentials_refused(self, message: str) -> None:
        self.auth_refusals.inc()
        self._refused = message
        if self._failing_since is None:
            self._failing_since = time.monotonic()

    def credentials_accepted(self) -> None:
        self._refused = None

    # ---- health ------------------------------------------------------------

    def health(self) -> tuple[bool, str]:
        if self._refused is not None:
            return False, (f"the collector refuses this agent's credentials ({self._refused}); "
                           "the spool keeps every record")
        since = self._failing_since
        if since is not None and time.monotonic() - since > self.unhealthy_after:
            return False, f"sends to the collector have failed for {time.monotonic() - since:.0f}s"
        return True, "ok"
