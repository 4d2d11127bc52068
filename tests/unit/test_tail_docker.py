"""Docker json-file decoding, and the engine-stream fallback against a small fake engine
(injected through ``client_factory``): the since= edge is de-duplicated, a stalled
stream is reopened, a line in 16 KiB pieces is joined."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from mltrail.agent.sources.base import FileRoute, SourceCounters
from mltrail.agent.sources.config import SourceConfig
from mltrail.agent.sources.docker import ContainerInfo, DockerJsonDecoder, DockerSource
from mltrail.agent.sources.docker_engine import EngineStream
from mltrail.agent.sources.tail import TailSource
from mltrail.agent.spool import Spool
from tests.unit.test_tail import collected


def entry(text: str, stream: str = "stdout", t: str = "2024-05-01T10:00:00.5Z") -> bytes:
    import json

    return json.dumps({"log": text, "stream": stream, "time": t}).encode() + b"\n"


def test_json_file_pieces_are_joined_and_cuts_wait_for_the_last_piece() -> None:
    decoder = DockerJsonDecoder("web", 1 << 20)
    whole = entry("a\n") + entry("oops\n", "stderr")
    buf = whole + entry("x" * 10) + entry("y" * 5)
    assert decoder.cut(buf, final=False) == len(whole)  # a long line still in pieces
    buf += entry("z\n")
    assert decoder.cut(buf, final=False) == len(buf)
    chunks = {c.stream: c.data for c in decoder.decode(buf, final=False)}
    assert chunks == {"web/stdout": b"a\n" + b"x" * 10 + b"y" * 5 + b"z\n",
                      "web/stderr": b"oops\n"}
    assert decoder.lines_repaired == 1
    assert decoder.decode(b"{broken\n", final=False)[0].stream == "malformed"


def test_container_metadata_becomes_run_properties() -> None:
    info = ContainerInfo.from_attrs({
        "Id": "abc", "Name": "/trainer", "State": {"Running": True},
        "Config": {"Image": "img:1", "Labels": {"team": "ml"}, "Env": ["RUN=r-7", "X"]}})
    assert info.env == {"RUN": "r-7"} and info.running
    assert info.properties() == {"docker.container.name": "trainer",
                                 "docker.container.id": "abc", "docker.image": "img:1",
                                 "docker.label.team": "ml"}


class FakeLogStream:
    """Yields its messages, then ends or (stall=True) blocks until closed."""

    def __init__(self, messages: list[bytes], stall: bool) -> None:
        self.messages, self.stall = messages, stall
        self.closed = threading.Event()

    def __iter__(self) -> Any:
        yield from self.messages
        if self.stall:
            self.closed.wait(10)

    def close(self) -> None:
        self.closed.set()


class FakeEngine:
    """The two calls the fallback makes: logs() per connection, inspect_container()."""

    def __init__(self, connections: list[tuple[list[bytes], bool]]) -> None:
        self.connections = connections
        self.since: list[float | None] = []
        self.api = self

    def logs(self, container: str, **kwargs: Any) -> FakeLogStream:
        self.since.append(kwargs["since"])
        messages, stall = self.connections.pop(0) if self.connections else ([], False)
        return FakeLogStream(messages, stall)

    def inspect_container(self, container: str) -> dict[str, Any]:
        return {"State": {"Running": bool(self.connections)}}


T1, T2 = b"2024-05-01T10:00:01.000000001Z", b"2024-05-01T10:00:02.000000002Z"


def test_engine_stream_dedupes_the_since_edge_and_reopens_a_stalled_stream(
        tmp_path: Path) -> None:
    first = [T1 + b" one\n", T2 + b" two-a\n", T2 + b" two-b\n"]
    again = [T2 + b" two-a\n", T2 + b" two-b\n", T2 + b" long ",
             T2 + b" line\n"]
    engine = FakeEngine([(first, True), (again, False)])
    spool = Spool(tmp_path / "spool", fsync="never")
    config = SourceConfig(type="docker", name="d", label="x", run_id="r")
    source = SimpleNamespace(name="d", config=config, counters=SourceCounters(), spool=spool)
    info = ContainerInfo(id="c0ffee", name="web", image="img")
    stream = EngineStream(cast(DockerSource, source), info, "r", "stdout",
                          lambda config, timeout: engine, tmp_path / "cp", fsync=False)
    stream.stall_seconds = 0.3
    try:
        thread = threading.Thread(target=stream._run)
        thread.start()
        thread.join(10)
        assert not thread.is_alive()
        assert collected(spool)["web/stdout"] == [b"one", b"two-a", b"two-b", b"long line"]
        assert stream.stalls == 1
        assert engine.since[0] is None and engine.since[1] is not None
        assert abs(engine.since[1] - 1714557602.000000002) < 1e-5  # a hair before T2
        assert source.counters.lines_repaired == 1
        reopened = EngineStream(cast(DockerSource, source), info, "r", "stdout",
                                lambda config, timeout: engine, tmp_path / "cp", fsync=False)
        assert (reopened.state.seq, reopened.state.at_last) == (stream.state.seq, 4)
        assert reopened.state.pending is None
    finally:
        spool.close()


class SpoolThatDies:
    """Appends (or not) and then dies, as a SIGKILL around the append would."""

    def __init__(self, spool: Spool, append_first: bool) -> None:
        self._spool, self._append_first = spool, append_first

    def append(self, *args: Any) -> None:
        from mltrail.agent.spool import SpoolClosedError

        if self._append_first:
            self._spool.append(*args)
        raise SpoolClosedError("killed")


def test_engine_stream_replays_its_intent_after_a_crash(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", fsync="never")
    config = SourceConfig(type="docker", name="d", label="x", run_id="r")
    info = ContainerInfo(id="c0ffee", name="web", image="img")
    try:
        for append_first in (False, True):
            engine = FakeEngine([([T1 + b" one\n", T2 + b" two\n"], False)])
            dying = SimpleNamespace(name="d", config=config, counters=SourceCounters(),
                                    spool=SpoolThatDies(spool, append_first))
            stream = EngineStream(cast(DockerSource, dying), info, "r", "stdout",
                                  lambda config, timeout, e=engine: e, tmp_path / "cp",
                                  fsync=False)
            stream._run()  # dies at its first append, its intent on disk
            assert stream.state.pending is not None
        source = SimpleNamespace(name="d", config=config, counters=SourceCounters(),
                                 spool=spool)
        engine = FakeEngine([([T1 + b" one\n", T2 + b" two\n"], False)])
        EngineStream(cast(DockerSource, source), info, "r", "stdout",
                     lambda config, timeout: engine, tmp_path / "cp", fsync=False)._run()
        assert collected(spool)["web/stdout"] == [b"one", b"two"]
    finally:
        spool.close()


class JsonFileRouter:
    """One container's json-file and its rotated files (``c-json.log.N``), as the
    Docker source routes them, without an engine."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def patterns(self) -> list[str]:
        return [str(self.directory / "c-json.log"), str(self.directory / "c-json.log.[0-9]*")]

    def route(self, path: str) -> FileRoute:
        return FileRoute("r", DockerJsonDecoder("web", 1 << 20), group="r\0c")


