"""deploy/kubernetes: kustomize renders every base, the manifests validate against the
Kubernetes 1.29 and 1.33 schemas offline (kubernetes-validate), and what no schema can
check holds: the agent is a native sidecar, the socket is shared, probes and scrape
annotations point at ports the processes listen on, every command parses with mltrail's
own CLI, and the dashboard asks for metrics the processes export."""

from __future__ import annotations

import json
import re
import time
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from mltrail.agent.sources.config import parse_sources
from mltrail.cli import build_parser
from tests import k8s_manifests as k8s
from tests.conftest import require
from tests.procs import Service

VERSIONS = ("1.29.0", "1.33.0")
FIELDS = {"metadata.name": "mltrail-train-0-abcde",
          "metadata.labels['batch.kubernetes.io/job-name']": "mltrail-train",
          "metadata.annotations['batch.kubernetes.io/job-completion-index']": "0"}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    require(k8s.kubectl() is not None, "kubectl (for kubectl kustomize)")
    return {base: k8s.render(base) for base in k8s.BASES}


def workloads(rendered: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [d for docs in rendered.values() for d in docs
            if d["kind"] in ("Deployment", "Job", "DaemonSet")]


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = k8s.pod_spec(workload)
    return [*(spec.get("initContainers") or []), *spec["containers"]]


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_validates_against_the_schema(
        rendered: dict[str, list[dict[str, Any]]], version: str) -> None:
    assert all(rendered.values())
    assert not k8s.schema_errors(rendered, version)
    # The validator is not vacuous: a misspelt field is refused.
    job = json.loads(json.dumps(k8s.one(rendered["training-job"], "Job")))
    job["spec"]["template"]["spec"]["initContainers"][0]["restartPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, version, strict=True)


def test_the_agent_is_a_native_sidecar_sharing_its_socket(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    job = k8s.one(rendered["training-job"], "Job")
    spec = k8s.pod_spec(job)
    assert spec["restartPolicy"] == "Never"
    [agent] = spec["initContainers"]
    [trainer] = spec["containers"]
    assert agent.get("restartPolicy") == "Always"  # native sidecar: starts first, outlives
    assert "startupProbe" in agent  # the trainer starts once the agent listens
    agent_env, trainer_env = k8s.env_of(agent, FIELDS), k8s.env_of(trainer, FIELDS)
    args = k8s.mltrail_args(agent, agent_env)
    assert args[0] == "agent"
    socket = k8s.flag(args, "--socket")
    assert socket is not None and trainer_env["MLTRAIL_AGENT"] == socket
    [volume] = [v for v in spec["volumes"] if "emptyDir" in v and
                k8s.mount_path(agent, v["name"]) == str(Path(socket).parent)]
    assert k8s.mount_path(trainer, volume["name"]) == str(Path(socket).parent)
    # The spool is on a claim, one subdirectory per completion index: a retried pod
    # (same index) sends what its predecessor left.
    spool = k8s.flag(args, "--spool")
    [mount] = [m for m in agent["volumeMounts"] if m["mountPath"] == spool]
    [claim] = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    claim_name = claim["persistentVolumeClaim"]["claimName"]
    assert claim_name in [d["metadata"]["name"] for d in rendered["training-job"]
                          if d["kind"] == "PersistentVolumeClaim"]
    assert k8s.expand(mount["subPathExpr"], agent_env) == "index-0"
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["podReplacementPolicy"] == "Failed"
    # The drain fits in the grace period (with time to stop its sources and close), so
    # the agent exits on its own instead of being killed.
    drain = float(k8s.flag(args, "--drain-timeout") or 30)
    assert drain + 10 <= spec["terminationGracePeriodSeconds"]
    # The run id comes from the pod, and the trainer runs under the launcher.
    line = k8s.command_line(trainer, trainer_env)
    assert line[:2] == ["mltrail", "run"] and k8s.flag(line, "--run-id") == FIELDS["metadata.name"]


def test_probes_and_scrapes_point_at_ports_the_processes_listen_on(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    checked = 0
    for workload in workloads(rendered):
        for container in containers(workload):
            env = k8s.env_of(container, FIELDS)
            args = k8s.mltrail_args(container, env)
            if args[0] not in ("agent", "collector"):
                assert not any(p in container for p in ("livenessProbe", "readinessProbe"))
                continue
            http = int((k8s.flag(args, "--http") or "").rpartition(":")[2])
            grpc = k8s.flag(args, "--grpc")
            for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                probe = container.get(kind)
                if probe is None:
                    continue
                if "httpGet" in probe:
                    assert k8s.port_number(container, probe["httpGet"]["port"]) == http
                    assert probe["httpGet"]["path"] in ("/healthz", "/readyz")
                else:
                    assert grpc is not None and probe["grpc"]["port"] == int(
                        grpc.rpartition(":")[2]), (workload["metadata"]["name"], kind)
                checked += 1
            annotations = k8s.pod_metadata(workload).get("annotations") or {}
            if annotations.get("prometheus.io/scrape") == "true":
                assert int(annotations["prometheus.io/port"]) == http
                assert annotations["prometheus.io/path"] == "/metrics"
    assert checked >= 5


def test_every_command_parses_and_every_container_is_locked_down(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    version = tomllib.loads((k8s.ROOT / "pyproject.toml").read_text())["project"]["version"]
    parser = build_parser()
    for workload in workloads(rendered):
        spec = k8s.pod_spec(workload)
        for container in containers(workload):
            name = f"{workload['metadata']['name']}/{container['name']}"
            assert container["image"] == f"mltrail:{version}", name
            args = k8s.mltrail_args(container, k8s.env_of(container, FIELDS))
            parsed = parser.parse_args(args)  # exits (fails the test) on a bad flag
            assert parsed.func is not None, name
            if "--" in args:
                assert args[args.index("--") + 1] == "python", name
            assert container["resources"]["requests"], name
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            if workload["kind"] != "DaemonSet":  # the node agent reads root's log files
                assert spec["securityContext"]["runAsNonRoot"] is True, name
                assert spec["securityContext"]["runAsUser"] == 10001, name


def test_node_agent_config_is_a_valid_agent_config(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    config = k8s.one(rendered["cri-daemonset"], "ConfigMap")["data"]["agent.toml"]
    [source] = parse_sources(tomllib.loads(config)["sources"])
    assert source.type == "cri"
    route = re.search(source.run_id_from.removeprefix("path:"),
                      "/var/log/pods/training_mltrail-train-0-abcde_1234-5678/trainer/0.log")
    assert route is not None and route.group("run_id") == "mltrail-train-0-abcde"


def test_dashboard_and_scrape_config_name_what_the_processes_export(
        rendered: dict[str, list[dict[str, Any]]], agent: Service, collector: Service) -> None:
    from tests.agent_client import AgentClient, scalar_requests, scalar_steps

    client = AgentClient(agent.info["socket"])
    list(client.append(scalar_requests("run-dash", "s-dash", 3)))
    client.close()
    deadline = time.monotonic() + 30
    while len(scalar_steps(collector.grpc, "run-dash")) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    exported: set[str] = set()
    for svc in (agent, collector):
        with urllib.request.urlopen(f"http://{svc.http}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        exported |= set(re.findall(r"^(mltrail_[a-z_]+)", text, re.M))
        # A labelled family with no series yet is only declared: # TYPE NAME KIND
        for name, kind in re.findall(r"^# TYPE (mltrail_[a-z_]+) (\w+)", text, re.M):
            exported.add(name + "_bucket" if kind == "histogram" else name)
    configmaps = [d for d in rendered["monitoring"] if d["kind"] == "ConfigMap"]
    dashboard = json.loads(next(c for c in configmaps
                                if "grafana-dashboard.json" in c["data"])["data"]
                           ["grafana-dashboard.json"])
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["query"]["query"] for v in dashboard["templating"]["list"]
              if isinstance(v.get("query"), dict)]
    asked = {m for e in exprs for m in re.findall(r"\b(mltrail_[a-z_]+)", e)}
    assert asked and asked <= exported, sorted(asked - exported)
    scrape = yaml.safe_load(next(c for c in configmaps
                                 if "prometheus-scrape.yaml" in c["data"])["data"]
                            ["prometheus-scrape.yaml"])
    [job] = scrape["scrape_configs"]
    assert job["kubernetes_sd_configs"] == [{"role": "pod"}]
    for rule in job["relabel_configs"]:
        re.compile(rule.get("regex", ".*"))
