"""The Run API's write side: records built from each call, errors at the call."""

from __future__ import annotations

import hashlib
import io
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from mltrail import Experiment, LogHandler, Run, ScriptRunConfig
from mltrail.pipeline.link import Link, offline_link
from mltrail.pipeline.sender import MemorySink, Sender
from mltrail.proto import records_pb2
from mltrail.script_run import OfflineRunNotWatched, RunFailed


@pytest.fixture
def sink() -> Iterator[MemorySink]:
    yield MemorySink()


@pytest.fixture
def run(sink: MemorySink) -> Iterator[Run]:
    link = Link(Sender(sink, interval=0.01), "memory")
    yield Run._start(Experiment("unit"), display_name="unit run", tags={"t": 1}, link=link)
    link.close()


def delivered(run: Run, sink: MemorySink) -> list[records_pb2.Record]:
    run.flush(5)
    return sink.records()


def test_a_started_run_sends_run_started_with_tags(run: Run, sink: MemorySink) -> None:
    (started,) = delivered(run, sink)
    assert started.run_id == run.id and run.id.startswith("unit_")
    event = started.run_event.started
    assert (event.experiment, event.display_name, dict(event.tags)) == ("unit", "unit run",
                                                                        {"t": "1"})
    assert run.status == "Running" and run.display_name == "unit run"


def test_log_builds_scalars_with_steps_and_converts_numpy(run: Run, sink: MemorySink) -> None:
    run.log("loss", np.float32(0.5), step=np.int64(3))
    run.log("flag", True, description="a flag")
    metrics = [r.metric for r in delivered(run, sink)[1:]]
    assert metrics[0].scalar.value.number == 0.5 and metrics[0].scalar.step == 3
    assert metrics[1].scalar.value.flag is True and not metrics[1].scalar.HasField("step")
    assert metrics[1].description == "a flag"


def test_validation_errors_surface_at_the_call(run: Run) -> None:
    with pytest.raises(ValueError, match="name must not be empty"):
        run.log("", 1)
    with pytest.raises(TypeError, match="value must be a bool, int, float or str"):
        run.log("x", [1, 2])
    with pytest.raises(TypeError, match="step must be an int or None"):
        run.log("x", 1, step="3")
    with pytest.raises(ValueError, match="log_row needs at least one column"):
        run.log_row("row")
    with pytest.raises(ValueError, match="missing"):
        run.log_confusion_matrix("cm", {"schema_type": "confusion_matrix"})
    with pytest.raises(ValueError, match=r"exactly one of path .* or plot"):
        run.log_image("img")
    with pytest.raises(ValueError, match="exactly one of path"):
        run.log_image("img", path="a.png", plot=object())
    with pytest.raises(TypeError, match="plot must be a matplotlib figure"):
        run.log_image("img", plot=object())
    with pytest.raises(ValueError, match="is not a file"):
        run.upload_file("outputs/x", "/nonexistent/file")
    with pytest.raises(TypeError, match="binary mode"):
        run.upload_file("outputs/x", io.StringIO("text"))
    with pytest.raises(ValueError, match="must be a relative path"):
        run.upload_file("../x", io.BytesIO(b""))


def test_a_call_larger_than_a_message_can_carry_is_refused_and_the_next_goes(
        run: Run, sink: MemorySink) -> None:
    with pytest.raises(ValueError, match="value must be at most 16 MiB per call"):
        run.log_list("names", ["x" * 300] * 60_000)
    with pytest.raises(ValueError, match="log_row must be at most 16 MiB per call"):
        run.log_row("wide", **{f"c{i}": "x" * 65_536 for i in range(300)})
    run.log("after", 1.0)
    assert [r.metric.name for r in delivered(run, sink)[1:]] == ["after"]


def test_log_image_refuses_a_file_that_is_not_an_image(run: Run, tmp_path: Path) -> None:
    path = tmp_path / "fake.png"
    path.write_bytes(b"GIF89a...")
    with pytest.raises(ValueError, match="is not an image Pillow can read"):
        run.log_image("img", path=path)


