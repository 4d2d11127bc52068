"""A collector and an agent as processes, with the runs of ``populate`` logged through them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent_client import agent_service
from tests.procs import Service, collector_service

ROOT = Path(__file__).resolve().parents[2]


class Site:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.collector = collector_service(tmp)
        self.agent: Service | None = None
        self.runs: dict[str, Any] = {}

    def start(self) -> Site:
        self.collector.start()
        self.agent = agent_service(self.tmp, self.collector.grpc).start()
        return self

    @property
    def url(self) -> str:
        return f"http://{self.collector.http}"

    @property
    def env(self) -> dict[str, str]:
        assert self.agent is not None
        return {**os.environ, "MLTRAIL_AGENT": str(self.tmp / "agent.sock"),
                "MLTRAIL_HOME": str(self.tmp / "home"), "PYTHONPATH": str(ROOT)}

    def populate(self) -> dict[str, Any]:
        out = self.tmp / "runs.json"
        done = subprocess.run([sys.executable, "-m", "tests.ui.populate", str(out)],
                              env=self.env, cwd=self.tmp, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr
        self.runs = json.loads(out.read_text())
        ids = {v["run_id"] for v in self.runs.values()} | {
            v["child"] for v in self.runs.values() if "child" in v}
        self.wait_delivered(ids, self.runs["long"]["run_id"], "long_loss",
                            self.runs["long"]["count"])
        return self.runs

    def api(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}") as answer:
            return json.load(answer)

    def wait_delivered(self, ids: set[str], run_id: str, metric: str, count: int,
                       timeout: float = 120) -> None:
        """Until the agent has forwarded everything (complete() waits for the agent, not
        for the collector): every run is there and ended, the long one with every point."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                found = {m["name"]: m for m in self.api(f"runs/{run_id}/metrics")["metrics"]}
                runs = self.api("runs?limit=1000")["runs"]
            except urllib.error.HTTPError as exc:  # the run not there yet
                exc.close()
                found, runs = {}, []
            ended = {r["run_id"] for r in runs if r["status"] != "Running"}
            if found.get(metric, {}).get("count") == count and ids <= ended:
                return
            time.sleep(0.1)
        raise AssertionError(f"the runs did not reach the collector in {timeout} s")

    def stop(self) -> None:
        if self.agent is not None:
            self.agent.stop()
        self.collector.stop()


@pytest.fixture(scope="module", name="site")
def site_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A running Site with the populated runs, shared by a test module."""
    running = Site(tmp_path_factory.mktemp("site")).start()
    running.populate()
    yield running
    running.stop()
