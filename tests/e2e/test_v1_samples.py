"""Microsoft's Azure ML v1 samples, ported by changing only the import, run for real.

Each notebook in tests/v1_samples runs cell by cell (tests/v1_notebook.py) in
a fresh Python process, in a copy of its folder with a ``.azureml/config.json``
naming a real agent and collector; submitted scripts run under
``mltrail run``. What the run history then holds is compared with what v1
records for the same calls: the checks below run in the notebook's own
namespace after its last cell, and read the collector directly.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mltrail.query.client import QueryClient
from tests import docker_env
from tests.conftest import require
from tests.procs import Service

SAMPLES = Path(__file__).resolve().parents[1] / "v1_samples"
ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def run_notebook(sample: str, notebook: str, checks: str, agent: Service, collector: Service,
                 tmp_path: Path, extra: dict[str, str] | None = None) -> str:
    work = tmp_path / sample
    shutil.copytree(SAMPLES / sample, work)
    for name, text in (extra or {}).items():
        (work / name).write_text(text)
    (work / ".azureml").mkdir()
    (work / ".azureml" / "config.json").write_text(json.dumps({
        "subscription_id": "00000000-0000-0000-0000-000000000000", "resource_group": "rg",
        "workspace_name": "samples-ws", "agent": agent.info["socket"],
        "collector": collector.grpc}))
    (tmp_path / "checks.py").write_text(textwrap.dedent(checks))
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLTRAIL_AGENT", "MLTRAIL_COLLECTOR", "MLTRAIL_RUN_ID")}
    env.update(MLTRAIL_HOME=str(tmp_path / "home"), PYTHONPATH=str(ROOT), MPLBACKEND="Agg",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    result = subprocess.run([sys.executable, "-m", "tests.v1_notebook", notebook,
                             str(tmp_path / "checks.py")], cwd=work, env=env, text=True,
                            capture_output=True, timeout=600)
    assert result.returncode == 0 and "NOTEBOOK DONE" in result.stdout, (
        result.stdout[-6000:] + result.stderr[-6000:])
    return result.stdout


LOGGING_API_CHECKS = """
    import os
    metrics = fetched_run.get_metrics()
    assert metrics["Category"] == "Red" and metrics["scale factor"] == 2
    assert metrics["Magic Number"] == 84
    assert metrics["Fibonacci"] == [i * 2 for i in [0, 1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89]]
    assert len(metrics["Sigmoid"]) == 20 and abs(metrics["Sigmoid"][10] - 0.5) < 1e-12
    assert list(metrics["Cosine Wave"]) == ["angle", "cos"]
    assert len(metrics["Cosine Wave"]["angle"]) == 20
    assert metrics["Sine Wave"]["angle"] == sines["angle"]
    for name in ("Accuracy", "Precision", "Recall"):
        assert len(metrics[name]["expected"]) == 1000 and len(metrics[name]) == 15
    assert fetched_run.get_metrics(name="scale factor") == {"scale factor": 2}
    files = fetched_run.get_file_names()
    assert "logging-api/myfile.txt" in files
    assert any(f.startswith("images/Hyperbolic Tangent/") for f in files)
    assert metrics["Hyperbolic Tangent"] in files
    assert open("files/myfile.txt").read() == "This is an output file that will be uploaded.\\n"
    assert fetched_run.get_tags() == {"My Favorite Run": "", "Competition Rank": "1"}
    assert fetched_run.get_status() == "Completed" and fetched_run.status == "Completed"
    details = fetched_run.get_details()
    for key in ("runId", "target", "status", "startTimeUtc", "endTimeUtc", "properties",
                "inputDatasets", "outputDatasets", "runDefinition", "logFiles", "submittedBy"):
        assert key in details, key
    assert details["workspace"] == "samples-ws" == ws.name
    assert os.path.isdir("outputs")  # start_logging made ./outputs, as v1 does
