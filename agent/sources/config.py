"""Log sources as declared: ``[[sources]]`` tables in agent.toml or ``--source`` flags.

::

    [[sources]]
    type = "file"                 # file | cri | logdir | docker
    name = "trainer"              # names the checkpoint; unique per agent
    paths = ["/data/logs/train.log*"]
    run_id = "run-42"             # or run_id_from = "path:/runs/(?P<run_id>[^/]+)/"
                                  # or "env:NAME" (the agent's environment)
    stream = "trainer"            # the LogChunk stream name (default: the name)
    start_at = "beginning"        # or "end": for files found at the very first start

``--source file:GLOB=RUN_ID[:STREAM]`` (also ``cri:GLOB=...``,
``logdir:DIR=...``, ``docker:LABEL=...``) declares one in a flag; its name
is derived from the text, so it keeps its checkpoint across restarts.
Unknown keys are refused with the known ones listed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mltrail.agent.sources.base import RouteError, RunMapper
from mltrail.common.lines import MAX_LINE_BYTES, MIN_LINE_LIMIT
from mltrail.common.settings import SettingsError

SOURCE_TYPES = ("file", "cri", "logdir", "docker")
CRI_DEFAULT_PATHS = ("/var/log/pods/*/*/*.log",)
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True)
class SourceConfig:
    type: str
    name: str
    paths: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    directory: str = ""  # logdir
    pattern: str = "**/*"  # logdir: files under the directory
    run_id: str = ""
    run_id_from: str = ""  # path:REGEX or env:NAME (the agent's); docker: label:KEY, env:KEY
    stream: str = ""
    start_at: str = "beginning"
    label: str = ""  # docker: KEY or KEY=VALUE selecting containers
    containers_dir: str = "/var/lib/docker/containers"
    docker_host: str = ""  # default: DOCKER_HOST or the local socket
    max_line_bytes: int = MAX_LINE_BYTES
    poll_interval: float = 0.25  # seconds between looks when events cannot tell
    rescan_interval: float = 2.0  # seconds between glob runs without events
    rotate_wait: float = 1.0  # seconds a rotated file is kept open after its last write

    @property
    def stream_name(self) -> str:
        return self.stream or self.name


_FIELDS = {f.name: f for f in dataclasses.fields(SourceConfig)}


def _field_value(key: str, raw: Any, where: str) -> Any:
    kind = _FIELDS[key].type
    if kind == "tuple[str, ...]":
        items = [raw] if isinstance(raw, str) else raw
        if not isinstance(items, Sequence) or not all(isinstance(i, str) for i in items):
            raise SettingsError(f"{where}: {key} must be a list of strings")
        return tuple(items)
    if kind == "int" and isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if kind == "float" and isinstance(raw, int | float) and not isinstance(raw, bool):
        return float(raw)
    if kind == "str" and isinstance(raw, str):
        return raw
    raise SettingsError(f"{where}: {key} = {raw!r} is not a {kind}")


def parse_source(table: Mapping[str, Any], index: int = 0) -> SourceConfig:
    """One ``[[sources]]`` table -> a checked ``SourceConfig``; raises SettingsError."""
    where = f"sources[{index}]" + (f" ({table['name']!r})" if "name" in table else "")
    unknown = sorted(set(table) - set(_FIELDS))
    if unknown:
        raise SettingsError(f"{where}: unknown key(s) {', '.join(unknown)}; known keys: "
                            f"{', '.join(sorted(_FIELDS))}")
    for key in ("type", "name"):
        if key not in table:
            raise SettingsError(f"{where}: {key} is required")
    values = {k: _field_value(k, v, where) for k, v in table.items()}
    config = SourceConfig(**values)
    _check(config, where)
    return config


def _check(c: SourceConfig, where: str) -> None:
    if c.type not in SOURCE_TYPES:
        raise SettingsError(f"{where}: type {c.type!r} is not one of {', '.join(SOURCE_TYPES)}")
    if not _NAME.match(c.name):
        raise SettingsError(f"{where}: name {c.name!r} must be 1-64 of A-Z a-z 0-9 _ . -")
    if c.start_at not in ("beginning", "end"):
        raise SettingsError(f"{where}: start_at must be beginning or end, not {c.start_at!r}")
    if c.type == "file" and not c.paths:
        raise SettingsError(f"{where}: a file source needs paths = [globs]")
    if c.type == "logdir" and not c.directory:
        raise SettingsError(f"{where}: a logdir source needs directory = PATH")
    if c.type == "docker" and not c.label:
        raise SettingsError(f"{where}: a docker source needs label = KEY or KEY=VALUE")
    if c.type != "docker" and not (c.run_id or c.run_id_from):
        raise SettingsError(f"{where}: give run_id, or run_id_from = \"path:REGEX\"")
    _check_run_rule(c, where)
    if c.max_line_bytes < MIN_LINE_LIMIT:
        raise SettingsError(f"{where}: max_line_bytes must be at least {MIN_LINE_LIMIT}")
    for key in ("poll_interval", "rescan_interval", "rotate_wait"):
        if getattr(c, key) <= 0:
            raise SettingsError(f"{where}: {key} must be positive")


def _check_run_rule(c: SourceConfig, where: str) -> None:
    """A bad ``run_id_from`` is refused at start, not met per file or container."""
    if c.type != "docker":
        try:
            RunMapper(c.run_id, c.run_id_from)
        except RouteError as exc:
            raise SettingsError(f"{where}: {exc}") from None
        return
    kind, _, key = c.run_id_from.partition(":")
    if c.run_id_from and (kind not in ("label", "env") or not key):
        raise SettingsError(f"{where}: run_id_from {c.run_id_from!r}: a docker source takes "
                            "label:KEY or env:KEY (the container's label or environment)")


def parse_source_flag(spec: str) -> dict[str, Any]:
    """``TYPE:TARGET=RUN_ID[:STREAM]`` -> a ``[[sources]]`` table."""
    kind, sep, rest = spec.partition(":")
    target, eq, run = rest.rpartition("=")
    if not sep or not eq or not target or not run or kind not in SOURCE_TYPES:
        raise SettingsError(
            f"--source {spec!r}: expected TYPE:TARGET=RUN_ID[:STREAM] with TYPE one of "
            f"{', '.join(SOURCE_TYPES)}, e.g. file:/logs/*.log=run-1:trainer")
    run_id, colon, stream = run.partition(":")
    if not run_id or (colon and not stream.strip()):
        raise SettingsError(
            f"--source {spec!r}: {'the run id' if not run_id else 'the stream name'} after "
            f"'=' is empty; write RUN_ID or RUN_ID:STREAM, e.g. file:/logs/*.log=run-1:trainer")
    name = f"{kind}-{hashlib.sha256(spec.encode()).hexdigest()[:10]}"
    table: dict[str, Any] = {"type": kind, "name": name, "run_id": run_id}
    if stream:
        table["stream"] = stream
    if kind in ("file", "cri"):
        table["paths"] = [target]
    elif kind == "logdir":
        table["directory"] = target
    else:
        table["label"] = target
    return table


def parse_sources(tables: Sequence[Mapping[str, Any]], flags: Sequence[str] = ()
                  ) -> list[SourceConfig]:
    """The config file's tables then the flags' sources; names must be unique."""
    all_tables = [*tables, *(parse_source_flag(s) for s in flags)]
    configs = [parse_source(t, i) for i, t in enumerate(all_tables)]
    seen: set[str] = set()
    for c in configs:
        if c.name in seen:
            raise SettingsError(f"two sources are named {c.name!r}; names must be unique "
                                "(each names its checkpoint)")
        seen.add(c.name)
    return configs
