"""The read commands as a user runs them, against a real collector fed through Ingest."""

from __future__ import annotations

import hashlib
import json
import os
import selectors
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mltrail.proto import records_pb2
from tests import builders as b
from tests.procs import MLTRAIL, Service, mltrail_cli

ARTIFACT = os.urandom(300_000)
CONFUSION = {"schema_type": "confusion_matrix", "schema_version": "1.0.0",
             "data": {"class_labels": ["0", "1"], "matrix": [[5, 1], [2, 7]]}}
ERROR = records_pb2.ErrorDetails(code="UserError", message="loss went to nan",
                                 type="FloatingPointError", exit_code=2)


def metric(seq: int, run_id: str, name: str, **data: Any) -> records_pb2.Record:
    return b.record(seq, run_id, metric=records_pb2.Metric(name=name, **data))


def row(seq: int, run_id: str, name: str, **cells: Any) -> records_pb2.Record:
    return metric(seq, run_id, name, row=records_pb2.Row(
        cells=[records_pb2.Cell(column=k, value=b.value(c)) for k, c in cells.items()]))


def artifact_chunks(first_seq: int, run_id: str, path: str, data: bytes
                    ) -> list[records_pb2.Record]:
    half = len(data) // 2
    return [
        b.record(first_seq, run_id, artifact=records_pb2.ArtifactChunk(
            path=path, offset=0, data=data[:half])),
        b.record(first_seq + 1, run_id, artifact=records_pb2.ArtifactChunk(
            path=path, offset=half, data=data[half:], last=True, size=len(data),
            sha256=hashlib.sha256(data).hexdigest(), content_type="application/octet-stream")),
    ]


