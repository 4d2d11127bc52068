"""File tail through real processes: a writer, an agent (SIGKILLed and restarted),
a collector; what the collector stores is read back with the query client.

The bar (issue 7): a writer at full speed rotating by rename 100 times, and
by copytruncate 100 times, while the agent is killed and restarted ten
times; the collector holds every line exactly once and in order. For
copytruncate the bound is stated and checked: lines are lost only at the end
of a period (the part not yet read when the file was truncated), never in
its middle, and a period the agent was up for all along loses nothing.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from mltrail.query.client import QueryClient
from tests.agent_client import agent_service
from tests.integration.test_agent_chaos import collector_on, free_port
from tests.procs import Service

RUN_ID = "tail-run"
LINE_BYTES = 100

# A writer process: PERIODS bursts of LINES lines at full speed, each followed by a
# pause and a rotation (rename: app.log -> app.log.N and a new app.log; copytruncate:
# copy to app.log.N then truncate app.log in place). Appends its timeline as JSON.
WRITER = r"""
import json, os, shutil, sys, time
mode, path, periods, lines, pause = sys.argv[1], sys.argv[2], *map(float, sys.argv[3:6])
periods, lines = int(periods), int(lines)
timeline = open(os.path.join(os.path.dirname(path), "..", "timeline.jsonl"), "w")
fh = open(path, "ab", buffering=1 << 16)
n = 0
for period in range(periods):
    start = time.time()
    for _ in range(lines):
        head = b"%09d period %03d " % (n, period)
        fh.write(head + b"x" * (99 - len(head)) + b"\n")
        n += 1
    fh.flush()
    time.sleep(pause)
    rotated = time.time()
    if mode == "rename":
        fh.close()
        os.rename(path, f"{path}.{period + 1}")
        fh = open(path, "ab", buffering=1 << 16)
    else:
        shutil.copyfile(path, f"{path}.{period + 1}")
        os.truncate(path, 0)
    timeline.write(json.dumps([period, start, rotated, n]) + "\n")
    timeline.flush()
