"""How a client proves who it is to the collector: token and TLS, for agent, CLI and SDK.

``ClientSecurity`` holds where the token comes from and the TLS options;
``TokenSource`` reads the token, re-reading its file whenever the file
changes (a rotated Kubernetes secret is picked up without a restart);
``collector_channel()`` opens a plain or TLS channel to the collector and
``call_metadata()`` is what each call carries (``authorization: Bearer``,
and the workspace the client expects, so a token of another workspace is
named as such).

Addresses: ``HOST:PORT`` is plain gRPC; ``https://HOST:PORT`` (or
``grpcs://``) is TLS, as is any address with ``tls = true`` or a CA set.
The token never appears in an argument list (``--token-file``, not
``--token``), a log line, an error message or a ``repr``.

Where the CLI and SDK find them, later ones winning: the workspace config
(``config.json``: ``collector``, ``token_file``, ``tls_ca``, ``tls_cert``,
``tls_key``, ``tls_server_name``), the environment (``MLTRAIL_TOKEN``,
``MLTRAIL_TOKEN_FILE``, ``MLTRAIL_TLS_CA``, ...), then flags.
"""

from __future__ import annotations

import collections
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import grpc

from mltrail.common.errors import PermanentError
from mltrail.common.tokens import TokenFormatError, split_token

WORKSPACE_HEADER = "mltrail-workspace"
AUTH_OK_HEADER = "mltrail-auth"  # the collector's initial metadata once credentials passed
_TLS_SCHEMES = ("https://", "grpcs://")
_PLAIN_SCHEMES = ("http://", "grpc://")
ENV_KEYS = {"token_file": "MLTRAIL_TOKEN_FILE", "tls_ca": "MLTRAIL_TLS_CA",
            "tls_cert": "MLTRAIL_TLS_CERT", "tls_key": "MLTRAIL_TLS_KEY",
            "tls_server_name": "MLTRAIL_TLS_SERVER_NAME", "workspace": "MLTRAIL_WORKSPACE"}


class CredentialsError(PermanentError):
    """A token or certificate file cannot be used (the message names the file, not the secret)."""

    code = grpc.StatusCode.UNAUTHENTICATED


def split_scheme(address: str) -> tuple[str, bool | None]:
    """``(HOST:PORT, tls)``: True for https:// and grpcs://, False for http:// and
    grpc://, None when the address has no scheme (the settings decide)."""
    for prefix in _TLS_SCHEMES:
        if address.startswith(prefix):
            return address[len(prefix):].rstrip("/"), True
    for prefix in _PLAIN_SCHEMES:
        if address.startswith(prefix):
            return address[len(prefix):].rstrip("/"), False
    return address, None


@dataclass(frozen=True)
class ClientSecurity:
    """Credentials of one client. ``token`` (from MLTRAIL_TOKEN) is never shown in a repr."""

    token: str = field(default="", repr=False)
    token_file: str = ""
    tls: bool = False
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_server_name: str = ""
    workspace: str = ""  # the workspace the client means; the collector checks the token's

    @property
    def tls_files(self) -> tuple[str, ...]:
        return tuple(p for p in (self.tls_ca, self.tls_cert, self.tls_key) if p)

    def uses_tls(self, address: str) -> bool:
        scheme_tls = split_scheme(address)[1]
        if scheme_tls is not None:
            return scheme_tls
        return self.tls or bool(self.tls_ca or self.tls_cert)

    def merged(self, **overrides: Any) -> ClientSecurity:
        """A copy with every override that is not None or empty."""
        return replace(self, **{k: v for k, v in overrides.items() if v not in (None, "")})

    @classmethod
    def from_config(cls, config: Mapping[str, Any], base: str | os.PathLike[str] = "."
                    ) -> ClientSecurity:
        """From a workspace config (config.json: ``token``, ``token_file``, ``tls``,
        ``tls_ca``, ``tls_cert``, ``tls_key``, ``tls_server_name``, ``workspace_name``);
        relative paths are relative to ``base``."""
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        if config.get("workspace_name") and not config.get("workspace"):
            values["workspace"] = str(config["workspace_name"])  # Azure ML v1's key
        for key in known:
            raw = config.get(key)
            if raw in (None, ""):
                continue
            if key == "tls":
                values[key] = bool(raw)
            elif key in ("token_file", "tls_ca", "tls_cert", "tls_key"):
                values[key] = str(Path(base) / os.path.expanduser(str(raw)))
            else:
                values[key] = str(raw)
        return cls(**values)

    @classmethod
    def from_environment(cls, base: ClientSecurity | None = None,
                         environ: Mapping[str, str] | None = None) -> ClientSecurity:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {key: env.get(var) for key, var in ENV_KEYS.items()}
        values["token"] = env.get("MLTRAIL_TOKEN", "").strip()
        if env.get("MLTRAIL_TLS", "").lower() in ("1", "true", "yes", "on"):
            values["tls"] = True
        return (base or cls()).merged(**values)


