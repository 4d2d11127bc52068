"""The ``mltrail`` command: one entry point, subcommands registered by each part.

Each part's CLI module has ``register(subparsers)``, which adds its commands
and sets ``func(args) -> int`` on them. Expected failures (an unreachable
collector, an unknown run, a bad flag) print one line and exit non-zero; a
traceback means a bug.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Modules whose register() adds subcommands, in the order `mltrail --help` lists them.
_COMMAND_MODULES = (
    "mltrail.collector.cli",
    "mltrail.agent.cli",
    "mltrail.cli.query",
    "mltrail.cli.sync",
    "mltrail.cli.run",
    "mltrail.cli.local",
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


def main(argv: Sequence[str] | None = None) -> int:
    from mltrail.common.errors import MltrailError

    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except MltrailError as exc:
        print(f"mltrail: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
