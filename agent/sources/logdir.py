"""Log directories (AutoML and similar tools): every file under a directory,
new ones included, each its own stream named by its path relative to the
directory (``<stream>/<relative path>`` when the source names a stream).
Files are found by the tail's globs (``directory/pattern``, recursive ``**``)
and its inotify watches; a file that appears or grows is read like any other.
"""

from __future__ import annotations

import os

from mltrail.agent.sources.base import FileRoute, PlainLineDecoder, RunMapper
from mltrail.agent.sources.config import SourceConfig


class LogDirRouter:
    def __init__(self, config: SourceConfig) -> None:
        self.config = config
        self.runs = RunMapper(config.run_id, config.run_id_from)
        self.directory = os.path.abspath(config.directory)

    def patterns(self) -> list[str]:
        return [os.path.join(self.directory, self.config.pattern)]

    def route(self, path: str) -> FileRoute | None:
        run_id = self.runs.for_path(path)
        if run_id is None:
            return None
        relative = os.path.relpath(os.path.abspath(path), self.directory)
        stream = f"{self.config.stream}/{relative}" if self.config.stream else relative
        return FileRoute(run_id, PlainLineDecoder(stream, self.config.max_line_bytes),
                         group=f"{run_id}\0{stream}")
