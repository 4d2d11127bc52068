"""``mltrail logs RUN [--follow]``: a run's console and log lines, in the order written.

Stored lines are read stream by stream and merged by line time (each line
keeps the time its read brought it, so stdout and stderr interleave as the
process wrote them); a follow prints what is stored that way first, then each
answer of the live stream merged by time too.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import itertools
import sys
from collections.abc import Iterable, Iterator
from functools import partial
from operator import attrgetter
from typing import Any

from mltrail.cli import table
from mltrail.cli.connection import security_from_args
from mltrail.cli.output import JSON_LINE as _JSON_LINE
from mltrail.cli.output import STDERR_HEADER, RunDidNotComplete
from mltrail.cli.output import out as _out
from mltrail.cli.target import connect
from mltrail.common.errors import MltrailError, RetryableError
from mltrail.query.client import LogTail, QueryClient
from mltrail.query.types import TERMINAL_STATUSES, LogLine

CONSOLE_STREAMS = ("stdout", "stderr")
LOG_NOTE = ("mltrail: the 'log' stream holds Python logging records, which often also went to "
            "stderr; --console shows only stdout and stderr, --stream log only the records")


def cmd_logs(args: argparse.Namespace) -> int:
    if args.console:
        args.stream = [*args.stream, *(s for s in CONSOLE_STREAMS if s not in args.stream)]
    with connect(args.collector, security=security_from_args(args)) as client:
        run = client.get_run(args.run_id)  # one clear error for an unknown run
        streams = list(args.stream) or sorted(_streams_of(client, args.run_id))
        prefix = args.prefix or len(streams) > 1
        if not args.stream and {"log", "stderr"} <= set(streams) and not args.json:
            print(LOG_NOTE, file=sys.stderr)
        if args.follow and run.status not in TERMINAL_STATUSES:
            return _follow(client, args, streams, prefix)
        if streams:
            _print_stored(client, args, streams, prefix, flush=args.follow)
        elif not args.follow:
            print(f"run {args.run_id} has no log lines", file=sys.stderr)
        if args.follow and run.status != "Completed":
            _raise_unfinished(client, args.run_id, run.status)
    return 0


def _print_stored(client: QueryClient, args: argparse.Namespace, streams: list[str],
                  prefix: bool, flush: bool, seen: dict[str, int] | None = None) -> None:
    """Every stored line of ``streams``, merged by time; ``seen`` gets each stream's
    next line (also when the collector goes away midway)."""
    tails = [client.tail_logs(args.run_id, [s], args.from_line) for s in streams]
    with contextlib.ExitStack() as stack:
        for tail in tails:
            stack.enter_context(tail)
        batches = _merge_by_time(tails)
        _print_batches(batches if seen is None else _noting(batches, seen), prefix, args.json,
                       flush=flush)


def _noting(batches: Iterable[list[LogLine]], seen: dict[str, int]) -> Iterator[list[LogLine]]:
    """``batches``, noting each stream's next line once a batch was printed (the merge
    reads ahead, so the tails' own positions may be past what was shown)."""
    for lines in batches:
        yield lines
        for line in lines:  # the caller asked for more: these are printed
            seen[line.stream] = line.line + 1


def _follow(client: QueryClient, args: argparse.Namespace, streams: list[str],
            prefix: bool) -> int:
    """What is stored so far merged by time, as `mltrail logs` prints it, then new
    lines as they come (each answer merged by time too)."""
    seen: dict[str, int] = {}
    with contextlib.suppress(RetryableError):  # lost midway: the follow reconnects
        _print_stored(client, args, streams, prefix, flush=True, seen=seen)
    # Every stream when none was named, so one that starts later is shown too.
    with client.tail_logs(args.run_id, args.stream, args.from_line, follow=True) as tail:
        tail.next_line.update(seen)  # already printed: skipped
        tail.on_reconnect = partial(_tell_reconnect, client.address, tail.reconnect_for)
        _print_batches(map(_by_time, tail.batches()), prefix or len(seen) > 1, args.json,
                       flush=True)
    if tail.run_status in (None, "Completed"):
        return 0
    _raise_unfinished(client, args.run_id, tail.run_status)
    return 1  # not reached: _raise_unfinished raises


def _by_time(lines: list[LogLine]) -> list[LogLine]:
    """One answer's lines (stream after stream) merged by time; each stream keeps its order."""
    per_stream: dict[str, list[LogLine]] = {}
    for line in lines:
        per_stream.setdefault(line.stream, []).append(line)
    if len(per_stream) < 2:
        return lines
    return list(heapq.merge(*per_stream.values(), key=attrgetter("time_unix_nano")))


def _tell_reconnect(address: str, within: float, error: MltrailError) -> None:
    print(f"mltrail: lost the collector at {address}; reconnecting for up to {within:.0f}s "
          "(lines already shown are not repeated)", file=sys.stderr, flush=True)


def _streams_of(client: QueryClient, run_id: str) -> set[str]:
    """The run's streams so far, from line 0 of each (one small request)."""
    return {line.stream for line in client.tail_logs(run_id, to_line=1)}


def _merge_by_time(tails: list[LogTail]) -> Iterator[list[LogLine]]:
    """The streams interleaved by line time, as a terminal would have shown them.

    The collector answers stream by stream; one lazy tail per stream merged
    here keeps memory at a page per stream. Each stream keeps its own order
    whatever the times say (a merge never reorders one input)."""
    if len(tails) == 1:
        yield from tails[0].batches()
        return
    merged = heapq.merge(*tails, key=attrgetter("time_unix_nano"))
    while batch := list(itertools.islice(merged, 4096)):
        yield batch


def _print_batches(batches: Iterable[list[LogLine]], prefix: bool, as_json: bool,
                   flush: bool) -> None:
    out = _out()
    streams_seen: set[str] = set()
    for lines in batches:
        if not prefix and not as_json:
            # A follow may see a second stream appear: from then on, say which is which.
            streams_seen.update(line.stream for line in lines)
            prefix = len(streams_seen) > 1
        out.write(_format_lines(lines, prefix, as_json))
        if flush:
            out.flush()


def _format_lines(lines: Iterable[LogLine], prefix: bool, as_json: bool) -> str:
    if as_json:
        return table.printable("".join(_JSON_LINE.encode(_line_json(line)) + "\n"
                                       for line in lines), json_text=True)
    if prefix:
        text = "".join(f"[{line.stream}] {_text(line)}\n" for line in lines)
    else:
        text = "".join(_text(line) + "\n" for line in lines)
    # Control characters but tab written visibly, in one pass over the page: a stored
    # line holds no line break of its own (the store splits lines at them).
    return table.printable(text, "\n\t")


def _text(line: LogLine) -> str:
    return line.text[:-1] if line.text.endswith("\n") else line.text


def _line_json(line: LogLine) -> dict[str, Any]:
    return {"stream": line.stream, "line": line.line, "time": table.iso_time(line.time_unix_nano),
            "time_unix_nano": line.time_unix_nano, "text": _text(line),
            "level": line.level, "logger": line.logger}


def _raise_unfinished(client: QueryClient, run_id: str, status: str | None) -> None:
    run = client.get_run(run_id)
    if status is None or status == "NotStarted":
        status = run.status
    what = run.error.summary() if run.error is not None else "no error details were recorded"
    lines = run.error.message.strip().splitlines() if run.error is not None else []
    if len(lines) > 2 and lines[1].strip() == STDERR_HEADER:
        what += f"; last line of stderr: {lines[-1].strip()}"
    raise RunDidNotComplete(f"run {run_id!r} {status.lower()}: {what}")