def test_log_image_from_a_figure_is_an_artifact_plus_a_reference(run: Run,
                                                                 sink: MemorySink) -> None:
    fig, ax = plt.subplots()
    ax.plot([1, 2])
    run.log_image("curve", plot=fig)
    run.log_image("curve", plot=fig)
    plt.close(fig)
    records = delivered(run, sink)[1:]
    chunks = [r.artifact for r in records if r.HasField("artifact")]
    refs = [r.metric.image.artifact_path for r in records if r.HasField("metric")]
    assert refs == ["images/curve/1.png", "images/curve/2.png"]
    assert chunks[0].data.startswith(b"\x89PNG") and chunks[0].content_type == "image/png"
    assert chunks[0].sha256 == hashlib.sha256(chunks[0].data).hexdigest()


def test_metric_times_are_on_a_microsecond_grid_as_in_azure_ml_v1(run: Run,
                                                                  sink: MemorySink) -> None:
    # v1 stamps metrics to the microsecond (created_utc '%Y-%m-%dT%H:%M:%S.%fZ'); a
    # nanosecond clock would give a multiple of 1,000 once in a thousand calls
    before = time.time_ns() // 1000 * 1000
    for step in range(3):
        run.log("loss", 0.5, step=step)  # the first call checks the name, the rest do not
    run.log("note", "text", description="a description")
    run.log_list("counts", [1, 2])
    run.log_row("epochs", epoch=1, loss=0.5)
    run.log_table("table", {"a": [1, 2]})
    run.log_confusion_matrix("cm", {"schema_type": "confusion_matrix", "schema_version":
                                    "1.0.0", "data": {"class_labels": ["a"], "matrix": [[1]]}})
    fig, ax = plt.subplots()
    ax.plot([1, 2])
    run.log_image("curve", plot=fig)
    plt.close(fig)
    records = delivered(run, sink)
    after = time.time_ns()
    times = [r.time_unix_nano for r in records if r.HasField("metric")]
    assert len(times) == 9
    assert all(before <= t <= after and t % 1000 == 0 for t in times), times


def test_upload_travels_in_1_mib_chunks_with_the_sha256_last(run: Run, sink: MemorySink,
                                                             tmp_path: Path) -> None:
    data = np.random.default_rng(1).bytes(2 * 1024 * 1024 + 17)
    (tmp_path / "blob").write_bytes(data)
    run.upload_file("outputs/blob", str(tmp_path / "blob"))
    chunks = [r.artifact for r in delivered(run, sink) if r.HasField("artifact")]
    assert [(c.offset, len(c.data), c.last) for c in chunks] == [
        (0, 1 << 20, False), (1 << 20, 1 << 20, False), (2 << 20, 17, True)]
    assert chunks[-1].sha256 == hashlib.sha256(data).hexdigest()
    assert chunks[-1].size == len(data)
    assert b"".join(c.data for c in chunks) == data


def test_an_empty_upload_is_one_last_chunk(run: Run, sink: MemorySink) -> None:
    run.upload_file("outputs/empty", io.BytesIO(b""))
    (chunk,) = [r.artifact for r in delivered(run, sink) if r.HasField("artifact")]
    assert chunk.last and chunk.size == 0 and chunk.sha256 == hashlib.sha256(b"").hexdigest()


def test_properties_are_add_only(run: Run) -> None:
    run.add_properties({"a": 1})
    with pytest.raises(ValueError, match=r"properties are add-only.*\['a'\]"):
        run.add_properties({"a": 2, "b": 3})


def test_the_with_block_fails_the_run_with_the_exception(run: Run, sink: MemorySink) -> None:
    with pytest.raises(KeyError), run:
        raise KeyError("missing")
    ended = delivered(run, sink)[-1].run_event.ended
    assert ended.status == records_pb2.FAILED and run.status == "Failed"
    assert (ended.error.type, ended.error.message) == ("KeyError", "'missing'")
    assert 'raise KeyError("missing")' in ended.error.traceback


def test_an_error_message_with_a_lone_surrogate_still_fails_the_run(run: Run,
                                                                    sink: MemorySink) -> None:
    with pytest.raises(ValueError), run:
        raise ValueError("cannot read x\udc80.csv")  # a name from os.fsdecode
    ended = delivered(run, sink)[-1].run_event.ended
    assert ended.status == records_pb2.FAILED
    assert ended.error.message == "cannot read x\ufffd.csv"


