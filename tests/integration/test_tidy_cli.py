"""Items 10 to 12 of issue 13 against a real collector: compare, export, delete,
rename and tag, as a user sees them."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from mltrail.proto import records_pb2
from tests import builders as b
from tests.procs import MLTRAIL, Service, mltrail_cli

CM = json.dumps({"schema_type": "confusion_matrix", "schema_version": "1.0.0",
                 "data": {"class_labels": ["0", "1"], "matrix": [[5, 1], [2, 7]]}})


def feed(svc: Service, run_id: str, accuracy: list[float], team: str, **extra: str) -> None:
    v = b.value
    t0 = time.time_ns()
    recs = [b.started(1, run_id, experiment="tidy", t=t0, tags={"team": team, **extra},
                      properties={"git": "abc"})]
    recs += [b.scalar(2 + i, run_id, "accuracy", a, step=i) for i, a in enumerate(accuracy)]
    n = len(recs) + 1
    recs += [
        b.record(n, run_id, metric=records_pb2.Metric(name="lrs", list=records_pb2.ValueList(
            values=[v(0.1), v(0.01)]))),
        b.record(n + 1, run_id, metric=records_pb2.Metric(name="epochs", row=records_pb2.Row(
            cells=[records_pb2.Cell(column="epoch", value=v(0)),
                   records_pb2.Cell(column="note", value=v("warm"))]))),
        b.record(n + 2, run_id, metric=records_pb2.Metric(name="cm", json=records_pb2.JsonMetric(
            schema_type="confusion_matrix", schema_version="1.0.0", json=CM))),
        b.log(n + 3, run_id, b"epoch 1\nepoch 2\n"),
        b.log(n + 4, run_id, b"oops\n", stream="stderr"),
        *b.artifact(n + 5, run_id, "outputs/model.bin", os.urandom(3000)),
    ]
    # Every run lasts exactly a minute, so "duration" differs only when a test says so.
    recs.append(b.ended(len(recs) + 1, run_id, t=t0 + 60 * 10**9))
    with b.IngestClient(svc.grpc) as ingest:
        result = ingest.write([b.batch(b.new_stream_id(), recs)]).results[0]
        assert result.code == 0, result.message


def cli(svc: Service, *args: str, ok: bool = True, stdin: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    done = mltrail_cli(*args, "--collector", svc.grpc,
                       input=stdin.encode() if stdin is not None else None)
    assert "Traceback" not in done.stderr, done.stderr
    if ok:
        assert done.returncode == 0, done.stderr
    return done


def test_compare_shows_runs_side_by_side_and_marks_differences(collector: Service) -> None:
    feed(collector, "c-1", [0.5, 0.9], "vision")
    feed(collector, "c-2", [0.95, 0.7, 0.8], "nlp")
    out = cli(collector, "compare", "c-1", "c-2").stdout.splitlines()
    assert out[0].split() == ["KEY", "c-1", "c-2"]
    rows = {line[2:].split()[0]: line for line in out[1:]}
    assert rows["tags.team"].startswith("*") and rows["tags.team"].split()[-2:] == [
        "vision", "nlp"]
    assert not rows["properties.git"].startswith("*")
    assert not rows["experiment"].startswith("*")
    assert rows["accuracy"].startswith("*")
    assert "0.9 (min 0.5, max 0.9, 2 values)" in rows["accuracy"]
    assert "0.8 (min 0.7, max 0.95, 3 values)" in rows["accuracy"]
    doc = json.loads(cli(collector, "compare", "c-1", "c-2", "--json", "--differences").stdout)
    assert {r["key"] for r in doc["rows"]} == {"tags.team", "accuracy"}
    one = cli(collector, "compare", "c-1", ok=False)
    assert one.returncode == 1 and "two or more runs" in one.stderr


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_export_writes_one_file_per_metric_kind_and_the_logs(collector: Service,
                                                             tmp_path: Path, fmt: str) -> None:
    feed(collector, "e-1", [0.5, 0.9], "vision")
    out = tmp_path / "exported"
    done = cli(collector, "export", "e-1", "--format", fmt, "--output", str(out))
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(f"{n}.{fmt}" for n in ("metrics-scalar", "metrics-list",
                                                   "metrics-row", "metrics-json", "logs"))
    assert f"{out / ('metrics-scalar.' + fmt)}: 2 rows (" in done.stdout
    rows = read(out / f"logs.{fmt}", fmt)
    assert sorted((r["stream"], r["text"]) for r in rows) == [
        ("stderr", "oops"), ("stdout", "epoch 1"), ("stdout", "epoch 2")]
    scalars = read(out / f"metrics-scalar.{fmt}", fmt)
    assert [(r["name"], str(r["step"]), str(r["value"])) for r in scalars] == [
        ("accuracy", "0", "0.5"), ("accuracy", "1", "0.9")]
    cells = read(out / f"metrics-row.{fmt}", fmt)
    assert [(r["column"], str(r["value"])) for r in cells] == [("epoch", "0"), ("note", "warm")]


def read(path: Path, fmt: str) -> list[dict[str, object]]:
    if fmt == "csv":
        with open(path, newline="") as fh:
            return list(csv.DictReader(fh))
    if fmt == "jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    import pyarrow.parquet as pq

    return list(pq.read_table(path).to_pylist())


def test_export_to_parquet_without_pyarrow_says_how_to_get_it(collector: Service,
                                                               tmp_path: Path) -> None:
    feed(collector, "e-2", [0.5], "vision")
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "pyarrow.py").write_text("raise ImportError('hidden for the test')\n")
    done = mltrail_cli("export", "e-2", "--format", "parquet", "--output", str(tmp_path / "o"),
                       "--collector", collector.grpc, env={"PYTHONPATH": str(hide)})
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "mltrail: error: parquet export needs pyarrow, which is not installed; install it "
        "with `pip install 'mltrail[parquet]'` (or `pip install pyarrow`), or export --format "
        "csv or jsonl; nothing was written")
    assert not (tmp_path / "o").exists()


def test_rename_and_tag(collector: Service) -> None:
    feed(collector, "t-1", [0.5], "vision")
    assert cli(collector, "rename", "t-1", "best so far").stdout == (
        "run t-1 is now named 'best so far'\n")
    assert cli(collector, "tag", "t-1", "stage=final", "team=nlp").stdout == (
        "run t-1 tagged stage=final, team=nlp\n")
    run = json.loads(cli(collector, "show", "t-1", "--json").stdout)
    assert run["display_name"] == "best so far"
    assert run["tags"] == {"team": "nlp", "stage": "final"}
    bad = cli(collector, "tag", "t-1", "novalue", ok=False)
    assert bad.returncode == 1 and "tag 'novalue' is not KEY=VALUE" in bad.stderr
    missing = cli(collector, "rename", "nope", "x", ok=False)
    assert missing.returncode == 1 and "run 'nope' not found" in missing.stderr


def test_delete_asks_then_removes_runs_children_metrics_logs_and_artifacts(
        collector: Service, tmp_path: Path) -> None:
    feed(collector, "d-1", [0.5], "vision")
    feed(collector, "d-keep", [0.5], "vision")
    with b.IngestClient(collector.grpc) as ingest:
        ingest.write([b.batch(b.new_stream_id(), [
            b.started(1, "d-child", experiment="tidy", parent_run_id="d-1"),
            b.ended(2, "d-child")])])
    refused = cli(collector, "delete", "d-1", ok=False, stdin="")
    assert refused.returncode == 1
    assert "not deleting without a confirmation; add --yes to delete these 2 runs" in (
        refused.stderr)
    artifacts = collector.workdir / "artifacts"
    files_before = {p for p in artifacts.rglob("*") if p.is_file()}
    done = cli(collector, "delete", "d-1", "--yes")
    assert done.stdout == ("deleted 2 runs: 4 metric records, 3 log lines, 1 artifacts\n")
    assert "d-child" in done.stderr and "d-1" in done.stderr  # what was about to go
    for run_id in ("d-1", "d-child"):
        gone = cli(collector, "show", run_id, ok=False)
        assert gone.returncode == 1 and f"run {run_id!r} not found" in gone.stderr
    assert cli(collector, "show", "d-keep").returncode == 0
    assert len({p for p in artifacts.rglob("*") if p.is_file()}) == len(files_before) - 1


def test_delete_an_experiments_old_runs_with_a_prompt_answered_yes(collector: Service) -> None:
    feed(collector, "o-1", [0.5], "vision")
    young = cli(collector, "delete", "--experiment", "tidy", "--older-than", "30d", "--yes")
    assert young.stdout == "no runs match; nothing was deleted\n"
    proc = subprocess.run(  # a terminal answers the prompt
        ["script", "-qec", " ".join([*MLTRAIL, "delete", "--experiment", "tidy",
                                     "--older-than", "0s", "--collector", collector.grpc]),
         "/dev/null"], input="y\n", capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout
    assert "Delete it? [y/N]" in proc.stdout and "deleted 1 run:" in proc.stdout
    assert cli(collector, "runs", "-q", "--experiment", "tidy").stdout == ""
