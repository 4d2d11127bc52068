"""Items 9 and 11 of issue 13: runs found by what they achieved, in a table or CSV."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mltrail.proto import records_pb2
from tests import builders as b
from tests.procs import Service, collector_service, mltrail_cli

RUNS = {  # run id: (accuracy series, loss, tags, properties)
    "r-low": ([0.5, 0.7], 0.9, {"team": "nlp", "lr": "0.1"}, {"git": "aaa"}),
    "r-high": ([0.8, 0.95], 0.2, {"team": "vision", "lr": "0.01"}, {"git": "bbb"}),
    "r-mid": ([0.99, 0.92], 0.4, {"team": "vision", "lr": "0.05"}, {"git": "aaa"}),
    "r-none": ([], 1.0, {"team": "vision"}, {}),
}


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = collector_service(tmp_path_factory.mktemp("where")).start()
    with b.IngestClient(svc.grpc) as ingest:
        for run_id, (accuracy, loss, tags, props) in RUNS.items():
            recs = [b.started(1, run_id, experiment="sweep", tags=tags, properties=props)]
            recs += [b.scalar(len(recs) + 1 + i, run_id, "accuracy", a)
                     for i, a in enumerate(accuracy)]
            recs += [b.scalar(len(recs) + 1, run_id, "loss", loss),
                     b.ended(len(recs) + 2, run_id, status=records_pb2.COMPLETED)]
            assert ingest.write([b.batch(b.new_stream_id(), recs)]).results[0].code == 0
    yield svc
    svc.stop()


def runs(svc: Service, *args: str) -> subprocess.CompletedProcess[str]:
    done = mltrail_cli("runs", "--collector", svc.grpc, *args)
    assert "Traceback" not in done.stderr
    return done


def test_where_sort_and_columns_over_latest_metric_values(fed: Service) -> None:
    done = runs(fed, "--where", "accuracy > 0.9", "--sort", "-accuracy",
                "--columns", "accuracy,loss,lr")
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split()[-4:] == ["ACCURACY", "LOSS", "LR", "TAGS"]
    # the latest accuracy counts: r-mid's is 0.92 (its first, 0.99, does not)
    assert [r.split()[0] for r in rows] == ["r-high", "r-mid"]
    assert rows[0].split()[-5:-2] == ["0.95", "0.2", "0.01"]


def test_where_on_tags_and_properties_and_sorting_puts_missing_last(fed: Service) -> None:
    def ids(*args: str) -> list[str]:
        done = runs(fed, "-q", *args)
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert ids("--where", "tags.team = vision", "--where", "properties.git = aaa") == ["r-mid"]
    assert ids("--where", "tags.lr < 0.05") == ["r-high"]  # numbers compared as numbers
    assert ids("--where", "loss <= 0.4", "--sort", "loss") == ["r-high", "r-mid"]
    assert ids("--sort", "accuracy") == ["r-low", "r-mid", "r-high", "r-none"]
    assert ids("--sort", "-accuracy", "--limit", "2") == ["r-high", "r-mid"]
    assert ids("--where", "nothing > 1") == []


def test_a_malformed_condition_is_refused_before_asking(fed: Service) -> None:
    done = runs(fed, "--where", "accuracy >")
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == (
        "mltrail runs: error: argument --where: condition 'accuracy >' is not KEY OP VALUE "
        "(for example 'accuracy > 0.9' or 'tags.team = vision'; OP is one of = != < <= > >=)")


def test_runs_as_csv_with_columns(fed: Service) -> None:
    done = runs(fed, "--format", "csv", "--columns", "accuracy,tags.team")
    assert done.returncode == 0, done.stderr
    table = list(csv.DictReader(io.StringIO(done.stdout)))
    assert {r["run_id"]: (r["accuracy"], r["tags.team"]) for r in table} == {
        "r-low": ("0.7", "nlp"), "r-high": ("0.95", "vision"), "r-mid": ("0.92", "vision"),
        "r-none": ("", "vision")}
    assert all(r["status"] == "Completed" and r["experiment"] == "sweep" for r in table)


def test_the_sdk_finds_runs_with_the_same_filters(agent: Service, collector: Service,
                                                  tmp_path: Path) -> None:
    script = (
        "from mltrail import Experiment\n"
        "e = Experiment('sdk-sweep')\n"
        "names = {}\n"
        "for name, acc in [('a', 0.5), ('b', 0.97), ('c', 0.93)]:\n"
        "    run = e.start_logging(display_name=name, tags={'team': 'vision'})\n"
        "    run.log('accuracy', acc)\n"
        "    run.complete()\n"
        "    names[run.id] = name\n"
        "found = e.get_runs(where=['accuracy > 0.9', 'tags.team = vision'],"
        " order_by='-accuracy')\n"
        "print([names[r.id] for r in found])\n"
        "print([names[r.id] for r in e.get_runs(order_by='accuracy')])\n"
    )
    env = {**os.environ, "MLTRAIL_AGENT": agent.info["socket"],
           "MLTRAIL_COLLECTOR": collector.grpc, "MLTRAIL_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["['b', 'c']", "['a', 'c', 'b']"]
