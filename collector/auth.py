"""Who is calling: bearer tokens, their workspace and role, checked on every call.

``auth = "none"`` (the embedded default, loopback only): every caller is an
admin of the ``default`` workspace. ``auth = "token"``: every gRPC call and
every HTTP request but ``/healthz`` carries ``authorization: Bearer
mlt_<id>_<secret>`` (common/tokens.py). The collector looks the token up by
its id, compares HMAC-SHA256(key, secret) with the stored digest in constant
time, refuses a revoked or expired one, and grants by role:

    reader: read    writer: write    admin: read, write, manage tokens

A verified token is cached for ``CACHE_SECONDS``, then looked up again, so a
token revoked anywhere (another replica, the CLI) is refused within seconds;
the digest is compared on every call. The key lives in ``auth_key_file``
(created with mode 0600 at first start), never in the store, so a copy of
the store alone does not let anyone test guesses.

Messages name a token by its name or public id, never by its secret.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import NoReturn

import grpc

from mltrail.collector.store import DEFAULT_WORKSPACE, Store, TokenRecord
from mltrail.common.credentials import WORKSPACE_HEADER
from mltrail.common.errors import MltrailError, PermanentError
from mltrail.common.tokens import TokenFormatError, new_token, split_token

log = logging.getLogger(__name__)

READ, WRITE, ADMIN = "read", "write", "admin"
ROLES: dict[str, frozenset[str]] = {
    "reader": frozenset({READ}),
    "writer": frozenset({WRITE}),
    "admin": frozenset({READ, WRITE, ADMIN}),
}
_VERBS = {READ: "read runs", WRITE: "write runs", ADMIN: "manage tokens and delete runs"}
_NEEDS = {READ: "a reader", WRITE: "a writer", ADMIN: "an admin"}
AUTH_MODES = ("none", "token")
CACHE_SECONDS = 2.0
ADMIN_TOKEN_ENV = "MLTRAIL_ADMIN_TOKEN"


@dataclass(frozen=True)
class Principal:
    """The caller of one request."""

    workspace: str
    role: str
    name: str = ""  # the token's name ("" with auth = "none")


ANONYMOUS = Principal(DEFAULT_WORKSPACE, "admin")


class Refused(Exception):
    """The credentials do not allow the call; ``code`` is the gRPC status to answer."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def token_digest(key: bytes, secret: str) -> bytes:
    return hmac.new(key, secret.encode(), sha256).digest()


