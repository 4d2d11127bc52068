"""Docker containers: found by label through the engine, read from their json-file logs.

The docker SDK is used for discovery, metadata and events, not to stream
logs (its follow stream hangs on rotation and keeps no position)::

    engine --list(label)/events(start)--> ContainerInfo (name, image, labels, env)
    <containers_dir>/<id>/<id>-json.log --TailSource--> spool   (positions checkpointed)
    unreadable log file --EngineFollower (docker_engine.py)--> spool (since= last time)

Each json-file line is ``{"log": ..., "stream": "stdout"|"stderr", "time": ...}``;
the engine splits lines over 16 KiB into pieces without a trailing newline,
which ``DockerJsonDecoder`` joins (``joiner.EntryDecoder``). Lines go to the
streams ``<container name>/stdout`` and ``/stderr`` (``<stream>/...`` when the
source names one); the run gets the container's name, id, image and labels
as properties. The run comes from ``run_id``, or ``run_id_from =
"label:KEY"`` / ``"env:KEY"``; a container without it is skipped (logged once).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mltrail.agent.sources.base import FileRoute, RouteError
from mltrail.agent.sources.config import SourceConfig
from mltrail.agent.sources.joiner import Entry, EntryDecoder
from mltrail.agent.sources.tail import TailSource
from mltrail.agent.spool import Spool

log = logging.getLogger("mltrail.agent.sources")

_COMPLETE = b'\\n","stream":"'  # how a whole line's entry continues in the json-file


class DockerJsonDecoder(EntryDecoder):
    def parse(self, line: bytes) -> Entry | None:
        try:
            entry = json.loads(line)
            text, stream, stamp = entry["log"], entry["stream"], entry.get("time", "")
        except (ValueError, KeyError, TypeError):
            return None
        if not isinstance(text, str) or stream not in ("stdout", "stderr"):
            return None
        complete = text.endswith("\n")
        content = (text[:-1] if complete else text).encode("utf-8", "surrogateescape")
        return Entry(stream, content, complete, str(stamp).encode())

    def may_have_partials(self, data: bytes) -> bool:
        return data.count(_COMPLETE) != data.count(b"\n")


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str
    image: str
    labels: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    running: bool = True

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> ContainerInfo:
        config = attrs.get("Config") or {}
        env = dict(e.split("=", 1) for e in config.get("Env") or [] if "=" in e)
        return cls(id=attrs["Id"], name=str(attrs.get("Name", "")).lstrip("/"),
                   image=str(config.get("Image", "")), labels=dict(config.get("Labels") or {}),
                   env=env, running=bool((attrs.get("State") or {}).get("Running")))

    def properties(self) -> dict[str, str]:
        props = {"docker.container.name": self.name, "docker.container.id": self.id,
                 "docker.image": self.image}
        props.update({f"docker.label.{k}": v for k, v in self.labels.items()})
        return props


def run_id_for(config: SourceConfig, info: ContainerInfo) -> str | None:
    if not config.run_id_from:
        return config.run_id or None
    kind, _, key = config.run_id_from.partition(":")
    if kind == "label":
        return info.labels.get(key) or None
    if kind == "env":
        return info.env.get(key) or None
    raise RouteError(f"run_id_from {config.run_id_from!r}: expected label:KEY or env:KEY")


def label_filter(label: str) -> dict[str, Any]:
    return {"label": label}


class DockerRouter:
    """The json-file logs of the containers discovery found (thread-safe)."""

    def __init__(self, config: SourceConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._containers: dict[str, ContainerInfo] = {}

    def log_path(self, container_id: str) -> str:
        return os.path.join(self.config.containers_dir, container_id,
                            f"{container_id}-json.log")

    def add(self, info: ContainerInfo) -> bool:
        """True when the container is new."""
        with self._lock:
            new = info.id not in self._containers
            self._containers[info.id] = info
        return new

    def remove(self, container_id: str | None) -> None:
        with self._lock:
            self._containers.pop(container_id or "", None)

    def patterns(self) -> list[str]:
        with self._lock:
            ids = list(self._containers)
        return [self.log_path(i) + suffix for i in ids for suffix in ("", ".[0-9]*")]

    def route(self, path: str) -> FileRoute | None:
        container_id = os.path.basename(os.path.dirname(path))
        with self._lock:
            info = self._containers.get(container_id)
        run_id = run_id_for(self.config, info) if info is not None else None
        if info is None or run_id is None:
            return None
        prefix = self.config.stream or info.name
        decoder = DockerJsonDecoder(prefix, self.config.max_line_bytes)
        return FileRoute(run_id, decoder, group=f"{run_id}\0{info.id}",
                         properties=info.properties())


def docker_client(config: SourceConfig, timeout: float = 60.0) -> Any:
    import docker

    if config.docker_host:
        return docker.DockerClient(base_url=config.docker_host, timeout=int(timeout))
    return docker.from_env(timeout=int(timeout))


class DockerSource(TailSource):
    """Discovers labelled containers and tails their json-file logs."""

    def __init__(self, config: SourceConfig, spool: Spool, checkpoint_dir: str | os.PathLike[str],
                 *, fsync: bool = True, on_appended: Callable[[int, int], None] | None = None,
                 client_factory: Callable[[SourceConfig], Any] = docker_client) -> None:
        config = dataclasses.replace(config, exclude=(*config.exclude, "*.gz"))
        self.docker_router = DockerRouter(config)
        super().__init__(config, self.docker_router, spool, checkpoint_dir, fsync=fsync,
                         on_appended=on_appended)
        self._client_factory = client_factory
        self._events: Any = None
        self._discovery: threading.Thread | None = None
        self._engine_followers: dict[str, Any] = {}
        self._checkpoint_dir = Path(checkpoint_dir)
        self._fsync = fsync

    async def start(self) -> None:
        # containers first, so the tail's first look routes their files to their
        # checkpointed positions (an unrouted file would wait until discovery)
        await asyncio.to_thread(self._list_once)
        await super().start()
        self._discovery = threading.Thread(target=self._discover_loop, daemon=True,
                                           name=f"mltrail-docker-{self.name}")
        self._discovery.start()

    async def shutdown(self, timeout: float) -> None:
        self._stop.set()
        events, self._events = self._events, None
        if events is not None:
            with contextlib.suppress(Exception):
                events.close()
        for follower in list(self._engine_followers.values()):
            follower.stop()
        await super().shutdown(timeout)

    # ---- discovery --------------------------------------------------------------

    def _discover_loop(self) -> None:
        """List the labelled containers, then follow the engine's events; reconnect."""
        while not self._stop.is_set():
            try:
                client = self._client_factory(self.config)
                self._events = client.api.events(
                    decode=True, filters={"type": "container", **label_filter(self.config.label)})
                self._list(client)
                for event in self._events:
                    if self._stop.is_set():
                        break
                    container_id = event.get("id") or event.get("Actor", {}).get("ID")
                    if event.get("Action") in ("create", "start", "restart"):
                        self._found(client, container_id)
                    elif event.get("Action") == "destroy":  # its open log is read to the end
                        self.docker_router.remove(container_id)
            except Exception as exc:  # engine down or restarting: try again
                if not self._stop.is_set():
                    self.counters.errors += 1
                    log.warning("source %s: docker engine unreachable (%s); retrying in 2s",
                                self.name, exc)
            self._stop.wait(2.0)

    def _list_once(self) -> None:
        try:
            self._list(self._client_factory(self.config))
        except Exception as exc:
            log.warning("source %s: docker engine unreachable at start (%s); will retry",
                        self.name, exc)

    def _list(self, client: Any) -> None:
        for summary in client.api.containers(all=True, filters=label_filter(self.config.label)):
            self._found(client, summary["Id"])

    def _found(self, client: Any, container_id: str | None) -> None:
        if not container_id:
            return
        try:
            info = ContainerInfo.from_attrs(client.api.inspect_container(container_id))
        except Exception as exc:
            log.info("source %s: container %s vanished before inspection (%s)", self.name,
                     container_id[:12], exc)
            return
        if run_id_for(self.config, info) is None:
            log.warning("source %s: container %s has no %s; its logs are not read",
                        self.name, info.name, self.config.run_id_from or "run_id")
            return
        if self.docker_router.add(info):
            log.info("source %s: container %s (%s) found", self.name, info.name, info.id[:12])
        path = self.docker_router.log_path(info.id)
        if self._unreadable(path):
            self._follow_engine(info, path)
        else:
            self.rescan()  # its log file appears with its first start

    def _unreadable(self, path: str) -> bool:
        """The engine keeps the file where this agent cannot read it."""
        directory = os.path.dirname(path)
        if not os.access(self.config.containers_dir, os.R_OK | os.X_OK):
            return True  # not mounted into the agent's container, or closed to its user
        if os.path.exists(directory) and not os.access(directory, os.R_OK | os.X_OK):
            return True
        return os.path.exists(path) and not os.access(path, os.R_OK)

    def _follow_engine(self, info: ContainerInfo, path: str) -> None:
        from mltrail.agent.sources.docker_engine import EngineFollower

        if info.id in self._engine_followers:
            return
        log.warning("source %s: cannot read %s; following container %s through the engine's "
                    "log stream instead (positions by time)", self.name, path, info.name)
        run_id = run_id_for(self.config, info)
        assert run_id is not None
        follower = EngineFollower(self, info, run_id, self._client_factory,
                                  self._checkpoint_dir, fsync=self._fsync)
        self._engine_followers[info.id] = follower
        follower.start()

    def files_watched(self) -> int:
        return super().files_watched() + len(self._engine_followers)
