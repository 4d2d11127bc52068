"""A real Prometheus server scrapes the collector's and the agent's /metrics.

Our own scrapes (urllib) prove the values; this proves the exposition is what
Prometheus itself accepts: both targets up, counters and the per-run metric
gauges queryable with their labels.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mltrail import Experiment
from tests.conftest import require
from tests.integration.test_agent_chaos import free_port
from tests.procs import Service

SCRAPE_CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: collector
    static_configs: [{{targets: ["{collector}"]}}]
  - job_name: agent
    static_configs: [{{targets: ["{agent}"]}}]
"""


@pytest.fixture
def prometheus(tmp_path: Path, collector: Service, agent: Service) -> Iterator[str]:
    binary = shutil.which("prometheus")
    require(binary is not None, "a Prometheus server (Debian package prometheus)")
    assert binary is not None
    config = tmp_path / "prometheus.yml"
    config.write_text(SCRAPE_CONFIG.format(collector=collector.http, agent=agent.http))
    address = f"127.0.0.1:{free_port()}"
    with open(tmp_path / "prometheus.log", "wb") as log:
        proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address={address}"], stdout=log, stderr=subprocess.STDOUT)
    try:
        yield address
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def query(address: str, promql: str) -> list[dict[str, Any]]:
    url = f"http://{address}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.load(response)
    except OSError:  # not listening yet
        return []
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def wait_for(address: str, promql: str, timeout: float = 60.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := query(address, promql):
            return result
        time.sleep(0.5)
    raise AssertionError(f"Prometheus never answered {promql!r} with a sample")


def test_prometheus_scrapes_the_collector_and_the_agent(
        prometheus: str, agent: Service, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    monkeypatch.setenv("MLTRAIL_AGENT", agent.info["socket"])
    monkeypatch.setenv("MLTRAIL_HOME", str(tmp_path / "home"))
    with Experiment("scraped").start_logging() as run:
        run.log("loss", 0.25)
    run.get_metrics()  # the collector holds the run before Prometheus looks

    up = wait_for(prometheus, 'count(up{job=~"collector|agent"} == 1) == 2')
    assert up[0]["value"][1] == "2"  # both targets scraped and parsed

    records = wait_for(prometheus, "sum(mltrail_collector_records_total)")
    assert float(records[0]["value"][1]) >= 3  # the run's start, the metric, its end
    sent = wait_for(prometheus, "mltrail_agent_sent_records_total > 0")
    assert sent[0]["metric"]["job"] == "agent"
    loss = wait_for(prometheus, f'mltrail_run_metric{{run="{run.id}", metric="loss"}}')
    assert loss[0]["metric"]["experiment"] == "scraped"
    assert float(loss[0]["value"][1]) == 0.25
