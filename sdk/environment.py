"""``Environment``, ``RunConfiguration`` and ``CondaDependencies``: Azure ML v1 names.

mltrail runs a submitted script in the submitting Python (as ``mltrail run``
does), so an environment changes nothing about what runs. These classes
exist so that scripts which build them for a submit keep working, and the
definition (``to_dict()``) is recorded with the run (``get_details()
["runDefinition"]["environment"]``). Sections accept any attribute, as v1's
do (``env.python.user_managed_dependencies = True``, ``env.docker.enabled``).

Registered environments (``env.register(ws)``) are kept as JSON under
``$MLTRAIL_HOME/environments/<workspace>/``; ``Environment.get`` reads them
back, and answers v1's curated names (``AzureML-...``) with an environment
of that name.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import yaml

from mltrail.common.settings import mltrail_home
from mltrail.workspace import workspace_name

_CURATED_PREFIX = "AzureML-"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")


class Section:
    """A group of settings (``env.python``, ``env.docker``): any attribute may be set."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)

    def __getattr__(self, name: str) -> Any:  # only for names never set: v1 has them as None
        if name.startswith("_"):
            raise AttributeError(name)
        return None

    def __setattr__(self, name: str, value: Any) -> None:
        self.__dict__[name] = value

    def to_dict(self) -> dict[str, Any]:
        return {k: _plain(v) for k, v in self.__dict__.items() if not k.startswith("_")}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_dict()!r})"


class CondaDependencies:
    """v1's ``CondaDependencies``: the conda and pip packages of an environment."""

    def __init__(self, conda_dependencies_file_path: str | os.PathLike[str] | None = None,
                 _underlying_structure: dict[str, Any] | None = None) -> None:
        self.conda_packages: list[str] = []
        self.pip_packages: list[str] = []
        self.channels: list[str] = []
        self.python_version = ""
        if conda_dependencies_file_path is not None:
            self._read(Path(conda_dependencies_file_path))

    @staticmethod
    def create(name: str | None = None, pip_packages: list[str] | None = None,
               conda_packages: list[str] | None = None, python_version: str | None = None,
               pin_sdk_version: bool = True, pip_indexurl: str | None = None,
               channels: list[str] | None = None) -> CondaDependencies:
        deps = CondaDependencies()
        deps.pip_packages = list(pip_packages or [])
        deps.conda_packages = list(conda_packages or [])
        deps.channels = list(channels or [])
        deps.python_version = python_version or ""
        return deps

    def add_conda_package(self, conda_package: str) -> None:
        self.conda_packages.append(conda_package)

    def add_pip_package(self, pip_package: str) -> None:
        self.pip_packages.append(pip_package)

    def add_channel(self, channel: str) -> None:
        self.channels.append(channel)

    def _read(self, path: Path) -> None:
        """A conda environment file: ``channels``, and ``dependencies`` with a ``pip`` list."""
        if not path.is_file():
            raise ValueError(f"conda specification {os.fspath(path)!r} is not a file")
        try:
            spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"conda specification {os.fspath(path)!r} is not YAML: {exc}"
                             ) from None
        if not isinstance(spec, dict):
            raise ValueError(f"conda specification {os.fspath(path)!r} must be a mapping")
        self.channels = [str(c) for c in spec.get("channels") or []]
        for item in spec.get("dependencies") or []:
            if isinstance(item, dict):
                self.pip_packages += [str(p) for p in item.get("pip") or []]
                continue
            text = str(item)
            if re.match(r"python([=<>!~ ]|$)", text):
                self.python_version = text[6:].lstrip("=<>!~ ")
            self.conda_packages.append(text)

    def to_dict(self) -> dict[str, Any]:
        return {"channels": self.channels, "conda_packages": self.conda_packages,
                "pip_packages": self.pip_packages, "python_version": self.python_version}


