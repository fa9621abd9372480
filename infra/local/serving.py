"""Running a loopback HTTP server on a thread of its own, for the local tools that serve pages."""

from __future__ import annotations

import threading
from http.server import HTTPServer


def serve_in_background(server: HTTPServer, name: str, poll_interval: float = 0.5) -> threading.Thread:
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": poll_interval}, name=name, daemon=True
    )
    thread.start()
    return thread


def stop_serving(server: HTTPServer, thread: threading.Thread | None) -> None:
    server.shutdown()
    server.server_close()
    if thread is not None:
        thread.join(timeout=5)


def base_url(server: HTTPServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{host!s}:{port}"
