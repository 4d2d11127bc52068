"""Tokens and workspaces in the PostgreSQL store (see collector/auth.py for what they mean).

Every replica reads and writes the same tables, so a token made or revoked
through one collector holds on all of them. Only a token's id and the keyed
hash of its secret are stored. Each function runs on a pooled connection in
autocommit mode; writes take a transaction of their own.
"""

from __future__ import annotations

from typing import Any

from mltrail.collector.store.base import TokenRecord
from mltrail.common.errors import PermanentError

_COLUMNS = "token_id, name, workspace, role, digest, created, expires, revoked"


def _record(row: Any) -> TokenRecord:
    token_id, name, workspace, role, digest, created, expires, revoked = row
    return TokenRecord(token_id, name, workspace, role, bytes(digest), int(created),
                       int(expires), int(revoked))


def put_token(conn: Any, token: TokenRecord) -> None:
    """PermanentError if the name is taken (also by another replica at the same moment:
    the insert waits for its commit, then finds the name)."""
    with conn.transaction():
        conn.execute("INSERT INTO workspaces (name, created) VALUES (%s, %s) "
                     "ON CONFLICT (name) DO NOTHING", (token.workspace, token.created))
        row = conn.execute(
            f"INSERT INTO tokens ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (name) DO NOTHING RETURNING token_id",
            (token.token_id, token.name, token.workspace, token.role, token.digest,
             token.created, token.expires, token.revoked)).fetchone()
        if row is None:
            raise PermanentError(f"a token named {token.name!r} exists already; choose another "
                                 "--name, or revoke that one first")


def revoke_token(conn: Any, name: str, when: int) -> TokenRecord | None:
    with conn.transaction():
        conn.execute("UPDATE tokens SET revoked = %s WHERE name = %s AND revoked = 0",
                     (when, name))
        row = conn.execute(f"SELECT {_COLUMNS} FROM tokens WHERE name = %s",
                           (name,)).fetchone()
    return None if row is None else _record(row)


def find_token(conn: Any, token_id: str) -> TokenRecord | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM tokens WHERE token_id = %s",
                       (token_id,)).fetchone()
    return None if row is None else _record(row)


def list_tokens(conn: Any, workspace: str) -> list[TokenRecord]:
    sql = f"SELECT {_COLUMNS} FROM tokens"
    params: tuple[str, ...] = ()
    if workspace:
        sql += " WHERE workspace = %s"
        params = (workspace,)
    return [_record(row) for row in conn.execute(sql + " ORDER BY name COLLATE \"C\"", params)]
