"""The token format, shared by the collector (which issues and checks them) and clients.

A token is ``mlt_<id>_<secret>``: ``mlt_`` so secret scanners can recognise
a leaked one, ``id`` 12 hex characters the collector looks the token up by
(not secret: it appears in ``mltrail token list``), and ``secret`` 43
URL-safe characters (256 random bits). Only the id and a keyed hash of the
secret are stored; the secret is compared in constant time.

A token is never put in a message: ``describe()`` names it by its id.
"""

from __future__ import annotations

import re
import secrets

PREFIX = "mlt_"
ID_HEX = 12
_SECRET_BYTES = 32
_PATTERN = re.compile(r"^mlt_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


class TokenFormatError(ValueError):
    """A string that is not an mltrail token (the message never repeats it)."""


def new_token() -> tuple[str, str, str]:
    """A fresh token: (token, id, secret)."""
    token_id = secrets.token_hex(ID_HEX // 2)
    secret = secrets.token_urlsafe(_SECRET_BYTES)
    while len(secret) != 43 or not _PATTERN.match(f"{PREFIX}{token_id}_{secret}"):
        secret = secrets.token_urlsafe(_SECRET_BYTES)  # never happens for 32 bytes; be sure
    return f"{PREFIX}{token_id}_{secret}", token_id, secret


def split_token(token: str) -> tuple[str, str]:
    """(id, secret) of a well-formed token; TokenFormatError otherwise."""
    match = _PATTERN.match(token.strip())
    if match is None:
        raise TokenFormatError(
            "the token is not an mltrail token (expected mlt_ followed by 12 hex digits, '_' "
            "and 43 characters); check the token file or MLTRAIL_TOKEN")
    return match.group(1), match.group(2)


def describe(token: str) -> str:
    """A safe name for a token in a message: its public id, never the secret."""
    try:
        return f"token {PREFIX}{split_token(token)[0]}_..."
    except TokenFormatError:
        return "a malformed token"
