"""CRI pod logs and a log directory through a real agent (sources from agent.toml)
into a real collector: files that appear, grow and hold partial lines arrive
whole and in order, each in its stream; the pod's identity lands on the run;
/metrics reports the sources."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.request import urlopen

from mltrail.query.client import QueryClient
from tests.agent_client import agent_service
from tests.integration.test_sources_files import wait_until
from tests.procs import Service
from tests.unit.test_cri import cri

CONFIG = """
[[sources]]
type = "cri"
name = "pods"
paths = ["{pods}/*/*/*.log"]
run_id_from = "path:pods/[^_]+_(?P<run_id>[^_]+)_"

[[sources]]
type = "logdir"
name = "automl"
directory = "{logdir}"
run_id = "automl-run"
"""


def lines_of(collector: Service, run_id: str, stream: str) -> list[str]:
    with QueryClient(collector.grpc) as client:
        try:
            return [line.text for line in client.tail_logs(run_id, [stream])]
        except Exception:
            return []


def test_cri_and_logdir_files_arrive_whole_and_in_order(tmp_path: Path,
                                                        collector: Service) -> None:
    pods, logdir = tmp_path / "pods", tmp_path / "automl"
    container = pods / "ml_train-0_uid-1" / "trainer"
    container.mkdir(parents=True)
    logdir.mkdir()
    config = tmp_path / "agent.toml"
    config.write_text(CONFIG.format(pods=pods, logdir=logdir))
    agent = agent_service(tmp_path, collector.grpc, "--config", str(config)).start()
    try:
        with open(container / "0.log", "ab") as pod_log:
            for i in range(200):  # every other line arrives in two pieces
                if i % 2:
                    pod_log.write(cri("stdout", "P", f"line {i} ".encode()))
                    pod_log.flush()
                pod_log.write(cri("stdout", "F", b"end" if i % 2 else f"line {i}".encode()))
                pod_log.write(cri("stderr", "F", f"err {i}".encode()))
                pod_log.flush()
        (logdir / "child_1").mkdir()
        for name in ("driver.log", "child_1/trial.log"):  # appear, then grow
            with open(logdir / name, "a") as fh:
                for i in range(100):
                    fh.write(f"{name} {i}\n")
                    fh.flush()
                    if i % 25 == 0:
                        time.sleep(0.05)
        want_out = [f"line {i} end" if i % 2 else f"line {i}" for i in range(200)]
        assert wait_until(lambda: lines_of(collector, "train-0", "trainer/stdout") == want_out,
                          30), agent.output()
        assert lines_of(collector, "train-0", "trainer/stderr") == [f"err {i}" for i in
                                                                    range(200)]
        for name in ("driver.log", "child_1/trial.log"):
            want = [f"{name} {i}" for i in range(100)]
            assert wait_until(lambda n=name, w=want: lines_of(collector, "automl-run", n) == w,
                              30), agent.output()
        with QueryClient(collector.grpc) as client:
            props = client.get_run("train-0").properties
        assert props["k8s.pod"] == "train-0" and props["k8s.container"] == "trainer"
        metrics = _metrics(agent)
        assert 'mltrail_agent_source_files_watched{source="automl"} 2.0' in metrics
        assert 'mltrail_agent_source_lines_repaired_total{source="pods"} 100.0' in metrics
        assert 'mltrail_agent_source_lines_read_total{source="automl"} 200.0' in metrics
        assert 'mltrail_agent_received_records_total{source="pods"}' in metrics
    finally:
        agent.stop()


def _metrics(agent: Service) -> str:
    with urlopen(f"http://{agent.info['http']}/metrics", timeout=5) as response:
        return str(response.read().decode())
