"""Item 1 of issue 13: a store URL names one file wherever the collector starts."""

from __future__ import annotations

from pathlib import Path

from mltrail.proto import records_pb2
from tests import builders as b
from tests.procs import Service, mltrail_cli


def test_a_relative_store_path_is_warned_about_and_logged_absolute(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    svc = Service("collector", ["--store", "sqlite:///rel/store.db", "--grpc", "127.0.0.1:0",
                                "--http", "127.0.0.1:0", "--artifacts", str(tmp_path / "a")],
                  tmp_path)
    svc.cwd = elsewhere
    svc.start()
    try:
        log = svc.output()
    finally:
        svc.stop()
    resolved = elsewhere / "rel" / "store.db"
    assert resolved.exists()
    assert f"SQLite store: {resolved}" in log
    assert "names a relative path (three slashes)" in log
    assert f"sqlite:///{resolved}" in log  # the absolute URL to use instead


def test_an_absolute_store_url_finds_the_same_history_from_any_directory(tmp_path: Path
                                                                          ) -> None:
    store = f"sqlite:///{tmp_path / 'store.db'}"  # four slashes: an absolute path
    assert store.startswith("sqlite:////")
    for n, cwd in enumerate((tmp_path / "one", tmp_path / "two")):
        cwd.mkdir()
        svc = Service("collector", ["--store", store, "--grpc", "127.0.0.1:0",
                                    "--http", "127.0.0.1:0",
                                    "--artifacts", str(tmp_path / "a")], tmp_path)
        svc.cwd = cwd
        svc.start()
        try:
            with b.IngestClient(svc.grpc) as ingest:
                ingest.write([b.batch(b.new_stream_id(), [
                    b.started(1, f"run-{n}"), b.ended(2, f"run-{n}",
                                                      status=records_pb2.COMPLETED)])])
            listed = mltrail_cli("runs", "-q", "--collector", svc.grpc).stdout.split()
        finally:
            svc.stop()
        assert "names a relative path" not in svc.output()
    assert sorted(listed) == ["run-0", "run-1"]
