"""The agent's support bundle (``GET /-/support?seconds=N``, ``mltrail agent bundle``).

One capture window (``common.service_bundle``): /metrics and the agent's
state at its start and end, so a spool that grows or sends that fail show as
numbers that moved. Besides: settings as loaded (redacted), the spool's
segments, ledger and dead letters with the collector's messages, each
source's checkpointed files (positions, sizes, lag; never the line pieces a
checkpoint carries), the collector as the agent sees it (address, connected,
a TCP probe, the last send errors), and the agent's last log lines.
"""

from __future__ import annotations

import collections
import json
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from mltrail.agent.forward_listener import ForwardListener
from mltrail.agent.spool import SpoolFrame
from mltrail.common.bundle_writer import BundleWriter
from mltrail.common.service_bundle import registry_numbers, service_bundle

if TYPE_CHECKING:
    from mltrail.agent.service import AgentService

MAX_REASON_LINES = 2000

README = """\
mltrail support bundle of an agent

manifest.json       versions, who and when, every file (size, sha256), cuts, redactions;
                    "summary" has the health, the spool and what moved in the window
settings.json       the agent's settings as loaded (secrets redacted; never the raw file)
metrics-start.txt   /metrics at the start of the capture window
metrics-end.txt     /metrics at its end
state-start.json    spool (segments, bytes, positions, counters), collector, send errors
state-end.json      the same at the end of the window
dead-letters.txt    batches the collector refused, with its message (dead/reasons.log)
sources.json        each log source's files: path, position, size, lag
log.txt             the agent's last log lines
"""


class SendLog(ForwardListener):
    """The last send errors and dead letters, with when: what a bundle shows of the wire."""

    def __init__(self, capacity: int = 50) -> None:
        self._events: collections.deque[dict[str, Any]] = collections.deque(maxlen=capacity)
        self._guard = threading.Lock()
        self.failed_sends = 0
        self.connected_now = False

    def _add(self, kind: str, message: str) -> None:
        with self._guard:
            self._events.append({"time_unix": round(time.time(), 3), "event": kind,
                                 "message": message[:2000]})

    def connected(self, up: bool) -> None:
        if up != self.connected_now:
            self._add("connected" if up else "disconnected", "")
        self.connected_now = up

    def retrying(self, error: BaseException, delay: float) -> None:
        self.failed_sends += 1
        self._add("send failed", f"{error} (retry in {delay:.1f} s)")

    def dead_lettered(self, frame: SpoolFrame, message: str) -> None:
        self._add("dead letter", f"stream {frame.stream_id} seq {frame.first_seq}-"
                                 f"{frame.last_seq}: {message}")

    def events(self) -> list[dict[str, Any]]:
        with self._guard:
            return list(self._events)


def agent_bundle(service: AgentService, seconds: float) -> bytes:
    return service_bundle("agent", service.settings, _registry(service),
                          lambda: snapshot(service), seconds,
                          extra=lambda w: _extra(service, w), readme=README)


def _registry(service: AgentService) -> Any:
    assert service.metrics is not None
    return service.metrics.registry


def snapshot(service: AgentService) -> dict[str, Any]:
    spool, metrics = service.spool, service.metrics
    healthy, message = metrics.health() if metrics else (False, "starting")
    numbers = registry_numbers(metrics.registry) if metrics else {}
    state: dict[str, Any] = {
        "time_unix": round(time.time(), 3),
        "health": {"healthy": healthy, "message": message},
        "collector": _collector(service),
        "send_errors": service.send_log.events(),
        "numbers": {**numbers, "failed_sends": service.send_log.failed_sends},
    }
    if spool is not None:
        state["spool"] = _spool(spool)
        state["numbers"].update({"spool_bytes": spool.bytes, "spool_segments": spool.segments,
                                 "spool_pending_bytes": spool.pending_bytes})
    return state


def _collector(service: AgentService) -> dict[str, Any]:
    address = service.settings.collector
    probe: dict[str, Any] = {"address": address,
                             "connected": bool(service.metrics and service.metrics.is_connected)}
    with grpc.insecure_channel(address) as channel:  # a gRPC connection, as the forwarder's
        try:
            grpc.channel_ready_future(channel).result(timeout=2.0)
            probe["probe"] = "reachable"
        except grpc.FutureTimeoutError:
            probe["probe"] = "not reachable within 2 s (down, wrong address or firewalled)"
    return probe


def _spool(spool: Any) -> dict[str, Any]:
    directory = Path(spool.directory)
    segments = []
    for path in sorted((directory / "segments").glob("*.seg")):
        try:
            segments.append({"name": path.name, "bytes": path.stat().st_size})
        except OSError:
            continue  # deleted since the listing: acknowledged
    ledger: Any = None
    try:
        ledger = json.loads((directory / "ledger.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        ledger = {"unreadable": str(exc)}
    counters = spool.counters
    return {
        "directory": str(directory), "segments": segments, "bytes": spool.bytes,
        "pending_bytes": spool.pending_bytes, "ledger": ledger,
        "write_position": list(spool.write_position), "ack_position": list(spool.ack_position),
        "counters": {k: v for k, v in vars(counters).items() if isinstance(v, int | float)},
        "dead_letter_bytes": _size(directory / "dead" / "letters.seg"),
    }


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _extra(service: AgentService, writer: BundleWriter) -> None:
    spool_dir = Path(service.settings.spool_dir)
    reasons = spool_dir / "dead" / "reasons.log"
    with writer.text_file("dead-letters.txt") as out:
        try:
            with open(reasons, encoding="utf-8", errors="replace") as fh:
                lines = collections.deque(fh, maxlen=MAX_REASON_LINES)
            out.write("".join(lines))
        except FileNotFoundError:
            out.write("no dead letters: the collector refused no batch\n")
    writer.add_json("sources.json", sources(spool_dir / "sources"))


def sources(directory: Path) -> dict[str, Any]:
    """Each source's checkpointed files with their current size and lag."""
    found: dict[str, Any] = {}
    for path in sorted(directory.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            found[path.stem] = {"checkpoint": str(path), "unreadable": str(exc)}
            continue
        files = []
        for entry in data.get("files", []) if isinstance(data, dict) else []:
            entry = dict(entry)
            carry = entry.pop("carry", "")
            entry["carried_bytes"] = len(carry) * 3 // 4  # line pieces: counted, not copied
            entry["current_size"] = _size(Path(entry.get("path", "")))
            entry["lag_bytes"] = max(0, entry["current_size"] - int(entry.get("offset", 0)))
            files.append(entry)
        found[path.stem] = {"checkpoint": str(path), "files": files,
                            "modified_unix": os.path.getmtime(path)}
    return found
