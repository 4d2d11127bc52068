"""``mltrail cancel | delete | rename | tag``: tidying runs up.

``cancel``, ``rename`` and ``tag`` are run records sent to the collector (the
run's history says what happened). A run started by ``mltrail run`` (or
``Experiment.submit``) is canceled by its launcher: ``cancel`` records the
tag ``mltrail.cancel_requested``, the launcher sees it within a second or two
(it polls the run), stops the command as on SIGTERM and ends the run
Canceled; ``cancel`` waits for that. A run no launcher watches (an
interactive run) is marked Canceled at once. ``delete`` removes runs with
their children, metrics, logs and artifacts after a confirmation (``--yes``
in scripts).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from typing import Any

from mltrail.cli import table
from mltrail.cli.connection import add_security_flags, security_from_args
from mltrail.cli.target import connect, program
from mltrail.common.errors import PermanentError
from mltrail.proto import records_pb2
from mltrail.query.client import QueryClient
from mltrail.query.details import CANCEL_TAG
from mltrail.query.types import RunInfo

DISPLAY_NAME_TAG = "mltrail.display_name"
_AGE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def register(subparsers: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--collector", metavar="HOST:PORT",
                        help="collector to ask (default: MLTRAIL_COLLECTOR, else the local one)")
    add_security_flags(common)
    p = subparsers.add_parser("cancel", parents=[common], help="stop a running run",
                              description="Stop a run: `mltrail run` stops its command; "
                                          "another run is marked Canceled.")
    p.add_argument("run_id", metavar="RUN")
    p.add_argument("--wait", type=float, default=30.0, metavar="SECONDS",
                   help="how long to wait for the launcher to stop it (default 30)")
    p.set_defaults(func=cmd_cancel)
    p = subparsers.add_parser("delete", parents=[common], help="delete runs and their data",
                              description="Delete runs with their children, metrics, logs "
                                          "and artifacts.")
    p.add_argument("run_ids", metavar="RUN", nargs="*")
    p.add_argument("--experiment", metavar="E", help="the runs of this experiment")
    p.add_argument("--older-than", metavar="AGE", type=age_arg,
                   help="only runs started more than AGE ago: 30d, 12h, 90m, 2w")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=cmd_delete)
    p = subparsers.add_parser("rename", parents=[common], help="set a run's display name")
    p.add_argument("run_id", metavar="RUN")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_rename)
    p = subparsers.add_parser("tag", parents=[common], help="set tags on a run")
    p.add_argument("run_id", metavar="RUN")
    p.add_argument("tags", metavar="K=V", nargs="+")
    p.set_defaults(func=cmd_tag)


def age_arg(text: str) -> float:
    found = _AGE.fullmatch(text.strip())
    if not found:
        raise argparse.ArgumentTypeError(f"{text!r} is not an age such as 30d, 12h, 90m or 2w")
    return float(found[1]) * _SECONDS[found[2]]


# ---- cancel ---------------------------------------------------------------------------


def cmd_cancel(args: argparse.Namespace) -> int:
    with connect(args.collector, security=security_from_args(args)) as client:
        run = client.get_run(args.run_id, counts=False)
        if run.is_terminal:
            print(f"run {run.run_id} already ended ({run.status}); nothing to cancel")
            return 0
        if run.run_type != "script":
            _mark_canceled(client, run.run_id, "canceled with `mltrail cancel`")
            print(f"run {run.run_id} marked Canceled (an interactive run: no launcher to "
                  "stop, its process keeps running)")
            return 0
        client.write_run_events(run.run_id, [records_pb2.RunEvent(tags=records_pb2.TagsSet(
            tags={CANCEL_TAG: table.iso_time(time.time_ns()) or ""}))])
        print(f"asked the launcher of run {run.run_id} to stop it; waiting up to "
              f"{args.wait:g} s", file=sys.stderr, flush=True)
        ended = _wait_ended(client, run.run_id, args.wait)
        if ended is not None:
            print(f"run {run.run_id} {ended.status.lower()}: its command was stopped")
            return 0 if ended.status == "Canceled" else 1
        _mark_canceled(client, run.run_id, f"canceled with `mltrail cancel`; no launcher "
                                           f"stopped it within {args.wait:g} s")
        print(f"no launcher stopped run {run.run_id} within {args.wait:g} s (its process may "
              "be gone); it is marked Canceled")
        return 0


def _mark_canceled(client: QueryClient, run_id: str, message: str) -> None:
    client.write_run_events(run_id, [records_pb2.RunEvent(ended=records_pb2.RunEnded(
        status=records_pb2.CANCELED,
        error=records_pb2.ErrorDetails(code="Canceled", message=message)))])


def _wait_ended(client: QueryClient, run_id: str, timeout: float) -> RunInfo | None:
    deadline = time.monotonic() + timeout
    while True:
        run = client.get_run(run_id, counts=False)
        if run.is_terminal:
            return run
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.2)


# ---- delete ---------------------------------------------------------------------------


def cmd_delete(args: argparse.Namespace) -> int:
    if bool(args.run_ids) == bool(args.experiment):
        raise PermanentError("name the runs (mltrail delete RUN ...) or an experiment "
                             "(mltrail delete --experiment E [--older-than 30d]), not both")
    if args.older_than is not None and not args.experiment:
        raise PermanentError("--older-than goes with --experiment E")
    with connect(args.collector, security=security_from_args(args)) as client:
        runs = _doomed(client, args)
        if not runs:
            print("no runs match; nothing was deleted")
            return 0
        running = [r.run_id for r in runs if r.status == "Running"]
        if running:
            raise PermanentError(f"run {running[0]} is still running; stop it first with "
                                 f"`{program()} cancel {running[0]}`; nothing was deleted")
        _show(runs)
        if not _confirmed(args, len(runs)):
            return 1
        done = client.delete_runs([r.run_id for r in runs])
    print(f"deleted {len(done.deleted)} {'run' if len(done.deleted) == 1 else 'runs'}: "
          f"{done.metric_records} metric records, {done.log_lines} log lines, "
          f"{done.artifacts} artifacts")
    return 0


def _doomed(client: QueryClient, args: argparse.Namespace) -> list[RunInfo]:
    if args.run_ids:
        roots = [client.get_run(run_id, counts=False) for run_id in args.run_ids]
    else:
        roots = client.list_runs(experiment=args.experiment, limit=1_000_000)
        if args.older_than is not None:
            cutoff = time.time_ns() - int(args.older_than * 1e9)
            roots = [r for r in roots if r.start_time_unix_nano < cutoff]
    found: dict[str, RunInfo] = {}
    todo = list(roots)
    while todo:  # with their children, and theirs
        run = todo.pop()
        if run.run_id in found:
            continue
        found[run.run_id] = run
        todo += [client.get_run(c, counts=False) for c in run.child_run_ids if c not in found]
    return list(found.values())


def _show(runs: list[RunInfo]) -> None:
    rows = [[r.run_id, r.experiment, r.display_name or None, r.status,
             table.local_time(r.start_time_unix_nano)] for r in runs]
    print(f"{len(runs)} {'run' if len(runs) == 1 else 'runs'} with their metrics, logs and "
          "artifacts:", file=sys.stderr)
    print(table.render_table(["RUN ID", "EXPERIMENT", "NAME", "STATUS", "STARTED"], rows),
          file=sys.stderr)


def _confirmed(args: argparse.Namespace, count: int) -> bool:
    if args.yes:
        return True
    if not sys.stdin.isatty():
        raise PermanentError("not deleting without a confirmation; add --yes to delete "
                             f"{'it' if count == 1 else f'these {count} runs'}")
    answer = input(f"Delete {'it' if count == 1 else f'these {count} runs'}? [y/N] ")
    if answer.strip().lower() in ("y", "yes"):
        return True
    print("nothing was deleted", file=sys.stderr)
    return False


# ---- rename and tag ---------------------------------------------------------------------


def cmd_rename(args: argparse.Namespace) -> int:
    if not args.name.strip():
        raise PermanentError("the new name is empty")
    _set_tags(args, {DISPLAY_NAME_TAG: args.name})
    print(f"run {args.run_id} is now named {args.name!r}")
    return 0


def cmd_tag(args: argparse.Namespace) -> int:
    tags = {}
    for pair in args.tags:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise PermanentError(f"tag {pair!r} is not KEY=VALUE")
        if key.startswith("mltrail."):
            raise PermanentError(f"tag {key!r}: names starting with 'mltrail.' are mltrail's own")
        tags[key] = value
    _set_tags(args, tags)
    shown = ", ".join(f"{k}={v}" for k, v in tags.items())
    print(f"run {args.run_id} tagged {shown}")
    return 0


def _set_tags(args: argparse.Namespace, tags: dict[str, str]) -> None:
    with connect(args.collector, security=security_from_args(args)) as client:
        client.get_run(args.run_id, counts=False)  # an unknown run is an error
        client.write_run_events(args.run_id, [records_pb2.RunEvent(
            tags=records_pb2.TagsSet(tags=tags))])
