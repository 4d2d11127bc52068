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

# Modules whose register() adds subcommands, in the order `mltrail --help` lists them.
_COMMAND_MODULES = (
    "mltrail.collector.cli",
    "mltrail.collector.store_cli",
    "mltrail.agent.cli",
    "mltrail.cli.query",
    "mltrail.cli.sync",
    "mltrail.cli.run",
    "mltrail.cli.token",
    "mltrail.cli.health",
    "mltrail.cli.bundle",
    "mltrail.cli.local",
    "mltrail.cli.compare",
    "mltrail.cli.export",
    "mltrail.cli.tidy",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mltrail",
        description="Log and metrics pipeline for ML training runs.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
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

    parser = build_parser()
    args = parser.parse_args(_dash_values(sys.argv[1:] if argv is None else list(argv)))
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
