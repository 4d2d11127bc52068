"""Real mltrail processes for tests: started as a user would, stopped by PID.

A service is started with ``--ready-file``; it writes its bound addresses
there (JSON) once it listens, so tests use port 0 and never race for ports.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MLTRAIL = [sys.executable, "-m", "mltrail"]


@dataclass
class Service:
    """One ``mltrail <component>`` process; restartable with the same arguments."""

    component: str
    args: list[str]
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    starts: int = 0
    cwd: Path | None = None  # the directory the service starts in (default: the test's)

    @property
    def ready_file(self) -> Path:
        return self.workdir / f"{self.component}.ready.json"

    @property
    def log_file(self) -> Path:
        return self.workdir / f"{self.component}.log"

    def start(self, timeout: float = 30.0) -> Service:
        self.ready_file.unlink(missing_ok=True)
        env = {**os.environ, **self.env}
        env.setdefault("MLTRAIL_HOME", str(self.workdir / "home"))
        cmd = [*MLTRAIL, self.component, *self.args, "--ready-file", str(self.ready_file)]
        with open(self.log_file, "ab") as log:
            log.write(f"--- start {self.starts}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         cwd=self.cwd)
        self.starts += 1
        deadline = time.monotonic() + timeout
        while not self.ready_file.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.component} exited with {self.proc.returncode}:\n{self.output()}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{self.component} not ready in {timeout}s:\n{self.output()}")
            time.sleep(0.02)
        self.info = json.loads(self.ready_file.read_text())
        return self

    def output(self) -> str:
        return self.log_file.read_text(errors="replace")[-8000:] if self.log_file.exists() else ""

    @property
    def grpc(self) -> str:
        return str(self.info["grpc"])

    @property
    def http(self) -> str:
        return str(self.info["http"])

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.terminate(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


def mltrail_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60.0,
                input: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``mltrail ARGS`` as a user would; returns the completed process."""
    return subprocess.run(
        [*MLTRAIL, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        input=input.decode() if input is not None else None,
    )


def collector_service(workdir: Path, *extra: str, store: str = "") -> Service:
    """A collector process (not started): artifacts and (unless ``store`` names another
    store) a SQLite store in ``workdir``, port 0."""
    return Service(
        "collector",
        [
            "--store", store or f"sqlite:///{workdir / 'store.db'}",
            "--grpc", "127.0.0.1:0",
            "--http", "127.0.0.1:0",
            "--artifacts", str(workdir / "artifacts"),
            *extra,
        ],
        workdir,
    )


def vm_kib(pid: int, field: str = "VmHWM") -> int:
    """A memory figure of a live process from /proc (VmHWM: peak RSS; VmRSS: now), KiB."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise ValueError(f"no {field} for process {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (every thread), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """The live child processes of ``pid``, from /proc."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue  # the thread or process ended meanwhile
    return found


def descendants(pid: int) -> list[int]:
    """The live processes below ``pid`` (children first, then theirs)."""
    found: list[int] = []
    level = children(pid)
    while level:
        found += level
        level = [c for parent in level for c in children(parent)]
    return found


def tree_cpu_seconds(pid: int) -> float:
    """``cpu_seconds`` of a process and of every live process below it (a collector's
    ingest workers)."""
    total = 0.0
    for one in [pid, *descendants(pid)]:
        try:
            total += cpu_seconds(one)
        except OSError:
            continue
    return total
