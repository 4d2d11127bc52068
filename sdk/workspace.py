"""``mltrail.Workspace``: Azure ML v1's ``Workspace``, read from ``config.json``.

A workspace names the place runs are recorded in. Until workspaces are
tenants of the collector (the security issue), its name is recorded with
each run as the property ``mltrail.workspace``; ``Experiment(workspace=ws)``
reads runs back from the workspace's collector when it names one.

``config.json`` has v1's keys plus mltrail's own (all optional)::

    {"subscription_id": "...", "resource_group": "...", "workspace_name": "ws",
     "collector": "host:7431", "agent": "/run/mltrail/agent.sock",
     "token": "...", "token_file": "/path", "tls_ca": "/path/ca.pem",
     "tls_cert": "/path/client.pem", "tls_key": "/path/client.key", "tls_server_name": "..."}

(the keys ``mltrail.common.credentials`` reads, issue 14, plus ``agent`` and ``token``).

``from_config()`` looks, as v1 does, in ``.azureml/``, ``aml_config/`` and the
directory itself, from the current directory up to the root.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIG_FILE = "config.json"
CONFIG_DIRECTORIES = (".azureml", "aml_config", "")
DEFAULT_WORKSPACE = "default"
_V1_KEYS = ("subscription_id", "resource_group", "workspace_name", "location")


class WorkspaceConfigError(ValueError):
    """A config.json that cannot be used: missing, not JSON, or with unknown keys."""


@dataclass(frozen=True)
class Connection:
    """How to reach the collector and agent, and the credentials to show them.

    Empty fields mean "the default": ``MLTRAIL_COLLECTOR`` / ``MLTRAIL_AGENT``,
    else the local services the SDK starts. ``token`` and ``token_file`` are
    never printed (``repr`` hides them)."""

    collector: str = ""
    agent: str = ""
    token: str = dataclasses.field(default="", repr=False)
    token_file: str = ""
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_server_name: str = ""

    def security(self, workspace: str = "") -> Any:
        """The credentials to show the collector (a ``ClientSecurity``): these, then the
        environment's (``MLTRAIL_TOKEN``, ``MLTRAIL_TOKEN_FILE``, ``MLTRAIL_TLS_CA``, ...)
        over them."""
        from mltrail.common.credentials import ClientSecurity

        mine = ClientSecurity(token=self.token, token_file=self.token_file, tls_ca=self.tls_ca,
                              tls_cert=self.tls_cert, tls_key=self.tls_key,
                              tls_server_name=self.tls_server_name, workspace=workspace)
        return ClientSecurity.from_environment(mine)

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str) -> Connection:
        known = {f.name for f in dataclasses.fields(cls)}
        picked = {}
        for key in known & values.keys():
            value = values[key]
            if value is not None and not isinstance(value, str):
                raise WorkspaceConfigError(f"{where}: {key!r} must be a string, got "
                                           f"{type(value).__name__}")
            picked[key] = value or ""
        return cls(**picked)


class Workspace:
    """A workspace: v1's constructor, ``get`` and ``from_config``."""

    def __init__(self, subscription_id: str | None = None, resource_group: str | None = None,
                 workspace_name: str | None = None, auth: Any = None, _location: str | None = None,
                 *, connection: Connection | None = None, **kwargs: Any) -> None:
        name = workspace_name or kwargs.pop("name", None) or DEFAULT_WORKSPACE
        if not isinstance(name, str):
            raise TypeError(f"workspace_name must be a str, got {type(name).__name__}")
        self._name = name
        self.subscription_id = subscription_id or ""
        self.resource_group = resource_group or ""
        self.location = _location or "local"
        self.auth = auth
        self.connection = connection or Connection()
        self.tags = dict(kwargs.get("tags") or {})

    @property
    def name(self) -> str:
        return self._name

    @staticmethod
    def get(name: str, auth: Any = None, subscription_id: str | None = None,
            resource_group: str | None = None, location: str | None = None,
            cloud: str = "AzureCloud", id: str | None = None, **kwargs: Any) -> Workspace:
        return Workspace(subscription_id, resource_group, name, auth, location,
                         connection=kwargs.get("connection"))

    @staticmethod
    def from_config(path: str | os.PathLike[str] | None = None, auth: Any = None,
                    _logger: Any = None, _file_name: str | None = None) -> Workspace:
        """The workspace of the nearest ``config.json`` (``path``: the file, or where to start)."""
        found = find_config(path, _file_name or CONFIG_FILE)
        values = read_config(found)
        return Workspace(values.get("subscription_id"), values.get("resource_group"),
                         values.get("workspace_name"), auth, values.get("location"),
                         connection=Connection.from_dict(values, str(found)))

    def write_config(self, path: str | os.PathLike[str] | None = None,
                     file_name: str | None = None) -> None:
        """Write this workspace's ``config.json`` (default ``.azureml/config.json``); the
        token itself is not written (use ``token_file``)."""
        directory = Path(path if path is not None else ".azureml")
        directory.mkdir(parents=True, exist_ok=True)
        values: dict[str, str] = {"subscription_id": self.subscription_id,
                                  "resource_group": self.resource_group,
                                  "workspace_name": self.name}
        values.update({k: v for k, v in dataclasses.asdict(self.connection).items()
                       if v and k != "token"})
        (directory / (file_name or CONFIG_FILE)).write_text(json.dumps(values, indent=2) + "\n",
                                                            encoding="utf-8")

    def get_details(self) -> dict[str, Any]:
        return {"name": self.name, "location": self.location, "resourceGroup": self.resource_group,
                "subscriptionId": self.subscription_id, "collector": self.connection.collector}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Workspace) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return (f"Workspace.create(name={self.name!r}, subscription_id="
                f"{self.subscription_id!r}, resource_group={self.resource_group!r})")


def find_config(path: str | os.PathLike[str] | None, file_name: str = CONFIG_FILE) -> Path:
    start = Path(path if path is not None else ".").resolve()
    if start.is_file():
        return start
    for directory in (start, *start.parents):
        for sub in CONFIG_DIRECTORIES:
            candidate = directory / sub / file_name
            if candidate.is_file():
                return candidate
    raise WorkspaceConfigError(
        f"the workspace configuration file {file_name} could not be found in {start} or its "
        f"parent directories (looked in .azureml/, aml_config/ and the directory itself); "
        f"write one with Workspace(...).write_config(), or pass its path")


def read_config(path: Path) -> dict[str, Any]:
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WorkspaceConfigError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(values, dict):
        raise WorkspaceConfigError(f"{path}: must hold a JSON object")
    known = set(_V1_KEYS) | {f.name for f in dataclasses.fields(Connection)}
    unknown = sorted(set(values) - known - {"Scope", "friendly_name"})
    if unknown:
        raise WorkspaceConfigError(f"{path}: unknown keys {unknown}; known keys: "
                                   f"{sorted(known)}")
    return values


def default_workspace() -> Workspace:
    """The workspace of ``Experiment(name)``: ``MLTRAIL_WORKSPACE`` (``submit`` sets it for
    the script, so its runs join the submitter's workspace), else ``default``."""
    return Workspace(workspace_name=os.environ.get("MLTRAIL_WORKSPACE") or DEFAULT_WORKSPACE)


def workspace_name(workspace: Any) -> str:
    """The name runs are recorded under: a Workspace's, else the default."""
    name = getattr(workspace, "name", None)
    return name if isinstance(name, str) and name else DEFAULT_WORKSPACE
