"""Runs whose SDK process died without ending them are recorded as failed.

The SDK keeps one connection per process to ``<agent socket>.runs`` (a
plain unix socket next to the gRPC one) and writes a line per run once the
agent acknowledged its start (``+RUN_ID``) and its end (``-RUN_ID``); on a
reconnect it sends its open runs again. The agent learns the peer's pid
from the kernel (``SO_PEERCRED``), not from what the peer says. When a
connection ends with runs still open and that process is gone (no
``/proc/PID``, a zombie, or a new process under the same pid), the agent
spools a ``RunEnded(FAILED)`` record for each of them, in a stream of its
own, after everything that process's SDK had handed over. A process that
is still alive (it only lost the connection) is watched until it either
reconnects or is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from mltrail.agent.spool import Spool, SpoolDiskFullError
from mltrail.proto import records_pb2

log = logging.getLogger("mltrail.agent.runs")

POLL_SECONDS = 0.2
_PEERCRED = struct.Struct("3i")  # pid, uid, gid
MAX_LINE = 4096


def watch_socket_path(agent_socket: str | os.PathLike[str]) -> Path:
    return Path(f"{os.fspath(agent_socket)}.runs")


def process_start(pid: int) -> str | None:
    """The process's start time (field 22 of /proc/PID/stat); None: gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def failed_batch(run_ids: list[str], pid: int) -> tuple[str, bytes]:
    """A stream of its own: RunEnded(FAILED) for each run, saying what happened."""
    stream_id = uuid.uuid4().hex
    batch = records_pb2.Batch(stream_id=stream_id)
    message = (f"the process (pid {pid}) exited without ending this run (killed, or it "
               "crashed); everything it had handed to the agent was kept")
    for seq, run_id in enumerate(run_ids, start=1):
        error = records_pb2.ErrorDetails(code="ProcessExited", message=message, exit_code=-1)
        batch.records.add(seq=seq, time_unix_nano=time.time_ns(), run_id=run_id,
                          run_event=records_pb2.RunEvent(ended=records_pb2.RunEnded(
                              status=records_pb2.FAILED, error=error)))
    return stream_id, batch.SerializeToString()


class RunWatch:
    """The ``.runs`` socket: per SDK process, its open runs; see the module docstring."""

    def __init__(self, spool: Spool, path: Path, permissions: int,
                 on_failed: Callable[[int], None] | None = None) -> None:
        self.spool = spool
        self.path = path
        self.permissions = permissions
        self.on_failed = on_failed or (lambda runs: None)
        self._server: asyncio.AbstractServer | None = None
        self._waiting: dict[tuple[int, str], asyncio.Task[None]] = {}

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # the agent's own socket path: checked free by the caller
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._connection, path=str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, self.permissions)

    async def shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(OSError):
                self.path.unlink()
        for task in self._waiting.values():
            task.cancel()

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        sock: socket.socket = writer.get_extra_info("socket")
        pid = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                               _PEERCRED.size))[0]
        started = process_start(pid)
        key = (pid, started or "")
        waiting = self._waiting.pop(key, None)
        if waiting is not None:
            waiting.cancel()  # it came back: its open runs follow on this connection
        open_runs: dict[str, None] = {}
        try:
            while line := await reader.readline():
                text = line.decode(errors="replace").strip()
                if len(text) > 1 and len(line) <= MAX_LINE:
                    if text[0] == "+":
                        open_runs[text[1:]] = None
                    elif text[0] == "-":
                        open_runs.pop(text[1:], None)
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()
        if open_runs:
            self._waiting[key] = asyncio.create_task(self._when_gone(key, list(open_runs)))

    async def _when_gone(self, key: tuple[int, str], run_ids: list[str]) -> None:
        pid, started = key
        while process_start(pid) == started and started:
            await asyncio.sleep(POLL_SECONDS)
        self._waiting.pop(key, None)
        stream_id, batch = failed_batch(run_ids, pid)
        log.warning("process %d exited without ending run(s) %s; recorded them as failed",
                    pid, ", ".join(run_ids))
        while True:
            try:
                await asyncio.to_thread(self.spool.append, stream_id, 1, len(run_ids), batch)
                break
            except SpoolDiskFullError:  # keep trying: the disk frees as the collector acks
                await asyncio.sleep(1.0)
        self.on_failed(len(run_ids))