def test_child_runs_name_their_parent(run: Run, sink: MemorySink) -> None:
    child = run.child_run("kid")
    child.complete()
    records = delivered(run, sink)
    started = records[1].run_event.started
    assert child.id == f"{run.id}_1" and started.parent_run_id == run.id
    assert started.display_name == "kid" and started.run_type == "child"
    assert records[2].run_event.ended.status == records_pb2.COMPLETED


def test_log_handler_sends_records_beside_basic_config(run: Run, sink: MemorySink) -> None:
    console = io.StringIO()
    logger = logging.getLogger("unit.handler")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False  # pytest's capture handler raises on a logging error
    logger.addHandler(logging.StreamHandler(console))
    logger.addHandler(LogHandler(run))
    logger.debug("debug %d", 1)
    logger.error("multi\nline")
    logger.info("bad %d", "args")  # a formatting error must not reach the caller
    logger.handlers.clear()
    logs = [r for r in delivered(run, sink) if r.HasField("log")]
    assert [(r.log.stream, r.log.level, r.log.logger, r.log.data) for r in logs[:2]] == [
        ("log", "DEBUG", "unit.handler", b"debug 1\n"),
        ("log", "ERROR", "unit.handler", b"multi\n  line\n")]
    assert console.getvalue().startswith("debug 1\nmulti\nline\n")


def test_an_offline_run_reads_its_own_spool(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLTRAIL_HOME", str(tmp_path))
    link = offline_link("OfflineRun_unit")
    run = Run._start(Experiment("offline"), run_id="OfflineRun_unit", link=link)
    run.log("acc", 0.9)
    run.log_row("curve", x=1)
    run.upload_file("outputs/a.txt", io.BytesIO(b"hello"))
    run.set_tags({"k": "v"})
    run.complete()
    assert run.get_metrics() == {"acc": 0.9, "curve": {"x": 1}}
    details = run.get_details()
    assert details["status"] == "Completed" and details["tags"] == {"k": "v"}
    assert run.get_file_names() == ["outputs/a.txt"]
    run.download_file("outputs/a.txt", str(tmp_path / "a.txt"))
    assert (tmp_path / "a.txt").read_bytes() == b"hello"
    assert (tmp_path / "offline" / "OfflineRun_unit" / "segments").is_dir()
    link.close()


def test_wait_for_completion_on_an_offline_run_says_why_or_returns_its_end(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLTRAIL_HOME", str(tmp_path))
    link = offline_link("OfflineRun_wait")
    run = Run._start(Experiment("offline"), run_id="OfflineRun_wait", link=link)
    with pytest.raises(OfflineRunNotWatched, match="OfflineRun_wait is an offline run"):
        run.wait_for_completion(show_output=True, timeout=1)
    run.fail("boom")
    with pytest.raises(RunFailed, match="run OfflineRun_wait failed: boom"):
        run.wait_for_completion()
    details = run.wait_for_completion(raise_on_error=False)
    assert details["status"] == "Failed" and details["runId"] == "OfflineRun_wait"
    link.close()


def test_experiment_names_and_script_run_config() -> None:
    from mltrail import Workspace

    with pytest.raises(ValueError, match="must be 1-255 characters, start with a letter"):
        Experiment("bad name")
    with pytest.raises(TypeError, match="name must be a str, got int"):
        Experiment(Workspace(), 3)  # type: ignore[arg-type]
    workspace = Workspace("sub", "rg", "ws1")
    for v1_call in (Experiment(workspace, "v1-order"), Experiment(workspace, name="v1-order"),
                    Experiment(workspace=workspace, name="v1-order")):
        assert (v1_call.name, v1_call.workspace.name) == ("v1-order", "ws1")
    assert Experiment("plain").workspace.name == "default"
    config = ScriptRunConfig("src", "train.py", arguments=["--lr", 0.1])
    assert (config.source_directory, config.script, config.arguments) == (
        "src", "train.py", ["--lr", 0.1])
    assert config.run_config.environment is config.environment
    assert config.environment.name == "default-environment"
    with pytest.raises(ValueError, match=r"script .* or command, not both"):
        ScriptRunConfig("src", "train.py", command="ls")


def test_wait_errors_are_importable_from_the_package_as_in_azure_ml() -> None:
    import mltrail
    from mltrail import script_run

    assert mltrail.RunFailed is script_run.RunFailed
    assert mltrail.ActivityFailedException is script_run.RunFailed
    assert mltrail.WaitTimeout is script_run.WaitTimeout
