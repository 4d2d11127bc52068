"""Tokens, the collector's checks and the client's credential sources (no processes)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from mltrail.collector import auth
from mltrail.collector.artifacts import ArtifactStore
from mltrail.collector.auth import READ, WRITE, Authenticator, Refused, http_bearer_check
from mltrail.collector.store import Store, open_store
from mltrail.common.credentials import (
    WORKSPACE_HEADER,
    ClientSecurity,
    CredentialsError,
    TokenSource,
    split_scheme,
    tls_failure_hint,
)
from mltrail.common.tokens import TokenFormatError, describe, new_token, split_token


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'store.db'}", ArtifactStore(tmp_path / "art"))
    yield s
    s.close()


def bearer(token: str, workspace: str = "") -> dict[str, str]:
    headers = {"authorization": f"Bearer {token}"}
    if workspace:
        headers[WORKSPACE_HEADER] = workspace
    return headers


def test_tokens_have_a_scannable_prefix_and_never_repeat() -> None:
    tokens = {new_token()[0] for _ in range(200)}
    assert len(tokens) == 200
    for token in tokens:
        token_id, secret = split_token(token)
        assert token.startswith("mlt_") and len(token_id) == 12 and len(secret) == 43
        assert secret not in describe(token)
    with pytest.raises(TokenFormatError) as caught:
        split_token("ghp_notours_" + "x" * 43)
    assert "ghp_" not in str(caught.value)


def test_roles_workspaces_revocation_and_expiry(store: Store) -> None:
    clock = Clock()
    authn = Authenticator(store, b"k" * 32, clock=clock)
    writer, _ = authn.issue("a", "writer", "w")
    reader, _ = authn.issue("a", "reader", "r", expires_in=3600)
    admin, _ = authn.issue("default", "admin", "root")
    assert authn.check(bearer(writer), WRITE).workspace == "a"
    assert authn.check(bearer(reader), READ).workspace == "a"
    assert authn.check(bearer(admin), READ).role == "admin"
    with pytest.raises(Refused, match="writer token of workspace 'a': it cannot read") as no:
        authn.check(bearer(writer), READ)
    assert no.value.code is grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(Refused, match="cannot write runs"):
        authn.check(bearer(reader), WRITE)
    with pytest.raises(Refused, match="is for workspace 'a', not 'b'"):
        authn.check(bearer(reader, "b"), READ)
    clock.now += 3601
    with pytest.raises(Refused, match="token 'r' expired") as expired:
        authn.check(bearer(reader), READ)
    assert expired.value.code is grpc.StatusCode.UNAUTHENTICATED
    authn.revoke("w")
    with pytest.raises(Refused, match="token 'w' was revoked"):
        authn.check(bearer(writer), WRITE)


def test_a_token_revoked_elsewhere_is_refused_once_the_cache_ages(store: Store,
                                                                    monkeypatch: pytest.MonkeyPatch
                                                                    ) -> None:
    one = Authenticator(store, b"k" * 32)
    other = Authenticator(store, b"k" * 32)  # another replica sharing the store
    token, _ = one.issue("a", "writer", "w")
    assert one.check(bearer(token), WRITE).name == "w"
    other.revoke("w")
    assert one.check_cached(bearer(token), WRITE) is not None  # still within the cache
    monkeypatch.setattr(auth, "CACHE_SECONDS", 0.0)
    assert one.check_cached(bearer(token), WRITE) is None  # must be looked up again
    with pytest.raises(Refused, match="was revoked"):
        one.check(bearer(token), WRITE)


def test_a_forged_secret_and_another_key_are_refused(store: Store) -> None:
    authn = Authenticator(store, b"k" * 32)
    token, _ = authn.issue("a", "writer", "w")
    token_id, secret = split_token(token)
    forged = f"mlt_{token_id}_{'A' * 43}"
    with pytest.raises(Refused, match="does not know token") as caught:
        authn.check(bearer(forged), WRITE)
    assert secret not in str(caught.value) and "A" * 43 not in str(caught.value)
    with pytest.raises(Refused, match="does not know"):
        Authenticator(store, b"other key" * 4).check(bearer(token), WRITE)
    with pytest.raises(Refused, match="none was sent"):
        authn.check({}, WRITE)
    with pytest.raises(Refused, match="not 'Bearer <token>'"):
        authn.check({"authorization": f"Basic {token}"}, WRITE)


def test_tokens_are_stored_as_keyed_hashes_only(store: Store, tmp_path: Path) -> None:
    authn = Authenticator(store, b"k" * 32)
    token, record = authn.issue("a", "writer", "w")
    secret = split_token(token)[1]
    assert secret.encode() not in (tmp_path / "store.db").read_bytes()
    assert record.digest == auth.token_digest(b"k" * 32, secret)


def test_the_first_start_writes_an_admin_token_once_with_mode_0600(
        store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(auth.ADMIN_TOKEN_ENV, raising=False)
    authn = Authenticator(store, auth.load_key(tmp_path / "auth.key"))
    assert os.stat(tmp_path / "auth.key").st_mode & 0o777 == 0o600
    target = tmp_path / "admin.token"
    authn.bootstrap(target)
    assert target.stat().st_mode & 0o777 == 0o600
    token = target.read_text().strip()
    assert authn.check(bearer(token), auth.ADMIN).role == "admin"
    authn.bootstrap(target)  # an admin exists: nothing new
    assert target.read_text().strip() == token and len(store.list_tokens()) == 1


def test_the_admin_token_can_come_from_the_environment(store: Store, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    given = new_token()[0]
    monkeypatch.setenv(auth.ADMIN_TOKEN_ENV, given)
    authn = Authenticator(store, b"k" * 32)
    authn.bootstrap(tmp_path / "admin.token")
    assert not (tmp_path / "admin.token").exists()
    assert authn.check(bearer(given), auth.ADMIN).workspace == "default"


def test_the_http_check_answers_401_and_403(store: Store) -> None:
    authn = Authenticator(store, b"k" * 32)
    reader, _ = authn.issue("a", "reader", "r")
    writer, _ = authn.issue("a", "writer", "w")
    check = http_bearer_check(authn)
    assert check(bearer(reader)) is None
    assert check({})[0] == 401  # type: ignore[index]
    assert check(bearer(writer))[0] == 403  # type: ignore[index]


def test_a_token_file_is_re_read_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "token"
    first, second = new_token()[0], new_token()[0]
    path.write_text(first + "\n")
    source = TokenSource(path=str(path))
    assert source.get() == first and repr(source).find(first) == -1
    tmp = tmp_path / "token.new"
    tmp.write_text(second)
    os.replace(tmp, path)
    assert source.get() == second
    path.write_text("not a token")
    with pytest.raises(CredentialsError, match="not an mltrail token") as bad:
        source.get()
    assert "not a token" not in str(bad.value)
    path.unlink()
    with pytest.raises(CredentialsError, match="cannot read the token file"):
        source.get()


def test_addresses_say_tls_by_scheme_and_config_paths_are_relative(tmp_path: Path) -> None:
    assert split_scheme("https://h:1") == ("h:1", True)
    assert split_scheme("grpc://h:1") == ("h:1", False)
    assert split_scheme("h:1") == ("h:1", None)
    security = ClientSecurity.from_config({"token_file": "t", "tls_ca": "ca.pem",
                                           "workspace_name": "vision"}, tmp_path)
    assert security.token_file == str(tmp_path / "t") and security.workspace == "vision"
    assert security.uses_tls("h:1") and not security.uses_tls("http://h:1")
    hidden = ClientSecurity.from_environment(environ={"MLTRAIL_TOKEN": "mlt_secret"})
    assert hidden.token == "mlt_secret" and "mlt_secret" not in repr(hidden)


def test_tls_failures_are_named() -> None:
    assert "not trusted" in (tls_failure_hint("certificate verify failed") or "")
    assert "does not name" in (tls_failure_hint("Peer name x is not in peer certificate")
                               or "")
    assert tls_failure_hint("connection refused") is None


def test_a_scrape_sees_the_run_gauges_of_its_workspace_only() -> None:
    from prometheus_client import generate_latest

    from mltrail.collector.metrics import CollectorMetrics

    metrics = CollectorMetrics()
    metrics.latest.update({("ra", "loss"): ("e", 1.0), ("rb", "loss"): ("e", 2.0)},
                          {"ra": "a", "rb": "b"})
    metrics.latest.scope_to("a")
    scoped = generate_latest(metrics.registry).decode()
    assert 'run="ra"' in scoped and 'run="rb"' not in scoped
    metrics.latest.scope_to(None)
    everything = generate_latest(metrics.registry).decode()
    assert 'run="ra"' in everything and 'run="rb"' in everything
