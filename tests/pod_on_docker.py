"""A pod spec run on Docker the way the kubelet runs it (no cluster is reachable here).

- One network namespace for the "cluster": a pause container with ``--network none``;
  every container joins it, and ``/etc/hosts`` maps Service names to 127.0.0.1, so
  ``mltrail-collector:7431`` reaches the collector pod's container as a Service would.
- Volumes are host directories: ``emptyDir`` per pod, ``persistentVolumeClaim`` by claim
  name (shared by the pods that name it), owned by the pod's ``fsGroup`` with the setgid
  bit, as the kubelet prepares them; ``subPath``/``subPathExpr`` are expanded;
  ``hostPath`` maps to a test directory, ``configMap`` to its data written as files.
- The pod's and container's securityContext become ``--user``, ``--group-add``,
  ``--read-only``, ``--cap-drop`` and ``no-new-privileges``.
- Init containers with ``restartPolicy: Always`` (native sidecars) start first; the next
  container starts once the sidecar's ``startupProbe`` passes. Probes run as the kubelet
  would ask them (httpGet, grpc), from inside the pod with ``mltrail health``.
- ``finish()`` waits for the main containers, then stops the sidecars with SIGTERM and
  ``terminationGracePeriodSeconds`` before SIGKILL (``docker stop -t``).
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests import k8s_manifests as k8s
from tests.deploy_env import docker


@dataclass
class Cluster:
    """The shared network namespace and the claims' directories."""

    workdir: Path
    pause_image: str
    services: tuple[str, ...] = ("mltrail-collector",)
    label: str = field(default_factory=lambda: f"mltrail-kubelet-{uuid.uuid4().hex[:8]}")
    sandbox: str = ""
    containers: list[str] = field(default_factory=list)

    def start(self) -> Cluster:
        hosts = self.workdir / "hosts"
        hosts.write_text("127.0.0.1 localhost " + " ".join(self.services) + "\n")
        hosts.chmod(0o644)
        self.sandbox = docker("run", "-d", "--network", "none", "--label", self.label,
                              "--name", f"{self.label}-pause", self.pause_image,
                              "sleep", "86400").stdout.strip()
        self.containers.append(self.sandbox)
        return self

    def claim(self, name: str) -> Path:
        return self.workdir / "claims" / name

    def cleanup(self) -> None:
        for container in reversed(self.containers):
            docker("rm", "-f", "-v", container, check=False)


