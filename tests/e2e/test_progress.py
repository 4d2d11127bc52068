"""Item 13 of issue 13: downloads, sync and export show progress on a terminal and
nothing when piped."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

from tests import builders as b
from tests.integration.test_sdk_offline import OFFLINE_SCRIPT, run_script
from tests.procs import MLTRAIL, Service, mltrail_cli

DATA = os.urandom(3 * 1024 * 1024)


def on_a_terminal(*args: str) -> str:
    """``mltrail ARGS`` with a pseudo-terminal for stdout and stderr (util-linux script)."""
    command = " ".join(shlex.quote(a) for a in [*MLTRAIL, *args])
    env = {k: v for k, v in os.environ.items() if k != "MLTRAIL_PROGRESS"}
    done = subprocess.run(["script", "-qec", command, "/dev/null"], capture_output=True,
                          timeout=120, env=env, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout
    return done.stdout.decode()  # not text=True: that would turn the redraws' \r into \n


def test_download_and_export_show_progress_on_a_terminal_only(collector: Service,
                                                              tmp_path: Path) -> None:
    with b.IngestClient(collector.grpc) as ingest:
        ingest.write([b.batch(b.new_stream_id(), [
            b.started(1, "p-1"), b.log(2, "p-1", b"a\nb\nc\n"),
            *b.artifact(3, "p-1", "outputs/model.bin", DATA, piece=256 * 1024)])])
    target = tmp_path / "model.bin"
    shown = on_a_terminal("artifacts", "p-1", "--download", "outputs/model.bin",
                          "--output", str(target), "--collector", collector.grpc)
    assert "\r\x1b[Kdownloading outputs/model.bin: 3.0 MiB of 3.0 MiB (100 %), " in shown
    assert target.read_bytes() == DATA
    piped = mltrail_cli("artifacts", "p-1", "--download", "outputs/model.bin", "--output",
                        str(target), "--collector", collector.grpc)
    assert piped.returncode == 0 and piped.stderr == ""

    shown = on_a_terminal("export", "p-1", "--output", str(tmp_path / "x"),
                          "--collector", collector.grpc)
    assert "\r\x1b[Kexporting the logs of p-1: 3 lines, " in shown
    piped = mltrail_cli("export", "p-1", "--output", str(tmp_path / "y"),
                        "--collector", collector.grpc)
    assert piped.returncode == 0 and piped.stderr == ""


def test_sync_shows_progress_on_a_terminal(collector: Service, tmp_path: Path) -> None:
    out = run_script(OFFLINE_SCRIPT, tmp_path / "home", tmp_path)
    where = str(out["where"])
    shown = on_a_terminal("sync", where, "--collector", collector.grpc)
    assert f"\r\x1b[Ksending {Path(where).name}: " in shown and "(100 %)" in shown
    assert "sent 104 records" in shown