fh.close()
"""


def line_text(n: int, period: int) -> str:
    head = f"{n:09d} period {period:03d} "
    return head + "x" * (99 - len(head))


def stored_lines(collector: Service, stream: str = "app") -> list[str]:
    with QueryClient(collector.grpc) as client:
        try:
            return [line.text for line in client.tail_logs(RUN_ID, [stream])]
        except Exception as exc:  # the run may not exist yet
            if "not found" in str(exc).lower() or "no run" in str(exc).lower():
                return []
            raise


def wait_until(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


def start_writer(mode: str, log: Path, periods: int, lines: int, pause: float
                 ) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", WRITER, mode, str(log), str(periods),
                             str(lines), str(pause)])


def kill_and_restart(agent: Service, writer: subprocess.Popen[bytes], kills: int,
                     every: float) -> list[tuple[float, float]]:
    """SIGKILL the agent ``kills`` times while the writer runs; returns its down times."""
    downs = []
    for _ in range(kills):
        time.sleep(every)
        down = time.time()
        agent.kill()
        agent.start()
        downs.append((down, time.time()))
    writer.wait(timeout=120)
    return downs


def file_agent(tmp_path: Path, collector: Service, glob: str) -> Service:
    return agent_service(tmp_path, collector.grpc, "--source", f"file:{glob}={RUN_ID}:app")


def test_tailed_file_reaches_the_collector(tmp_path: Path, collector: Service) -> None:
    log = tmp_path / "logs" / "app.log"
    log.parent.mkdir()
    log.write_text("first\n")
    agent = file_agent(tmp_path, collector, str(log)).start()
    try:
        with open(log, "a") as fh:
            fh.write("second\nthird\n")
        assert wait_until(lambda: len(stored_lines(collector)) == 3, 20), agent.output()
        assert stored_lines(collector) == ["first", "second", "third"]
    finally:
        agent.stop()


@pytest.mark.slow
def test_rename_rotation_with_agent_kills_keeps_every_line_once(tmp_path: Path) -> None:
    periods, lines = 100, 2000
    collector = collector_on(free_port(), tmp_path).start()
    log = tmp_path / "logs" / "app.log"
    log.parent.mkdir()
    agent = file_agent(tmp_path, collector, f"{log}*").start()
    try:
        writer = start_writer("rename", log, periods, lines, 0.08)
        kill_and_restart(agent, writer, kills=10, every=0.9)
        total = periods * lines
        expected = [line_text(n, n // lines) for n in range(total)]
        wait_until(lambda: len(stored_lines(collector)) >= total, 90)
        got = stored_lines(collector)
        assert got == expected, mismatch(got, total)
    finally:
        agent.stop()
        collector.stop()


def mismatch(got: list[str], total: int) -> str:
    """Which line numbers are twice, missing or out of order (the first few of each)."""
    numbers = [int(text[:9]) for text in got]
    seen: set[int] = set()
    twice = [n for n in numbers if n in seen or seen.add(n)]  # type: ignore[func-returns-value]
    missing = sorted(set(range(total)) - seen)
    backwards = [(a, b) for a, b in itertools.pairwise(numbers) if b <= a]
    return (f"{len(got)} lines stored of {total}; twice: {len(twice)} {twice[:10]}; missing: "
            f"{len(missing)} {missing[:10]}; out of order: {backwards[:5]}")


def _periods(timeline: Path) -> list[tuple[int, float, float, int]]:
    return [tuple(json.loads(x)) for x in timeline.read_text().splitlines()]  # type: ignore


@pytest.mark.slow
def test_copytruncate_with_agent_kills_loses_only_unread_period_ends(tmp_path: Path) -> None:
    periods, lines = 100, 2000
    collector = collector_on(free_port(), tmp_path).start()
    log = tmp_path / "logs" / "app.log"
    log.parent.mkdir()
    agent = file_agent(tmp_path, collector, str(log)).start()  # copies are not tailed
    try:
        writer = start_writer("copytruncate", log, periods, lines, 0.08)
        downs = kill_and_restart(agent, writer, kills=10, every=0.9)
        total = periods * lines
        wait_until(lambda: stored_lines(collector)[-1:] == [line_text(total - 1, periods - 1)]
                   or not _agent_lagging(agent), 60)
        time.sleep(1.0)
        got = stored_lines(collector)
        numbers = [int(text[:9]) for text in got]
        assert numbers == sorted(set(numbers)), "a line twice or out of order: " + mismatch(
            got, total)
        assert all(got[i] == line_text(n, n // lines) for i, n in enumerate(numbers))
        kept: dict[int, list[int]] = {}
        for n in numbers:
            kept.setdefault(n // lines, []).append(n % lines)
        lost_by_period = {}
        for period, start, rotated, _ in _periods(tmp_path / "timeline.jsonl"):
            have = kept.get(period, [])
            assert have == list(range(len(have))), f"period {period} lost lines in its middle"
            lost_by_period[period] = lines - len(have)
            agent_was_up = not any(d < rotated + 0.05 and up > start for d, up in downs)
            if agent_was_up:
                assert lost_by_period[period] == 0, f"period {period} lost lines while watched"
        lost = sum(lost_by_period.values())
        print(f"copytruncate: {lost} of {total} lines lost in "
              f"{sum(1 for v in lost_by_period.values() if v)} truncation windows "
              f"(agent down {len(downs)} times)")
    finally:
        agent.stop()
        collector.stop()


def _agent_lagging(agent: Service) -> bool:
    from urllib.request import urlopen

    with urlopen(f"http://{agent.info['http']}/metrics", timeout=5) as response:
        text = response.read().decode()
    pending = [float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("mltrail_agent_spool_pending_bytes ")]
    return bool(pending and pending[0] > 0)


def scrape(agent: Service) -> list[Sample]:
    """The agent's /metrics, parsed."""
    from urllib.request import urlopen

    with urlopen(f"http://{agent.info['http']}/metrics", timeout=5) as response:
        text = response.read().decode()
    return [sample for family in text_string_to_metric_families(text)
            for sample in family.samples]


