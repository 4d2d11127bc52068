"""Tokens and workspaces in the SQLite store (see collector/auth.py for what they mean).

Writes go through the writer connection in their own transaction; lookups
use a reader connection. Only a token's id and the keyed hash of its secret
are stored.
"""

from __future__ import annotations

import sqlite3

from mltrail.collector.store import sqlite_schema as schema
from mltrail.collector.store.base import TokenRecord
from mltrail.common.errors import PermanentError

_COLUMNS = "token_id, name, workspace, role, digest, created, expires, revoked"


def put_token(conn: sqlite3.Connection, token: TokenRecord, where: str) -> None:
    with schema.transaction(conn, f"store {where}"):
        taken = conn.execute("SELECT 1 FROM tokens WHERE name = ?", (token.name,)).fetchone()
        if taken:
            raise PermanentError(f"a token named {token.name!r} exists already; choose another "
                                 "--name, or revoke that one first")
        conn.execute("INSERT OR IGNORE INTO workspaces VALUES (?, ?)",
                     (token.workspace, token.created))
        conn.execute(f"INSERT INTO tokens ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     (token.token_id, token.name, token.workspace, token.role, token.digest,
                      token.created, token.expires, token.revoked))


def revoke_token(conn: sqlite3.Connection, name: str, when: int, where: str
                 ) -> TokenRecord | None:
    with schema.transaction(conn, f"store {where}"):
        conn.execute("UPDATE tokens SET revoked = ? WHERE name = ? AND revoked = 0",
                     (when, name))
        row = conn.execute(f"SELECT {_COLUMNS} FROM tokens WHERE name = ?", (name,)).fetchone()
    return None if row is None else TokenRecord(*row)


def find_token(conn: sqlite3.Connection, token_id: str) -> TokenRecord | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM tokens WHERE token_id = ?",
                       (token_id,)).fetchone()
    return None if row is None else TokenRecord(*row)


def list_tokens(conn: sqlite3.Connection, workspace: str) -> list[TokenRecord]:
    sql = f"SELECT {_COLUMNS} FROM tokens"
    params: tuple[str, ...] = ()
    if workspace:
        sql += " WHERE workspace = ?"
        params = (workspace,)
    return [TokenRecord(*row) for row in conn.execute(sql + " ORDER BY name", params)]