def json_file_source(tmp_path: Path, spool: Any) -> TailSource:
    config = SourceConfig(type="docker", name="d", label="x", run_id="r", poll_interval=0.02,
                          rescan_interval=0.1, rotate_wait=0.1)
    return TailSource(config, JsonFileRouter(tmp_path), spool, tmp_path / "cp", fsync=False)


async def test_a_line_in_pieces_across_a_rotation_is_joined_even_across_a_crash(
        tmp_path: Path) -> None:
    """The engine rotates between two 16 KiB pieces: the old file ends in a piece, the
    new one starts with the rest. The agent dies around the append of the joined
    line and the old file is deleted (max-file) before it restarts."""
    from tests.unit.test_tail import CrashingSpool, wait_for

    live = tmp_path / "c-json.log"
    live.write_bytes(entry("a\n") + entry("x" * 10) + entry("e1\n", "stderr"))
    spool = Spool(tmp_path / "spool", fsync="never")
    try:
        source = json_file_source(tmp_path, spool)
        await source.start()
        await wait_for(lambda: "web/stdout" in collected(spool))  # e1 waits behind x
        await source.shutdown(5)
        os.rename(live, tmp_path / "c-json.log.1")  # rotated while the agent is down
        live.write_bytes(entry("y" * 5) + entry("z\n") + entry("b\n"))
        for crash_after in (False, True):  # dies before, then after, the append
            dying = json_file_source(tmp_path, CrashingSpool(spool, 0, crash_after))
            await dying.start()
            await asyncio.to_thread(dying._thread.join, 5)  # type: ignore[union-attr]
            assert not dying._thread.is_alive()  # type: ignore[union-attr]
            await dying.shutdown(5)
        (tmp_path / "c-json.log.1").unlink()  # rotated out while the agent was down
        source = json_file_source(tmp_path, spool)
        await source.start()
        try:
            await wait_for(lambda: collected(spool).get("web/stdout", [])[-1:] == [b"b"])
            assert collected(spool)["web/stdout"] == [b"a", b"x" * 10 + b"y" * 5 + b"z", b"b"]
            assert collected(spool)["web/stderr"] == [b"e1"]
            assert source.lines_repaired() == 0  # a replayed record was counted before
        finally:
            await source.shutdown(5)
    finally:
        spool.close()
