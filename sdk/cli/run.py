"""``mltrail run [--experiment E] [--name N] [--tag K=V ...] -- COMMAND [ARGS...]``.

Starts COMMAND as a new run: its console is recorded as streams "stdout"
and "stderr" while the user still sees it, and the command finds the run
through ``MLTRAIL_RUN_ID`` and ``MLTRAIL_AGENT`` (``Run.get_context()``).
The exit code decides the run's status; ``mltrail run`` exits with it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
from pathlib import Path
from typing import Any

from mltrail.cli.output import STDERR_HEADER
from mltrail.cli.target import program
from mltrail.common.errors import MltrailError, PermanentError
from mltrail.common.lines import MAX_LINE_BYTES
from mltrail.common.tuning import keep_large_buffers
from mltrail.pipeline.launcher import BURST_HOLD_BYTES, LaunchResult, ProcessLauncher
from mltrail.proto import records_pb2

SWITCH_INTERVAL = 0.0005
# This process, not the user's, holds a flooding command's console (a quarter
# of its bound per stream) so that the command is not slowed: it takes this
# many times MLTRAIL_MEMORY_MIB (512 MiB by default, as much as it held before
# the bound: 128 MiB per stream). Under 64 MiB a 95 MiB flood, held 16 MiB at
# a time, took 4.75 to 12.5 times as long (README, Benchmarks).
LAUNCHER_MEMORY_SHARE = 8
CANCEL_POLL_SECONDS = 1.0  # how often `mltrail run` asks whether it was canceled


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "run", help="run a command as a tracked run, recording its console",
        description="Run COMMAND as a new run; stdout and stderr are recorded and shown.")
    p.add_argument("--experiment", default=os.environ.get("MLTRAIL_EXPERIMENT") or "default",
                   help="experiment name (default: MLTRAIL_EXPERIMENT, else 'default')")
    p.add_argument("--name", help="display name of the run")
    p.add_argument("--tag", action="append", default=[], metavar="K=V", help="a tag (repeatable)")
    p.add_argument("--run-id", help="use this run id (Experiment.submit sets it)")
    p.add_argument("--submitted", action="store_true", help=argparse.SUPPRESS)  # by submit
    p.add_argument("--grace", type=float, default=10.0, metavar="SECONDS",
                   help="after SIGINT/SIGTERM, how long the command may take to exit "
                        "before it is killed (default 10)")
    p.add_argument("--max-line", type=int, default=MAX_LINE_BYTES, metavar="BYTES",
                   help="longer lines are split with a marker (default 1 MiB)")
    p.add_argument("--summary", action="store_true",
                   help="when the command ends, print the run's summary from the collector")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="print nothing of our own on stderr at start (the run id and how to "
                        "follow it) or while stopping")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    p.set_defaults(func=cmd_run)


def parse_tags(pairs: list[str]) -> dict[str, str]:
    tags = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise PermanentError(f"--tag {pair!r} is not KEY=VALUE")
        tags[key] = value
    return tags


def cmd_run(args: argparse.Namespace) -> int:
    from mltrail.experiment import Experiment
    from mltrail.run import Run

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise PermanentError("no command given: use `mltrail run -- COMMAND [ARGS...]`")
    try:
        experiment = Experiment(args.experiment)
        if args.submitted and args.run_id:
            run = _start_registered(experiment, args.run_id)
        else:
            run = Run._start(experiment, run_id=args.run_id, display_name=args.name,
                             tags=parse_tags(args.tag), run_type="script")
    except (TypeError, ValueError) as exc:
        raise PermanentError(str(exc)) from None
    env = dict(os.environ, MLTRAIL_RUN_ID=run.id, MLTRAIL_EXPERIMENT=experiment.name)
    if run._link.agent is not None:
        env["MLTRAIL_AGENT"] = run._link.agent.socket_path

    keep_large_buffers()  # console output passes through here in large buffers
    # The pump threads must get the interpreter lock back within a fraction of
    # the time a fast writer takes to fill the 1 MiB pipe (about 1 ms at 1 GB/s),
    # not after Python's default of 5 ms while the sender encodes.
    sys.setswitchinterval(SWITCH_INTERVAL)
    if not args.quiet:
        print(f"mltrail: run {run.id} (experiment {experiment.name}); follow it with "
              f"`{program()} logs {run.id} --follow`", file=sys.stderr, flush=True)
    sender = run._link.sender  # held lines count in its memory bound: a quarter per stream
    sender.set_memory_limit(LAUNCHER_MEMORY_SHARE * sender.memory_limit)
    launcher = ProcessLauncher(command, run._record_console_waiting, env=env, grace=args.grace,
                               max_line=args.max_line, notices=not args.quiet,
                               hold_bytes=min(BURST_HOLD_BYTES, sender.memory_limit // 4),
                               on_held=sender.count_held)
    watcher = CancelWatcher(run, launcher, quiet=args.quiet)
    try:
        watcher.start()
        result = launcher.run()
    except OSError as exc:
        run.fail(f"could not start {command[0]!r}: {exc.strerror}", error_code="LaunchError")
        raise PermanentError(f"could not start {command[0]!r}: {exc.strerror}; the run "
                             f"{run.id} is marked failed") from None
    finally:
        watcher.stop()
    run._upload_run_folders(os.getcwd())  # v1: ./outputs and ./logs, uploaded at the end
    end_run(run, result)
    _settle(run)
    if args.summary:
        print_summary(run)
    return result.exit_code


def _start_registered(experiment: Any, run_id: str) -> Any:
    """The run Experiment.submit registered: its start, which makes it Running."""
    from mltrail.run import Run

    run = Run(experiment, run_id)
    run.start()
    run._local = True  # this launcher ends it (the collector keeps an earlier end)
    return run


class CancelWatcher(threading.Thread):
    """Stops the command when `mltrail cancel` asked for it: polls the run at the
    collector (cheaply, without counts) for the ``mltrail.cancel_requested`` tag."""

    def __init__(self, run: Any, launcher: ProcessLauncher, quiet: bool) -> None:
        super().__init__(name="mltrail-cancel-watch", daemon=True)
        self.tracked, self.launcher, self.quiet = run, launcher, quiet
        self._stopped = threading.Event()

    def run(self) -> None:
        from mltrail.query.client import QueryClient
        from mltrail.query.details import CANCEL_TAG

        agent = self.tracked._link.agent
        if agent is None:
            return  # offline: no collector to hear from
        try:
            client = QueryClient(agent.info().collector, timeout=5.0,
                                 security=self.tracked._experiment.workspace.connection
                                 .security())
        except MltrailError:
            return
        with client:
            while not self._stopped.wait(CANCEL_POLL_SECONDS):
                with contextlib.suppress(MltrailError):  # not there yet, or unreachable
                    if CANCEL_TAG in client.get_run(self.tracked.id, counts=False).tags:
                        if not self.quiet:
                            print("mltrail: `mltrail cancel` asked to stop this run; "
                                  "stopping the command", file=sys.stderr, flush=True)
                        self.launcher.stop()
                        return

    def stop(self) -> None:
        self._stopped.set()


def _settle(run: Any, timeout: float = 5.0) -> None:
    """Give the agent a moment to hand the run's end to the collector, so a
    `mltrail show` right after sees it; the spool delivers it later anyway."""
    with contextlib.suppress(MltrailError):  # the agent went away: its spool has them
        run._link.wait_collector(timeout)


def end_run(run: Any, result: LaunchResult) -> None:
    """The run's status from how the command ended (waits for delivery)."""
    if result.canceled:
        run.cancel()
    elif result.returncode == 0:
        run.complete()
    else:
        detail = "\n".join(result.stderr_tail[-10:])
        message = f"the command exited with code {result.exit_code}"
        run._end(records_pb2.FAILED, records_pb2.ErrorDetails(
            code="ExitCode", exit_code=result.exit_code,
            message=f"{message}\n{STDERR_HEADER}\n{detail}" if detail else message))
        print(f"mltrail: run {run.id} failed: {message}", file=sys.stderr)