def file_stamps(*paths: str) -> tuple[tuple[int, int, int] | None, ...]:
    """What identifies each file's content now: (size, mtime, inode), None if unreadable."""
    out: list[tuple[int, int, int] | None] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            out.append(None)
            continue
        out.append((st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(out)


class TokenSource:
    """The current token: a fixed value, or a file re-read whenever it changes.

    ``get()`` stats the file on every call (cheap) and reads it only when its
    size, modification time or inode changed, so a rotation (Kubernetes swaps
    a symlinked directory) is seen on the next call.
    """

    def __init__(self, token: str = "", path: str = "") -> None:
        self._fixed = token.strip()
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._token = ""
        self.version = 0  # increases when the file's content changes

    def __repr__(self) -> str:
        return f"TokenSource(path={self.path!r})"

    @property
    def configured(self) -> bool:
        return bool(self._fixed or self.path)

    def get(self) -> str:
        """The token ('' when none is configured); CredentialsError if unusable."""
        token = self._read_file() if self.path else self._fixed
        if token:
            try:
                split_token(token)
            except TokenFormatError as exc:
                where = f"token file {self.path}" if self.path else "MLTRAIL_TOKEN"
                raise CredentialsError(f"{where}: {exc}") from None
        return token

    def stamp(self) -> tuple[int, int, int] | None:
        """What identifies the file's content now (None: it cannot be read)."""
        return file_stamps(self.path)[0]

    def _read_file(self) -> str:
        with self._lock:
            stamp = self.stamp()
            if stamp is not None and stamp == self._stamp:
                return self._token
            try:
                token = Path(self.path).read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                reason = getattr(exc, "strerror", None) or "not UTF-8 text"
                raise CredentialsError(
                    f"cannot read the token file {self.path} ({reason}); nothing is sent "
                    "until it can be read; check the path and its permissions") from None
            if token != self._token:
                self.version += 1
            self._stamp, self._token = stamp, token
            return token


def call_metadata(token: str, workspace: str = "") -> tuple[tuple[str, str], ...]:
    """What each call to the collector carries."""
    items: list[tuple[str, str]] = []
    if token:
        items.append(("authorization", f"Bearer {token}"))
    if workspace:
        items.append((WORKSPACE_HEADER, workspace))
    return tuple(items)


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CredentialsError(f"cannot read the TLS {what} {path} ({exc.strerror}); "
                               f"check the tls_{what.split()[0]} setting") from None


def channel_credentials(security: ClientSecurity) -> grpc.ChannelCredentials:
    """TLS credentials: the CA to trust (system roots if none) and a client certificate."""
    if bool(security.tls_cert) != bool(security.tls_key):
        raise CredentialsError("tls_cert and tls_key go together: set both for a client "
                               "certificate (mutual TLS), or neither")
    root = _read(security.tls_ca, "ca file") if security.tls_ca else None
    key = _read(security.tls_key, "key file") if security.tls_key else None
    cert = _read(security.tls_cert, "cert file") if security.tls_cert else None
    return grpc.ssl_channel_credentials(root_certificates=root, private_key=key,
                                        certificate_chain=cert)


def collector_channel(address: str, security: ClientSecurity,
                      options: Sequence[tuple[str, Any]] = (), *, aio: bool = False,
                      compression: grpc.Compression | None = None) -> Any:
    """A channel to the collector at ``address`` (scheme stripped), TLS when asked."""
    target = split_scheme(address)[0]
    opts = list(options)
    if not security.uses_tls(address):
        if aio:
            return grpc.aio.insecure_channel(target, options=opts, compression=compression)
        return grpc.insecure_channel(target, options=opts, compression=compression)
    if security.tls_server_name:
        opts.append(("grpc.ssl_target_name_override", security.tls_server_name))
    creds = channel_credentials(security)
    if aio:
        return grpc.aio.secure_channel(target, creds, options=opts, compression=compression)
    return grpc.secure_channel(target, creds, options=opts, compression=compression)


def tls_failure_hint(details: str) -> str | None:
    """A one-line reason for a TLS handshake failure in gRPC's details, or None."""
    lowered = details.lower()
    if "certificate verify failed" in lowered or "unable to get local issuer" in lowered \
            or "self signed certificate" in lowered or "self-signed" in lowered:
        return ("the collector's certificate is not trusted: set tls_ca (--tls-ca, "
                "MLTRAIL_TLS_CA) to the CA that signed it")
    if "hostname" in lowered or "peer name" in lowered or "subject alternative" in lowered \
            or "does not match" in lowered:
        return ("the collector's certificate does not name this address: connect by a name "
                "the certificate has, or set tls_server_name")
    if "ssl" in lowered or "handshake" in lowered or "tls" in lowered:
        return ("the TLS handshake failed: check that the collector serves TLS (https://) "
                "and, for mutual TLS, that tls_cert and tls_key are set")
    return None


class _CallDetails(
    collections.namedtuple("_CallDetails", ("method", "timeout", "metadata", "credentials",
                                            "wait_for_ready", "compression")),
    grpc.ClientCallDetails,
):
    pass


class BearerInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds the current token (read from its source per call) to every blocking call."""

    def __init__(self, tokens: TokenSource, workspace: str = "") -> None:
        self._tokens = tokens
        self._workspace = workspace

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        extra = call_metadata(self._tokens.get(), self._workspace)
        if not extra:
            return details
        metadata = [*(details.metadata or ()), *extra]
        return _CallDetails(details.method, details.timeout, metadata, details.credentials,
                            getattr(details, "wait_for_ready", None),
                            getattr(details, "compression", None))

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any,
                              request: Any) -> Any:
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation: Any, client_call_details: Any,
                               request: Any) -> Any:
        return continuation(self._details(client_call_details), request)


def authorized_channel(address: str, security: ClientSecurity,
                       options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
    """A blocking channel whose calls carry the token (CLI and SDK reads, admin)."""
    channel = collector_channel(address, security, options)
    tokens = TokenSource(security.token, security.token_file)
    if not tokens.configured and not security.workspace:
        return channel
    return grpc.intercept_channel(channel, BearerInterceptor(tokens, security.workspace))


def refusal_hint(code: grpc.StatusCode) -> str:
    """What to do about an UNAUTHENTICATED or PERMISSION_DENIED answer."""
    if code is grpc.StatusCode.UNAUTHENTICATED:
        return "give a valid token: MLTRAIL_TOKEN, --token-file, or token_file in config.json"
    return "use a token with the right role and workspace (ask an admin: mltrail token create)"
