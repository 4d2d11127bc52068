"""``mltrail token create|list|revoke``: manage the collector's tokens (an admin token).

``create`` prints the new token once, on stdout alone (so ``> ci.token``
captures just it); what it is goes to stderr. The admin's own token comes
from MLTRAIL_TOKEN or ``--token-file`` (the collector's first start wrote
one to its ``--admin-token-file``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

import grpc

from mltrail.cli import table
from mltrail.cli.connection import add_security_flags, security_from_args
from mltrail.common.credentials import authorized_channel, refusal_hint, tls_failure_hint
from mltrail.common.errors import PermanentError
from mltrail.proto import collector_pb2, collector_pb2_grpc

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_expiry(text: str) -> int:
    """Seconds from ``30d``, ``12h``, ``90m``, ``45s``, ``2w``; 0 for ``never``."""
    if text.strip().lower() in ("never", "0"):
        return 0
    match = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", text.lower())
    if match is None or int(match.group(1)) == 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: use a number and a unit (s, m, h, d, w), such as "
            "30d or 12h, or 'never'")
    return int(match.group(1)) * _UNITS[match.group(2)]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("token", help="create, list and revoke collector tokens",
                                   description="Manage the collector's tokens (needs an admin "
                                               "token).")
    sub = parser.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--collector", metavar="HOST:PORT",
                        help="collector (default: MLTRAIL_COLLECTOR, the embedded collector)")
    common.add_argument("--json", action="store_true", help="print JSON for scripts")
    add_security_flags(common)
    create = sub.add_parser("create", parents=[common], help="create a token; printed once")
    create.add_argument("--workspace", required=True, metavar="W",
                        help="the workspace it acts in (created if new)")
    create.add_argument("--role", required=True, choices=("writer", "reader", "admin"),
                        help="writer: ingest (agents); reader: queries; admin: tokens")
    create.add_argument("--name", default="", metavar="NAME", help="a unique name (for revoke)")
    create.add_argument("--expires", type=parse_expiry, default=0, metavar="DURATION",
                        help="such as 30d or 12h (default: never)")
    create.set_defaults(func=cmd_create)
    listing = sub.add_parser("list", parents=[common], help="list tokens (never their secret)")
    listing.add_argument("--workspace", default="", metavar="W", help="only this workspace")
    listing.set_defaults(func=cmd_list)
    revoke = sub.add_parser("revoke", parents=[common], help="revoke a token by name")
    revoke.add_argument("name", metavar="NAME")
    revoke.set_defaults(func=cmd_revoke)


def _call(args: argparse.Namespace, method: str, request: Any) -> Any:
    from mltrail.query.client import resolve_collector_address

    address = resolve_collector_address(args.collector)
    security = security_from_args(args)
    with authorized_channel(address, security) as channel:
        stub = collector_pb2_grpc.AdminStub(channel)
        try:
            return getattr(stub, method)(request, timeout=10.0)
        except grpc.RpcError as err:
            code, details = err.code(), err.details() or ""
            if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                raise PermanentError(f"the collector at {address} refused: {details}; "
                                     f"{refusal_hint(code)}") from None
            hint = tls_failure_hint(details) if security.uses_tls(address) else None
            raise PermanentError(f"token {args.token_command} at {address} failed: "
                                 f"{hint or f'{code.name}: {details}'}") from None


def _info(info: collector_pb2.TokenInfo) -> dict[str, Any]:
    return {"name": info.name, "workspace": info.workspace, "role": info.role,
            "id": f"mlt_{info.token_id}_...", "created": table.iso_time(info.created_unix_nano),
            "expires": table.iso_time(info.expires_unix_nano),
            "revoked": table.iso_time(info.revoked_unix_nano)}


def cmd_create(args: argparse.Namespace) -> int:
    response = _call(args, "CreateToken", collector_pb2.CreateTokenRequest(
        workspace=args.workspace, role=args.role, name=args.name,
        expires_in_seconds=args.expires))
    info = _info(response.info)
    if args.json:
        print(json.dumps({**info, "token": response.token}))
        return 0
    print(response.token)
    expiry = f"expires {info['expires']}" if info["expires"] else "never expires"
    print(f"mltrail: created {info['role']} token {info['name']!r} for workspace "
          f"{info['workspace']!r} ({expiry}); it is shown only now: keep it in a file with "
          "mode 0600 (token_file, --token-file) or a secret store", file=sys.stderr)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    response = _call(args, "ListTokens", collector_pb2.ListTokensRequest(
        workspace=args.workspace))
    rows = [_info(t) for t in response.tokens]
    if args.json:
        print(json.dumps(rows))
        return 0
    print(table.render_table(
        ["NAME", "WORKSPACE", "ROLE", "ID", "CREATED", "EXPIRES", "STATUS"],
        [[r["name"], r["workspace"], r["role"], r["id"], r["created"], r["expires"] or "never",
          f"revoked {r['revoked']}" if r["revoked"] else "valid"] for r in rows]))
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    info = _info(_call(args, "RevokeToken", collector_pb2.RevokeTokenRequest(name=args.name)))
    if args.json:
        print(json.dumps(info))
    else:
        print(f"revoked token {info['name']!r} of workspace {info['workspace']!r}; the "
              "collector refuses it within seconds")
    return 0
