"""The SDK through a real agent and collector: what is logged is what is read back."""

from __future__ import annotations

import io
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from mltrail import Experiment, LogHandler
from mltrail.query.client import QueryClient
from tests.procs import Service

CONFUSION = {"schema_type": "confusion_matrix", "schema_version": "1.0.0",
             "data": {"class_labels": ["a", "b"], "matrix": [[3, 1], [0, 4]]}}
ACCURACY = {"schema_type": "accuracy_table", "schema_version": "1.0.2",
            "data": {"probability_tables": [[[1, 2], [3, 4]]], "percentile_tables": [],
                     "class_labels": ["a", "b"], "probability_thresholds": [0.5],
                     "percentile_thresholds": [50]}}
RESIDUALS = {"schema_type": "residuals", "schema_version": "1.0.0",
             "data": {"bin_edges": [0, 1, 2], "bin_counts": [5, 7]}}
PREDICTIONS = {"schema_type": "predictions", "schema_version": "1.0.0",
               "data": {"bin_averages": [0.1, 0.9], "bin_errors": [0.01, 0.02],
                        "bin_counts": [3, 4], "bin_edges": [0, 0.5, 1]}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Pipeline:
    """A collector on a fixed port (so it can come back at the same address) and an agent."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.socket = tmp / "agent.sock"
        self.collector = Service("collector", [
            "--store", f"sqlite:///{tmp / 'store.db'}", "--grpc", f"127.0.0.1:{free_port()}",
            "--http", "127.0.0.1:0", "--artifacts", str(tmp / "artifacts")], tmp)
        self.agent = Service("agent", [
            "--socket", str(self.socket), "--spool", str(tmp / "spool"),
            "--http", "127.0.0.1:0", "--collector", self.collector.args[3]], tmp)

    def start(self) -> Pipeline:
        self.collector.start()
        self.agent.start()
        return self

    def stop(self) -> None:
        self.agent.stop()
        self.collector.stop()


@pytest.fixture
def pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pipeline]:
    pipe = Pipeline(tmp_path).start()
    monkeypatch.setenv("MLTRAIL_AGENT", str(pipe.socket))
    monkeypatch.setenv("MLTRAIL_HOME", str(tmp_path / "home"))
    yield pipe
    pipe.stop()


def png_file(tmp_path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([1, 2, 3])
    path = tmp_path / "plot.png"
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def test_every_kind_of_metric_tags_properties_children_and_files(
        pipeline: Pipeline, tmp_path: Path) -> None:
    image_path = png_file(tmp_path)
    model = tmp_path / "model.bin"
    model.write_bytes(bytes(range(256)) * 5000)  # > 1 MiB: travels in two chunks
    fig, ax = plt.subplots()
    ax.plot([3, 1, 2])
    with Experiment("kinds").start_logging(display_name="all kinds", tags={"team": "a"}) as run:
        for epoch in range(5):
            run.log("loss", 1.0 / (epoch + 1), step=epoch)
        run.log("done", True)
        run.log("note", "text value")
        run.log_list("fib", [0, 1, 1, 2, 3])
        run.log_row("curve", x=1, y=0.5)
        run.log_row("curve", x=2, y=0.25)
        run.log_table("table", {"a": [1, 2], "b": ["x", "y"]})
        run.log_confusion_matrix("cm", CONFUSION)
        run.log_accuracy_table("acc", ACCURACY)
        run.log_residuals("res", RESIDUALS)
        run.log_predictions("pred", PREDICTIONS)
        run.log_image("from_file", path=image_path)
        run.log_image("from_plot", plot=fig)
        run.upload_file("outputs/model.bin", str(model))
        run.upload_file("outputs/notes.txt", io.BytesIO(b"stream upload"))
        run.tag("stage", "test")
        run.set_tags({"lr": 0.1})
        run.add_properties({"seed": 7})
        child = run.child_run("child one")
        child.log("child_metric", 42)
        child.complete()
        metrics = run.get_metrics()
    plt.close(fig)

    assert metrics["loss"] == [1.0, 0.5, 1 / 3, 0.25, 0.2]
    assert metrics["done"] is True and metrics["note"] == "text value"
    assert metrics["fib"] == [0, 1, 1, 2, 3]
    assert metrics["curve"] == {"x": [1, 2], "y": [0.5, 0.25]}
    assert metrics["table"] == {"a": [1, 2], "b": ["x", "y"]}
    assert metrics["cm"] == CONFUSION and metrics["acc"] == ACCURACY
    assert metrics["res"] == RESIDUALS and metrics["pred"] == PREDICTIONS
    assert metrics["from_file"] == "images/from_file/1.png"
    assert metrics["from_plot"] == "images/from_plot/1.png"

    details = run.get_details()
    assert details["status"] == "Completed" and run.get_status() == "Completed"
    assert details["tags"] == {"team": "a", "stage": "test", "lr": "0.1"}
    assert details["properties"] == {"seed": "7"}
    assert details["displayName"] == "all kinds"
    assert details["startTimeUtc"] < details["endTimeUtc"]
    children = list(run.get_children())
    assert [c.id for c in children] == [child.id]
    assert children[0].get_metrics() == {"child_metric": 42}
    assert run.get_metrics(recursive=True)[child.id] == {"child_metric": 42}

    assert set(run.get_file_names()) == {"outputs/model.bin", "outputs/notes.txt",
                                         "images/from_file/1.png", "images/from_plot/1.png"}
    run.download_file("outputs/model.bin", str(tmp_path / "model.copy"))
    assert (tmp_path / "model.copy").read_bytes() == model.read_bytes()
    run.download_file("images/from_file/1.png", str(tmp_path / "image.copy"))
    assert (tmp_path / "image.copy").read_bytes() == image_path.read_bytes()
    run.download_file("images/from_plot/1.png", str(tmp_path / "plot.copy"))
    assert (tmp_path / "plot.copy").read_bytes().startswith(b"\x89PNG")


def test_a_failing_block_fails_the_run_with_type_message_and_traceback(
        pipeline: Pipeline) -> None:
    with pytest.raises(ZeroDivisionError), Experiment("fails").start_logging() as run:
        run.log("before", 1)
        _ = 1 / 0
    details = run.get_details()
    assert details["status"] == "Failed"
    error = details["error"]["error"]
    assert error["type"] == "ZeroDivisionError" and error["message"] == "division by zero"
    assert "_ = 1 / 0" in error["traceback"]


def test_properties_are_add_only(pipeline: Pipeline) -> None:
    run = Experiment("props").start_logging()
    run.add_properties({"a": "1"})
    with pytest.raises(ValueError, match=r"properties are add-only; already set .*\['a'\]"):
        run.add_properties({"a": "2"})
    run.complete()
    assert run.get_details()["properties"] == {"a": "1"}


def test_python_logging_records_arrive_as_log_lines(pipeline: Pipeline) -> None:
    run = Experiment("logs").start_logging()
    logger = logging.getLogger("test.sdk.handler")
    handler = LogHandler(run)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        logger.info("first line")
        logger.warning("second line")
    finally:
        logger.removeHandler(handler)
    run.complete()
    run.get_metrics()  # waits until the collector has every record
    with QueryClient(pipeline.collector.grpc) as client:
        lines = list(client.tail_logs(run.id, streams=["log"]))
    assert [line.text.rstrip("\n") for line in lines] == ["first line", "second line"]


def test_logging_through_a_collector_outage_loses_nothing(pipeline: Pipeline) -> None:
    # How fast run.log is, is a figure for bench/sdk_log.py, not a check here: a log call
    # never touches the network, so the outage does not change it (invariant 1).
    run = Experiment("outage").start_logging()
    run.log("warmup", 0)
    run.flush()
    pipeline.collector.kill()
    for i in range(20_000):
        run.log("loss", float(i), step=i)
    run.complete()  # the agent holds the records in its spool: complete returns
    pipeline.collector.start()
    metrics = run.get_metrics()
    assert metrics["loss"] == [float(i) for i in range(20_000)]
    assert run.get_status() == "Completed"


def test_an_agent_killed_and_restarted_gets_everything_once(pipeline: Pipeline) -> None:
    run = Experiment("agent_outage").start_logging()
    for i in range(1000):
        run.log("loss", float(i), step=i)
    run.flush()
    pipeline.agent.kill()
    for i in range(1000, 3000):
        run.log("loss", float(i), step=i)  # returns although nobody can take it
    pipeline.agent.start()
    run.complete()
    assert run.get_metrics()["loss"] == [float(i) for i in range(3000)]


def test_a_call_near_the_size_limit_after_others_is_not_refused(pipeline: Pipeline) -> None:
    # 3.9 MiB of rows fill most of one batch; a 15 MiB table (under the 16 MiB
    # per-call limit) then follows. It once joined that batch, which the agent
    # refused as over its limit: the table and the rows were lost.
    run = Experiment("big").start_logging()
    for i in range(65):
        run.log_row("rows", i=i, text="r" * 60_000)
    column = ["t" * 1000] * 15_000
    run.log_table("big", {"text": column})
    run.complete()
    metrics = run.get_metrics()
    assert len(metrics["rows"]["i"]) == 65
    assert metrics["big"]["text"] == column
    assert run._link.sender.stats.records_refused == 0


def test_long_descriptions_count_toward_the_batch_size(pipeline: Pipeline) -> None:
    # Each call is small but carries the longest description allowed (4096
    # characters, 16 KiB as UTF-8). Estimated without it, 3000 of them made one
    # 48 MiB batch, which the agent refused as over its limit: all were lost.
    run = Experiment("described").start_logging()
    description = "\N{GRINNING FACE}" * 4096
    for i in range(3000):
        run.log_row("rows", description=description, i=i)
    run.complete()
    assert run._link.sender.stats.records_refused == 0
    assert run.get_metrics()["rows"]["i"] == list(range(3000))
