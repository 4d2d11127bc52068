"""The flags every command that talks to the collector takes: token file and TLS.

The token itself is never a flag (argument lists are visible to every user
of the machine): ``--token-file`` or ``MLTRAIL_TOKEN``.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from mltrail.common.credentials import ClientSecurity


def add_security_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--token-file", metavar="FILE",
                        help="file holding the token (default: MLTRAIL_TOKEN, "
                             "MLTRAIL_TOKEN_FILE)")
    parser.add_argument("--tls", action="store_true", default=None,
                        help="TLS to the collector (also: --collector https://HOST:PORT)")
    parser.add_argument("--tls-ca", metavar="FILE",
                        help="CA that signed the collector's certificate (MLTRAIL_TLS_CA)")
    parser.add_argument("--tls-cert", metavar="FILE", help="client certificate (mutual TLS)")
    parser.add_argument("--tls-key", metavar="FILE", help="the client certificate's key")
    parser.add_argument("--tls-server-name", metavar="NAME",
                        help="name expected in the collector's certificate")


def security_from_args(args: argparse.Namespace) -> ClientSecurity:
    """Flags over the environment (MLTRAIL_TOKEN, MLTRAIL_TOKEN_FILE, MLTRAIL_TLS_*)."""
    security = ClientSecurity.from_environment()
    if getattr(args, "token_file", None):
        security = replace(security, token="")  # an explicit file wins over MLTRAIL_TOKEN
    return security.merged(
        token_file=getattr(args, "token_file", None), tls=getattr(args, "tls", None),
        tls_ca=getattr(args, "tls_ca", None), tls_cert=getattr(args, "tls_cert", None),
        tls_key=getattr(args, "tls_key", None),
        tls_server_name=getattr(args, "tls_server_name", None))