def _web_address(collector: str) -> str | None:
    """The HTTP address of the local collector at ``collector`` (its ready file says),
    for the web UI's link; None for another collector (its HTTP port is not known here)."""
    from mltrail.pipeline.embedded import embedded_dir, read_ready

    info = read_ready(embedded_dir() / "collector.json")
    if info and info.get("grpc") == collector and info.get("http"):
        return str(info["http"])
    return None


def print_summary(run: Any) -> None:
    """Status, duration, final metrics, log lines and artifacts, as the collector has them,
    and the commands that look further."""
    from mltrail.cli import table
    from mltrail.cli.query import metrics_table, run_fields
    from mltrail.cli.target import collector_flag

    client = run._link.reader().client  # waits until the collector has every record
    with client:
        info = client.get_run(run.id)
        records = client.get_metric_records(run.id)
        artifacts = client.list_artifacts(run.id)
    out = ["", table.render_fields(run_fields(info))]
    if records:
        out += ["", "Final metrics:", metrics_table(records)]
    if artifacts:
        out += ["", "Artifacts:", table.render_table(
            ["PATH", "SIZE"], [[a.path, table.human_size(a.size)] for a in artifacts])]
    collector = client.address
    mltrail, flag = program(), collector_flag(collector)
    out += ["", f"Look further (collector {collector}):"]
    out += [f"  {mltrail} {cmd} {run.id}{flag}" for cmd in ("show", "metrics", "logs",
                                                             "artifacts")]
    out += [f"  {mltrail} runs{flag}"]
    web = _web_address(collector)
    if web:
        out += ["", f"In a browser: http://{web}/#/run/{run.id}"]
    if mltrail != "mltrail":
        venv = Path(mltrail).parent
        out += ["", f"mltrail is not on your PATH: `. {venv / 'activate'}` puts it there."]
    print("\n".join(out), flush=True)
