"""A small HTTP endpoint for /metrics (Prometheus text format), /healthz and /readyz.

It runs in a daemon thread (the standard library's ThreadingHTTPServer), so a
busy event loop never delays a scrape and a scrape never blocks ingest.
Extra routes are added as route functions; a page handler (the collector's
web UI and JSON API) answers every other path itself, its own checks included.
``authorize`` (the collector's bearer check, collector/auth.py
``http_bearer_check``) guards every path but ``/healthz`` and ``/readyz``, open
for orchestrators' probes. ``tls`` (the collector's certificates, reloaded
on change) makes it HTTPS; the handshake runs in the request's thread, so a
slow or failed one never holds up other requests.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

# How often the serving loop looks whether shutdown() was asked: shutdown waits up to
# this long (the library's 0.5 s was paid by every stop of an agent or collector).
SHUTDOWN_POLL_SECONDS = 0.05

# A route answers (status, content type, body) for a path and its query string.
Route = Callable[[str, str], tuple[int, str, bytes]]
# A request check on its headers (lower-case names): None lets it pass, else (status, reason).
Authorize = Callable[[Mapping[str, str]], tuple[int, str] | None]
# A page handler owns the whole answer (headers, streaming) for the paths it gets.
PageHandler = Callable[[BaseHTTPRequestHandler], None]


class _Server(ThreadingHTTPServer):
    tls: Callable[[], ssl.SSLContext] | None = None

    def get_request(self) -> tuple[Any, Any]:
        sock, address = super().get_request()
        if self.tls is not None:
            sock = self.tls().wrap_socket(sock, server_side=True,
                                          do_handshake_on_connect=False)
        return sock, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        return  # a failed handshake or a client gone mid-answer: nothing to report


class HttpEndpoint:
    """Serves /metrics from ``registry``, /healthz (liveness) from ``health()`` and
    /readyz (readiness) from ``ready()`` (``health()`` when not given).

    Each returns (ok, message); not ok answers 503 with the message.
    """

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        health: Callable[[], tuple[bool, str]],
        routes: dict[str, Route] | None = None,
        authorize: Authorize | None = None,
        tls: Callable[[], ssl.SSLContext] | None = None,
        pages: PageHandler | None = None,
        ready: Callable[[], tuple[bool, str]] | None = None,
    ) -> None:
        self._registry = registry
        self._health = health
        self._ready = ready or health
        self._routes = dict(routes or {})
        self._authorize = authorize
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                if pages is not None and not endpoint.serves(self.path.partition("?")[0]):
                    pages(self)
                    return
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, ctype, body = endpoint.answer(self.path, headers)
                self.send_response(status)
                if status == 401:
                    self.send_header("WWW-Authenticate", 'Bearer realm="mltrail"')
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return  # scrapes every few seconds would flood the log

        self._server = _Server((host, port), Handler)
        self._server.tls = tls
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    def serves(self, path: str) -> bool:
        """Whether ``path`` is answered here rather than by the page handler."""
        return path in ("/metrics", "/healthz", "/readyz") or path in self._routes

    def answer(self, raw_path: str, headers: Mapping[str, str] | None = None
               ) -> tuple[int, str, bytes]:
        path, _, query = raw_path.partition("?")
        if path not in ("/healthz", "/readyz") and self._authorize is not None:
            refused = self._authorize(headers or {})
            if refused is not None:
                return refused[0], "text/plain; charset=utf-8", (refused[1] + "\n").encode()
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self._registry)
        if path in ("/healthz", "/readyz"):
            ok, message = (self._health if path == "/healthz" else self._ready)()
            return (200 if ok else 503), "text/plain; charset=utf-8", (message + "\n").encode()
        route = self._routes.get(path)
        if route is not None:
            return route(path, query)
        return 404, "text/plain; charset=utf-8", b"not found\n"

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": SHUTDOWN_POLL_SECONDS},
            name="mltrail-http", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()
