"""Workspace, Environment and RunConfiguration as v1 scripts build them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mltrail import Environment, RunConfiguration, Workspace
from mltrail.conda_dependencies import CondaDependencies
from mltrail.workspace import Connection, WorkspaceConfigError


def test_from_config_searches_azureml_then_parents_and_reads_mltrail_keys(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".azureml").mkdir()
    (tmp_path / ".azureml" / "config.json").write_text(json.dumps({
        "subscription_id": "sub", "resource_group": "rg", "workspace_name": "team-ws",
        "collector": "127.0.0.1:7431", "token": "s3cret", "tls_ca": "/ca.pem"}))
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    ws = Workspace.from_config()
    assert (ws.name, ws.subscription_id, ws.resource_group, ws.location) == (
        "team-ws", "sub", "rg", "local")
    assert ws.connection == Connection(collector="127.0.0.1:7431", token="s3cret",
                                       tls_ca="/ca.pem")
    assert "s3cret" not in repr(ws.connection)
    assert Workspace.from_config(path=str(tmp_path / ".azureml" / "config.json")) == ws


def test_a_missing_or_wrong_config_says_what_and_where(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WorkspaceConfigError, match=r"config\.json could not be found in"):
        Workspace.from_config()
    (tmp_path / "config.json").write_text(json.dumps({"workspace_name": "w", "colector": "x"}))
    with pytest.raises(WorkspaceConfigError, match=r"unknown keys \['colector'\]"):
        Workspace.from_config()
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(WorkspaceConfigError, match="not a readable JSON file"):
        Workspace.from_config()


def test_write_config_round_trips_without_the_token(tmp_path: Path) -> None:
    ws = Workspace("sub", "rg", "w1", connection=Connection(collector="h:1", token="t"))
    ws.write_config(path=tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())
    assert written == {"subscription_id": "sub", "resource_group": "rg", "workspace_name": "w1",
                       "collector": "h:1"}
    assert Workspace.get("w1", subscription_id="sub").name == "w1"


def test_environments_as_v1_samples_build_them(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLTRAIL_HOME", str(tmp_path / "home"))
    env = Environment("user-managed-env")
    env.python.user_managed_dependencies = True
    env.python.interpreter_path = "/usr/bin/python3"
    env.docker.enabled = True
    assert env.docker.base_image and env.docker.gpu_support is None  # never set: None, as v1
    env.python.conda_dependencies = CondaDependencies.create(conda_packages=["scikit-learn"])
    spec = tmp_path / "env.yml"
    spec.write_text("name: x\nchannels: [conda-forge]\ndependencies:\n  - python=3.11\n"
                    "  - numpy\n  - pip:\n    - torch==2.1\n")
    conda = Environment.from_conda_specification("from-conda", spec)
    deps = conda.python.conda_dependencies
    assert (deps.channels, deps.conda_packages, deps.pip_packages, deps.python_version) == (
        ["conda-forge"], ["python=3.11", "numpy"], ["torch==2.1"], "3.11")
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("scikit-learn>=1.5  # models\n\npandas\n")
    pip = Environment.from_pip_requirements("from-pip", reqs)
    assert pip.python.conda_dependencies.pip_packages == ["scikit-learn>=1.5", "pandas"]
    ws = Workspace(workspace_name="w")
    env.register(ws)
    again = Environment.get(ws, "user-managed-env")
    assert again.to_dict() == env.to_dict()
    assert Environment.get(ws, "AzureML-sklearn-1.0-ubuntu20.04-py38-cpu").name.startswith(
        "AzureML-")
    with pytest.raises(ValueError, match="no environment 'nope' is registered in workspace 'w'"):
        Environment.get(ws, "nope")
    with pytest.raises(ValueError, match="is not a file"):
        Environment.from_conda_specification("x", tmp_path / "missing.yml")


def test_run_configuration_records_its_environment() -> None:
    config = RunConfiguration(script="train.py", arguments=["--lr", 0.1])
    config.environment.python.user_managed_dependencies = True
    recorded = config.to_dict()
    assert recorded["script"] == "train.py" and recorded["arguments"] == ["--lr", "0.1"]
    assert recorded["environment"]["python"]["user_managed_dependencies"] is True
    json.dumps(recorded)  # recorded as JSON with the run


def test_script_run_config_takes_script_and_arguments_from_its_run_config() -> None:
    from mltrail import Experiment, ScriptRunConfig

    run_config = RunConfiguration(script="train.py", arguments=["--epochs", 3])
    run_config.environment = Environment("from-run-config")
    src = ScriptRunConfig(source_directory=".", run_config=run_config)
    assert (src.script, src.arguments, src.run_config) == ("train.py", ["--epochs", 3],
                                                           run_config)
    definition = src.run_definition()
    assert definition["script"] == "train.py" and definition["arguments"] == ["--epochs", "3"]
    assert definition["environment"]["name"] == "from-run-config"
    with pytest.raises(TypeError, match="submit takes a ScriptRunConfig, got RunConfiguration"):
        Experiment("x").submit(run_config)
