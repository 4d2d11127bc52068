"""Where records go: the agent named by ``MLTRAIL_AGENT``, else a local service.

With nothing configured, a process uses the **embedded default**: one
collector and one agent per user, started on first use and shared by every
later process::

    $MLTRAIL_HOME/embedded/
      lock             fcntl.flock: one process at a time checks or starts them
      collector.json   ready file {"grpc", "http", "pid"} (the query client reads "grpc")
      agent.json       ready file {"socket", "http", "collector", "pid"}
      agent.sock       the agent's unix socket
      collector.log, agent.log

Under the lock: if ``agent.sock`` answers ``Agent.Info``, reuse it; else
reuse a live collector (or start one) and start an agent in front of it.
Both are detached (their own session), so they outlive the script.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

from mltrail.common.errors import MltrailError
from mltrail.pipeline.offline import mltrail_home
from mltrail.proto import agent_pb2, agent_pb2_grpc

START_TIMEOUT = 60.0
EMBEDDED_NICE = 10  # the local agent and collector yield the CPU to training

# Popen handles of the services this process started: kept so that Python
# does not warn about a "still running" child it never meant to wait for.
_spawned: list[subprocess.Popen[bytes]] = []


class EmbeddedServiceError(MltrailError):
    """The local collector or agent could not be started."""


def embedded_dir(home: Path | None = None) -> Path:
    return (home or mltrail_home()) / "embedded"


def agent_socket_from_env() -> str | None:
    return os.environ.get("MLTRAIL_AGENT") or None


def ensure_embedded(home: Path | None = None, timeout: float = START_TIMEOUT) -> str:
    """The socket of this user's local agent, started (with a collector) if needed."""
    directory = embedded_dir(home)
    directory.mkdir(parents=True, exist_ok=True)
    with _locked(directory / "lock"):
        collector, _ = _ensure_collector(directory, timeout)
        _ensure_agent(directory, collector, timeout)
    return str(directory / "agent.sock")


def ensure_local_collector(home: Path | None = None, timeout: float = START_TIMEOUT
                           ) -> tuple[str, bool]:
    """The local collector's gRPC address, started if it is not running (the read
    commands), and whether it was started now. A live local agent that sends to
    another address is restarted in front of it."""
    directory = embedded_dir(home)
    directory.mkdir(parents=True, exist_ok=True)
    with _locked(directory / "lock"):
        collector, started = _ensure_collector(directory, timeout)
        agent = read_ready(directory / "agent.json")
        if agent and pid_alive(int(agent.get("pid", 0))) and agent.get("collector") != collector:
            _ensure_agent(directory, collector, timeout)
    return collector, started


def _ensure_collector(directory: Path, timeout: float) -> tuple[str, bool]:
    live = _live_collector(directory)
    if live:
        return live, False
    # Back on the ports it had, if they are free: a running agent finds it there.
    previous = read_ready(directory / "collector.json") or {}
    ports = [str(previous.get("grpc", "")), str(previous.get("http", ""))]
    attempts = [ports] if all(p.startswith("127.0.0.1:") for p in ports) else []
    for grpc_at, http_at in [*attempts, ["127.0.0.1:0", "127.0.0.1:0"]]:
        try:
            info = _start(directory, "collector", ["--grpc", grpc_at, "--http", http_at],
                          timeout)
            return str(info["grpc"]), True
        except EmbeddedServiceError:
            if grpc_at.endswith(":0"):
                raise
    raise AssertionError("unreachable: the last attempt raises")


def _ensure_agent(directory: Path, collector: str, timeout: float) -> None:
    socket_path = directory / "agent.sock"
    info = read_ready(directory / "agent.json")
    if info and info.get("collector") == collector and agent_answers(str(socket_path)):
        return
    pid = int(info.get("pid", 0)) if info else 0
    if pid_alive(pid):  # sending to a collector that is gone: its spool stays on disk
        _stop_pid(pid, timeout=5.0)
    _start(directory, "agent", ["--socket", str(socket_path), "--collector", collector,
                                "--http", "127.0.0.1:0"], timeout)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def agent_answers(socket_path: str, timeout: float = 2.0) -> bool:
    if not os.path.exists(socket_path):
        return False
    with grpc.insecure_channel(f"unix:{socket_path}") as channel:
        try:
            agent_pb2_grpc.AgentStub(channel).Info(agent_pb2.AgentInfoRequest(), timeout=timeout)
        except grpc.RpcError:
            return False
    return True


def read_ready(path: Path) -> dict[str, Any] | None:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _live_collector(directory: Path) -> str | None:
    info = read_ready(directory / "collector.json")
    if not info or not pid_alive(int(info.get("pid", 0))):
        return None
    address = str(info.get("grpc", ""))
    with grpc.insecure_channel(address) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=2.0)
        except grpc.FutureTimeoutError:
            return None
    return address


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _start(directory: Path, component: str, args: list[str], timeout: float) -> dict[str, Any]:
    """Start ``mltrail COMPONENT`` detached and wait for its ready file."""
    ready = directory / f"{component}.json"
    ready.unlink(missing_ok=True)
    log_path = directory / f"{component}.log"
    cmd = [sys.executable, "-m", "mltrail", component, *args, "--ready-file", str(ready)]
    env = {**os.environ, "MLTRAIL_HOME": str(directory.parent)}
    env.setdefault(f"MLTRAIL_{component.upper()}_NICE", str(EMBEDDED_NICE))
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
    _spawned.append(proc)
    deadline = time.monotonic() + timeout
    while (info := read_ready(ready)) is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise EmbeddedServiceError(
                f"the local {component} did not start (exit code {proc.poll()}); "
                f"see {log_path}. Nothing was logged yet; set MLTRAIL_AGENT to use "
                "another agent, or fix the problem the log names and retry")
        time.sleep(0.05)
    return info


def stop_embedded(home: Path | None = None, timeout: float = 15.0) -> list[int]:
    """SIGTERM the local agent and collector by the PIDs in their ready files (tests, CLI)."""
    stopped = []
    for component in ("agent", "collector"):
        info = read_ready(embedded_dir(home) / f"{component}.json")
        pid = int(info.get("pid", 0)) if info else 0
        if pid_alive(pid):
            _stop_pid(pid, timeout)
            stopped.append(pid)
    return stopped


def _stop_pid(pid: int, timeout: float) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` (a spool is safe through a kill)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, 15)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in _spawned:
            if proc.pid == pid:
                proc.poll()  # reap our own child, or it stays a zombie
        if not pid_alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, 9)
