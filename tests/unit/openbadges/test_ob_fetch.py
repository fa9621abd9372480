"""SafeFetcher: loopback-only test server, address refusal before any connection, caps; MapFetcher."""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from backpack_migrate.openbadges import FetchError, MapFetcher, SafeFetcher
from backpack_migrate.openbadges import fetch as fetch_module
from backpack_migrate.openbadges.fetch import address_allowed

pytestmark = pytest.mark.unit


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    peers: set[int] = set()
    requests_seen: list[str] = []

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        type(self).peers.add(self.client_address[1])
        type(self).requests_seen.append(self.path)
        port = self.server.server_address[1]
        if self.path == "/doc":
            self._send(200, b'{"ok": true}', {"Content-Type": "application/json"})
        elif self.path == "/redirect":
            self._send(302, b"", {"Location": "/doc"})
        elif self.path == "/redirect-private":
            self._send(302, b"", {"Location": "http://10.0.0.1/secret"})
        elif self.path == "/redirect-metadata":
            self._send(301, b"", {"Location": "http://169.254.169.254/latest/meta-data/"})
        elif self.path == "/loop":
            self._send(302, b"", {"Location": f"http://127.0.0.1:{port}/loop"})
        elif self.path == "/big":
            self._send(200, b"x" * 50_000, {"Content-Type": "text/plain"})
        else:
            self._send(404, b"nope", {"Content-Type": "text/plain"})


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.peers = set()
    _Handler.requests_seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def no_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection fails the test: refusals must come first."""

    def forbidden(*args: Any, **kwargs: Any) -> socket.socket:
        raise AssertionError(f"a connection was attempted: {args}")

    monkeypatch.setattr(fetch_module, "create_connection", forbidden)


def test_loopback_fetch_with_redirects_and_keep_alive(server: str) -> None:
    fetcher = SafeFetcher(allow_loopback=True)
    doc = fetcher.get(f"{server}/doc")
    assert doc.status == 200 and json.loads(doc.body) == {"ok": True}
    assert doc.content_type == "application/json"
    redirected = fetcher.get(f"{server}/redirect")
    assert redirected.status == 200 and redirected.url == f"{server}/doc"
    missing = fetcher.get(f"{server}/missing")
    assert missing.status == 404
    assert len(_Handler.peers) == 1  # one pooled connection served every request
    fetcher.close()


def test_caps(server: str) -> None:
    with pytest.raises(FetchError) as info:
        SafeFetcher(allow_loopback=True, max_bytes=10_000).get(f"{server}/big")
    assert info.value.kind == "too_large"
    with pytest.raises(FetchError) as info:
        SafeFetcher(allow_loopback=True, max_redirects=3).get(f"{server}/loop")
    assert info.value.kind == "redirects"


def test_loopback_refused_by_default_before_connecting(server: str, no_connect: None) -> None:
    with pytest.raises(FetchError) as info:
        SafeFetcher().get(f"{server}/doc")
    assert info.value.kind == "refused"
    assert _Handler.requests_seen == []


def test_hostname_resolving_to_loopback_is_refused(
    server: str, monkeypatch: pytest.MonkeyPatch, no_connect: None
) -> None:
    port = int(server.rsplit(":", 1)[1])

    def fake_getaddrinfo(host: str, *args: Any, **kwargs: Any) -> list[Any]:
        assert host == "sneaky.example"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(fetch_module.socket, "getaddrinfo", fake_getaddrinfo)
    with pytest.raises(FetchError) as info:
        SafeFetcher().get(f"http://sneaky.example:{port}/doc")
    assert info.value.kind == "refused"
    assert _Handler.requests_seen == []


def test_mixed_public_and_private_answers_are_refused(
    monkeypatch: pytest.MonkeyPatch, no_connect: None
) -> None:
    def fake_getaddrinfo(host: str, *args: Any, **kwargs: Any) -> list[Any]:
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 80)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.1.2.3", 80)),
        ]

    monkeypatch.setattr(fetch_module.socket, "getaddrinfo", fake_getaddrinfo)
    with pytest.raises(FetchError) as info:
        SafeFetcher().get("https://rebind.example/x")
    assert info.value.kind == "refused"


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/x",
        "http://192.168.1.1/x",
        "http://172.16.0.5/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://[::ffff:10.0.0.1]/x",
        "http://0.0.0.0/x",
        "http://100.64.0.1/x",
        "http://224.0.0.1/x",
        "http://[fe80::1]/x",
        "http://[::1]:9/x",
        "http://localhost.:9/x",
    ],
)
def test_private_addresses_are_refused(url: str, monkeypatch: pytest.MonkeyPatch, no_connect: None) -> None:
    def fake_getaddrinfo(host: str, *args: Any, **kwargs: Any) -> list[Any]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 9))]

    monkeypatch.setattr(fetch_module.socket, "getaddrinfo", fake_getaddrinfo)
    with pytest.raises(FetchError) as info:
        SafeFetcher().get(url)
    assert info.value.kind == "refused"


@pytest.mark.parametrize("url", ["http://10.0.0.1/x", "http://169.254.169.254/", "http://[fd00:ec2::254]/"])
def test_allow_loopback_allows_only_loopback(url: str, no_connect: None) -> None:
    with pytest.raises(FetchError) as info:
        SafeFetcher(allow_loopback=True).get(url)
    assert info.value.kind == "refused"


@pytest.mark.parametrize("path", ["/redirect-private", "/redirect-metadata"])
def test_redirect_to_private_address_is_refused(server: str, path: str) -> None:
    with pytest.raises(FetchError) as info:
        SafeFetcher(allow_loopback=True).get(f"{server}{path}")
    assert info.value.kind == "refused"


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://example.org/x", "gopher://x/", "http:///nohost", "x"]
)
def test_only_http_urls(url: str, no_connect: None) -> None:
    with pytest.raises(FetchError) as info:
        SafeFetcher().get(url)
    assert info.value.kind == "bad_url"


def test_address_policy() -> None:
    def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        return ipaddress.ip_address(text)

    assert address_allowed(ip("93.184.216.34"), False)
    assert address_allowed(ip("2606:2800:220:1:248:1893:25c8:1946"), False)
    assert not address_allowed(ip("127.0.0.1"), False)
    assert address_allowed(ip("127.0.0.1"), True) and address_allowed(ip("127.5.5.5"), True)
    assert address_allowed(ip("::1"), True)
    assert not address_allowed(ip("169.254.169.254"), True)
    assert not address_allowed(ip("fd00:ec2::254"), True)


def test_map_fetcher_and_serve_file(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.json").write_text('{"a": 1}')
    (tmp_path / "gone.json").write_text('{"revoked": true}')
    serve = {
        "https://x.example/a": "docs/a.json",
        "https://x.example/gone": {"file": "gone.json", "status": 410},
        "https://x.example/abs": str(tmp_path / "docs" / "a.json"),
    }
    (tmp_path / "serve.json").write_text(json.dumps(serve))
    fetcher = MapFetcher.from_serve_file(tmp_path / "serve.json")
    assert fetcher.get("https://x.example/a").body == b'{"a": 1}'
    assert fetcher.get("https://x.example/a").content_type == "application/json"
    assert fetcher.get("https://x.example/a#frag").status == 200
    assert fetcher.get("https://x.example/gone").status == 410
    assert fetcher.get("https://x.example/abs").status == 200
    with pytest.raises(FetchError) as unmapped:  # the map is the whole network: nothing else answers
        fetcher.get("https://x.example/other")
    assert unmapped.value.kind == "connect"
    assert MapFetcher({}).get("https://x.example/other").status == 404  # test worlds answer 404
