"""The ``mltrail`` command: one entry point, subcommands registered by each part.

Each part's CLI module has ``register(subparsers)``, which adds its commands
and sets ``func(args) -> int`` on them. Expected failures (an unreachable
collector, an unknown run, a bad flag) print one line and exit non-zero; a
traceback means a bug.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

# Modules whose register() adds subcommands, with the commands each adds, in the order
# `mltrail --help` lists them. A command imports only its own module (each pulls in its
# part: gRPC, a store, the agent), so a process starts without the others' imports
# (the collector 0.25 s sooner, the agent and the query commands 0.4 s).
_COMMAND_MODULES = (
    ("mltrail.collector.cli", ("collector",)),
    ("mltrail.collector.store_cli", ("store",)),
    ("mltrail.agent.cli", ("agent",)),
    ("mltrail.cli.query", ("runs", "show", "metrics", "logs", "artifacts")),
    ("mltrail.cli.sync", ("sync",)),
    ("mltrail.cli.run", ("run",)),
    ("mltrail.cli.token", ("token",)),
    ("mltrail.cli.health", ("health",)),
    ("mltrail.cli.bundle", ("bundle",)),
    ("mltrail.cli.local", ("local",)),
    ("mltrail.cli.compare", ("compare",)),
    ("mltrail.cli.export", ("export",)),
    ("mltrail.cli.tidy", ("cancel", "delete", "rename", "tag")),
)


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser of every command, or only of the command ``argv`` starts with."""
    parser = argparse.ArgumentParser(
        prog="mltrail",
        description="Log and metrics pipeline for ML training runs.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    first = argv[0] if argv else ""
    owner = [name for name, commands in _COMMAND_MODULES if first in commands]
    for name in owner or [name for name, _ in _COMMAND_MODULES]:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue  # a part not built yet
        module.register(sub)
    return parser


def _version() -> str:
    from mltrail import __version__

    return f"mltrail {__version__}"


# Options whose value may start with "-" (`--sort -accuracy`), which argparse
# would otherwise take for an option of its own.
_DASH_VALUE_OPTIONS = frozenset({"--sort"})


def _dash_values(argv: list[str]) -> list[str]:
    out: list[str] = []
    for n, word in enumerate(argv):
        if word == "--":  # the rest is a command's own (`mltrail run -- CMD ...`)
            return out + argv[n:]
        if out and out[-1] in _DASH_VALUE_OPTIONS and word.startswith("-"):
            out[-1] = f"{out[-1]}={word}"
        else:
            out.append(word)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    # gRPC's own log lines (a failed TLS handshake at INFO) would make a one-line error
    # several lines; ours says what happened. Set before gRPC is first imported.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    from mltrail.common.errors import MltrailError

    words = _dash_values(sys.argv[1:] if argv is None else list(argv))
    parser = build_parser(words)
    args = parser.parse_args(words)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except MltrailError as exc:
        from mltrail.cli.table import printable

        print("mltrail: error: " + printable(str(exc), "\n"), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
