"""A small HTTP endpoint for /metrics (Prometheus text format), /healthz and /readyz.

It runs in a daemon thread (the standard library's ThreadingHTTPServer), so a
busy event loop never delays a scrape and a scrape never blocks ingest.
Extra routes (the collector's pages) are added as handler functions.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

# A route answers (status, content type, body) for a path and its query string.
Route = Callable[[str, str], tuple[int, str, bytes]]


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
        ready: Callable[[], tuple[bool, str]] | None = None,
    ) -> None:
        self._registry = registry
        self._health = health
        self._ready = ready or health
        self._routes = dict(routes or {})
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                status, ctype, body = endpoint.answer(self.path)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return  # scrapes every few seconds would flood the log

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    def answer(self, raw_path: str) -> tuple[int, str, bytes]:
        path, _, query = raw_path.partition("?")
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
            target=self._server.serve_forever, name="mltrail-http", daemon=True
        )
        self._thread.start()

    def shutdown(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()
