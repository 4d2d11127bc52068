"""``mltrail bundle RUN``, ``mltrail bundle inspect FILE.zip``, and the ``bundle``
subcommand of ``mltrail agent`` and ``mltrail collector`` (their own bundles)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from mltrail.cli.connection import add_security_flags, security_from_args
from mltrail.cli.table import printable
from mltrail.common.bundle_writer import read_bundle
from mltrail.common.errors import PermanentError
from mltrail.common.service_bundle import MAX_WINDOW_SECONDS

DEFAULT_HTTP = {"agent": "127.0.0.1:7433", "collector": "127.0.0.1:7432"}


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "bundle", help="write a run's support bundle (a zip), or inspect one",
        description="`mltrail bundle RUN` writes one zip that lets someone else debug the "
                    "run; `mltrail bundle inspect FILE.zip` prints its summary.")
    p.add_argument("run", metavar="RUN", help="run id (or `inspect`)")
    p.add_argument("file", nargs="?", metavar="FILE.zip", help="with `inspect`: the bundle")
    p.add_argument("-o", "--output", help="zip to write (default RUN-bundle.zip)")
    p.add_argument("--with-artifacts", action="store_true", help="include the artifacts too")
    p.add_argument("--max-bytes", type=_size, default=0,
                   help="size cap of the zip (default 32 MiB); suffixes K, M, G")
    p.add_argument("--redact", action="append", default=[], metavar="PATTERN",
                   help="also redact this regular expression (repeatable)")
    p.add_argument("--collector", metavar="HOST:PORT", help="collector to ask")
    add_security_flags(p)
    p.add_argument("--json", action="store_true", help="inspect: print the manifest as JSON")
    p.set_defaults(func=_bundle)


def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    raw = text.strip().lower().removesuffix("ib").removesuffix("b")
    factor = units.get(raw[-1:], 1)
    try:
        value = int(float(raw[:-1] if raw[-1:] in units else raw) * factor)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (say 20000000 or 20M)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def _bundle(args: argparse.Namespace) -> int:
    if args.run == "inspect" and args.file:
        return _inspect(args.file, args.json)
    if args.file:
        raise PermanentError(f"unexpected {args.file!r}: write the bundle with -o FILE.zip, "
                             "or read one with `mltrail bundle inspect FILE.zip`")
    from mltrail.bundle.fetch import requester
    from mltrail.query.client import QueryClient

    target = Path(args.output or f"{args.run}-bundle.zip")
    with QueryClient(args.collector, security=security_from_args(args)) as client:
        client.download_run_bundle(args.run, target, with_artifacts=args.with_artifacts,
                                   max_bytes=args.max_bytes, redact=args.redact,
                                   requested_by=requester("mltrail bundle"))
    print(f"wrote {target} ({target.stat().st_size:,} bytes); "
          f"read it with `mltrail bundle inspect {target}`")
    return 0


def _inspect(path: str, as_json: bool) -> int:
    from mltrail.bundle.inspect import summary_lines

    try:
        if as_json:
            with open(path, "rb") as fh:
                print(json.dumps(read_bundle(fh.read())[1], indent=2))
            return 0
        print(printable("\n".join(summary_lines(path)), "\n"))
    except (ValueError, OSError) as exc:
        raise PermanentError(f"{path}: {exc}") from None
    return 0


# ---- mltrail agent bundle / mltrail collector bundle ----------------------------------


def add_service_bundle(parser: argparse.ArgumentParser, kind: str) -> None:
    """``mltrail agent bundle`` (or collector): fetch the running service's bundle."""
    sub = parser.add_subparsers(dest=f"{kind}_command", metavar="COMMAND")
    p = sub.add_parser("bundle", help=f"write the running {kind}'s support bundle (a zip)",
                       description=f"Ask a running {kind} for its support bundle over HTTP "
                                   "(/-/support): settings (redacted), /metrics at the start "
                                   "and end of a capture window, state, last log lines.")
    p.add_argument("--http", dest="bundle_http", metavar="HOST:PORT",
                   help=f"the {kind}'s HTTP address (default: the local one, else "
                        f"{DEFAULT_HTTP[kind]})")
    p.add_argument("-o", "--output", help=f"zip to write (default {kind}-bundle.zip)")
    p.add_argument("--seconds", type=float, default=2.0,
                   help="capture window in seconds, at most 60 (default 2)")
    p.set_defaults(func=lambda args: _service_bundle(args, kind))


def _service_bundle(args: argparse.Namespace, kind: str) -> int:
    from mltrail.bundle.run_bundle import fetch_support

    if not 0 <= args.seconds <= MAX_WINDOW_SECONDS:
        raise PermanentError(f"--seconds must be within 0 and {MAX_WINDOW_SECONDS:g}: "
                             f"{args.seconds:g}")
    address = args.bundle_http or _local_http(kind)
    target = Path(args.output or f"{kind}-bundle.zip")
    try:
        data = fetch_support(address, args.seconds, timeout=30.0)
    except (OSError, ValueError) as exc:
        raise PermanentError(f"no {kind} bundle from {address} ({exc}); nothing was written; "
                             f"is the {kind} running? pass its HTTP address with --http"
                             ) from None
    tmp = target.with_name(f".{target.name}.part")
    tmp.write_bytes(data)
    os.replace(tmp, target)
    print(f"wrote {target} ({len(data):,} bytes); read it with `mltrail bundle inspect {target}`")
    return 0


def _local_http(kind: str) -> str:
    """The local service's HTTP address: the agent's from its socket, else the embedded
    service's ready file, else the default port."""
    if kind == "agent":
        address = _agent_http_from_socket()
        if address:
            return address
    from mltrail.common.settings import mltrail_home

    try:
        info = json.loads((mltrail_home() / "embedded" / f"{kind}.json").read_text())
        if isinstance(info, dict) and info.get("http"):
            return str(info["http"])
    except (OSError, ValueError):
        pass
    return DEFAULT_HTTP[kind]


def _agent_http_from_socket() -> str:
    from mltrail.common.settings import mltrail_home

    socket_path = os.environ.get("MLTRAIL_AGENT") or str(mltrail_home() / "embedded" /
                                                          "agent.sock")
    if not os.path.exists(socket_path):
        return ""
    import grpc

    from mltrail.proto import agent_pb2, agent_pb2_grpc

    with grpc.insecure_channel(f"unix:{socket_path}") as channel:
        try:
            return str(agent_pb2_grpc.AgentStub(channel).Info(
                agent_pb2.AgentInfoRequest(), timeout=3.0).http)
        except grpc.RpcError:
            return ""