@dataclass
class DockerPod:
    cluster: Cluster
    name: str
    spec: dict[str, Any]
    fields: dict[str, str]
    image_map: dict[str, str]
    host_paths: dict[str, Path] = field(default_factory=dict)  # hostPath -> test directory
    config_maps: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> data
    started: dict[str, str] = field(default_factory=dict)

    @property
    def grace(self) -> int:
        return int(self.spec.get("terminationGracePeriodSeconds", 30))

    def run(self) -> None:
        """Start the pod: sidecars in order (each once its startup probe passes), then
        the containers."""
        for container in self.spec.get("initContainers") or []:
            assert container.get("restartPolicy") == "Always", "only sidecars are emulated"
            self.start_container(container)
            self.probe(container, "startupProbe")
        for container in self.spec["containers"]:
            self.start_container(container)

    def start_container(self, container: dict[str, Any]) -> str:
        env = k8s.env_of(container, self.fields)
        line = k8s.command_line(container, env)
        args = ["run", "-d", "--name", f"{self.name}-{container['name']}",
                "--label", self.cluster.label, "--network", f"container:{self.cluster.sandbox}",
                "-v", f"{self.cluster.workdir / 'hosts'}:/etc/hosts:ro",
                *self._security(container), *self._mounts(container, env)]
        for key, value in env.items():
            args += ["-e", f"{key}={value}"]
        image = self.image_map[container["image"]]
        if "command" in container:
            args += ["--entrypoint", line[0], image, *line[1:]]
        else:
            args += [image, *line[1:]]
        container_id = docker(*args).stdout.strip()
        self.cluster.containers.append(container_id)
        self.started[container["name"]] = container_id
        return container_id

    def _security(self, container: dict[str, Any]) -> list[str]:
        pod = self.spec.get("securityContext") or {}
        own = container.get("securityContext") or {}
        user, group = own.get("runAsUser", pod.get("runAsUser")), pod.get("runAsGroup")
        out = []
        if user is not None:
            out += ["--user", f"{user}:{group if group is not None else user}"]
        if pod.get("fsGroup") is not None:
            out += ["--group-add", str(pod["fsGroup"])]
        if own.get("readOnlyRootFilesystem"):
            out.append("--read-only")
        for cap in (own.get("capabilities") or {}).get("drop") or []:
            out += ["--cap-drop", cap]
        if own.get("allowPrivilegeEscalation") is False:
            out += ["--security-opt", "no-new-privileges"]
        return out

    def _mounts(self, container: dict[str, Any], env: dict[str, str]) -> list[str]:
        out = []
        volumes = {v["name"]: v for v in self.spec.get("volumes") or []}
        for mount in container.get("volumeMounts") or []:
            source = self._volume_dir(volumes[mount["name"]])
            sub = mount.get("subPath") or k8s.expand(mount.get("subPathExpr", ""), env)
            if sub:
                source = source / sub
            self._prepare(source)
            out += ["-v", f"{source}:{mount['mountPath']}{':ro' if mount.get('readOnly') else ''}"]
        return out

    def _volume_dir(self, volume: dict[str, Any]) -> Path:
        if "emptyDir" in volume:
            return self.cluster.workdir / "pods" / self.name / volume["name"]
        if "persistentVolumeClaim" in volume:
            return self.cluster.claim(volume["persistentVolumeClaim"]["claimName"])
        if "hostPath" in volume:
            return self.host_paths[volume["hostPath"]["path"]]
        if "configMap" in volume:
            directory = self.cluster.workdir / "pods" / self.name / volume["name"]
            directory.mkdir(parents=True, exist_ok=True)
            for key, text in self.config_maps[volume["configMap"]["name"]].items():
                (directory / key).write_text(text)
                (directory / key).chmod(0o644)
            return directory
        raise AssertionError(f"volume kind not emulated: {volume}")

    def _prepare(self, path: Path) -> None:
        """Owned by the pod's fsGroup, group-writable, setgid (what the kubelet does)."""
        path.mkdir(parents=True, exist_ok=True)
        group = (self.spec.get("securityContext") or {}).get("fsGroup")
        if group is not None:
            os.chown(path, 0, int(group))
            path.chmod(0o2775)

    def probe(self, container: dict[str, Any], kind: str) -> None:
        """Until the probe passes, within the time the kubelet gives it (failureThreshold
        periods); asked more often than every period, so a pass is seen when it comes."""
        probe = container[kind]
        period = float(probe.get("periodSeconds", 10))
        attempts = int(probe.get("failureThreshold", 3))
        address = self._probe_address(container, probe)
        deadline = time.monotonic() + attempts * period
        last = ""
        while True:
            done = docker("exec", self.started[container["name"]], "mltrail", "health",
                          *address, "--timeout", str(probe.get("timeoutSeconds", 1) + 4),
                          check=False)
            if done.returncode == 0:
                return
            last = done.stdout + done.stderr
            if "is not running" in last:
                raise AssertionError(f"{container['name']} exited before its {kind} passed:\n"
                                     f"{self.logs(container['name'])}")
            if time.monotonic() > deadline:
                break
            time.sleep(min(period, 0.5))
        raise AssertionError(f"{kind} of {container['name']} failed for {attempts} periods of "
                             f"{period:g} s: {last}")

    @staticmethod
    def _probe_address(container: dict[str, Any], probe: dict[str, Any]) -> list[str]:
        if "httpGet" in probe:
            port = k8s.port_number(container, probe["httpGet"]["port"])
            path = probe["httpGet"]["path"]
            return [f"http://127.0.0.1:{port}{path}"]
        grpc = probe["grpc"]
        service = grpc.get("service", "")
        return [f"127.0.0.1:{grpc['port']}", *(["--liveness"] if service == "liveness" else [])]

    def wait(self, name: str, timeout: float = 300) -> int:
        return int(docker("wait", self.started[name], timeout=timeout).stdout.strip())

    def finish(self, timeout: float = 300) -> dict[str, int]:
        """Wait for the containers, then SIGTERM the sidecars (reverse order) with the
        grace period; every container's exit code."""
        codes = {c["name"]: self.wait(c["name"], timeout) for c in self.spec["containers"]}
        for container in reversed(self.spec.get("initContainers") or []):
            codes[container["name"]] = self.stop(container["name"])
        return codes

    def stop(self, name: str) -> int:
        """SIGTERM, SIGKILL after the grace period; the exit code."""
        cid = self.started[name]
        docker("stop", "--time", str(self.grace), cid, timeout=self.grace + 60)
        return int(docker("inspect", "--format", "{{.State.ExitCode}}", cid).stdout.strip())

    def logs(self, name: str) -> str:
        done = docker("logs", self.started[name], check=False)
        return (done.stdout + done.stderr)[-6000:]
