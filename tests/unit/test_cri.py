"""CRI container logs: parsing, joining P pieces, cuts that keep lines whole, and a
real CRI file tailed into a real spool while it is written in pieces."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mltrail.agent.sources.config import SourceConfig
from mltrail.agent.sources.cri import CriDecoder, CriRouter, pod_properties
from mltrail.agent.sources.joiner import _parse_time
from mltrail.agent.sources.tail import TailSource
from mltrail.agent.spool import Spool
from mltrail.common.lines import LINE_SPLIT_MARKER
from tests.unit.test_tail import collected, wait_for

T = b"2024-05-01T10:00:00.123456789Z"


def cri(stream: str, tag: str, message: bytes) -> bytes:
    return T + b" " + stream.encode() + b" " + tag.encode() + b" " + message + b"\n"


def test_full_and_partial_lines_join_per_stream() -> None:
    decoder = CriDecoder("trainer", 1024)
    raw = (cri("stdout", "P", b"hel") + cri("stderr", "F", b"oops") + cri("stdout", "P", b"lo ")
           + cri("stdout", "F", b"world") + cri("stderr", "F", b"") + cri("stdout", "F", b"x"))
    chunks = decoder.decode(raw, final=False)
    by_stream = {c.stream: c.data for c in chunks}
    assert by_stream == {"trainer/stdout": b"hello world\nx\n", "trainer/stderr": b"oops\n\n"}
    assert decoder.lines_repaired == 1
    assert chunks[0].time_ns == 1714557600_123456789


def test_cut_keeps_an_open_partial_sequence_for_later() -> None:
    decoder = CriDecoder("", 1024)
    whole = cri("stdout", "F", b"one") + cri("stderr", "F", b"two")
    buf = whole + cri("stdout", "P", b"thr") + cri("stderr", "F", b"four")
    assert decoder.cut(buf, final=False) == len(whole)  # "four" waits with the open "thr"
    assert decoder.cut(buf + cri("stdout", "F", b"ee"), final=False) == len(buf) + len(
        cri("stdout", "F", b"ee"))
    assert decoder.cut(cri("stdout", "F", b"no newline")[:-1], final=False) == 0


def test_a_joined_line_over_the_limit_is_split_with_the_marker() -> None:
    decoder = CriDecoder("", 128)
    raw = b"".join(cri("stdout", "P", b"a" * 100) for _ in range(3)) + cri("stdout", "F", b"b")
    data = decoder.decode(raw, final=False)[0].data
    pieces = data.rstrip(b"\n").split(b"\n")
    assert all(len(p) <= 128 for p in pieces)
    assert b"".join(p.removesuffix(LINE_SPLIT_MARKER) for p in pieces) == b"a" * 300 + b"b"
    assert decoder.lines_split == 1 and decoder.lines_repaired == 1


def test_malformed_lines_are_kept_on_their_own_stream() -> None:
    decoder = CriDecoder("c", 1024)
    chunks = decoder.decode(b"not a cri line\n" + cri("stdout", "F", b"ok"), final=False)
    assert {c.stream: c.data for c in chunks} == {"malformed": b"not a cri line\n",
                                                 "c/stdout": b"ok\n"}


def test_pod_properties_from_the_path() -> None:
    path = "/var/log/pods/team-a_train-7f9c_0b1c-22/trainer/0.log"
    assert pod_properties(path) == {"k8s.namespace": "team-a", "k8s.pod": "train-7f9c",
                                    "k8s.uid": "0b1c-22", "k8s.container": "trainer"}
    assert pod_properties("/tmp/x.log") == {}


def test_time_parse_handles_offsets_and_short_fractions() -> None:
    assert _parse_time(b"1970-01-01T00:00:01Z") == 1_000_000_000
    assert _parse_time(b"1970-01-01T01:00:01.5+01:00") == 1_500_000_000
    assert _parse_time(b"garbage") == 0


async def test_cri_file_written_in_pieces_arrives_whole_and_in_order(tmp_path: Path) -> None:
    pod_dir = tmp_path / "pods" / "ml_train-0_uid-1" / "trainer"
    pod_dir.mkdir(parents=True)
    log = pod_dir / "0.log"
    spool = Spool(tmp_path / "spool", fsync="never")
    config = SourceConfig(type="cri", name="cri", paths=(str(tmp_path / "pods/*/*/*.log"),),
                          run_id_from=r"path:pods/[^_]+_(?P<run_id>[^_]+)_", poll_interval=0.02,
                          rescan_interval=0.1)
    source = TailSource(config, CriRouter(config), spool, tmp_path / "cp", fsync=False)
    log.write_bytes(cri("stdout", "F", b"line 0") + cri("stdout", "P", b"long "))
    await source.start()
    try:
        await wait_for(lambda: collected(spool).get("trainer/stdout") == [b"line 0"])
        await asyncio.sleep(0.1)  # the open "long " waits for its end
        with open(log, "ab") as fh:
            fh.write(cri("stderr", "F", b"warning") + cri("stdout", "P", b"line "))
            fh.flush()
            await asyncio.sleep(0.1)
            fh.write(cri("stdout", "F", b"1") + cri("stdout", "F", b"line 2"))
        await wait_for(lambda: len(collected(spool).get("trainer/stdout", [])) == 3)
        got = collected(spool, "train-0")
        assert got["trainer/stdout"] == [b"line 0", b"long line 1", b"line 2"]
        assert got["trainer/stderr"] == [b"warning"]
        assert source.lines_repaired() == 1
    finally:
        await source.shutdown(5)
        spool.close()


async def test_pieces_are_not_carried_to_another_pods_container_of_the_run(
        tmp_path: Path) -> None:
    """Two workers of one run, each with a ``trainer`` container: one's open P pieces
    wait for their own F, never joined to the other's newer file."""
    dirs = [tmp_path / "pods" / f"ml_{pod}_uid" / "trainer" for pod in ("w-0", "w-1")]
    for d in dirs:
        d.mkdir(parents=True)
    spool = Spool(tmp_path / "spool", fsync="never")
    config = SourceConfig(type="cri", name="cri", paths=(str(tmp_path / "pods/*/*/*.log"),),
                          run_id="run", poll_interval=0.02, rescan_interval=0.1)
    source = TailSource(config, CriRouter(config), spool, tmp_path / "cp", fsync=False)
    (dirs[0] / "0.log").write_bytes(cri("stdout", "F", b"w0 a") + cri("stdout", "P", b"w0 "))
    await asyncio.sleep(0.02)  # w-1's file is the newer one
    (dirs[1] / "0.log").write_bytes(cri("stdout", "F", b"w1 a"))
    await source.start()
    try:
        await wait_for(lambda: len(collected(spool).get("trainer/stdout", [])) == 2)
        with open(dirs[0] / "0.log", "ab") as fh:
            fh.write(cri("stdout", "F", b"b"))
        await wait_for(lambda: len(collected(spool).get("trainer/stdout", [])) == 3)
        assert sorted(collected(spool)["trainer/stdout"]) == [b"w0 a", b"w0 b", b"w1 a"]
    finally:
        await source.shutdown(5)
        spool.close()
