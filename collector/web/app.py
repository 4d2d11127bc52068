"""The collector's web UI and its JSON API, on the collector's HTTP port.

``/`` is the single-page UI (files under ``static/``, part of the package:
no build step, no CDN); ``/api/v1/...`` is the JSON API it runs on, which
mirrors the Query service and is documented in the README for scripts.

Threads: each request runs on one of the HTTP server's threads; every store
call is handed to the collector's reader pool (``Api.call``), the threads the
store gives read connections to. A live log follow (server-sent events) is
fed by the same notifier wake-ups as TailLogs and ends when the run ends,
when the client goes away, or when the collector shuts down.

Every answer carries a Content-Security-Policy of 'self' only, so the page
can reach nothing but this collector.
"""

from __future__ import annotations

import json
import logging
import math
import mimetypes
import re
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from mltrail.collector.store import DEFAULT_WORKSPACE
from mltrail.collector.web.api import Api, ApiError

log = logging.getLogger(__name__)

# The caller a request's headers name (its .workspace), or (status, message).
Caller = Callable[[Any], Any]

SECURITY_HEADERS = (
    ("Content-Security-Policy", "default-src 'self'; img-src 'self' blob: data:; "
                                "style-src 'self' 'unsafe-inline'; connect-src 'self'; "
                                "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
)
STATIC = resources.files("mltrail.collector.web") / "static"

Query = dict[str, list[str]]
Route = Callable[[BaseHTTPRequestHandler, Query, re.Match[str], str], None]


class WebApp:
    """Answers every HTTP path the endpoint does not (/metrics, /healthz stay there)."""

    def __init__(self, api: Api, caller: Caller | None = None) -> None:
        self.api = api
        self._caller = caller  # None: no auth, everything in the default workspace
        self._routes: list[tuple[re.Pattern[str], Route]] = [
            (re.compile(p), route) for p, route in (
                (r"/api/v1/experiments", self._json(lambda q, m, w: api.experiments(w))),
                (r"/api/v1/runs", self._json(lambda q, m, w: api.runs(q, w))),
                (r"/api/v1/compare", self._json(lambda q, m, w: api.compare(q, w))),
                (r"/api/v1/runs/([^/]+)", self._json(lambda q, m, w: api.run(m[1], w))),
                (r"/api/v1/runs/([^/]+)/metrics",
                 self._json(lambda q, m, w: api.metrics(m[1], w))),
                (r"/api/v1/runs/([^/]+)/metrics/(.+)",
                 self._json(lambda q, m, w: api.series(m[1], m[2], q, w))),
                (r"/api/v1/runs/([^/]+)/logs", self._json(lambda q, m, w: api.logs(m[1], q, w))),
                (r"/api/v1/runs/([^/]+)/logs/follow", self._follow),
                (r"/api/v1/runs/([^/]+)/artifacts",
                 self._json(lambda q, m, w: api.artifacts(m[1], w))),
                (r"/api/v1/runs/([^/]+)/artifacts/(.+)", self._download),
            )
        ]

    def __call__(self, req: BaseHTTPRequestHandler) -> None:
        url = urlsplit(req.path)
        path = unquote(url.path)
        query = parse_qs(url.query, keep_blank_values=True)
        try:
            if path.startswith("/api/"):
                self._api(req, path, query)
            else:
                self._static(req, path)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the browser went away; nothing to answer

    # ---- the JSON API ---------------------------------------------------------------

    def _api(self, req: BaseHTTPRequestHandler, path: str, query: Query) -> None:
        workspace = DEFAULT_WORKSPACE
        if self._caller is not None:
            found = self._caller(req.headers)
            if isinstance(found, tuple):
                send_json(req, found[0], {"error": found[1]},
                          extra=(("WWW-Authenticate", 'Bearer realm="mltrail"'),))
                return
            workspace = found.workspace
        for pattern, route in self._routes:
            match = pattern.fullmatch(path)
            if match is not None:
                try:
                    route(req, query, match, workspace)
                except ApiError as exc:
                    send_json(req, exc.status, {"error": str(exc)})
                return
        send_json(req, 404, {"error": f"no API path {path!r}; see /api/v1/ in the README"})

    @staticmethod
    def _json(answer: Callable[[Query, re.Match[str], str], Any]) -> Route:
        def route(req: BaseHTTPRequestHandler, query: Query, match: re.Match[str],
                  workspace: str) -> None:
            send_json(req, 200, answer(query, match, workspace))
        return route

    def _follow(self, req: BaseHTTPRequestHandler, query: Query, match: re.Match[str],
                workspace: str) -> None:
        """Server-sent events: ``lines`` (a JSON list) as they are committed, then ``end``."""
        events = self.api.follow(match[1], query, workspace)
        first = next(events)  # raises ApiError (unknown run) before any header is sent
        req.send_response(200)
        req.send_header("Content-Type", "text/event-stream; charset=utf-8")
        req.send_header("Cache-Control", "no-store")
        req.send_header("Connection", "close")
        _security_headers(req)
        req.end_headers()
        req.close_connection = True
        for name, data in _chain(first, events):
            if name == "ping":
                req.wfile.write(b": ping\n\n")  # a comment: a gone browser fails this write
            else:
                req.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
            req.wfile.flush()

    def _download(self, req: BaseHTTPRequestHandler, query: Query,
                  match: re.Match[str], workspace: str) -> None:
        info, pieces = self.api.download(match[1], match[2], workspace)
        try:
            req.send_response(200)
            req.send_header("Content-Type", info.content_type or "application/octet-stream")
            req.send_header("Content-Length", str(info.size))
            name = info.path.rsplit("/", 1)[-1].replace('"', "")
            disposition = "inline" if "inline" in query else "attachment"
            req.send_header("Content-Disposition", f'{disposition}; filename="{name}"')
            req.send_header("X-Content-SHA256", info.sha256)
            _security_headers(req)
            req.end_headers()
            for piece in pieces:
                req.wfile.write(piece)
        finally:
            pieces.close()

    # ---- static files -------------------------------------------------------------------

    def _static(self, req: BaseHTTPRequestHandler, path: str) -> None:
        name = "index.html" if path in ("/", "/index.html") else path.removeprefix("/static/")
        if name == path or ".." in name.split("/"):
            send_bytes(req, 404, "text/plain; charset=utf-8", b"not found\n")
            return
        target = STATIC.joinpath(*name.split("/"))
        if not target.is_file():
            send_bytes(req, 404, "text/plain; charset=utf-8", b"not found\n")
            return
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype.endswith(("javascript", "json")):
            ctype += "; charset=utf-8"
        send_bytes(req, 200, ctype, target.read_bytes(), cache="no-cache")


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest


def _security_headers(req: BaseHTTPRequestHandler) -> None:
    for name, value in SECURITY_HEADERS:
        req.send_header(name, value)


def send_bytes(req: BaseHTTPRequestHandler, status: int, ctype: str, body: bytes,
               cache: str = "no-store", extra: tuple[tuple[str, str], ...] = ()) -> None:
    req.send_response(status)
    for name, value in extra:
        req.send_header(name, value)
    req.send_header("Content-Type", ctype)
    req.send_header("Content-Length", str(len(body)))
    req.send_header("Cache-Control", cache)
    _security_headers(req)
    req.end_headers()
    req.wfile.write(body)


def send_json(req: BaseHTTPRequestHandler, status: int, data: Any,
              extra: tuple[tuple[str, str], ...] = ()) -> None:
    body = json.dumps(_finite(data), separators=(",", ":"), allow_nan=False).encode()
    send_bytes(req, status, "application/json", body, extra=extra)


def _finite(data: Any) -> Any:
    """JSON has no NaN or infinity: they travel as the strings "NaN", "Infinity"."""
    if isinstance(data, float) and not math.isfinite(data):
        return "NaN" if math.isnan(data) else ("Infinity" if data > 0 else "-Infinity")
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(v) for v in data]
    return data
