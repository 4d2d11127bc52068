"""The collector's TLS: certificate and key, an optional client CA (mutual TLS), reloaded
when the files change.

gRPC asks ``ReloadingCertificates.fetch`` at every new handshake; it stats
the files and, when one changed, loads the pair again and checks it with
Python's ssl module before handing it over, so a half-written renewal keeps
the old certificate in use (said once in the log) instead of breaking
connections. Connections already open keep theirs. gRPC negotiates TLS 1.2
or newer only. With ``tls_client_ca`` a client must present a certificate
signed by that CA, or the handshake fails before any call.

``ssl_context()`` serves the HTTP port (/metrics, the UI) with the same
certificate, rebuilt when the files change; it asks for no client
certificate there (bearer tokens guard it, and orchestrators' HTTPS probes of
/healthz present none).
"""

from __future__ import annotations

import logging
import ssl
import threading

import grpc

from mltrail.common.credentials import file_stamps
from mltrail.common.errors import PermanentError

log = logging.getLogger(__name__)


class ReloadingCertificates:
    def __init__(self, cert: str, key: str, client_ca: str = "") -> None:
        if not cert or not key:
            raise PermanentError("tls_cert and tls_key go together: set both to serve TLS")
        self.cert, self.key, self.client_ca = cert, key, client_ca
        self._lock = threading.Lock()
        self._stamp = self._stamps()
        self._initial = self._load()
        self.reloads = 0
        self._failed_stamp: tuple[object, ...] | None = None
        self._http: tuple[tuple[object, ...], ssl.SSLContext] | None = None

    def _files(self) -> list[str]:
        return [p for p in (self.cert, self.key, self.client_ca) if p]

    def _stamps(self) -> tuple[object, ...]:
        return file_stamps(*self._files())

    def _read(self, path: str, what: str) -> bytes:
        try:
            with open(path, "rb") as fh:
                return fh.read()
        except OSError as exc:
            raise PermanentError(f"cannot read the TLS {what} {path} ({exc.strerror}); set "
                                 f"tls_{what.replace(' ', '_')} to a readable file") from None

    def _load(self) -> grpc.ServerCertificateConfiguration:
        cert, key = self._read(self.cert, "cert"), self._read(self.key, "key")
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(self.cert,
                                                                                self.key)
        except (ssl.SSLError, ValueError) as exc:
            raise PermanentError(f"the TLS certificate {self.cert} and key {self.key} cannot "
                                 f"be used together ({exc}); check that the key is the "
                                 "certificate's, both in PEM") from None
        roots = self._read(self.client_ca, "client ca") if self.client_ca else None
        return grpc.ssl_server_certificate_configuration([(key, cert)], roots)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """The new configuration if a file changed since the last load, else None."""
        with self._lock:
            stamp = self._stamps()
            if stamp == self._stamp:
                return None
            try:
                config = self._load()
            except PermanentError as exc:
                if stamp != self._failed_stamp:
                    log.warning("TLS files changed but cannot be loaded (%s); the previous "
                                "certificate stays in use until they can", exc)
                    self._failed_stamp = stamp
                return None
            self._stamp = stamp
            self.reloads += 1
            log.info("TLS certificate reloaded from %s", self.cert)
            return config

    def ssl_context(self) -> ssl.SSLContext:
        """For the HTTP port: TLS 1.2 or newer, the current certificate."""
        stamp = self._stamps()
        cached = self._http
        if cached is not None and cached[0] == stamp:
            return cached[1]
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError):
            if cached is not None:
                return cached[1]  # a renewal half-written: keep serving the previous one
            raise
        self._http = (stamp, context)
        return context

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._initial, self.fetch,  # type: ignore[arg-type]  # None: keep the current one
            require_client_authentication=bool(self.client_ca))
