"""``mltrail local status | start | stop | logs``: the local collector and agent.

These are the services the SDK (and every read command) starts on first use
when neither ``MLTRAIL_AGENT`` nor ``MLTRAIL_COLLECTOR`` is set; they run
detached and outlive the script that started them. Their ready files, sockets
and logs are in ``$MLTRAIL_HOME/embedded`` (see ``mltrail.pipeline.embedded``).
``status`` exits 0 when both run, 3 when one or both are stopped (as
``systemctl status`` does).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from mltrail.cli import table
from mltrail.cli.target import program
from mltrail.common.settings import mltrail_home
from mltrail.pipeline import embedded

SERVICES = ("collector", "agent")
NOT_RUNNING = 3


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "local", help="see, start and stop the local collector and agent",
        description="The local collector and agent that the SDK and the read commands start "
                    "on first use (data under $MLTRAIL_HOME, default ~/.mltrail).")
    sub = p.add_subparsers(dest="local_command", metavar="ACTION", required=True)
    status = sub.add_parser("status", help="what runs: pids, addresses, data, sizes")
    status.add_argument("--json", action="store_true", help="print JSON for scripts")
    status.set_defaults(func=cmd_status)
    start = sub.add_parser("start", help="start them (no-op when they run)")
    start.set_defaults(func=cmd_start)
    stop = sub.add_parser("stop", help="stop them (SIGTERM; the agent's spool stays on disk)")
    stop.set_defaults(func=cmd_stop)
    logs = sub.add_parser("logs", help="print their log files")
    logs.add_argument("service", nargs="?", choices=SERVICES, help="one of them (default both)")
    logs.add_argument("-n", "--lines", type=int, default=50, metavar="N",
                      help="the last N lines of each (default 50)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.set_defaults(func=cmd_logs)


def service_state(name: str) -> dict[str, Any]:
    directory = embedded.embedded_dir()
    info = embedded.read_ready(directory / f"{name}.json") or {}
    pid = int(info.get("pid", 0) or 0)
    running = embedded.pid_alive(pid)
    state: dict[str, Any] = {"service": name, "running": running, "pid": pid if running else None,
                             "log": str(directory / f"{name}.log")}
    if name == "collector":
        state.update(grpc=info.get("grpc"), http=info.get("http"))
        store = _sqlite_path(str(info.get("store", "")))
        state["store"] = str(store) if store else info.get("store")
        state["store_bytes"] = _store_size(store) if store else None
        artifacts = info.get("artifacts")
        state["artifacts"] = artifacts
        state["artifacts_bytes"] = _tree_size(Path(artifacts)) if artifacts else None
    else:
        state.update(socket=info.get("socket"), http=info.get("http"),
                     collector=info.get("collector"), spool=info.get("spool"))
        spool = info.get("spool")
        state["spool_bytes"] = _tree_size(Path(spool)) if spool else None
    if not running:
        for key in ("grpc", "http", "socket"):
            state.pop(key, None)
    return state


def _sqlite_path(url: str) -> Path | None:
    rest = url.partition("?")[0]
    return Path(rest[len("sqlite:///"):]) if rest.startswith("sqlite:///") else None


def _store_size(path: Path) -> int:
    return sum(_file_size(Path(f"{path}{suffix}")) for suffix in ("", "-wal", "-shm"))


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _tree_size(root: Path) -> int:
    total = 0
    for folder, _dirs, files in os.walk(root):
        total += sum(_file_size(Path(folder) / f) for f in files)
    return total


def status() -> dict[str, Any]:
    return {"home": str(mltrail_home()),
            "services": [service_state(name) for name in SERVICES]}


def cmd_status(args: argparse.Namespace) -> int:
    doc = status()
    running = all(s["running"] for s in doc["services"])
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(render_status(doc))
    return 0 if running else NOT_RUNNING


def render_status(doc: dict[str, Any]) -> str:
    rows = []
    for s in doc["services"]:
        if s["service"] == "collector":
            where = f"grpc {s['grpc']}, http {s['http']}" if s["running"] else None
        else:
            where = f"socket {s['socket']}, http {s['http']}" if s["running"] else None
        rows.append([s["service"], "running" if s["running"] else "stopped", s["pid"], where])
    collector, agent = doc["services"]
    fields: list[tuple[str, Any]] = [("Web UI", f"http://{collector['http']}/")] if (
        collector["running"]) else []
    fields += [
        ("Data", doc["home"]),
        ("Store", _sized(collector.get("store"), collector.get("store_bytes"))),
        ("Artifacts", _sized(collector.get("artifacts"), collector.get("artifacts_bytes"))),
        ("Spool", _sized(agent.get("spool"), agent.get("spool_bytes"))),
        ("Logs", f"{collector['log']}\n{agent['log']}"),
    ]
    out = [table.render_table(["SERVICE", "STATE", "PID", "ADDRESS"], rows), "",
           table.render_fields(fields)]
    if not all(s["running"] for s in doc["services"]):
        out += ["", f"Start them with `{program()} local start` (the SDK and the read "
                    "commands also start them when needed)."]
    return "\n".join(out)


def _sized(path: str | None, size: int | None) -> str | None:
    if not path:
        return None
    return f"{path} ({table.human_size(size or 0)})"


def cmd_start(args: argparse.Namespace) -> int:
    before = {s["service"]: s["running"] for s in status()["services"]}
    embedded.ensure_embedded()
    doc = status()
    started = [s for s in doc["services"] if s["running"] and not before[s["service"]]]
    for s in started:
        print(f"started the local {s['service']} (pid {s['pid']})", file=sys.stderr)
    if not started:
        print("the local collector and agent were already running", file=sys.stderr)
    print(render_status(doc))
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    running = [s for s in status()["services"] if s["running"]]
    embedded.stop_embedded()
    if not running:
        print("the local collector and agent were not running")
    for s in running:
        print(f"stopped the local {s['service']} (pid {s['pid']})")
    if any(s["service"] == "agent" for s in running):
        print("records the agent had not delivered stay in its spool and go out at its next "
              "start")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    if args.lines < 0:
        raise SystemExit(f"mltrail local logs: error: --lines must be 0 or more, not {args.lines}")
    names = [args.service] if args.service else list(SERVICES)
    directory = embedded.embedded_dir()
    paths = {name: directory / f"{name}.log" for name in names}
    prefix = len(names) > 1
    positions = {}
    for name, path in paths.items():
        if not path.exists():
            print(f"no {name} log yet ({path})", file=sys.stderr)
        text = _read(path)
        for line in text.splitlines()[-args.lines:] if args.lines else []:
            line = line.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            line = table.printable(line, "\t")
            print(f"[{name}] {line}" if prefix else line)
        positions[name] = len(text.encode("utf-8", "surrogateescape"))
    sys.stdout.flush()
    while args.follow:
        time.sleep(0.2)
        for name, path in paths.items():
            new = _read_from(path, positions[name])
            positions[name] += len(new)
            for line in new.decode("utf-8", "replace").splitlines():
                line = table.printable(line, "\t")
                print(f"[{name}] {line}" if prefix else line, flush=True)
    return 0


def _read(path: Path) -> str:
    return _read_from(path, 0).decode("utf-8", "surrogateescape")


def _read_from(path: Path, offset: int) -> bytes:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            return fh.read()
    except OSError:
        return b""
