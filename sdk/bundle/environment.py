"""The environment a run records at its start, for its support bundle.

``capture()`` returns a JSON-ready dict: Python, platform, installed
packages, CPU and GPU model, the ``MLTRAIL_*`` settings in force (redacted)
and the agent the run's records go through. It reads only local files and
``importlib.metadata``: no subprocess, no network except the agent's own
``Info`` call on its unix socket, which fails at once when no agent listens.

The run keeps it as the property ``mltrail.environment`` (Azure ML v1 runs
carry system properties such as ``azureml.git.commit`` the same way).
``MLTRAIL_RECORD_ENVIRONMENT=0`` turns it off.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import sys
from collections.abc import Callable, Mapping
from importlib.metadata import distributions
from pathlib import Path
from typing import Any

from mltrail.common.redact import MARKER, Redactor, secret_name

PROPERTY = "mltrail.environment"
MAX_PROPERTY_CHARS = 60 * 1024  # a string value may be 64 KiB
# Variables besides MLTRAIL_* that say how a training job was set up.
_EXTRA_VARIABLES = ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "OMP_NUM_THREADS",
                    "PYTHONUNBUFFERED", "VIRTUAL_ENV", "CONDA_DEFAULT_ENV",
                    "KUBERNETES_SERVICE_HOST", "HOSTNAME")


def enabled(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return env.get("MLTRAIL_RECORD_ENVIRONMENT", "1").strip().lower() not in ("0", "false", "no")


def capture(agent_info: Callable[[], Any] | None = None,
            environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    env = os.environ if environ is None else environ
    redactor = Redactor()
    settings = {k: v for k, v in sorted(env.items())
                if k.startswith("MLTRAIL_") or k in _EXTRA_VARIABLES}
    return {
        "python": {"version": sys.version.split()[0],
                   "implementation": platform.python_implementation(),
                   "executable": sys.executable, "prefix": sys.prefix},
        "platform": {"system": platform.system(), "release": platform.release(),
                     "machine": platform.machine(), "platform": platform.platform(),
                     "hostname": platform.node()},
        "cpu": {"model": cpu_model(), "count": os.cpu_count()},
        "gpus": gpu_models(),
        "packages": installed_packages(),
        "settings": redactor.structure(settings, "environment"),
        "agent": _agent(agent_info),
        "argv": redact_argv(sys.argv, redactor),
    }


def redact_argv(argv: list[str], redactor: Redactor) -> list[str]:
    """``--password X`` and ``--api-key X``: the word after a flag with a secret name goes too
    (``--token=X`` and the value rules are the redactor's)."""
    out: list[str] = []
    hide_next = False
    for word in argv:
        if hide_next and not word.startswith("-"):
            out.append(MARKER.format(rule="secret_name"))
        else:
            out.append(redactor.text(word, "environment"))
        hide_next = word.startswith("-") and "=" not in word and secret_name(word.lstrip("-"))
    return out


def to_property(environment: dict[str, Any]) -> str:
    """Compact JSON within a property's size; packages go first when it does not fit."""
    text = json.dumps(environment, separators=(",", ":"), sort_keys=True)
    if len(text) > MAX_PROPERTY_CHARS:
        environment = {**environment, "packages": {"left_out": len(environment["packages"])}}
        text = json.dumps(environment, separators=(",", ":"), sort_keys=True)
    return text


@functools.lru_cache(maxsize=1)
def _packages() -> tuple[tuple[str, str], ...]:
    """Read once per process: a process that starts many runs pays for it once."""
    found: dict[str, str] = {}
    for dist in distributions():
        name = dist.metadata["Name"] if dist.metadata else None
        if name:
            found.setdefault(name, dist.version)
    return tuple(sorted(found.items(), key=lambda kv: kv[0].lower()))


def installed_packages() -> dict[str, str]:
    return dict(_packages())


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    try:
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Processor", "cpu model"):
                return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def gpu_models(root: Path = Path("/proc/driver/nvidia/gpus")) -> list[str]:
    """NVIDIA GPUs as the driver lists them (no nvidia-smi subprocess at run start)."""
    models = []
    try:
        for info in sorted(root.glob("*/information")):
            for line in info.read_text(encoding="utf-8", errors="replace").splitlines():
                key, _, value = line.partition(":")
                if key.strip() == "Model":
                    models.append(value.strip())
    except OSError:
        pass
    return models


def _agent(agent_info: Callable[[], Any] | None) -> dict[str, Any]:
    if agent_info is None:
        return {}
    try:
        info = agent_info()
    except Exception as exc:  # an agent that is down is recorded as such, never raised
        return {"error": str(exc).splitlines()[0][:300]}
    return {"collector": info.collector, "http": getattr(info, "http", ""),
            "version": info.version, "spool_dir": info.spool_dir}
