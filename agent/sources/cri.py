"""Kubernetes CRI container logs: ``/var/log/pods/<ns>_<pod>_<uid>/<container>/N.log``.

Each line is ``<RFC 3339 time> <stdout|stderr> <P|F>[:tags] <message>``;
``P`` pieces are joined with the next ``F`` of the same stream, up to the
line limit (``joiner.EntryDecoder``). Lines go to the streams
``<container>/stdout`` and ``<container>/stderr`` (``<stream>/...`` when the
source names a stream), and the run gets the pod's namespace, name, uid and
container as properties. The kubelet rotates ``0.log`` by renaming it; the
tail reads the renamed file to its end.
"""

from __future__ import annotations

import os
import re

from mltrail.agent.sources.base import FileRoute, RunMapper
from mltrail.agent.sources.config import CRI_DEFAULT_PATHS, SourceConfig
from mltrail.agent.sources.joiner import Entry, EntryDecoder

_POD_PATH = re.compile(
    r"/(?P<namespace>[^/_]+)_(?P<pod>[^/_]+)_(?P<uid>[^/_]+)/(?P<container>[^/]+)/[^/]+$")
_STREAMS = {b"stdout": "stdout", b"stderr": "stderr"}


class CriDecoder(EntryDecoder):
    def parse(self, line: bytes) -> Entry | None:
        parts = line.split(b" ", 3)
        if len(parts) < 3:
            return None
        stream = _STREAMS.get(parts[1])
        tag = parts[2].split(b":", 1)[0]
        if stream is None or tag not in (b"P", b"F"):
            return None
        return Entry(stream, parts[3] if len(parts) == 4 else b"", tag == b"F", parts[0])

    def may_have_partials(self, data: bytes) -> bool:
        return b" P " in data or b" P:" in data


def pod_properties(path: str) -> dict[str, str]:
    """The pod's identity from its log path ({} when the path is not a pod's)."""
    match = _POD_PATH.search(path)
    if match is None:
        return {}
    return {f"k8s.{key}": value for key, value in match.groupdict().items()}


class CriRouter:
    """``type = "cri"``: pod log files, one ordering group per container directory."""

    def __init__(self, config: SourceConfig) -> None:
        self.config = config
        self.runs = RunMapper(config.run_id, config.run_id_from)

    def patterns(self) -> list[str]:
        return list(self.config.paths or CRI_DEFAULT_PATHS)

    def route(self, path: str) -> FileRoute | None:
        run_id = self.runs.for_path(path)
        if run_id is None:
            return None
        props = pod_properties(path)
        container = props.get("k8s.container", "")
        prefix = self.config.stream or container
        decoder = CriDecoder(prefix, self.config.max_line_bytes)
        # one group per container directory (its N.log files and their rotations): a
        # line's pieces carried to the next file must stay within one container
        return FileRoute(run_id, decoder, group=f"{run_id}\0{os.path.dirname(path)}",
                         properties=props)
