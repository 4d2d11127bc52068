"""Stored text with NUL, ESC sequences, CR, LF, DEL and C1 characters, printed by the real CLI.

A real collector is fed, through Ingest, a run carrying those characters in
every field it accepts them in (tags, properties, the error, string metric
values, row and table cells, JSON metrics, artifact paths, console lines);
the fields it refuses them in (run ids, names, experiment, metric names,
streams) are refused. Then every read command prints only printable text: a
control character shows as ``\\x1b``, ``\\r``, ``\\x00`` and so on (tab kept in
``logs``), never raw; and ``--json`` stays faithful (the JSON decodes to what
was stored) while also holding no raw control character.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mltrail.proto import records_pb2
from tests import builders as b
from tests.procs import MLTRAIL, Service, collector_service

NASTY = "a\x00b\x1b[2J\x1b]0;title\x07c\rd\ne\x7ff\x9b31mg"  # NUL, CSI, OSC, CR, LF, DEL, C1
SHOWN = "a\\x00b\\x1b[2J\\x1b]0;title\\x07c\\rd\\ne\\x7ff\\x9b31mg"  # as one line shows it
ARG = NASTY.replace("\x00", "")  # what a command line can carry
LOG = "col1\tcol2 \x1b[31mred\x1b[0m 10%\r20%\x00 \x9b"  # a console line (no LF: one line)
LOG_SHOWN = "col1\tcol2 \\x1b[31mred\\x1b[0m 10%\\r20%\\x00 \\x9b"
RUN, OTHER = "run-nasty", "run-plain"


def _control(char: str, keep: str) -> bool:
    code = ord(char)
    return (code < 0x20 or 0x7f <= code <= 0x9f) and char not in keep


def assert_printable(done: subprocess.CompletedProcess[str], keep: str = "\n") -> None:
    for name, text in (("stdout", done.stdout), ("stderr", done.stderr)):
        raw = sorted({repr(c) for c in text if _control(c, keep)})
        assert not raw, f"{done.args[3:]} printed raw {raw} on {name}:\n{text!r}"


def value(text: str) -> records_pb2.Value:
    return records_pb2.Value(text=text)


def metric(seq: int, name: str, **data: Any) -> records_pb2.Record:
    return b.record(seq, RUN, metric=records_pb2.Metric(name=name, **data))


def nasty_run() -> list[records_pb2.Record]:
    data = b"artifact bytes"
    error = records_pb2.ErrorDetails(code="UserError", type="Nasty" + NASTY,
                                     message=f"first{NASTY}\nsecond line {NASTY}",
                                     traceback=f"Traceback {NASTY}")
    return [
        b.started(1, RUN, experiment="exp-c", display_name="nasty",
                  tags={"k": NASTY, "q": "1", "team": "vision"},
                  properties={"p": NASTY}),
        b.scalar(2, RUN, "note", NASTY),
        metric(3, "words", list=records_pb2.ValueList(values=[value(NASTY), value("x")])),
        metric(4, "row", row=records_pb2.Row(cells=[
            records_pb2.Cell(column="col", value=value(NASTY))])),
        metric(5, "tbl", table=records_pb2.Table(columns=[
            records_pb2.Column(name="c", values=[value(NASTY)])])),
        metric(6, "js", json=records_pb2.JsonMetric(
            schema_type="custom", schema_version="1", json=json.dumps({"text": NASTY}))),
        b.log(7, RUN, f"{LOG}\nsecond\n".encode(), level=f"INFO{NASTY}",
              logger=f"lg{NASTY}"),
        b.log(8, RUN, f"{LOG}\n".encode(), stream="stderr"),
        b.record(9, RUN, artifact=records_pb2.ArtifactChunk(
            path="out/model.bin", offset=0, data=data, last=True, size=len(data),
            sha256=hashlib.sha256(data).hexdigest(), content_type=f"text/{NASTY}")),
        b.ended(10, RUN, status=records_pb2.FAILED, error=error),
    ]


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = collector_service(tmp_path_factory.mktemp("nasty")).start()
    try:
        with b.IngestClient(svc.grpc) as ingest:
            for batch in (b.batch(b.new_stream_id(), nasty_run()),
                          b.batch(b.new_stream_id(), [b.started(1, OTHER, experiment="exp-c"),
                                                      b.scalar(2, OTHER, "note", "plain")])):
                result = ingest.write([batch]).results[0]
                assert result.code == 0, result.message
        yield svc
    finally:
        svc.stop()


def cli(svc: Service, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    """``mltrail ARGS`` with its output as bytes decoded as they came (text mode would turn
    a raw CR into a line break, unseen)."""
    raw = subprocess.run([*MLTRAIL, *args, "--collector", svc.grpc], capture_output=True,
                         timeout=60, check=False)
    done = subprocess.CompletedProcess(raw.args, raw.returncode,
                                       raw.stdout.decode("utf-8", "surrogateescape"),
                                       raw.stderr.decode("utf-8", "surrogateescape"))
    assert "Traceback (most recent call last)" not in done.stderr, done.stderr
    assert (done.returncode == 0) == ok, done.stderr
    return done


def test_the_collector_refuses_control_characters_in_names(fed: Service) -> None:
    refused = [
        [b.started(1, f"id{NASTY}")],
        [b.started(1, "r2", experiment=f"exp{NASTY}")],
        [b.started(1, "r2", display_name=f"n{NASTY}")],
        [b.started(1, "r2"), b.scalar(2, "r2", f"m{NASTY}", 1.0)],
        [b.started(1, "r2"), b.log(2, "r2", b"x\n", stream=f"s{NASTY}")],
        [b.started(1, "r2", tags={f"k{NASTY}": "v"})],
        [b.started(1, "r2", properties={f"k{NASTY}": "v"})],
        [b.started(1, "r2"), metric(2, "row", row=records_pb2.Row(cells=[
            records_pb2.Cell(column=f"col{NASTY}", value=value("v"))]))],
        [b.started(1, "r2"), *b.artifact(2, "r2", f"out/{ARG}.bin", b"x")],
    ]
    with b.IngestClient(fed.grpc) as ingest:
        for records in refused:
            result = ingest.write([b.batch(b.new_stream_id(), records)]).results[0]
            assert result.code == 3 and "control character" in result.message, result.message


@pytest.mark.parametrize("args", [
    ["runs"], ["runs", "--columns", f"tags.k,p,note,q{ARG}"], ["runs", "-q"],
    ["runs", "--format", "csv"], ["show", RUN], ["metrics", RUN],
    *[["metrics", RUN, "--name", name] for name in ("note", "words", "row", "tbl", "js")],
    ["metrics", RUN, "--format", "csv"], ["compare", RUN, OTHER],
    ["compare", RUN, OTHER, "--differences"], ["artifacts", RUN],
    ["show", f"missing{ARG}"], ["metrics", RUN, "--name", f"missing{ARG}"],
], ids=lambda args: " ".join(args)[:40])
def test_read_commands_print_control_characters_visibly(fed: Service, args: list[str]) -> None:
    done = cli(fed, *args, ok="missing" not in " ".join(args))
    assert_printable(done)
    shown = done.stdout + done.stderr
    assert "\\x1b" in shown or "\\u001b" in shown or args[:2] == ["runs", "-q"], shown


def test_show_says_what_is_stored_one_field_a_line(fed: Service) -> None:
    out = cli(fed, "show", RUN).stdout
    assert f"k={SHOWN}" in out  # a line break in a tag is not a new tag line
    assert [line for line in out.splitlines() if "team=vision" in line]
    assert f"p={SHOWN}" in out
    assert "second line a\\x00b" in out  # the error message keeps its own lines


def test_logs_escape_everything_but_tab(fed: Service) -> None:
    for args in (["logs", RUN], ["logs", RUN, "--prefix"], ["logs", RUN, "--console"]):
        done = cli(fed, *args)
        assert_printable(done, keep="\n\t")
        assert LOG_SHOWN in done.stdout.splitlines()[0], done.stdout
    assert cli(fed, "logs", RUN, "--stream", "stdout").stdout.splitlines() == [
        LOG_SHOWN, "second"]


def test_json_output_is_faithful_and_holds_no_raw_control_character(fed: Service) -> None:
    runs = cli(fed, "runs", "--json")
    show = cli(fed, "show", RUN, "--json")
    metrics = cli(fed, "metrics", RUN, "--json")
    logs = cli(fed, "logs", RUN, "--json", "--stream", "stdout")
    compare = cli(fed, "compare", RUN, OTHER, "--json")
    artifacts = cli(fed, "artifacts", RUN, "--json")
    for done in (runs, show, metrics, logs, compare, artifacts):
        assert_printable(done)
    run = json.loads(show.stdout)
    assert run["tags"]["k"] == NASTY and run["properties"]["p"] == NASTY
    assert NASTY in run["error"]["message"]
    assert {r["run_id"]: r["tags"] for r in json.loads(runs.stdout)}[RUN]["team"] == "vision"
    values = json.loads(metrics.stdout)
    assert values["note"] == NASTY and values["words"] == [NASTY, "x"]
    assert values["js"] == {"text": NASTY}
    assert [json.loads(line)["text"] for line in logs.stdout.splitlines()] == [LOG, "second"]
    assert json.loads(artifacts.stdout)[0]["content_type"] == f"text/{NASTY}"
    rows = {row["key"]: row["values"] for row in json.loads(compare.stdout)["rows"]}
    assert rows["tags.k"] == [NASTY, None]


def test_a_missing_artifact_with_an_odd_name_is_named_visibly(fed: Service,
                                                              tmp_path: Path) -> None:
    done = cli(fed, "artifacts", RUN, "--download", f"out/{ARG}.bin",
               "--output", str(tmp_path / "copy.bin"), ok=False)
    assert_printable(done)
    assert "\\x1b" in done.stderr and not (tmp_path / "copy.bin").exists(), done.stderr