def load_key(path: Path) -> bytes:
    """The hashing key, created (32 random bytes, mode 0600) at first start."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise PermanentError(f"cannot read the auth key {path} ({exc.strerror}); nothing was "
                             "started; fix its permissions or set auth_key_file") from None
    key = secrets.token_bytes(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, key)
    return key


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600 from the first byte (tmp + rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class Authenticator:
    """Checks the credentials of a call; ``None`` store: ``auth = "none"``."""

    def __init__(self, store: Store | None, key: bytes = b"",
                 clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._key = key
        self._clock = clock
        self._cache: dict[str, tuple[TokenRecord, float]] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self._store is not None

    @property
    def store(self) -> Store:
        if self._store is None:
            raise PermanentError("auth is off: there are no tokens",
                                 grpc.StatusCode.FAILED_PRECONDITION)
        return self._store

    # ---- the check ------------------------------------------------------------

    def check(self, metadata: Mapping[str, str], action: str) -> Principal:
        """The caller if allowed to do ``action``; Refused otherwise. May read the store
        (a cache miss): call it from a store reader thread, or use ``check_cached``."""
        if self._store is None:
            return ANONYMOUS
        token_id, secret = self._parse(metadata.get("authorization", ""))
        record = self._cached(token_id)
        if record is None:
            record = self._store.find_token(token_id)
            if record is not None:
                with self._lock:
                    self._cache[token_id] = (record, time.monotonic())
        return self._grant(record, token_id, secret, action, metadata.get(WORKSPACE_HEADER, ""))

    def check_cached(self, metadata: Mapping[str, str], action: str) -> Principal | None:
        """The check without a store read: None when the token must be looked up."""
        if self._store is None:
            return ANONYMOUS
        token_id, secret = self._parse(metadata.get("authorization", ""))
        record = self._cached(token_id)
        if record is None:
            return None
        return self._grant(record, token_id, secret, action, metadata.get(WORKSPACE_HEADER, ""))

    def forget(self, token_id: str) -> None:
        with self._lock:
            self._cache.pop(token_id, None)

    def _cached(self, token_id: str) -> TokenRecord | None:
        with self._lock:
            entry = self._cache.get(token_id)
        if entry is None or time.monotonic() - entry[1] > CACHE_SECONDS:
            return None
        return entry[0]

    @staticmethod
    def _parse(header: str) -> tuple[str, str]:
        if not header:
            raise Refused(grpc.StatusCode.UNAUTHENTICATED,
                          "this collector needs a token and none was sent; set token_file "
                          "(agent), MLTRAIL_TOKEN or --token-file (CLI, SDK)")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Refused(grpc.StatusCode.UNAUTHENTICATED,
                          "the authorization header is not 'Bearer <token>'")
        try:
            return split_token(value)
        except TokenFormatError as exc:
            raise Refused(grpc.StatusCode.UNAUTHENTICATED, str(exc)) from None

    def _grant(self, record: TokenRecord | None, token_id: str, secret: str, action: str,
               wanted_workspace: str) -> Principal:
        digest = token_digest(self._key, secret)
        if record is None or not hmac.compare_digest(digest, record.digest):
            raise Refused(grpc.StatusCode.UNAUTHENTICATED,
                          f"the collector does not know token mlt_{token_id}_... (never issued "
                          "by this collector, or mistyped); ask an admin for a token "
                          "(mltrail token create)")
        now = int(self._clock() * 1e9)
        if record.revoked:
            raise Refused(grpc.StatusCode.UNAUTHENTICATED,
                          f"token {record.name!r} was revoked; ask an admin for a new one "
                          "(mltrail token create) and put it in the token file")
        if record.expires and record.expires <= now:
            raise Refused(grpc.StatusCode.UNAUTHENTICATED,
                          f"token {record.name!r} expired at {_when(record.expires)}; ask an "
                          "admin for a new one (mltrail token create --expires ...)")
        if wanted_workspace and wanted_workspace != record.workspace:
            raise Refused(grpc.StatusCode.PERMISSION_DENIED,
                          f"token {record.name!r} is for workspace {record.workspace!r}, not "
                          f"{wanted_workspace!r}; use a token of workspace "
                          f"{wanted_workspace!r}")
        if action not in ROLES.get(record.role, frozenset()):
            raise Refused(grpc.StatusCode.PERMISSION_DENIED,
                          f"token {record.name!r} is a {record.role} token of workspace "
                          f"{record.workspace!r}: it cannot {_VERBS[action]}; use "
                          f"{_NEEDS[action]} token")
        return Principal(record.workspace, record.role, record.name)

    # ---- tokens -----------------------------------------------------------------

    def issue(self, workspace: str, role: str, name: str, expires_in: float = 0.0,
              token: str = "") -> tuple[str, TokenRecord]:
        """Store a new token (or ``token`` as given); returns it and its record.
        Runs on the store writer thread."""
        assert self._store is not None
        if role not in ROLES:
            raise PermanentError(f"role {role!r} is not one of {', '.join(ROLES)}")
        check_workspace_name(workspace)
        if token:
            token_id, secret = split_token(token)
        else:
            token, token_id, secret = new_token()
        now = int(self._clock() * 1e9)
        record = TokenRecord(token_id, name or f"{role}-{token_id[:6]}", workspace, role,
                             token_digest(self._key, secret), now,
                             now + int(expires_in * 1e9) if expires_in > 0 else 0)
        self._store.put_token(record)
        return token, record

    def revoke(self, name: str) -> TokenRecord | None:
        assert self._store is not None
        record = self._store.revoke_token(name, int(self._clock() * 1e9))
        if record is not None:
            self.forget(record.token_id)
        return record

    def bootstrap(self, token_file: Path) -> None:
        """At start: make the first admin token if the store has no valid one: the
        token in $MLTRAIL_ADMIN_TOKEN, else a new one written to ``token_file`` (0600)."""
        assert self._store is not None
        now = int(self._clock() * 1e9)
        if any(t.role == "admin" and not t.revoked and (not t.expires or t.expires > now)
               for t in self._store.list_tokens()):
            return
        given = os.environ.get(ADMIN_TOKEN_ENV, "").strip()
        name = f"admin-{now // 10**9}"
        try:
            token, record = self.issue(DEFAULT_WORKSPACE, "admin", name, 0.0, given)
        except TokenFormatError as exc:
            raise PermanentError(f"{ADMIN_TOKEN_ENV}: {exc}; nothing was started") from None
        if given:
            log.info("first start: registered the admin token from %s as %r", ADMIN_TOKEN_ENV,
                     record.name)
            return
        token_file.parent.mkdir(parents=True, exist_ok=True)
        write_private(token_file, (token + "\n").encode())
        log.info("first start: wrote the admin token %r to %s (mode 0600); create other "
                 "tokens with `mltrail token create`", record.name, token_file)


def check_workspace_name(name: str) -> None:
    if not name or len(name) > 64 or not all(c.isalnum() or c in "-_." for c in name):
        raise PermanentError(f"workspace name {name!r} must be 1 to 64 letters, digits, "
                             "'-', '_' or '.'")


def _when(ns: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ns / 1e9))


# ---- at the boundaries ----------------------------------------------------------------


async def authorize(auth: Authenticator, context: grpc.aio.ServicerContext, action: str,
                    readers: Executor) -> Principal:
    """The caller of a gRPC call, or the call is aborted with the reason."""
    metadata = {k: v for k, v in (context.invocation_metadata() or ())
                if isinstance(v, str)}
    try:
        found = auth.check_cached(metadata, action)
        if found is None:
            loop = asyncio.get_running_loop()
            found = await loop.run_in_executor(readers, auth.check, metadata, action)
        return found
    except Refused as exc:
        await _abort(context, exc.code, str(exc))
    except MltrailError as exc:  # the store could not look the token up: try again later
        await _abort(context, grpc.StatusCode.UNAVAILABLE,
                     f"the collector cannot check credentials now ({exc}); retry")


async def _abort(context: grpc.aio.ServicerContext, code: grpc.StatusCode,
                 message: str) -> NoReturn:
    await context.abort(code, message)
    raise AssertionError("unreachable: context.abort raises")


_HTTP_CODES = {grpc.StatusCode.UNAUTHENTICATED: 401, grpc.StatusCode.PERMISSION_DENIED: 403}


def http_caller(auth: Authenticator, action: str = READ
                ) -> Callable[[Mapping[str, str]], Principal | tuple[int, str]]:
    """For the collector's HTTP pages: the caller a request's headers name, or (401 or
    403, the reason). Header names may be in any case."""
    def caller(headers: Mapping[str, str]) -> Principal | tuple[int, str]:
        bearer = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        try:
            return auth.check({"authorization": bearer}, action)
        except Refused as exc:
            return _HTTP_CODES.get(exc.code, 403), str(exc)

    return caller


def http_bearer_check(auth: Authenticator, action: str = READ,
                      on_pass: Callable[[Principal], None] | None = None
                      ) -> Callable[[Mapping[str, str]], tuple[int, str] | None]:
    """For the collector's HTTP server: None if the request's headers may pass, else
    (401 or 403, the reason). Prometheus sends the token with its ``authorization``
    scrape setting. ``on_pass`` hears the caller of a request that passed, in the
    request's thread (to scope what the answer shows)."""
    caller = http_caller(auth, action)

    def check(headers: Mapping[str, str]) -> tuple[int, str] | None:
        found = caller(headers)
        if isinstance(found, tuple):
            return found
        if on_pass is not None:
            on_pass(found)
        return None

    return check
