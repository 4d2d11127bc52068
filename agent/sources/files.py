"""``type = "file"``: files matched by globs, plain lines, one stream name per source
(the run from ``run_id`` or ``run_id_from = "path:REGEX"``)."""

from __future__ import annotations

from mltrail.agent.sources.base import FileRoute, PlainLineDecoder, RunMapper
from mltrail.agent.sources.config import SourceConfig


class FileRouter:
    """The globs of ``paths``; one ordering group per run and stream."""

    def __init__(self, config: SourceConfig) -> None:
        self.config = config
        self.runs = RunMapper(config.run_id, config.run_id_from)

    def patterns(self) -> list[str]:
        return list(self.config.paths)

    def route(self, path: str) -> FileRoute | None:
        run_id = self.runs.for_path(path)
        if run_id is None:
            return None
        stream = self.config.stream_name
        return FileRoute(run_id, PlainLineDecoder(stream, self.config.max_line_bytes),
                         group=f"{run_id}\0{stream}")
