"""The rendered Kubernetes manifests run on Docker the way the kubelet would run them
(tests/pod_on_docker.py): the collector's pod from its Deployment (probes asked on the
ports it declares), then two pods of the training Job, each with the agent as a native
sidecar that starts first, outlives the trainer and gets SIGTERM after it.

The CRI DaemonSet's agent records a pod's console from a kubelet-shaped log file.

Pod 1 runs while the collector is down: its agent drains until its deadline, exits 0
within the grace period and leaves the records on the Job's spool claim. Pod 2 (the
Job's retry: same completion index, same spool subdirectory) delivers them with its
own run, and both runs are found complete.
"""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import deploy_env, docker_env
from tests import k8s_manifests as k8s
from tests.conftest import require
from tests.pod_on_docker import Cluster, DockerPod

pytestmark = [pytest.mark.docker, pytest.mark.slow]
DRAIN = "3"  # the test's overlay: a short drain, so the collector-down case is quick
STEP_DELAY = "0.005"  # and quick steps: the 200 of each run in 1 s, not the example's 10 s


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[Cluster, str]]:
    require(k8s.kubectl() is not None, "kubectl (for kubectl kustomize)")
    require(docker_env.ensure_engine(), "a Docker engine")
    image = deploy_env.ensure_image()
    made = Cluster(tmp_path, docker_env.ensure_image()).start()
    yield made, image
    made.cleanup()


def mltrail_json(pod: DockerPod, container: str, *args: str) -> Any:
    # As the README asks it: `kubectl exec deploy/mltrail-collector -- mltrail ...`
    done = deploy_env.docker("exec", pod.started[container], "mltrail", *args, "--json",
                             check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def job_pod(cluster: Cluster, job: dict[str, Any], image: str, name: str) -> DockerPod:
    spec = copy.deepcopy(k8s.pod_spec(job))
    [agent] = spec["initContainers"]
    agent["args"][agent["args"].index("--drain-timeout") + 1] = DRAIN
    [trainer] = spec["containers"]
    trainer["command"] += ["--delay", STEP_DELAY]
    fields = {"metadata.name": name,
              "metadata.labels['batch.kubernetes.io/job-name']": job["metadata"]["name"],
              "metadata.annotations['batch.kubernetes.io/job-completion-index']": "0"}
    return DockerPod(cluster, name, spec, fields, {agent["image"]: image})


def test_job_pods_run_as_the_kubelet_runs_them_and_a_retry_delivers_what_was_left(
        cluster: tuple[Cluster, str]) -> None:
    net, image = cluster
    collector_spec = k8s.pod_spec(k8s.one(k8s.render("collector"), "Deployment"))
    job = k8s.one(k8s.render("training-job"), "Job")
    [container] = collector_spec["containers"]
    collector = DockerPod(net, f"collector-{uuid.uuid4().hex[:6]}", collector_spec, {},
                          {container["image"]: image})
    collector.run()
    collector.probe(container, "readinessProbe")
    collector.probe(container, "livenessProbe")
    deploy_env.docker("stop", "--time", "30", collector.started["collector"])  # store down

    first = job_pod(net, job, image, f"mltrail-train-0-{uuid.uuid4().hex[:5]}")
    first.run()
    codes = first.finish()
    assert codes == {"trainer": 0, "mltrail-agent": 0}, first.logs("mltrail-agent")
    agent_log = first.logs("mltrail-agent")
    assert "stay in /var/lib/mltrail/spool for the next start" in agent_log, agent_log
    spool = net.claim("mltrail-train-spool") / "index-0"
    assert any(p.stat().st_size for p in spool.rglob("*") if p.is_file())

    deploy_env.docker("start", collector.started["collector"])
    collector.probe(container, "readinessProbe")
    second = job_pod(net, job, image, f"mltrail-train-0-{uuid.uuid4().hex[:5]}")
    second.run()
    assert second.finish() == {"trainer": 0, "mltrail-agent": 0}, second.logs("mltrail-agent")
    for pod in (first, second):
        run = mltrail_json(collector, "collector", "show", pod.name)
        assert run["status"] == "Completed", run
        assert run["tags"].get("job") == job["metadata"]["name"], run
        metrics = mltrail_json(collector, "collector", "metrics", pod.name, "--name", "loss")
        assert len(metrics["loss"]) == 200, (pod.name, len(metrics["loss"]))


def test_node_agent_records_a_pods_console_from_its_cri_log(
        cluster: tuple[Cluster, str]) -> None:
    net, image = cluster
    collector_spec = k8s.pod_spec(k8s.one(k8s.render("collector"), "Deployment"))
    [container] = collector_spec["containers"]
    collector = DockerPod(net, f"collector-{uuid.uuid4().hex[:6]}", collector_spec, {},
                          {container["image"]: image})
    collector.run()
    collector.probe(container, "readinessProbe")

    # What the kubelet leaves for a pod of namespace "training" without a sidecar.
    pod_name = f"plain-train-{uuid.uuid4().hex[:5]}"
    pods = net.workdir / "var-log-pods"
    log = pods / f"training_{pod_name}_0d1e2f" / "trainer" / "0.log"
    log.parent.mkdir(parents=True)
    stamp = "2026-12-01T09:00:00.000000000Z"
    lines = [f"{stamp} stdout F epoch {i}\n" for i in range(1, 31)]
    lines.insert(10, f"{stamp} stderr P a warning in \n")  # a piece: P, then its F
    lines.insert(11, f"{stamp} stderr F two pieces\n")
    log.write_text("".join(lines))
    log.chmod(0o640)  # root's, as the kubelet writes them

    rendered = k8s.render("cri-daemonset")
    daemonset = k8s.one(rendered, "DaemonSet")
    config = k8s.one(rendered, "ConfigMap")
    spec = k8s.pod_spec(daemonset)
    [agent] = spec["containers"]
    node = DockerPod(net, f"node-agent-{uuid.uuid4().hex[:5]}", spec, {},
                     {agent["image"]: image},
                     host_paths={"/var/log/pods": pods,
                                 "/var/lib/mltrail-node-agent": net.workdir / "node-spool"},
                     config_maps={config["metadata"]["name"]: config["data"]})
    node.run()
    node.probe(agent, "livenessProbe")
    node.probe(agent, "readinessProbe")

    def recorded() -> list[Any]:
        done = deploy_env.docker("exec", collector.started["collector"], "mltrail", "logs",
                                 pod_name, "--json", check=False)
        return [json.loads(line) for line in done.stdout.splitlines()] \
            if done.returncode == 0 else []

    deadline = time.monotonic() + 120
    while len(recorded()) < 31 and time.monotonic() < deadline:
        time.sleep(0.5)
    got = recorded()
    assert [(e["stream"], e["text"]) for e in got if e["stream"].endswith("stdout")] == [
        ("trainer/stdout", f"epoch {i}") for i in range(1, 31)], got
    assert [e["text"] for e in got if e["stream"].endswith("stderr")] == [
        "a warning in two pieces"], got
    run = mltrail_json(collector, "collector", "show", pod_name)
    assert run["properties"]["k8s.pod"] == pod_name, run
    assert run["properties"]["k8s.namespace"] == "training", run
    assert node.stop("agent") == 0, node.logs("agent")  # SIGTERM, as on a node drain