def metric(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of ``mltrail_agent_source_<name>`` samples carrying ``labels``."""
    full = f"mltrail_agent_source_{name}"
    return sum(s.value for s in samples if s.name == full
               and all(s.labels.get(k) == v for k, v in labels.items()))


METRICS_CONFIG = """
[[sources]]
type = "file"
name = "trainer"
paths = ["{logs}/app.log*"]
run_id = "{run_id}"
stream = "app"
max_line_bytes = 1024
rotate_wait = 0.2
"""


def test_metrics_report_what_the_tail_did(tmp_path: Path, collector: Service) -> None:
    """Item 5 of issue 7 on the real /metrics: files watched, lines and bytes read,
    lines split, rotations (rename, truncation in place, deleted while open),
    checkpoint writes and the lag behind a file's end (a partial last line)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    config = tmp_path / "agent.toml"
    config.write_text(METRICS_CONFIG.format(logs=logs, run_id=RUN_ID))
    agent = agent_service(tmp_path, collector.grpc, "--config", str(config)).start()
    written = [f"line {i}\n".encode() for i in range(10)] + [b"y" * 3000 + b"\n", b"after\n"]
    try:
        log.write_bytes(b"".join(written))
        assert wait_until(lambda: stored_lines(collector)[-1:] == ["after"], 20), agent.output()
        for n in range(2):  # logrotate: app.log.1 -> .2, app.log -> .1, a new app.log
            if n:
                (logs / "app.log.1").rename(logs / "app.log.2")
            log.rename(logs / "app.log.1")
            written.append(f"new {n}\n".encode())
            log.write_bytes(written[-1])
            assert wait_until(lambda n=n: stored_lines(collector)[-1:] == [f"new {n}"], 20)
        with open(log, "r+b") as fh:  # truncated in place, then written again
            fh.truncate(0)
            written.append(b"again!\n")
            fh.write(written[-1])
        assert wait_until(lambda: stored_lines(collector)[-1:] == ["again!"], 20)
        (logs / "app.log.1").unlink()
        (logs / "app.log.2").unlink()
        with open(log, "ab") as fh:
            fh.write(b"partial")  # no newline yet: read, not sent, so 7 bytes behind
        assert wait_until(lambda: metric(scrape(agent), "files_watched", source="trainer")
                          == 1, 20), agent.output()
        samples = scrape(agent)
        assert metric(samples, "lag_bytes", source="trainer", path=str(log)) == 7
        assert metric(samples, "lines_read_total", source="trainer") == len(written)
        assert metric(samples, "bytes_read_total", source="trainer") == len(b"".join(written))
        assert metric(samples, "lines_split_total", source="trainer") == 1  # in 3 pieces
        assert metric(samples, "lines_repaired_total", source="trainer") == 0
        for kind, times in (("rename", 2), ("truncate", 1), ("delete", 2)):
            assert metric(samples, "rotations_total", source="trainer", kind=kind) == times, kind
        assert metric(samples, "checkpoint_writes_total", source="trainer") >= 5  # a round each
        assert stored_lines(collector)[-3:] == ["new 0", "new 1", "again!"]
    finally:
        agent.stop()


def test_a_run_from_the_agents_environment_and_a_bad_rule_refused(
        tmp_path: Path, collector: Service) -> None:
    """``run_id_from = "env:NAME"``: a sidecar agent told its job's run; a rule that
    cannot work stops the agent at start with one line."""
    from tests.procs import mltrail_cli

    log = tmp_path / "train.log"
    log.write_text("from env\n")
    config = tmp_path / "agent.toml"
    config.write_text(f'[[sources]]\ntype = "file"\nname = "job"\npaths = ["{log}"]\n'
                      'run_id_from = "env:JOB_RUN_ID"\nstream = "app"\n')
    agent = agent_service(tmp_path, collector.grpc, "--config", str(config))
    agent.env["JOB_RUN_ID"] = RUN_ID
    agent.start()
    try:
        assert wait_until(lambda: stored_lines(collector) == ["from env"], 20), agent.output()
    finally:
        agent.stop()
    config.write_text(config.read_text().replace("env:JOB_RUN_ID", "label:team"))
    result = mltrail_cli("agent", "--spool", str(tmp_path / "spool2"), "--socket",
                         str(tmp_path / "b.sock"), "--config", str(config),
                         env={"MLTRAIL_HOME": str(tmp_path)})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == ("mltrail: error: sources[0] ('job'): run_id_from "
                                     "'label:team': expected path:REGEX or env:NAME")


def test_a_bad_source_flag_is_one_line_error(tmp_path: Path) -> None:
    from tests.procs import mltrail_cli

    result = mltrail_cli("agent", "--spool", str(tmp_path / "spool"), "--socket",
                         str(tmp_path / "a.sock"), "--source", "file:/x.log",
                         env={"MLTRAIL_HOME": str(tmp_path)})
    assert result.returncode == 1
    assert result.stderr.strip().startswith("mltrail: error: --source 'file:/x.log'")
    assert "Traceback" not in result.stderr
