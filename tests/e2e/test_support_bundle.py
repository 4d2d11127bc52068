"""Support bundles end to end: a real collector, agent and training script, and
the bundle compared with what the Query API answers."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import pytest

from mltrail.query.client import QueryClient
from mltrail.query.metrics_view import metric_kind, metric_to_python
from tests.agent_client import agent_service
from tests.procs import MLTRAIL, Service, mltrail_cli

PNG = (b"\x89PNG\r\n\x1a\n" + b"\0" * 64)

TRAIN = textwrap.dedent("""
    import sys, logging
    from pathlib import Path
    from mltrail import Run, LogHandler
    run = Run.get_context()
    for step in range(5):
        run.log("loss", 1.0 / (step + 1), step=step)
    run.log("lr", 0.01)
    run.log("note", "warm start")
    run.log_list("counts", [3, 1, 2])
    run.log_row("epochs", epoch=0, acc=0.5)
    run.log_row("epochs", epoch=1, acc=0.75)
    run.log_table("per_class", {"digit": [0, 1, 2], "acc": [0.9, 0.8, 0.7]})
    Path("curve.png").write_bytes(PNG)
    run.log_image("curve", path="curve.png")
    run.log_confusion_matrix("confusion", {
        "schema_type": "confusion_matrix", "schema_version": "1.0.0",
        "data": {"class_labels": ["0", "1"], "matrix": [[5, 1], [0, 6]]}})
    run.log_residuals("residuals", {
        "schema_type": "residuals", "schema_version": "1.0.0",
        "data": {"bin_edges": [0, 1, 2], "bin_counts": [3, 4]}})
    Path("model.bin").write_bytes(bytes(range(256)) * 40)
    run.upload_file("outputs/model.bin", "model.bin")
    run.tag("stage", "bundle-test")
    run.add_properties({"seed": "7"})
    child = run.child_run(name="fold-1")
    child.log("acc", 0.93)
    grandchild = child.child_run(name="fold-1a")
    grandchild.log("acc", 0.5)
    grandchild.complete()
    child.complete()
    logging.basicConfig(level=logging.INFO)
    logging.getLogger().addHandler(LogHandler(run))
    logging.getLogger("train").info("data loaded")
    for i in range(LINES):
        print(f"epoch {i} loss {1.0 / (i + 1):.4f}")
    print("\\rprogress 50%\\rprogress 100%")
    print("unicode é ü 日本", flush=True)
    print("about to fail", file=sys.stderr, flush=True)
    raise RuntimeError("planned failure for the bundle")