def completed_run(run_id: str) -> list[records_pb2.Record]:
    """Every metric kind, two log streams and an artifact, then Completed."""
    v = b.value
    recs = [
        b.started(1, run_id, experiment="exp-a", display_name="first",
                  tags={"team": "vision", "lr": "0.1"}, properties={"git": "abc123"}),
        b.scalar(2, run_id, "loss", 0.9, step=0), b.scalar(3, run_id, "loss", 0.5, step=1),
        b.scalar(4, run_id, "loss", 0.25, step=2), b.scalar(5, run_id, "accuracy", 0.97),
        metric(6, run_id, "lrs", list=records_pb2.ValueList(values=[v(0.1), v(0.01)])),
        row(7, run_id, "citrus", fruit="orange", size=10),
        row(8, run_id, "citrus", fruit="lime", size=3),
        metric(9, run_id, "xy", table=records_pb2.Table(columns=[
            records_pb2.Column(name="x", values=[v(1), v(2)]),
            records_pb2.Column(name="y", values=[v(0.5), v(0.7)])])),
        metric(10, run_id, "cm", json=records_pb2.JsonMetric(
            schema_type="confusion_matrix", schema_version="1.0.0", json=json.dumps(CONFUSION))),
        metric(11, run_id, "plot", image=records_pb2.ImageRef(artifact_path="images/plot.png")),
        b.log(12, run_id, b"epoch 1\nepoch 2\n"),
        b.log(13, run_id, b"warning: slow\n", stream="stderr"),
        b.log(14, run_id, b"done \xff\n"),
        *artifact_chunks(15, run_id, "outputs/model.bin", ARTIFACT),
        b.ended(17, run_id),
    ]
    return recs


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One collector for the module, holding a completed run, its child and a failed run."""
    tmp = tmp_path_factory.mktemp("query")
    svc = Service("collector", [
        "--store", f"sqlite:///{tmp / 'store.db'}", "--grpc", "127.0.0.1:0",
        "--http", "127.0.0.1:0", "--artifacts", str(tmp / "artifacts")], tmp).start()
    with b.IngestClient(svc.grpc) as ingest:
        _write_ok(ingest, b.batch(b.new_stream_id(), completed_run("run-ok")))
        _write_ok(ingest, b.batch(b.new_stream_id(), [
            b.started(1, "run-child", experiment="exp-a", parent_run_id="run-ok",
                      run_type="child"),
            b.scalar(2, "run-child", "loss", 1.0)]))
        _write_ok(ingest, b.batch(b.new_stream_id(), [
            b.started(1, "run-bad", experiment="exp-b", tags={"team": "nlp"}),
            b.log(2, "run-bad", b"Traceback...\n", stream="stderr"),
            b.ended(3, "run-bad", status=records_pb2.FAILED, error=ERROR)]))
    yield svc
    svc.stop()


def _write_ok(ingest: b.IngestClient, batch: records_pb2.Batch) -> None:
    result = ingest.write([batch]).results[0]
    assert result.code == 0, result.message


def cli(svc: Service, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    done = mltrail_cli(*args, "--collector", svc.grpc)
    assert "Traceback" not in done.stderr, done.stderr
    if ok:
        assert done.returncode == 0, done.stderr
    return done


def cli_json(svc: Service, *args: str) -> Any:
    return json.loads(cli(svc, *args, "--json").stdout)


# ---- runs and show ---------------------------------------------------------------------


def test_runs_table_lists_every_run_with_azure_status_names(fed: Service) -> None:
    out = cli(fed, "runs").stdout.splitlines()
    assert out[0].split()[:4] == ["RUN", "ID", "EXPERIMENT", "NAME"]
    rows = {line.split()[0]: line for line in out[1:]}
    assert set(rows) == {"run-ok", "run-child", "run-bad"}
    assert "Completed" in rows["run-ok"] and "lr=0.1, team=vision" in rows["run-ok"]
    assert "Running" in rows["run-child"] and "Failed" in rows["run-bad"]
    # aligned: the STATUS column starts at the same offset on every line
    starts = {line.index(word) for line, word in
              [(out[0], "STATUS"), (rows["run-ok"], "Completed"), (rows["run-bad"], "Failed")]}
    assert len(starts) == 1


def test_runs_filters_by_experiment_status_tag_and_limit(fed: Service) -> None:
    def ids(*args: str) -> set[str]:
        return {r["run_id"] for r in cli_json(fed, "runs", *args)}

    assert ids("--experiment", "exp-a") == {"run-ok", "run-child"}
    assert ids("--status", "failed") == {"run-bad"}
    assert ids("--status", "Running") == {"run-child"}
    assert ids("--tag", "team=vision") == {"run-ok"}
    assert ids("--tag", "team") == {"run-ok", "run-bad"}
    assert ids("--tag", "team=vision", "--tag", "lr=0.2") == set()
    assert ids("--parent", "run-ok") == {"run-child"}
    assert len(ids("--limit", "2")) == 2


def test_runs_quiet_prints_only_ids_in_the_json_order(fed: Service) -> None:
    order = [r["run_id"] for r in cli_json(fed, "runs")]
    assert cli(fed, "runs", "-q").stdout.splitlines() == order
    assert cli(fed, "runs", "-q", "--limit", "1").stdout == order[0] + "\n"


def test_show_json_has_details_children_and_counts(fed: Service) -> None:
    run = cli_json(fed, "show", "run-ok")
    assert run["status"] == "Completed" and run["experiment"] == "exp-a"
    assert run["display_name"] == "first"
    assert run["tags"] == {"team": "vision", "lr": "0.1"}
    assert run["properties"] == {"git": "abc123"}
    assert run["child_run_ids"] == ["run-child"]
    assert run["error"] is None
    assert run["duration_seconds"] is not None and run["duration_seconds"] >= 0
    assert (run["log_lines"], run["artifacts"]) == (4, 1)
    child = cli_json(fed, "show", "run-child")
    assert child["parent_run_id"] == "run-ok" and child["status"] == "Running"


def test_show_table_of_a_failed_run_names_its_error(fed: Service) -> None:
    out = cli(fed, "show", "run-bad").stdout
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line[:12])
    assert fields["Status"].strip() == "Failed"
    assert fields["Error"].strip() == (
        "FloatingPointError: loss went to nan (UserError, exit code 2)")
    assert fields["Tags"].strip() == "team=nlp"


# ---- metrics -----------------------------------------------------------------------------


def test_metrics_json_is_the_get_metrics_shape_for_every_kind(fed: Service) -> None:
    assert cli_json(fed, "metrics", "run-ok") == {
        "loss": [0.9, 0.5, 0.25],
        "accuracy": 0.97,
        "lrs": [0.1, 0.01],
        "citrus": {"fruit": ["orange", "lime"], "size": [10, 3]},
        "xy": {"x": [1, 2], "y": [0.5, 0.7]},
        "cm": CONFUSION,
        "plot": "images/plot.png",
    }
    assert cli_json(fed, "metrics", "run-ok", "--name", "accuracy") == {"accuracy": 0.97}


def test_metrics_table_has_one_row_per_name(fed: Service) -> None:
    out = cli(fed, "metrics", "run-ok").stdout.splitlines()
    assert out[0].split() == ["NAME", "KIND", "COUNT", "VALUE"]
    rows = {line.split()[0]: line.split(None, 3) for line in out[1:]}
    assert rows["loss"][1:] == ["scalar", "3", "0.25 (latest of 3)"]
    assert rows["accuracy"][1:] == ["scalar", "1", "0.97"]
    assert rows["plot"][1:] == ["image", "1", "images/plot.png"]


def test_metric_detail_shows_steps_in_logged_order(fed: Service) -> None:
    out = cli(fed, "metrics", "run-ok", "--name", "loss").stdout.splitlines()
    assert out[0].split() == ["#", "STEP", "TIME", "VALUE"]
    assert [(r.split()[1], r.split()[-1]) for r in out[1:]] == [
        ("0", "0.9"), ("1", "0.5"), ("2", "0.25")]
    table_out = cli(fed, "metrics", "run-ok", "--name", "citrus").stdout.splitlines()
    assert [r.split() for r in table_out] == [["fruit", "size"], ["orange", "10"], ["lime", "3"]]


def test_unknown_metric_name_lists_the_known_ones(fed: Service) -> None:
    done = cli(fed, "metrics", "run-ok", "--name", "nope", ok=False)
    assert done.returncode == 1
    assert done.stderr.startswith("mltrail: error: run 'run-ok' has no metric 'nope'; ")
    assert "accuracy, citrus, cm" in done.stderr


# ---- logs ---------------------------------------------------------------------------------


def test_logs_of_several_streams_are_prefixed_and_interleaved_by_time(fed: Service) -> None:
    assert cli(fed, "logs", "run-ok").stdout.splitlines() == [
        "[stdout] epoch 1", "[stdout] epoch 2", "[stderr] warning: slow", "[stdout] done \ufffd"]
    assert cli(fed, "logs", "run-ok", "--stream", "stdout", "--stream", "stderr", "--from", "1"
               ).stdout.splitlines() == ["[stdout] epoch 2", "[stdout] done \ufffd"]


def test_long_streams_interleave_across_pages(fed: Service) -> None:
    """Many pages per stream: the merged output follows the times, chunk by chunk."""
    t0 = time.time_ns()
    recs, expected = [b.started(1, "run-two")], []
    for i in range(12):
        stream = ("stdout", "stderr")[i % 2]
        lines = [f"{stream} chunk {i} line {j}" for j in range(700)]
        data = "".join(line + "\n" for line in lines).encode()
        recs.append(b.record(i + 2, "run-two", t0 + i, log=records_pb2.LogChunk(
            stream=stream, data=data)))
        expected += [f"[{stream}] {line}" for line in lines]
    with b.IngestClient(fed.grpc) as ingest:
        _write_ok(ingest, b.batch(b.new_stream_id(), recs))
    assert cli(fed, "logs", "run-two").stdout.splitlines() == expected


def test_logs_of_one_stream_are_the_text_as_printed(fed: Service) -> None:
    assert cli(fed, "logs", "run-ok", "--stream", "stdout").stdout == (
        "epoch 1\nepoch 2\ndone \ufffd\n")
    assert cli(fed, "logs", "run-ok", "--stream", "stdout", "--from", "1").stdout == (
        "epoch 2\ndone \ufffd\n")
    assert cli(fed, "logs", "run-ok", "--stream", "stderr", "--prefix").stdout == (
        "[stderr] warning: slow\n")


def test_a_run_without_logs_says_so_on_stderr(fed: Service) -> None:
    done = cli(fed, "logs", "run-child")
    assert (done.stdout, done.stderr) == ("", "run run-child has no log lines\n")


def test_logs_json_is_one_object_per_line(fed: Service) -> None:
    out = cli(fed, "logs", "run-ok", "--stream", "stdout", "--json").stdout.splitlines()
    docs = [json.loads(line) for line in out]
    assert [(d["stream"], d["line"], d["text"]) for d in docs] == [
        ("stdout", 0, "epoch 1"), ("stdout", 1, "epoch 2"), ("stdout", 2, "done \ufffd")]
    assert all(d["time"] for d in docs)


def test_logs_of_a_finished_run_with_follow_end_at_once(fed: Service) -> None:
    done = cli(fed, "logs", "run-ok", "--stream", "stdout", "--follow")
    assert done.stdout.splitlines() == ["epoch 1", "epoch 2", "done \ufffd"]
    failed = cli(fed, "logs", "run-bad", "--follow", ok=False)
    assert failed.returncode == 1
    assert failed.stdout == "Traceback...\n"
    assert failed.stderr == ("mltrail: error: run 'run-bad' failed: "
                             "FloatingPointError: loss went to nan (UserError, exit code 2)\n")


# ---- artifacts ------------------------------------------------------------------------------


def test_artifacts_list_and_download_byte_for_byte(fed: Service, tmp_path: Path) -> None:
    listed = cli_json(fed, "artifacts", "run-ok")
    assert [(a["path"], a["size"], a["sha256"]) for a in listed] == [
        ("outputs/model.bin", len(ARTIFACT), hashlib.sha256(ARTIFACT).hexdigest())]
    table_out = cli(fed, "artifacts", "run-ok").stdout.splitlines()
    assert table_out[0].split()[:3] == ["PATH", "SIZE", "SHA256"]
    assert table_out[1].split()[:3] == ["outputs/model.bin", "293.0", "KiB"]
    dest = tmp_path / "m.bin"
    done = cli(fed, "artifacts", "run-ok", "--download", "outputs/model.bin", "--output", str(dest))
    assert dest.read_bytes() == ARTIFACT
    assert done.stdout.startswith("downloaded outputs/model.bin (293.0 KiB, sha256 ")


def test_missing_artifact_is_one_clear_line(fed: Service, tmp_path: Path) -> None:
    done = cli(fed, "artifacts", "run-ok", "--download", "nope.txt",
               "--output", str(tmp_path / "x"), ok=False)
    assert done.returncode == 1
    assert done.stderr == (f"mltrail: error: run 'run-ok' has no artifact 'nope.txt' at "
                           f"collector {fed.grpc}; list them with `mltrail artifacts run-ok`\n")
    assert list(tmp_path.iterdir()) == []


# ---- failures ------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [
    ["show"], ["metrics"], ["logs"], ["logs", "--follow"], ["artifacts"]])
def test_unknown_run_is_one_line_and_exit_1(fed: Service, command: list[str]) -> None:
    done = cli(fed, command[0], "no-such-run", *command[1:], ok=False)
    assert done.returncode == 1
    assert done.stderr == (f"mltrail: error: run 'no-such-run' not found at collector "
                           f"{fed.grpc}; list runs with `mltrail runs --collector {fed.grpc}`\n")
    assert done.stdout == ""


@pytest.mark.parametrize("command", [["runs"], ["show", "r"], ["logs", "r", "--follow"]])
def test_unreachable_collector_is_one_line_and_exit_1(command: list[str]) -> None:
    done = mltrail_cli(*command, "--collector", "127.0.0.1:1")
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(
        "mltrail: error: cannot reach the collector at 127.0.0.1:1 (connection refused); ")


def test_collector_from_environment(fed: Service) -> None:
    done = mltrail_cli("runs", "--json", env={"MLTRAIL_COLLECTOR": fed.grpc})
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)
    assert {r["run_id"] for r in listed} >= {"run-ok", "run-bad"}
    assert all("log_lines" not in r for r in listed)  # no counts in a listing, not zeros


def test_a_closed_pipe_ends_logs_quietly(fed: Service) -> None:
    with b.IngestClient(fed.grpc) as ingest:
        lines = b"".join(b"line %d of a long log\n" % i for i in range(50_000))
        _write_ok(ingest, b.batch(b.new_stream_id(), [
            b.started(1, "run-long"), b.log(2, "run-long", lines), b.ended(3, "run-long")]))
    pipeline = f"{' '.join(MLTRAIL)} logs run-long --collector {fed.grpc} | head -n 2"
    done = subprocess.run(["bash", "-o", "pipefail", "-c", pipeline], capture_output=True,
                          text=True, timeout=60)
    assert done.stdout == "line 0 of a long log\nline 1 of a long log\n"
    assert done.stderr == ""
    assert done.returncode in (0, 141)


# ---- follow -------------------------------------------------------------------------------


class Follower:
    """``mltrail logs RUN --follow`` in the background; its lines with arrival times."""

    def __init__(self, svc: Service, run_id: str) -> None:
        self.proc = subprocess.Popen(
            [*MLTRAIL, "logs", run_id, "--follow", "--collector", svc.grpc],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.proc.stdout, selectors.EVENT_READ)
        self.buffer = b""

    def read_lines(self, count: int, timeout: float) -> list[str]:
        """Wait up to ``timeout`` for ``count`` complete lines."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while self.buffer.count(b"\n") < count and time.monotonic() < deadline:
            if self.sel.select(timeout=max(0.0, deadline - time.monotonic())):
                self.buffer += self.proc.stdout.read() or b""
        lines, _, self.buffer = self.buffer.rpartition(b"\n")
        return lines.decode().splitlines() if lines else []

    def finish(self, timeout: float = 15) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, (self.buffer + out).decode(), err.decode()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@pytest.mark.parametrize(("status", "code"), [
    (records_pb2.COMPLETED, 0), (records_pb2.FAILED, 1), (records_pb2.CANCELED, 1)])
