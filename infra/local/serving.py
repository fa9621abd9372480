"""Loopback HTTP servers run on a thread of their own, for the local tools that serve pages."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Self


class KeptAliveHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 with kept-alive connections, answering without Nagle's delay.

    The standard handler writes an answer's headers and its body in two sends. On a kept-alive
    connection, without ``TCP_NODELAY``, the body then waits for the client's delayed ACK of the
    headers: 40 ms added to every answer, which no real server makes a client wait.
    """

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True


class LoopbackServer:
    """Start, stop and address of a server on 127.0.0.1; subclasses build it in ``_make_server``."""

    thread_name = "loopback-server"
    poll_interval = 0.5

    def __init__(self) -> None:
        self._server: HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _make_server(self) -> HTTPServer:
        raise NotImplementedError

    def start(self) -> Self:
        if self._server is None:
            self._server = self._make_server()
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": self.poll_interval},
                name=self.thread_name,
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"