""").replace("PNG", repr(PNG))


def run_script(agent: Service, tmp_path: Path, run_id: str, script: str, *,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    path = tmp_path / f"{run_id}.py"
    path.write_text(script)
    return subprocess.run(
        [*MLTRAIL, "run", "--experiment", "bundles", "--run-id", run_id, "--",
         sys.executable, str(path)],
        capture_output=True, cwd=tmp_path, timeout=180,
        env={**os.environ, "MLTRAIL_AGENT": agent.info["socket"],
             "MLTRAIL_HOME": str(tmp_path / "home"), **(env or {})})


def bundle(collector: Service, run_id: str, out: Path, *extra: str) -> zipfile.ZipFile:
    done = mltrail_cli("bundle", run_id, "-o", str(out), "--collector", collector.grpc, *extra,
                       timeout=180)
    assert done.returncode == 0, done.stderr
    return zipfile.ZipFile(out)


def manifest(archive: zipfile.ZipFile) -> dict[str, Any]:
    return json.loads(archive.read("manifest.json"))


def test_run_bundle_matches_the_query_api(agent: Service, collector: Service,
                                          tmp_path: Path) -> None:
    done = run_script(agent, tmp_path, "full-1", TRAIN.replace("LINES", "300"))
    assert done.returncode == 1, done.stderr[-2000:]
    archive = bundle(collector, "full-1", tmp_path / "b.zip", "--with-artifacts")
    m = manifest(archive)
    names = set(archive.namelist())

    # every file is listed with its true size and sha256
    listed = {f["name"]: f for f in m["files"]}
    assert set(listed) == names - {"manifest.json"}
    for name, entry in listed.items():
        data = archive.read(name)
        assert (len(data), hashlib.sha256(data).hexdigest()) == (entry["size"], entry["sha256"])
    assert m["cuts"] == []
    assert m["mltrail_version"] and m["python_version"] and m["created_by"]["user"]

    with QueryClient(collector.grpc) as client:
        info = client.get_run("full-1")
        details = json.loads(archive.read("run.json"))
        assert details["status"] == info.status == "Failed"
        assert json.loads(archive.read("tags.json")) == info.tags
        assert "grpcio" in json.loads(archive.read("environment.json"))["packages"]
        system = dict(info.system_properties)
        assert system.pop("mltrail.environment")  # in environment.json, not properties.json
        assert info.properties == {"seed": "7"}
        assert json.loads(archive.read("properties.json")) == {**info.properties, **system}
        error = json.loads(archive.read("error.json"))
        assert info.error is not None and error["message"] == info.error.message
        assert m["summary"]["status"] == "Failed" and "about to fail" in m["summary"]["stderr_tail"]

        # logs: byte for byte, every stream
        streams = {line.stream for line in client.tail_logs("full-1")}
        assert {"stdout", "stderr", "log"} <= streams
        index = json.loads(archive.read("logs/index.json"))
        for stream in streams:
            want = "".join(line.text + "\n" for line in client.tail_logs("full-1", [stream]))
            assert archive.read(index[stream]["file"]) == want.encode()

        # metrics: every call of every kind, in order, in JSONL; and a CSV per metric
        records = client.get_metric_records("full-1")
        kinds = {metric_kind(r.metric) for r in records}
        assert kinds == {"scalar", "list", "row", "table", "image", "json"}
        metric_index = json.loads(archive.read("metrics/index.json"))
        for name in {r.metric.name for r in records}:
            calls = [r for r in records if r.metric.name == name]
            jsonl, csv_file = metric_index[name]["files"]
            rows = [json.loads(line) for line in archive.read(jsonl).decode().splitlines()]
            assert [r["value"] for r in rows] == [metric_to_python(c.metric) for c in calls]
            assert [r["time_unix_nano"] for r in rows] == [c.time_unix_nano for c in calls]
            assert archive.read(csv_file).decode().startswith("record,time_unix_nano,kind,step")
        loss = [json.loads(x) for x in archive.read("metrics/loss.jsonl").decode().splitlines()]
        assert [r["step"] for r in loss] == list(range(5))

        # artifacts: the index and, asked for, the bytes
        artifacts = {a.path: a for a in client.list_artifacts("full-1")}
        assert {a["path"] for a in json.loads(archive.read("artifacts.json"))} == set(artifacts)
        model = archive.read("artifacts/outputs/model.bin")
        assert hashlib.sha256(model).hexdigest() == artifacts["outputs/model.bin"].sha256

        # children, recursively
        child_id = info.child_run_ids[0]
        child = client.get_run(child_id)
        grandchild_id = child.child_run_ids[0]
        assert f"children/{child_id}/metrics/acc.jsonl" in names
        assert f"children/{child_id}/children/{grandchild_id}/run.json" in names

    # the delivering agent's bundle is inside
    assert m["summary"]["agent_bundle"]["included"], m["summary"]["agent_bundle"]
    assert "agent/metrics-end.txt" in names and "agent/settings.json" in names
    assert "README.txt" in names
    assert "Task exception was never retrieved" not in collector.output()

    shown = mltrail_cli("bundle", "inspect", str(tmp_path / "b.zip"))
    assert shown.returncode == 0, shown.stderr
    assert "Failed" in shown.stdout and "about to fail" in shown.stdout
    assert "bundle included" in shown.stdout


def test_max_bytes_keeps_the_bundle_within_the_cap(agent: Service, collector: Service,
                                                   tmp_path: Path) -> None:
    done = run_script(agent, tmp_path, "long-1", TRAIN.replace("LINES", "60000"))
    assert done.returncode == 1
    cap = 200_000
    out = tmp_path / "small.zip"
    archive = bundle(collector, "long-1", out, "--max-bytes", str(cap), "--with-artifacts")
    assert out.stat().st_size <= cap
    m = manifest(archive)
    cuts = {c["file"]: c for c in m["cuts"]}
    assert cuts["logs/stdout.txt"]["action"] == "middle cut"
    stdout = archive.read("logs/stdout.txt").decode()
    assert stdout.startswith("epoch 0 loss")  # the head ...
    assert "unicode é ü 日本\n" in stdout[-200:]  # ... and the end stay
    assert "cut from the middle" in stdout
    assert cuts["logs/stdout.txt"]["cut_lines"] > 0
    inspect = mltrail_cli("bundle", "inspect", str(out))
    assert "logs/stdout.txt: middle cut" in inspect.stdout


SECRET_TOKEN = "mltrail_Zx81PqLmNoA7rT0kW2sVb9Yd"
AGENT_PASSWORD = "AgentPassw0rd-xyzzy"
DB_PASSWORD = "PgS3cret-plugh"
LOG_KEY = "AKIAQWERTYUIOPASDFGH"
TAG_TOKEN = "ghp_Jk5sH2mN8bV4cX1zQ7wE3rT6yU9iO0pLaSdF"
BEARER = ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
          "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U")


def test_planted_secrets_are_nowhere_in_the_bundle(collector: Service, tmp_path: Path) -> None:
    log_file = tmp_path / "train.log"
    log_file.write_text(f"using aws key {LOG_KEY} for the dataset\nplain line\n")
    config = tmp_path / "agent.toml"
    config.write_text(textwrap.dedent(f"""
        [[sources]]
        type = "file"
        name = "trainer"
        paths = ["{log_file}"]
        run_id = "secret-1"
        docker_host = "tcp://admin:{AGENT_PASSWORD}@dockerhost:2376"
    """))
    agent = agent_service(tmp_path, collector.grpc, "--config", str(config)).start()
    try:
        script = textwrap.dedent(f"""
            import sys
            from mltrail import Run
            run = Run.get_context()
            run.tag("upload_token", "{TAG_TOKEN}")
            run.tag("db", "postgresql://trainer:{DB_PASSWORD}@db:5432/runs")
            run.add_properties({{"note": "marker-property-visible"}})
            print("connecting to postgresql://trainer:{DB_PASSWORD}@db:5432/runs")
            print("header Authorization: Bearer {BEARER}")
            print("marker-log-visible")
            print("key {LOG_KEY}", file=sys.stderr)
        """)
        done = run_script(agent, tmp_path, "secret-1", script,
                          env={"MLTRAIL_TOKEN": SECRET_TOKEN,
                               "MLTRAIL_NOTE": f"token is {SECRET_TOKEN}"})
        assert done.returncode == 0, done.stderr[-2000:]
        with QueryClient(collector.grpc) as client:
            _wait_for_stream(client, "secret-1", "trainer")
        archive = bundle(collector, "secret-1", tmp_path / "s.zip", "--redact", "marker-secret")
    finally:
        agent.stop()
    unpacked = tmp_path / "unpacked"
    archive.extractall(unpacked)
    everything = b"".join(p.read_bytes() for p in unpacked.rglob("*") if p.is_file())
    for secret in (SECRET_TOKEN, AGENT_PASSWORD, DB_PASSWORD, LOG_KEY, TAG_TOKEN, BEARER):
        assert secret.encode() not in everything, secret
    assert b"marker-log-visible" in everything and b"marker-property-visible" in everything
    for rule in ("secret_name", "url_password", "aws_access_key", "bearer_token"):
        assert f"[REDACTED:{rule}]".encode() in everything, rule
    m = manifest(archive)
    by_file = m["redactions"]["by_file"]
    assert "tags.json" in by_file and "environment.json" in by_file
    assert "agent/settings.json" in by_file and "logs/stdout.txt" in by_file
    assert m["summary"]["agent_bundle"]["included"]


def _wait_for_stream(client: QueryClient, run_id: str, stream: str) -> None:
    import time

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any(True for _ in client.tail_logs(run_id, [stream])):
            return
        time.sleep(0.1)
    pytest.fail(f"stream {stream} of {run_id} never arrived")


def test_sdk_get_support_bundle(agent: Service, collector: Service, tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        from mltrail import Experiment
        run = Experiment("bundles").start_logging()
        run.log("x", 1)
        run.complete()
        path = run.get_support_bundle({str(tmp_path / "sdk.zip")!r}, max_bytes=100000)
        print("bundle at", path)
    """)
    path = tmp_path / "sdk.py"
    path.write_text(script)
    done = subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "MLTRAIL_AGENT": agent.info["socket"],
                                            "MLTRAIL_HOME": str(tmp_path / "home")})
    assert done.returncode == 0, done.stderr
    archive = zipfile.ZipFile(tmp_path / "sdk.zip")
    m = manifest(archive)
    assert m["summary"]["status"] == "Completed" and m["max_bytes"] == 100000
    assert m["created_by"]["via"] == "run.get_support_bundle"
    assert "metrics/x.jsonl" in archive.namelist()