class Environment:
    """What a run would need to run elsewhere; recorded with the run, not built."""

    def __init__(self, name: str, **kwargs: Any) -> None:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(f"environment name {name!r} must be 1-255 characters: letters, "
                             "digits, dots, underscores and dashes, starting with a letter or "
                             "digit")
        self.name = name
        self.version: str | None = kwargs.get("version")
        self.python = Section(user_managed_dependencies=False, interpreter_path="python",
                              conda_dependencies=CondaDependencies(), base_conda_environment=None)
        self.docker = Section(enabled=False, base_image="mcr.microsoft.com/azureml/"
                              "openmpi4.1.0-ubuntu20.04", base_dockerfile=None,
                              shm_size=None, arguments=[])
        self.spark = Section(repositories=[], packages=[], precache_packages=True)
        self.environment_variables: dict[str, str] = {}
        self.inferencing_stack_version: str | None = None

    @staticmethod
    def from_conda_specification(name: str, file_path: str | os.PathLike[str]) -> Environment:
        env = Environment(name)
        env.python.conda_dependencies = CondaDependencies(file_path)
        return env

    @staticmethod
    def from_pip_requirements(name: str, file_path: str | os.PathLike[str],
                              pip_version: str | None = None) -> Environment:
        path = Path(file_path)
        if not path.is_file():
            raise ValueError(f"pip requirements {os.fspath(file_path)!r} is not a file")
        packages = [line.split("#", 1)[0].strip()
                    for line in path.read_text(encoding="utf-8").splitlines()]
        env = Environment(name)
        env.python.conda_dependencies = CondaDependencies.create(
            pip_packages=[p for p in packages if p])
        return env

    @staticmethod
    def from_existing_conda_environment(name: str, conda_environment_name: str) -> Environment:
        env = Environment(name)
        env.python.user_managed_dependencies = True
        env.python.base_conda_environment = conda_environment_name
        return env

    @staticmethod
    def from_docker_image(name: str, image: str, container_registry: Any = None,
                          conda_specification: str | None = None,
                          pip_requirements: str | None = None) -> Environment:
        if conda_specification:
            env = Environment.from_conda_specification(name, conda_specification)
        elif pip_requirements:
            env = Environment.from_pip_requirements(name, pip_requirements)
        else:
            env = Environment(name)
        env.docker.enabled, env.docker.base_image = True, image
        return env

    @staticmethod
    def get(workspace: Any, name: str, version: str | None = None, label: str | None = None
            ) -> Environment:
        """A registered environment, or one of v1's curated names (``AzureML-...``)."""
        path = _registry(workspace) / f"{name}.json"
        if path.is_file():
            return Environment._from_dict(json.loads(path.read_text(encoding="utf-8")))
        if name.startswith(_CURATED_PREFIX):
            return Environment(name)
        raise ValueError(f"no environment {name!r} is registered in workspace "
                         f"{workspace_name(workspace)!r} (looked in {path}); register it with "
                         "env.register(workspace), or build it with Environment(name)")

    @staticmethod
    def list(workspace: Any) -> dict[str, Environment]:
        directory = _registry(workspace)
        found = sorted(directory.glob("*.json")) if directory.is_dir() else []
        return {p.stem: Environment.get(workspace, p.stem) for p in found}

    def register(self, workspace: Any) -> Environment:
        directory = _registry(workspace)
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".{self.name}.json.tmp"
        tmp.write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")
        tmp.replace(directory / f"{self.name}.json")
        return self

    def clone(self, new_name: str) -> Environment:
        env = Environment._from_dict({**self.to_dict(), "name": new_name})
        return env

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "python": self.python.to_dict(),
                "docker": self.docker.to_dict(), "spark": self.spark.to_dict(),
                "environmentVariables": dict(self.environment_variables)}

    @staticmethod
    def _from_dict(values: dict[str, Any]) -> Environment:
        env = Environment(values["name"], version=values.get("version"))
        python = dict(values.get("python") or {})
        deps = python.pop("conda_dependencies", None) or {}
        env.python.__dict__.update(python)
        env.python.conda_dependencies = CondaDependencies.create(
            pip_packages=deps.get("pip_packages"), conda_packages=deps.get("conda_packages"),
            channels=deps.get("channels"), python_version=deps.get("python_version"))
        env.docker.__dict__.update(values.get("docker") or {})
        env.spark.__dict__.update(values.get("spark") or {})
        env.environment_variables = dict(values.get("environmentVariables") or {})
        return env

    def __repr__(self) -> str:
        return f"Environment(name={self.name!r})"


class RunConfiguration:
    """v1's run configuration: where and how a script would run; recorded, not applied."""

    def __init__(self, script: str | None = None, arguments: list[Any] | None = None,
                 framework: str | None = None, communicator: str | None = None,
                 conda_dependencies: CondaDependencies | None = None,
                 _history_enabled: bool | None = None, _path: str | None = None,
                 _name: str | None = None, command: str | list[str] | None = None) -> None:
        self.script = script
        self.arguments = list(arguments or [])
        self.command = command
        self.framework = framework or "Python"
        self.communicator = communicator or "None"
        self.target = "local"
        self.node_count = 1
        self.max_run_duration_seconds: int | None = None
        self.environment = Environment("default-environment")
        if conda_dependencies is not None:
            self.environment.python.conda_dependencies = conda_dependencies
        self.environment_variables: dict[str, str] = {}
        self.history = Section(output_collection=True, snapshot_project=True)
        self.docker = self.environment.docker

    def to_dict(self) -> dict[str, Any]:
        environment = self.environment
        return {"script": self.script, "arguments": [str(a) for a in self.arguments],
                "command": _plain(self.command),
                "framework": self.framework, "communicator": self.communicator,
                "target": _plain(self.target), "nodeCount": self.node_count,
                "maxRunDurationSeconds": self.max_run_duration_seconds,
                "environment": environment.to_dict() if isinstance(environment, Environment)
                else _plain(environment),
                "environmentVariables": dict(self.environment_variables)}


def _registry(workspace: Any) -> Path:
    return mltrail_home() / "environments" / workspace_name(workspace)


def _plain(value: Any) -> Any:
    """A JSON-able copy of a setting (sections and dependencies as dicts, others as text)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    to_dict = getattr(value, "to_dict", None)
    return to_dict() if callable(to_dict) else str(value)