def test_follow_shows_new_lines_as_they_come_and_exits_by_status(
        fed: Service, status: int, code: int) -> None:
    run_id = f"run-live-{status}"
    stream = b.new_stream_id()
    with b.IngestClient(fed.grpc) as ingest:
        _write_ok(ingest, b.batch(stream, [b.started(1, run_id), b.log(2, run_id, b"before\n")]))
        follower = Follower(fed, run_id)
        try:
            assert follower.read_lines(1, timeout=15) == ["before"]
            for seq in (3, 4):  # each line shows while the run goes on
                _write_ok(ingest, b.batch(stream, [b.log(seq, run_id, b"step %d\n" % seq)]))
                assert follower.read_lines(1, timeout=30) == [f"step {seq}"]
            error = ERROR if status != records_pb2.COMPLETED else None
            _write_ok(ingest, b.batch(stream, [
                b.log(5, run_id, b"last\n"), b.ended(6, run_id, status=status, error=error)]))
            returncode, rest, err = follower.finish()
        finally:
            follower.kill()
    assert rest == "last\n"
    assert returncode == code, err
    assert "Traceback" not in err
    if code == 0:
        assert err == ""
    else:
        word = "failed" if status == records_pb2.FAILED else "canceled"
        assert err == (f"mltrail: error: run '{run_id}' {word}: "
                       "FloatingPointError: loss went to nan (UserError, exit code 2)\n")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_follow_survives_a_collector_restart(tmp_path: Path) -> None:
    """kill -9 of the collector while following: the follow reconnects, no line twice."""
    port = _free_port()
    svc = Service("collector", [
        "--store", f"sqlite:///{tmp_path / 'store.db'}", "--grpc", f"127.0.0.1:{port}",
        "--http", "127.0.0.1:0", "--artifacts", str(tmp_path / "artifacts")], tmp_path).start()
    follower = None
    try:
        stream = b.new_stream_id()
        with b.IngestClient(svc.grpc) as ingest:
            _write_ok(ingest, b.batch(stream, [b.started(1, "r"), b.log(2, "r", b"a\nb\n")]))
        follower = Follower(svc, "r")
        assert follower.read_lines(2, timeout=15) == ["a", "b"]
        svc.kill()  # returns once the process is gone: the follow's stream is broken
        svc.start()
        with b.IngestClient(svc.grpc) as ingest:
            _write_ok(ingest, b.batch(stream, [b.log(3, "r", b"c\n"), b.ended(4, "r")]))
        returncode, rest, err = follower.finish(timeout=30)
        assert (returncode, rest) == (0, "c\n"), err
        assert err == "" or err.startswith(f"mltrail: lost the collector at {svc.grpc}; "
                                           "reconnecting for up to 30s"), err
    finally:
        if follower is not None:
            follower.kill()
        svc.stop()
