"""The redaction rules: what is a secret, what is kept, what is counted."""

from __future__ import annotations

import pytest

from mltrail.common.redact import Redactor, secret_name

SECRETS = [
    ("Authorization: Bearer abcdefghijklmnop123", "abcdefghijklmnop123", "bearer_token"),
    ("url postgresql://bob:hunter2@db:5432/x", "hunter2", "url_password"),
    ("token mlt_0123456789ab_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_abcdefg",
     "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789", "prefixed_token"),
    ("gh ghp_Jk5sH2mN8bV4cX1zQ7wE3rT6yU9iO0pLaSdF", "Jk5sH2mN8bV4cX1zQ7wE3rT6yU9iO0pLaSdF",
     "prefixed_token"),
    ("aws AKIAIOSFODNN7EXAMPLE here", "AKIAIOSFODNN7EXAMPLE", "aws_access_key"),
    ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI",
     "assignment"),
    ("password=swordfish next", "swordfish", "assignment"),
    ('{"api_key": "zzz-secret"}', "zzz-secret", "assignment"),
    ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlc2lnbmF0dXJl", "c2lnbmF0dXJl",
     "jwt"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\n-----END RSA PRIVATE KEY-----",
     "MIIEowIBAAKCAQEA7", "private_key"),
]


@pytest.mark.parametrize(("text", "secret", "rule"), SECRETS)
def test_value_rules_replace_the_secret_and_count_it(text: str, secret: str, rule: str) -> None:
    redactor = Redactor()
    out = redactor.text(text, "f.txt")
    assert secret not in out
    assert f"[REDACTED:{rule}]" in out
    assert redactor.counts["f.txt"][rule] >= 1


@pytest.mark.parametrize("text", [
    "mltrail_agent_received_records_total 512",
    "epoch 3 loss=0.25 accuracy=0.91 step: 40",
    '"prefixed_token": 19',
    "https://example.com/path?x=1",
    "sqlite:////var/lib/mltrail/store.db",
])
def test_ordinary_text_is_kept(text: str) -> None:
    redactor = Redactor()
    assert redactor.text(text, "f") == text
    assert redactor.total() == 0


@pytest.mark.parametrize(("name", "secret"), [
    ("password", True), ("MLTRAIL_TOKEN", True), ("apiKey", True), ("api-key", True),
    ("client_secret", True), ("AWS_SECRET_ACCESS_KEY", True), ("db_password", True),
    ("Authorization", True), ("token_file", False), ("tls_key_path", False),
    ("author", False), ("keyboard", False), ("epochs", False), ("max_tokens_seen", True),
])
def test_secret_names(name: str, secret: bool) -> None:
    assert secret_name(name) is secret


def test_structures_are_redacted_by_key_and_by_value() -> None:
    redactor = Redactor()
    out = redactor.structure({
        "store": "postgresql://u:pw123456@h/db", "token": "plain", "token_file": "/etc/tok",
        "nested": [{"secret": "s"}, "Bearer abcdefghijkl1234"], "count": 3,
    }, "settings.json")
    assert out["store"] == "postgresql://u:[REDACTED:url_password]@h/db"
    assert out["token"] == "[REDACTED:secret_name]"
    assert out["token_file"] == "/etc/tok"
    assert out["nested"] == [{"secret": "[REDACTED:secret_name]"},
                             "Bearer [REDACTED:bearer_token]"]
    assert out["count"] == 3
    assert redactor.report() == {"settings.json": {"bearer_token": 1, "secret_name": 2,
                                                   "url_password": 1}}


def test_extra_patterns_and_a_bad_one() -> None:
    redactor = Redactor(["internal-[0-9]+"])
    assert redactor.text("host internal-42 up", "f") == "host [REDACTED:custom] up"
    with pytest.raises(ValueError, match="not a valid regular expression"):
        Redactor(["(unclosed"])


def test_an_open_key_block_is_found_for_the_next_piece() -> None:
    redactor = Redactor()
    text = "line\n-----BEGIN PRIVATE KEY-----\nMIIabc\n"
    assert redactor.open_key_block(text) == 5
    assert redactor.open_key_block(text + "-----END PRIVATE KEY-----\n") == -1
