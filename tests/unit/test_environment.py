"""What a run records of its environment at its start."""

from __future__ import annotations

import json
from pathlib import Path

from mltrail.bundle import environment
from mltrail.common.redact import Redactor


class _Info:
    collector = "127.0.0.1:7431"
    http = "127.0.0.1:7433"
    version = "0.1.0"
    spool_dir = "/spool"


def _refused() -> None:
    raise ConnectionRefusedError("no agent at /x.sock")


def test_capture_has_python_packages_settings_and_the_agent() -> None:
    env = {"MLTRAIL_AGENT": "/x.sock", "MLTRAIL_TOKEN": "mlt_0123_secretvalue",
           "HOME": "/root", "AWS_SECRET_ACCESS_KEY": "never-recorded"}
    found = environment.capture(lambda: _Info(), environ=env)
    assert found["python"]["version"].count(".") == 2
    assert "grpcio" in found["packages"] and found["cpu"]["count"]
    assert found["settings"] == {"MLTRAIL_AGENT": "/x.sock",
                                 "MLTRAIL_TOKEN": "[REDACTED:secret_name]"}
    assert found["agent"]["http"] == "127.0.0.1:7433"
    text = environment.to_property(found)
    assert "never-recorded" not in text and "secretvalue" not in text
    assert json.loads(text) == json.loads(json.dumps(found, sort_keys=True))


def test_an_agent_that_is_down_is_recorded_not_raised() -> None:
    found = environment.capture(_refused, environ={})
    assert "no agent" in found["agent"]["error"]


def test_a_property_too_large_leaves_the_package_list_out() -> None:
    found = environment.capture(None, environ={})
    found["packages"] = {f"package-{i}": "1.0" for i in range(5000)}
    text = environment.to_property(found)
    assert len(text) <= environment.MAX_PROPERTY_CHARS
    assert json.loads(text)["packages"] == {"left_out": 5000}


def test_secret_flags_in_argv() -> None:
    argv = ["train.py", "--api-key", "k-123", "--lr", "0.1", "--token=abc", "pos"]
    assert environment.redact_argv(argv, Redactor()) == [
        "train.py", "--api-key", "[REDACTED:secret_name]", "--lr", "0.1",
        "--token=[REDACTED:assignment]", "pos"]


def test_it_can_be_turned_off() -> None:
    assert environment.enabled({})
    assert not environment.enabled({"MLTRAIL_RECORD_ENVIRONMENT": "0"})


def test_cpu_and_gpu_models_from_proc_files(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Example CPU @ 3.0GHz\n")
    assert environment.cpu_model(cpuinfo) == "Example CPU @ 3.0GHz"
    gpu = tmp_path / "gpus" / "0000:01:00.0"
    gpu.mkdir(parents=True)
    (gpu / "information").write_text("Model: \t\t NVIDIA A100-SXM4-40GB\nIRQ: 1\n")
    assert environment.gpu_models(tmp_path / "gpus") == ["NVIDIA A100-SXM4-40GB"]