"""


def test_logging_api_notebook(agent: Service, collector: Service, tmp_path: Path) -> None:
    out = run_notebook("logging-api", "logging-api.ipynb", LOGGING_API_CHECKS, agent,
                       collector, tmp_path)
    assert "you are currently running version 0.1.0" in out
    assert "Workspace name: samples-ws" in out
    with QueryClient(collector.grpc) as client:
        (info,) = client.list_runs(experiment="logging-api-test")
        assert info.status == "Completed"
        assert info.system_properties["mltrail.workspace"] == "samples-ws"


MANAGE_RUNS_CHECKS = """
    import os
    local_script_run._process.wait(120)  # the run failed by the submitter: its script goes on
    assert local_script_run.get_status() == "Failed"  # and its own end changed nothing
    runs = list(exp.get_runs())
    by_status = sorted(r.get_status() for r in runs)
    assert by_status.count("Canceled") == 1 and by_status.count("Failed") == 1, by_status
    canceled = [r for r in runs if r.get_status() == "Canceled"][0]
    assert canceled.get_details()["runDefinition"]["script"] == "hello_with_delay.py"
    # the canceled script was stopped: it never printed its last line
    assert "Done waiting" not in canceled.get_details_with_logs()["logFiles"].get(
        "user_logs/stdout.txt", "")
    hello = [r for r in runs if r.get_details()["runDefinition"].get("script") == "hello.py"][0]
    assert hello.get_metrics() == {"message": "Hello from run!"}
    assert hello.get_properties() == {"author": "azureml-user"}
    assert hello.get_tags() == {"quality": "fantastic run", "worth another look": ""}
    assert hello.type == "azureml.scriptrun" and hello.get_details()["submittedBy"]
    (children_parent,) = [r for r in runs
                          if r.get_details()["runDefinition"].get("script")
                          == "hello_with_children.py"]
    kids = list(children_parent.get_children())
    assert sorted(k.get_metrics()["Hello from child run "] for k in kids) == [0, 1, 2, 3, 4]
    assert sorted(k.get_tags()["azureml.batch_child_number"] for k in kids) == list("01234")
    assert all(k.parent.id == children_parent.id for k in kids)
    # the script's own runs join the submitter's workspace
    assert {k.get_details()["workspace"] for k in kids} == {"samples-ws"}
    assert len(list(parent_run.get_children())) == 5
    assert len(list(exp.get_runs(include_children=True))) == len(runs) + 10
    assert [r.id for r in exp.get_runs(properties={"author": "azureml-user"},
                                        tags={"quality": "fantastic run"})] == [hello.id]
    assert notebook_run.get_status() == "Completed"
    import zipfile
    (archive,) = [f for f in os.listdir("snapshots") if f.endswith(".zip")]
    names = zipfile.ZipFile("snapshots/" + archive).namelist()
    assert "hello_with_delay.py" in names and ".azureml/config.json" not in names
"""


def test_manage_runs_notebook(agent: Service, collector: Service, tmp_path: Path) -> None:
    out = run_notebook("manage-runs", "manage-runs.ipynb", MANAGE_RUNS_CHECKS, agent,
                       collector, tmp_path)
    assert "Is it still running? Running" in out and "Has it completed? Completed" in out
    assert "Did the run cancel? Canceled" in out
    assert "properties are add-only" in out  # the second add_properties raised, as in v1
    with QueryClient(collector.grpc) as client:
        runs = client.list_runs(experiment="explore-runs", limit=1000)
    assert all(r.is_terminal for r in runs), [(r.run_id, r.status) for r in runs]


TRAIN_ON_LOCAL_CHECKS = """
    files = run.get_file_names()
    assert "outputs/ridge_0.40.pkl" in files and len(
        [f for f in files if f.startswith("outputs/ridge_")]) == 20
    assert len(metrics["alpha"]) == len(metrics["mse"]) == 20
    assert abs(best_alpha - 0.40) < 1e-9 or best_alpha in metrics["alpha"]
    definition = run.get_details()["runDefinition"]
    assert definition["environment"]["name"] in ("system-managed-env", "docker-env")
    assert "scikit-learn" in definition["environment"]["python"]["conda_dependencies"][
        "conda_packages"]
    logs = run.get_details_with_logs()["logFiles"]
    assert "alpha is 0.40" in logs["user_logs/stdout.txt"]
"""


def test_train_on_local_notebook(agent: Service, collector: Service, tmp_path: Path) -> None:
    # the notebook submits in Docker only if `docker system info` answers
    require(docker_env.ensure_engine(), "a Docker engine (dockerd from docker.io)")
    out = run_notebook("train-on-local", "train-on-local.ipynb", TRAIN_ON_LOCAL_CHECKS, agent,
                       collector, tmp_path)
    assert "alpha is 0.95, and mse is" in out  # show_output printed the script's console


EXPORT_CHECKS = """
    assert root_run.get_status() == "Completed"
    metrics = root_run.get_metrics()
    assert metrics["alpha"] == alphas and len(metrics["mse"]) == 7
    children = list(root_run.get_children())
    assert sorted(c.display_name for c in children) == sorted("alpha" + str(a) for a in alphas)
    assert all(c.get_status() == "Completed" for c in children)
"""


def test_export_run_history_notebook(agent: Service, collector: Service, tmp_path: Path
                                     ) -> None:
    run_notebook("export-run-history", "export-run-history-to-tensorboard.ipynb",
                 EXPORT_CHECKS, agent, collector, tmp_path)


TRAIN_WITHIN_CHECKS = """
    assert len(runs) == 21  # the first run and one per alpha
    assert best_run.get_tags() == {"Best Run": ""}
    assert "outputs/model.pkl" in best_run.get_file_names()
    assert min(m["mse"] for m in run_metrics.values()) == run_metrics[best_run_id]["mse"]
