"""A local stand-in for the issuers' web sites: serves a generated directory over HTTP.

Files are served with the content type their extension implies; ``statuses.json`` at the root
maps a path (``"/assertions/x.json"``) or a path prefix ending in ``/`` to an HTTP status to
answer instead (404 for an issuer site that is gone, 410 for a revoked assertion, ...).
"""

from __future__ import annotations

import json
import threading
import time
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from infra.local.serving import KeptAliveHandler, LoopbackServer

CONTENT_TYPES = {
    ".json": "application/json",
    ".jsonld": "application/ld+json",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".pem": "application/x-pem-file",
    ".html": "text/html; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}
STATUSES_FILE = "statuses.json"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    root: Path
    latency: float
    hits: dict[str, int]
    lock: threading.Lock


class _Handler(KeptAliveHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def do_GET(self) -> None:
        self._answer(head=False)

    def _statuses(self) -> dict[str, int]:
        path = self.server.root / STATUSES_FILE
        try:
            data = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError):
            return {}
        return {str(k): int(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def _send(self, status: int, body: bytes, content_type: str, *, head: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Access-Control-Allow-Origin", "*")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _answer(self, *, head: bool) -> None:
        if self.server.latency:
            time.sleep(self.server.latency)
        path = unquote(urlsplit(self.path).path)
        with self.server.lock:
            self.server.hits[path] = self.server.hits.get(path, 0) + 1
        statuses = self._statuses()
        status = statuses.get(path)
        if status is None:
            prefixes = [p for p in statuses if p.endswith("/") and path.startswith(p)]
            if prefixes:
                status = statuses[max(prefixes, key=len)]
        if status is not None and status >= 400:
            body = json.dumps({"status": status, "error": HTTPStatus(status).phrase}).encode()
            self._send(status, body, "application/json", head=head)
            return
        root = self.server.root.resolve()
        target = (root / path.lstrip("/")).resolve()
        if path.strip("/") == STATUSES_FILE or not target.is_relative_to(root) or not target.is_file():
            self._send(404, b'{"status": 404, "error": "Not Found"}', "application/json", head=head)
            return
        content_type = CONTENT_TYPES.get(target.suffix.lower(), "application/octet-stream")
        self._send(status or 200, target.read_bytes(), content_type, head=head)


class IssuerSite(LoopbackServer):
    """``with IssuerSite(root) as site: ... site.url ...`` -- serves ``root`` on 127.0.0.1."""

    thread_name = "issuer-site"

    def __init__(self, root_dir: Path, latency: float = 0.0, port: int = 0) -> None:
        super().__init__()
        self.root_dir = Path(root_dir)
        self.latency = latency
        self.port = port
        self._hits: dict[str, int] = {}

    @property
    def hits(self) -> dict[str, int]:
        """Requests served per path (for tests that check caching)."""
        return dict(self._hits) if self._server else {}

    def _make_server(self) -> _Server:
        self.root_dir.mkdir(parents=True, exist_ok=True)
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.root = self.root_dir
        server.latency = self.latency
        server.hits = self._hits = {}
        server.lock = threading.Lock()
        return server
