"""deploy/kubernetes as the tests read it: rendered with ``kubectl kustomize``, and the
facts a schema cannot check (where a process listens, which socket it serves).

Containers of the mltrail image have the entrypoint ``mltrail``; their ``args``
(or a ``command`` starting with ``mltrail``) are an mltrail command line, which
``listens()`` reads with the CLI's own parser after expanding ``$(VAR)`` as the
kubelet does.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
KUBERNETES = ROOT / "deploy" / "kubernetes"
BASES = ("collector", "training-job", "cri-daemonset", "monitoring")
# Overlays whose Secrets are made from files a user provides (in overlays/*/secrets/)
OVERLAYS = ("overlays/postgres", "overlays/tls", "overlays/training-job-tls",
            "overlays/cri-daemonset-tls")
_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def kubectl() -> str | None:
    return shutil.which("kubectl")


def render(base: str, root: Path = KUBERNETES) -> list[dict[str, Any]]:
    path = kubectl()
    assert path is not None
    done = subprocess.run([path, "kustomize", str(root / base)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def schema_errors(rendered: dict[str, list[dict[str, Any]]], version: str) -> list[str]:
    """What the Kubernetes ``version`` schema refuses in every rendered document (strict:
    an unknown field is an error), one line each."""
    import kubernetes_validate

    errors = []
    for name, docs in rendered.items():
        for doc in docs:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                errors.append(f"{name} {doc['kind']}/{doc['metadata']['name']} on {version}: "
                              f"{exc.message} at {list(exc.path)}")
    return errors


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [doc] = [d for d in docs if d["kind"] == kind]
    return doc


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return dict(workload["spec"]["template"]["spec"])


def pod_metadata(workload: dict[str, Any]) -> dict[str, Any]:
    return dict(workload["spec"]["template"].get("metadata") or {})


def env_of(container: dict[str, Any], fields: dict[str, str],
           secrets: dict[str, dict[str, str]] | None = None) -> dict[str, str]:
    """The container's environment as the kubelet sets it; ``fields`` answers fieldRefs,
    ``secrets`` (``secret_data()``) secretKeyRefs."""
    env: dict[str, str] = {}
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = expand(item["value"], env)
        elif "secretKeyRef" in item["valueFrom"]:
            ref = item["valueFrom"]["secretKeyRef"]
            data = (secrets or {}).get(ref["name"])
            assert data is not None, f"{item['name']} names no Secret rendered: {ref['name']}"
            assert ref["key"] in data, f"Secret {ref['name']} has no key {ref['key']}"
            env[item["name"]] = data[ref["key"]]
        else:
            path = item["valueFrom"]["fieldRef"]["fieldPath"]
            env[item["name"]] = fields[path]
    return env


def secret_data(docs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """The rendered Secrets' data, decoded: {name: {key: text}}."""
    return {d["metadata"]["name"]: {k: base64.b64decode(v).decode()
                                    for k, v in (d.get("data") or {}).items()}
            for d in docs if d["kind"] == "Secret"}


def expand(text: str, env: dict[str, str]) -> str:
    """``$(VAR)`` as the kubelet expands it (an unknown one is left as it is)."""
    return _VAR.sub(lambda m: env.get(m.group(1), m.group(0)), text)


def command_line(container: dict[str, Any], env: dict[str, str]) -> list[str]:
    """The command the container runs in the mltrail image (entrypoint ``mltrail``)."""
    command = container.get("command") or ["mltrail"]
    args = container.get("args") or []
    return [expand(part, env) for part in [*command, *args]]


def mltrail_args(container: dict[str, Any], env: dict[str, str]) -> list[str]:
    line = command_line(container, env)
    assert line[0] == "mltrail", f"{container['name']} does not run mltrail: {line}"
    return line[1:]


def flag(args: list[str], name: str) -> str | None:
    """The value of ``--name VALUE`` or ``--name=VALUE`` in an mltrail command line."""
    for index, arg in enumerate(args):
        if arg == name and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    [number] = [p["containerPort"] for p in container.get("ports") or [] if p["name"] == port]
    return int(number)


def mount_path(container: dict[str, Any], volume: str) -> str | None:
    for mount in container.get("volumeMounts") or []:
        if mount["name"] == volume:
            return str(mount["mountPath"])
    return None
