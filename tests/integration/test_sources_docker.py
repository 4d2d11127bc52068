"""Docker containers through a real engine, a real agent and a real collector.

Containers labelled for the test print to stdout and stderr (with lines over
Docker's 16 KiB split); one exists before the agent starts (found by listing)
and one after (found through the events stream). The agent is SIGKILLed and
restarted while they print; the run gets every line once, in order, per
stream, plus the containers' metadata. A second test makes the json-file
logs unreadable to the agent, so it follows the engine's log stream instead.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mltrail.query.client import QueryClient
from tests import docker_env
from tests.agent_client import agent_service
from tests.conftest import require
from tests.integration.test_sources_files import metric, scrape, wait_until
from tests.procs import Service

pytestmark = pytest.mark.docker

LINES = 1500
LONG_OUT, LONG_ERR = 40_000, 20_000
# stdout and stderr lines in bursts over ~2.5 s, a long line on each halfway
SCRIPT = f"""
i=0
while [ $i -lt {LINES} ]; do
  echo "out $i"; echo "err $i" >&2
  if [ $i -eq {LINES // 2} ]; then
    printf "long-out "; head -c {LONG_OUT} /dev/zero | tr '\\0' a; echo
    printf "long-err " >&2; head -c {LONG_ERR} /dev/zero | tr '\\0' b >&2; echo >&2
  fi
  i=$((i+1))
  if [ $((i % 150)) -eq 0 ]; then sleep 0.25; fi
done
"""


def expected(std: str) -> list[str]:
    word = "out" if std == "stdout" else "err"
    lines = [f"{word} {i}" for i in range(LINES)]
    long_line = ("long-out " + "a" * LONG_OUT) if std == "stdout" else (
        "long-err " + "b" * LONG_ERR)
    lines.insert(LINES // 2 + 1, long_line)
    return lines


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    require(docker_env.ensure_engine(), "docker engine (dockerd from docker.io)")
    docker_env.ensure_image()
    client = docker_env.client(60)
    yield client
    client.close()


@pytest.fixture
def containers(engine: Any) -> Iterator[list[Any]]:
    made: list[Any] = []
    yield made
    for container in made:  # only the containers this test made
        container.remove(force=True)


def run_container(engine: Any, made: list[Any], name: str, labels: dict[str, str]) -> Any:
    container = engine.containers.run(docker_env.IMAGE, ["sh", "-c", SCRIPT], name=name,
                                      labels=labels, network_mode="none", detach=True)
    made.append(container)
    return container


def docker_agent(tmp_path: Path, collector: Service, label: str, *extra: str,
                 run_id_from: str = "label:mltrail.run") -> Service:
    config = tmp_path / "agent.toml"
    lines = ["[[sources]]", 'type = "docker"', 'name = "containers"', f'label = "{label}"',
             f'run_id_from = "{run_id_from}"', *extra]
    config.write_text("\n".join(lines) + "\n")
    return agent_service(tmp_path, collector.grpc, "--config", str(config))


def stored(collector: Service, run_id: str, stream: str) -> list[str]:
    with QueryClient(collector.grpc) as client:
        try:
            return [line.text for line in client.tail_logs(run_id, [stream])]
        except Exception:
            return []


def check_run(collector: Service, agent: Service, run_id: str, name: str) -> None:
    for std in ("stdout", "stderr"):
        want = expected(std)
        done = wait_until(lambda s=std, w=want: len(stored(collector, run_id,
                                                           f"{name}/{s}")) >= len(w), 60)
        got = stored(collector, run_id, f"{name}/{std}")
        assert done and got == want, (
            f"{name}/{std}: {len(got)} lines of {len(want)}; first difference at "
            f"{next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), None)}"
            f"\n{agent.output()}")
    with QueryClient(collector.grpc) as client:
        props = client.get_run(run_id).properties
    assert props["docker.container.name"] == name
    assert props["docker.image"] == docker_env.IMAGE


def _wait_exited(containers: list[Any]) -> None:
    for container in containers:
        container.wait(timeout=60)


def test_containers_found_by_label_lose_and_repeat_nothing_across_a_kill(
        tmp_path: Path, collector: Service, engine: Any, containers: list[Any]) -> None:
    test = uuid.uuid4().hex[:10]
    label = f"mltrail.test={test}"
    before = run_container(engine, containers, f"mlt-{test}-before",
                           {"mltrail.test": test, "mltrail.run": f"run-{test}-a"})
    agent = docker_agent(tmp_path, collector, label).start()
    try:
        after = run_container(engine, containers, f"mlt-{test}-after",
                              {"mltrail.test": test, "mltrail.run": f"run-{test}-b"})
        run_container(engine, containers, f"mlt-{test}-other", {"mltrail.test": "not-this"})
        # killed once it delivered lines of both (not after a fixed sleep)
        assert wait_until(lambda: all(stored(collector, f"run-{test}-{x}", f"mlt-{test}-{n}/stdout")
                                      for x, n in (("a", "before"), ("b", "after"))), 60)
        agent.kill()
        agent.start()
        _wait_exited([before, after])
        check_run(collector, agent, f"run-{test}-a", f"mlt-{test}-before")
        check_run(collector, agent, f"run-{test}-b", f"mlt-{test}-after")
        with QueryClient(collector.grpc) as client:
            runs = {r.run_id for r in client.list_runs()}
        assert not any("not-this" in r for r in runs)
    finally:
        agent.stop()


def test_unreadable_log_files_fall_back_to_the_engine_stream(
        tmp_path: Path, collector: Service, engine: Any, containers: list[Any]) -> None:
    test = uuid.uuid4().hex[:10]
    agent = docker_agent(tmp_path, collector, f"mltrail.test={test}",
                         f'containers_dir = "{tmp_path / "not-mounted"}"').start()
    try:
        container = run_container(engine, containers, f"mlt-{test}-engine",
                                  {"mltrail.test": test, "mltrail.run": f"run-{test}"})
        assert wait_until(lambda: stored(collector, f"run-{test}", f"mlt-{test}-engine/stdout"),
                          60)  # killed once it delivered lines (not after a fixed sleep)
        agent.kill()
        agent.start()
        _wait_exited([container])
        check_run(collector, agent, f"run-{test}", f"mlt-{test}-engine")
        assert "following container" in agent.output()
    finally:
        agent.stop()


ROTATING = 2000
KILLED_AT, RESTARTED_AT = 700, 1000
# stdout and stderr lines (~80 KB/s of json-file), a line over 16 KiB every 500. The
# script waits at two gates the test opens: the agent is killed once lines up to
# KILLED_AT are written, the lines up to RESTARTED_AT are written (and rotated: about
# four rotations) while it is down, and it is started again before the rest. So the
# engine never deletes a file the agent had no chance to read (8 files of 24k are kept),
# however slowly a loaded machine starts the agent again.
ROTATING_SCRIPT = f"""
write() {{
  i=$1
  while [ $i -lt $2 ]; do
    echo "out $i"; echo "err $i" >&2
    if [ $((i % 500)) -eq 250 ]; then
      printf "long-out $i "; head -c {LONG_OUT} /dev/zero | tr '\\0' a; echo
    fi
    i=$((i+1))
    if [ $((i % 100)) -eq 0 ]; then sleep 0.2; fi
  done
}}
gate() {{ touch /gate/$1; while [ ! -e /gate/$2 ]; do sleep 0.05; done; }}
write 0 {KILLED_AT}
gate before-kill killed
write {KILLED_AT} {RESTARTED_AT}
gate while-down restarted
write {RESTARTED_AT} {ROTATING}
"""


def wait_for_file(path: Path, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"still waiting for {what} after {timeout} s"
        time.sleep(0.05)


def rotating_expected(std: str) -> list[str]:
    word = "out" if std == "stdout" else "err"
    lines = []
    for i in range(ROTATING):
        lines.append(f"{word} {i}")
        if std == "stdout" and i % 500 == 250:
            lines.append(f"long-out {i} " + "a" * LONG_OUT)
    return lines


def test_json_file_rotation_by_the_engine_loses_and_repeats_nothing_across_a_kill(
        tmp_path: Path, collector: Service, engine: Any, containers: list[Any]) -> None:
    """max-size/max-file: the engine renames the log (-json.log -> .1 -> .2 ...) and
    deletes the oldest, often between two 16 KiB pieces of a line; the run comes
    from the container's environment."""
    import docker

    test = uuid.uuid4().hex[:10]
    name, run_id = f"mlt-{test}-rotating", f"run-{test}"
    gate = tmp_path / "gate"
    gate.mkdir()
    agent = docker_agent(tmp_path, collector, f"mltrail.test={test}",
                         run_id_from="env:MLTRAIL_RUN_ID").start()
    try:
        container = engine.containers.run(
            docker_env.IMAGE, ["sh", "-c", ROTATING_SCRIPT], name=name, network_mode="none",
            labels={"mltrail.test": test}, environment={"MLTRAIL_RUN_ID": run_id},
            volumes={str(gate): {"bind": "/gate", "mode": "rw"}},
            detach=True, log_config=docker.types.LogConfig(
                type="json-file", config={"max-size": "24k", "max-file": "8"}))
        containers.append(container)
        wait_for_file(gate / "before-kill", "the first lines")
        assert wait_until(lambda: metric(scrape(agent), "rotations_total", kind="rename") >= 1,
                          60), "the agent saw no rotation before the kill"
        agent.kill()
        (gate / "killed").touch()
        wait_for_file(gate / "while-down", "the lines written while the agent is down")
        agent.start()
        (gate / "restarted").touch()
        container.wait(timeout=120)
        for std in ("stdout", "stderr"):
            want = rotating_expected(std)
            wait_until(lambda s=std, w=want: len(stored(collector, run_id,
                                                        f"{name}/{s}")) >= len(w), 30)
            got = stored(collector, run_id, f"{name}/{std}")
            assert got == want, (f"{name}/{std}: {len(got)} lines of {len(want)}; first "
                                 f"difference at {_first_difference(got, want)}\n"
                                 f"{agent.output()}")
        metrics = scrape(agent)
        # after the restart: at least the last two long lines, and ~10 rotations
        assert metric(metrics, "lines_repaired_total") >= 2
        assert metric(metrics, "rotations_total", kind="rename") >= 5
        assert metric(metrics, "rotations_total", kind="delete") >= 1  # max-file
    finally:
        agent.stop()


def _first_difference(got: list[str], want: list[str]) -> int | None:
    return next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), None)
