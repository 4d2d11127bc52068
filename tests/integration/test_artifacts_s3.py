"""Artifacts in a real S3 server (SeaweedFS): streamed in and out, verified, shared.

The large upload goes through the whole pipeline (SDK ``upload_file`` ->
agent -> collector -> SeaweedFS) and is downloaded byte for byte while the
collector's peak memory stays far below the file's size. CI uses
``MLTRAIL_LARGE_UPLOAD_MIB`` (default 512); the 2 GiB case is run by hand
with ``MLTRAIL_LARGE_UPLOAD_MIB=2048``.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mltrail import Experiment
from mltrail.collector.artifacts import open_artifacts
from mltrail.common.errors import PermanentError
from mltrail.query.client import QueryClient
from tests.procs import Service, collector_service, vm_kib
from tests.s3_env import SeaweedServer

MIB = 1024 * 1024


@pytest.fixture
def bucket(s3_server: SeaweedServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket; the usual AWS variables point this process at the server."""
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    return s3_server.create_bucket(f"t-{uuid.uuid4().hex[:12]}")


def pieces(count: int, seed: bytes) -> Iterator[bytes]:
    """``count`` MiB that differ from block to block, made a piece at a time."""
    block = hashlib.sha256(seed).digest() * (MIB // 32)
    for n in range(count):
        yield n.to_bytes(8, "big") + block[8:]


def digest_of(count: int, seed: bytes) -> str:
    digest = hashlib.sha256()
    for piece in pieces(count, seed):
        digest.update(piece)
    return digest.hexdigest()


def test_s3_store_streams_in_parts_verifies_and_shares(s3_server: SeaweedServer,
                                                       bucket: str) -> None:
    store = open_artifacts(f"s3://{bucket}/team/a?endpoint={s3_server.endpoint}")
    store.prepare()
    size, sha = 40 * MIB, digest_of(40, b"x")  # three parts of 16 MiB
    store.put_stream(pieces(40, b"x"), sha, size, "artifact 'm'")
    client = s3_server.client()
    head = client.head_object(Bucket=bucket, Key=f"team/a/sha256/{sha[:2]}/{sha}")
    assert head["ContentLength"] == size
    read = hashlib.sha256()
    for piece in store.read(sha, MIB):
        assert len(piece) <= MIB
        read.update(piece)
    assert read.hexdigest() == sha
    with pytest.raises(PermanentError, match="sha256 mismatch"):
        store.put_stream(pieces(20, b"y"), "0" * 64, 20 * MIB, "artifact 'bad'")
    listed = client.list_objects_v2(Bucket=bucket, Prefix="team/a/sha256/00/")
    assert listed.get("KeyCount", 0) == 0  # nothing of it became visible
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    store.put_stream(iter(()), sha, size, "artifact 'again'")  # already there: not re-sent
    with pytest.raises(FileNotFoundError):
        list(store.read("f" * 64, MIB))


def test_unreachable_bucket_is_one_clear_error_at_start(s3_server: SeaweedServer,
                                                        bucket: str) -> None:
    store = open_artifacts(f"s3://no-such-bucket-{bucket}?endpoint={s3_server.endpoint}")
    with pytest.raises(PermanentError, match=r"cannot reach the bucket.*nothing was started"):
        store.prepare()
    with pytest.raises(PermanentError, match="unknown scheme"):
        open_artifacts("ftp://host/dir")


@pytest.mark.slow
def test_large_upload_file_lands_in_s3_and_downloads_byte_for_byte(
        s3_server: SeaweedServer, bucket: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    mib = int(os.environ.get("MLTRAIL_LARGE_UPLOAD_MIB", "512"))
    model = tmp_path / "model.bin"
    with open(model, "wb") as fh:
        for piece in pieces(mib, b"model"):
            fh.write(piece)
    sha = digest_of(mib, b"model")
    url = f"s3://{bucket}/models?endpoint={s3_server.endpoint}"
    collector = collector_service(tmp_path)
    collector.args[collector.args.index("--artifacts") + 1] = url
    collector.env.update(s3_server.env)
    collector.start()
    agent = Service("agent", ["--socket", str(tmp_path / "agent.sock"), "--spool",
                              str(tmp_path / "spool"), "--http", "127.0.0.1:0",
                              "--collector", collector.grpc], tmp_path).start()
    monkeypatch.setenv("MLTRAIL_AGENT", str(tmp_path / "agent.sock"))
    monkeypatch.setenv("MLTRAIL_HOME", str(tmp_path / "home"))
    try:
        assert collector.proc is not None
        at_rest = vm_kib(collector.proc.pid, "VmRSS")
        with Experiment("big").start_logging() as run:
            run.upload_file("outputs/model.bin", str(model))
        run.wait_for_completion(timeout=1800)
        peak = vm_kib(collector.proc.pid, "VmHWM")
        head = s3_server.client().head_object(
            Bucket=bucket, Key=f"models/sha256/{sha[:2]}/{sha}")
        assert head["ContentLength"] == mib * MIB
        model.unlink()  # room for the download
        with QueryClient(collector.grpc) as client:
            info = client.download_artifact(run.id, "outputs/model.bin", tmp_path / "back.bin")
        assert info.sha256 == sha and info.size == mib * MIB
        got = hashlib.sha256()
        with open(tmp_path / "back.bin", "rb") as fh:
            while block := fh.read(8 * MIB):
                got.update(block)
        assert got.hexdigest() == sha
        print(f"{mib} MiB upload: collector RSS at rest {at_rest // 1024} MiB, "
              f"peak {peak // 1024} MiB")
        assert (peak - at_rest) * 1024 < 160 * MIB, "collector memory grew with the file"
    finally:
        agent.stop()
        collector.stop()
