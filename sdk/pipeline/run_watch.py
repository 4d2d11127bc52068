"""This process's open runs, told to the agent so it can end them if we die.

One connection per process to the agent's ``<socket>.runs`` (see
``mltrail.agent.run_watch``): ``+RUN_ID`` once the agent acknowledged a
run's start, ``-RUN_ID`` once it acknowledged its end. If this process is
killed, the kernel closes the connection and the agent records the runs
still open as failed. A background thread reconnects after the agent
restarts and sends the open runs again; an agent without the socket (an
older one) is tried again every few seconds, silently.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class AgentRunWatch:
    def __init__(self, agent_socket: str, retry_seconds: float = 2.0) -> None:
        self.path = f"{agent_socket}.runs"
        self.retry_seconds = retry_seconds
        self._open: dict[str, None] = {}
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._sock: socket.socket | None = None
        self._thread = threading.Thread(target=self._loop, name="mltrail-run-watch",
                                        daemon=True)
        self._thread.start()

    def update(self, run_id: str, opened: bool) -> None:
        """Called by the sender once the agent acknowledged a run's start or end."""
        with self._lock:
            if opened:
                self._open[run_id] = None
            else:
                self._open.pop(run_id, None)
            self._lines.append(("+" if opened else "-") + run_id)
        self._wake.set()

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=2.0)

    def _loop(self) -> None:
        while not self._closed:
            self._wake.wait(self.retry_seconds)
            self._wake.clear()
            try:
                self._send()
            except OSError:
                self._disconnect()
        if self._sock is not None:  # the last ends, before the connection closes
            with contextlib.suppress(OSError):
                self._send()
        self._disconnect()

    def _send(self) -> None:
        if self._sock is None:
            with self._lock:
                if not self._open:
                    self._lines.clear()  # nothing open: nothing the agent must know
                    return
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(self.path)
            except OSError:
                sock.close()
                raise
            self._sock = sock
            with self._lock:  # a new connection: the open runs, again
                self._lines = ["+" + run_id for run_id in self._open]
        with self._lock:
            lines, self._lines = self._lines, []
        if lines:
            self._sock.sendall("".join(line + "\n" for line in lines).encode())

    def _disconnect(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
