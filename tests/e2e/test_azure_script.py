"""An Azure ML v1 training script, changed only in its import line, run as a user runs it.

`mltrail run -- python train.py` through a real agent and collector; the
run is read back with the SDK and with the `mltrail` read commands.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mltrail import Experiment, Run
from mltrail.query.client import QueryClient, RunNotFound
from tests.procs import Service, mltrail_cli

TRAIN = textwrap.dedent('''
    import os
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from mltrail import Run  # was: from azureml.core import Run

    run = Run.get_context()
    run.tag("model", "linear")
    run.set_tags({"dataset": "synthetic"})
    run.add_properties({"seed": "3"})
    run.log("learning_rate", 0.01)
    losses = []
    for epoch in range(10):
        loss = 1.0 / (epoch + 1)
        losses.append(loss)
        run.log("loss", loss)
        run.log("accuracy", np.float64(1 - loss / 2))
        print(f"epoch {epoch} loss {loss:.3f}")
    run.log_list("losses", losses)
    for x in range(3):
        run.log_row("curve", x=x, y=x * x)
    run.log_table("schedule", {"epoch": [0, 1, 2], "lr": [0.1, 0.05, 0.01]})
    run.log_confusion_matrix("confusion", {
        "schema_type": "confusion_matrix", "schema_version": "1.0.0",
        "data": {"class_labels": ["cat", "dog"], "matrix": [[5, 1], [2, 7]]}})
    fig, ax = plt.subplots()
    ax.plot(losses)
    run.log_image("loss_curve", plot=fig)
    fig.savefig("curve.png")
    os.makedirs("outputs", exist_ok=True)
    with open("outputs/model.npy", "wb") as fh:
        np.save(fh, np.arange(100_000, dtype=np.float64))
    run.upload_file("outputs/model.npy", "outputs/model.npy")
    for fold in range(2):
        child = run.child_run(f"fold-{fold}")
        child.log("fold_loss", 0.1 * (fold + 1))
        child.complete()
    run.complete()
    print("RUN_ID=" + run.id)
''')


def test_an_azure_v1_script_runs_unchanged_and_reads_back(
        tmp_path: Path, collector: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    agent = Service("agent", ["--socket", str(tmp_path / "agent.sock"), "--collector",
                              collector.grpc, "--spool", str(tmp_path / "spool"),
                              "--http", "127.0.0.1:0"], tmp_path).start()
    try:
        (tmp_path / "train.py").write_text(TRAIN)
        env = {"MLTRAIL_AGENT": str(tmp_path / "agent.sock"),
               "MLTRAIL_HOME": str(tmp_path / "home"), "MLTRAIL_COLLECTOR": collector.grpc}
        cwd = os.getcwd()
        os.chdir(tmp_path)
        try:
            # the interpreter of the environment under test, not whichever is on PATH
            result = mltrail_cli("run", "--experiment", "azure", "--", sys.executable, "train.py",
                                 env=env, timeout=120)
        finally:
            os.chdir(cwd)
        assert result.returncode == 0, result.stderr
        for key, value in env.items():  # this process reads back through the same agent
            monkeypatch.setenv(key, value)
        assert "epoch 9 loss 0.100" in result.stdout  # the console is still shown
        run_id = result.stdout.split("RUN_ID=")[1].split()[0]
        check_with_the_sdk(run_id, collector, tmp_path)
        check_with_the_cli(run_id, collector, tmp_path, env)
    finally:
        agent.stop()


def check_with_the_sdk(run_id: str, collector: Service, tmp_path: Path) -> None:
    with QueryClient(collector.grpc) as client:
        # `mltrail run` returns once the agent holds everything (in its spool);
        # the agent forwards it to the collector a moment later.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(RunNotFound):
                info = client.get_run(run_id)
                if info.status == "Completed" and len(info.child_run_ids) == 2:
                    break
            time.sleep(0.1)
        metrics = client.get_metrics(run_id)
        lines = [line.text for line in client.tail_logs(run_id, streams=["stdout"])]
    assert metrics["loss"] == [1.0 / (e + 1) for e in range(10)]
    assert metrics["accuracy"] == [1 - 1.0 / (e + 1) / 2 for e in range(10)]
    assert metrics["learning_rate"] == 0.01
    assert metrics["losses"] == metrics["loss"]
    assert metrics["curve"] == {"x": [0, 1, 2], "y": [0, 1, 4]}
    assert metrics["schedule"] == {"epoch": [0, 1, 2], "lr": [0.1, 0.05, 0.01]}
    assert metrics["confusion"]["data"]["matrix"] == [[5, 1], [2, 7]]
    assert metrics["loss_curve"] == "images/loss_curve/1.png"
    assert info.status == "Completed" and info.experiment == "azure"
    assert info.tags == {"model": "linear", "dataset": "synthetic"}
    # the workspace and the starter are recorded with the run (v1's get_details shows them
    # under their own keys; RunInfo keeps the mltrail.* properties apart)
    assert info.properties == {"seed": "3"}
    assert info.system_properties["mltrail.workspace"] == "default"
    assert info.system_properties["mltrail.submitted_by"]
    assert len(info.child_run_ids) == 2
    assert "epoch 0 loss 1.000" in lines
    # The SDK's read side, from another process, by run id.
    run = Run(Experiment("azure"), run_id)
    children = sorted(run.get_children(), key=lambda r: r.id)
    assert [c.get_metrics() for c in children] == [{"fold_loss": 0.1}, {"fold_loss": 0.2}]
    run.download_file("outputs/model.npy", str(tmp_path / "model.copy"))
    assert (tmp_path / "model.copy").read_bytes() == (tmp_path / "outputs/model.npy").read_bytes()


def check_with_the_cli(run_id: str, collector: Service, tmp_path: Path,
                       env: dict[str, str]) -> None:
    address = ["--collector", collector.grpc]
    metrics = mltrail_cli("metrics", run_id, "--json", *address, env=env)
    assert metrics.returncode == 0, metrics.stderr
    assert json.loads(metrics.stdout)["curve"] == {"x": [0, 1, 2], "y": [0, 1, 4]}
    show = mltrail_cli("show", run_id, "--json", *address, env=env)
    assert show.returncode == 0, show.stderr
    assert "Completed" in show.stdout and "linear" in show.stdout
    listing = mltrail_cli("artifacts", run_id, *address, env=env)
    assert "outputs/model.npy" in listing.stdout and "images/loss_curve/1.png" in listing.stdout
    image = tmp_path / "image.png"
    got = mltrail_cli("artifacts", run_id, "--download", "images/loss_curve/1.png",
                      "--output", str(image), *address, env=env)
    assert got.returncode == 0, got.stderr
    assert image.read_bytes().startswith(b"\x89PNG")
    listed = mltrail_cli("artifacts", run_id, "--json", *address, env=env)
    model = hashlib.sha256((tmp_path / "outputs/model.npy").read_bytes()).hexdigest()
    assert model in listed.stdout  # the stored file's sha256 is the uploaded file's