"""


def test_train_within_notebook(agent: Service, collector: Service, tmp_path: Path) -> None:
    run_notebook("train-within-notebook", "train-within-notebook.ipynb", TRAIN_WITHIN_CHECKS,
                 agent, collector, tmp_path)


IRIS_SUBMIT = """
    from mltrail import Experiment, ScriptRunConfig, Workspace
    ws = Workspace.from_config()
    src = ScriptRunConfig(source_directory=".", script="train_iris.py",
                          arguments=["--kernel", "linear", "--penalty", 1.0])
    run = Experiment(ws, name="sklearn-iris").submit(src)
    run.wait_for_completion(show_output=True)
"""

IRIS_CHECKS = """
    metrics = run.get_metrics()
    assert metrics["Kernel type"] == "linear" and metrics["Penalty"] == 1.0
    assert 0.9 < metrics["Accuracy"] <= 1.0
    assert "outputs/model.joblib" in run.get_file_names()
    run.download_file("outputs/model.joblib", "model.joblib")
    import joblib
    assert joblib.load("model.joblib").predict([[5.1, 3.5, 1.4, 0.2]])[0] == 0
"""


def test_sklearn_iris_script(agent: Service, collector: Service, tmp_path: Path) -> None:
    notebook = json.dumps({"cells": [
        {"cell_type": "code", "source": textwrap.dedent(IRIS_SUBMIT)}]})
    out = run_notebook("sklearn-iris", "submit.ipynb", IRIS_CHECKS, agent, collector,
                       tmp_path, extra={"submit.ipynb": notebook})
    assert "Accuracy of SVM classifier on test set:" in out  # the script's console, live


V1_CALLS_CHECKS = """
    import time
    deadline = time.monotonic() + 120
    while doomed._process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)  # the script's own end came after the submitter's fail()
    assert doomed._process.poll() is not None
    assert doomed.get_status() == "Failed"  # a terminal status is final
    assert "done" in doomed.get_details_with_logs()["logFiles"]["user_logs/stdout.txt"]
    assert "woke" not in sleeper.get_details_with_logs()["logFiles"]["user_logs/stdout.txt"]
"""


def test_every_v1_call_the_samples_do_not_make(agent: Service, collector: Service,
                                               tmp_path: Path) -> None:
    out = run_notebook("v1-calls", "v1-calls.ipynb", V1_CALLS_CHECKS, agent, collector,
                       tmp_path)
    assert "right after submit: NotStarted NotStarted {}" in out or (
        "right after submit: Running" in out)
    assert "raised: run " in out and "exited with code 3" in out
    with QueryClient(collector.grpc) as client:
        tour = client.get_run("v1-calls-tour")
    assert tour.display_name == "tour renamed" and tour.status == "Completed"
    assert "to-remove" not in tour.tags
    assert tour.system_properties["mltrail.workspace"] == "samples-ws"


WORKSPACE_COLLECTOR_ONLY = """
from mltrail import Experiment, Run, Workspace
ws = Workspace.from_config()
run = Experiment(ws, "ws-collector").start_logging(run_id="through-the-workspace")
run.log("loss", 0.5)
run.complete()
print("read back", Run.get(ws, run.id).get_metrics())
"""


def test_a_workspace_naming_only_a_collector_records_there(collector: Service,
                                                           tmp_path: Path) -> None:
    """No agent anywhere: the SDK starts a local agent that forwards to the config's
    collector, and reads back from it."""
    (tmp_path / ".azureml").mkdir()
    (tmp_path / ".azureml" / "config.json").write_text(json.dumps({
        "workspace_name": "remote-ws", "collector": collector.grpc}))
    env = {k: v for k, v in os.environ.items() if k not in ("MLTRAIL_AGENT", "MLTRAIL_COLLECTOR")}
    env["MLTRAIL_HOME"] = str(tmp_path / "h")
    try:
        result = subprocess.run([sys.executable, "-c", WORKSPACE_COLLECTOR_ONLY], cwd=tmp_path,
                                env=env, text=True, capture_output=True, timeout=180)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "read back {'loss': 0.5}" in result.stdout
        with QueryClient(collector.grpc) as client:
            info = client.get_run("through-the-workspace")
        assert info.status == "Completed"
        assert info.system_properties["mltrail.workspace"] == "remote-ws"
    finally:
        for ready in (tmp_path / "h").rglob("agent.json"):
            pid = json.loads(ready.read_text())["pid"]
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