def test_bad_requests_say_what_is_wrong(collector: Service, tmp_path: Path) -> None:
    out = str(tmp_path / "x.zip")
    unknown = mltrail_cli("bundle", "no-such-run", "-o", out, "--collector", collector.grpc)
    assert unknown.returncode == 1 and "not found" in unknown.stderr
    assert "Traceback" not in unknown.stderr and not Path(out).exists()
    bad = mltrail_cli("bundle", "no-such-run", "--max-bytes", "0", "--collector", collector.grpc)
    assert bad.returncode == 2 and "must be positive" in bad.stderr
    shown = mltrail_cli("bundle", "inspect", str(tmp_path / "missing.zip"))
    assert shown.returncode == 1 and "cannot read" in shown.stderr


def test_bad_redact_pattern_and_tiny_cap_are_refused_by_the_collector(
        agent: Service, collector: Service, tmp_path: Path) -> None:
    done = run_script(agent, tmp_path, "tiny-1", "print('x')\n")
    assert done.returncode == 0
    out = str(tmp_path / "x.zip")
    regex = mltrail_cli("bundle", "tiny-1", "-o", out, "--redact", "(open",
                        "--collector", collector.grpc)
    assert regex.returncode == 1 and "not a valid regular expression" in regex.stderr
    tiny = mltrail_cli("bundle", "tiny-1", "-o", out, "--max-bytes", "1000",
                       "--collector", collector.grpc)
    assert tiny.returncode == 1 and "at least 65536" in tiny.stderr
    assert not Path(out).exists()
