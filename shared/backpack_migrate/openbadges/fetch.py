"""Fetching issuer documents: a guarded HTTP fetcher and an offline map fetcher."""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util.connection import create_connection

from .errors import FetchError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_DNS_TTL = 60.0
USER_AGENT = "backpack-migrate-openbadges/1"


@dataclass(frozen=True)
class FetchedDocument:
    status: int
    content_type: str
    body: bytes
    url: str  # the final URL, after redirects


class Fetcher(Protocol):
    def get(self, url: str) -> FetchedDocument: ...


def address_allowed(ip: IPAddress, allow_loopback: bool) -> bool:
    """Whether a fetch may connect to this address: public unicast only (plus loopback if allowed)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in _METADATA_ADDRESSES:
        return False
    if allow_loopback and ip.is_loopback:
        return True
    if ip.is_multicast or ip.is_reserved or ip.is_link_local or ip.is_private or ip.is_loopback:
        return False
    return ip.is_global and not ip.is_unspecified


def _split_url(url: str) -> tuple[str, str, int]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise FetchError("bad_url", "the address cannot be parsed") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise FetchError("bad_url", f"scheme {scheme or 'none'} is not fetched")
    host = parts.hostname
    if not host:
        raise FetchError("bad_url", "no host")
    if parts.username or parts.password:
        raise FetchError("bad_url", "credentials in the address")
    return scheme, host, port or (443 if scheme == "https" else 80)


class _Resolver:
    """Resolves a host, refuses it unless every address is allowed, and remembers the answer briefly."""

    def __init__(self, allow_loopback: bool) -> None:
        self.allow_loopback = allow_loopback
        self._cache: dict[tuple[str, int], tuple[float, list[str]]] = {}
        self._lock = threading.Lock()

    def resolve(self, host: str, port: int) -> list[str]:
        key = (host.lower().rstrip("."), port)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
        if hit and hit[0] > now:
            return hit[1]
        try:
            literal: IPAddress | None = ipaddress.ip_address(key[0].strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            addresses = [literal]
        else:
            try:
                infos = socket.getaddrinfo(key[0], port, type=socket.SOCK_STREAM)
            except (socket.gaierror, UnicodeError, OSError) as exc:
                raise FetchError("dns", f"{host} does not resolve") from exc
            addresses = []
            for info in infos:
                raw = str(info[4][0]).split("%", 1)[0]
                try:
                    addresses.append(ipaddress.ip_address(raw))
                except ValueError:
                    continue
        if not addresses:
            raise FetchError("dns", f"{host} has no address")
        for ip in addresses:
            if not address_allowed(ip, self.allow_loopback):
                raise FetchError("refused", f"{host} resolves to a non-public address")
        result = list(dict.fromkeys(str(ip) for ip in addresses))
        with self._lock:
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[key] = (now + _DNS_TTL, result)
        return result


def _pinned_connection_classes(
    resolver: _Resolver,
) -> tuple[type[HTTPConnectionPool], type[HTTPSConnectionPool]]:
    """Pool classes whose connections connect only to addresses the resolver has checked.

    The check runs again at connect time, on the address actually used, so a DNS answer that
    changes between the check and the connection cannot reach a private address.
    """

    def new_conn(conn: HTTPConnection) -> socket.socket:
        host = conn._dns_host
        addresses = resolver.resolve(host, conn.port or 80)
        last: OSError = OSError("no address to connect to")
        for address in addresses:
            try:
                return create_connection(
                    (address, conn.port or 80),
                    conn.timeout,
                    source_address=conn.source_address,
                    socket_options=conn.socket_options,
                )
            except TimeoutError as exc:
                raise ConnectTimeoutError(conn, f"connection to {host} timed out") from exc
            except OSError as exc:
                last = exc
        raise NewConnectionError(conn, f"failed to connect: {last}") from last

    class PinnedHTTPConnection(HTTPConnection):
        def _new_conn(self) -> socket.socket:
            return new_conn(self)

    class PinnedHTTPSConnection(HTTPSConnection):
        def _new_conn(self) -> socket.socket:
            return new_conn(self)

    class PinnedHTTPPool(HTTPConnectionPool):
        ConnectionCls = PinnedHTTPConnection

    class PinnedHTTPSPool(HTTPSConnectionPool):
        ConnectionCls = PinnedHTTPSConnection

    return PinnedHTTPPool, PinnedHTTPSPool


class _PinnedAdapter(HTTPAdapter):
    def __init__(self, resolver: _Resolver, pool_size: int) -> None:
        self._resolver = resolver
        super().__init__(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        http_pool, https_pool = _pinned_connection_classes(self._resolver)
        self.poolmanager.pool_classes_by_scheme = {"http": http_pool, "https": https_pool}


class SafeFetcher:
    """HTTP(S) GET with address checks, manual redirects, size and time caps, and keep-alive."""

    def __init__(
        self,
        allow_loopback: bool = False,
        timeout: float = 5.0,
        max_bytes: int = 2_000_000,
        max_redirects: int = 5,
        pool_size: int = 32,
    ) -> None:
        self.allow_loopback = allow_loopback
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self._resolver = _Resolver(allow_loopback)
        session = requests.Session()
        session.trust_env = False  # no proxies from the environment: they would bypass the checks
        session.headers.update(
            {"User-Agent": USER_AGENT, "Accept": "application/ld+json, application/json, */*;q=0.5"}
        )
        adapter = _PinnedAdapter(self._resolver, pool_size)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        self._session = session

    def check_url(self, url: str) -> None:
        """Raise FetchError unless the URL is http(s) and its host resolves to allowed addresses only."""
        _scheme, host, port = _split_url(url)
        self._resolver.resolve(host, port)

    def get(self, url: str) -> FetchedDocument:
        deadline = time.monotonic() + self.timeout * 2
        current = url.split("#", 1)[0]
        for _hop in range(self.max_redirects + 1):
            self.check_url(current)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FetchError("timeout", "the fetch took too long")
            try:
                response = self._session.get(
                    current,
                    allow_redirects=False,
                    stream=True,
                    timeout=(min(self.timeout, remaining), min(self.timeout, remaining)),
                )
            except FetchError:
                raise
            except requests.exceptions.Timeout as exc:
                raise FetchError("timeout", "no answer in time") from exc
            except requests.exceptions.ConnectionError as exc:
                cause = _find_fetch_error(exc)
                if cause is not None:
                    raise cause from exc
                raise FetchError("connect", "the connection failed") from exc
            except requests.exceptions.RequestException as exc:
                raise FetchError("http", type(exc).__name__) from exc
            with response:
                if response.status_code in _REDIRECT_STATUSES and response.headers.get("Location"):
                    current = urljoin(current, response.headers["Location"]).split("#", 1)[0]
                    continue
                body = self._read_capped(response, deadline)
                return FetchedDocument(
                    status=response.status_code,
                    content_type=response.headers.get("Content-Type", ""),
                    body=body,
                    url=current,
                )
        raise FetchError("redirects", "too many redirects")

    def _read_capped(self, response: requests.Response, deadline: float) -> bytes:
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > self.max_bytes:
            raise FetchError("too_large", "the document is too large")
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in response.iter_content(chunk_size=65536):
                size += len(chunk)
                if size > self.max_bytes:
                    raise FetchError("too_large", "the document is too large")
                if time.monotonic() > deadline:
                    raise FetchError("timeout", "the document took too long to arrive")
                chunks.append(chunk)
        except requests.exceptions.RequestException as exc:
            raise FetchError("http", type(exc).__name__) from exc
        return b"".join(chunks)

    def close(self) -> None:
        self._session.close()


def _find_fetch_error(exc: BaseException) -> FetchError | None:
    """A FetchError raised inside urllib3 (the connect-time address check), if any."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, FetchError):
            return current
        stack.extend([current.__cause__, current.__context__])
        stack.extend(arg for arg in current.args if isinstance(arg, BaseException))
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            stack.append(reason)
    return None


_CONTENT_TYPES = {
    ".json": "application/json",
    ".jsonld": "application/ld+json",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".pem": "application/x-pem-file",
    ".jws": "text/plain",
    ".txt": "text/plain",
}


def content_type_for(path: str | Path) -> str:
    return _CONTENT_TYPES.get(Path(path).suffix.lower(), "application/octet-stream")


def _strip_fragment(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(fragment="")) if parts.fragment else url


class MapFetcher:
    """An offline fetcher answering from a URL -> (status, body, content type) map.

    Other URLs get 404, or with ``unmapped_unreachable`` fail as if no server answered.
    """

    def __init__(
        self,
        mapping: dict[str, tuple[int, bytes, str]],
        fallback: Callable[[str], tuple[int, bytes, str] | None] | None = None,
        *,
        unmapped_unreachable: bool = False,
    ) -> None:
        self._mapping = {_strip_fragment(k): v for k, v in mapping.items()}
        self._fallback = fallback
        self._unmapped_unreachable = unmapped_unreachable

    def get(self, url: str) -> FetchedDocument:
        key = _strip_fragment(url)
        hit = self._mapping.get(key)
        if hit is None and self._fallback is not None:
            hit = self._fallback(key)
        if hit is None and self._unmapped_unreachable:
            raise FetchError("connect", "not in the serve map")
        if hit is None:
            return FetchedDocument(status=404, content_type="text/plain", body=b"Not Found", url=key)
        status, body, content_type = hit
        return FetchedDocument(status=status, content_type=content_type, body=body, url=key)

    @classmethod
    def from_serve_file(cls, path: str | Path) -> MapFetcher:
        """Read a serve map: {url: "file" | {"file": "file", "status": 200}}, files relative to the map.

        A URL the map does not name is unreachable: the map stands for the whole network.
        """
        map_path = Path(path)
        raw = json.loads(map_path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raise ValueError("the serve map must be a JSON object of URL -> file")
        base = map_path.parent
        mapping: dict[str, tuple[int, bytes, str]] = {}
        for url, value in raw.items():
            status = 200
            if isinstance(value, str):
                file_name = value
            elif isinstance(value, dict) and isinstance(value.get("file"), str):
                file_name = value["file"]
                status = int(value.get("status", 200))
            elif isinstance(value, dict) and "status" in value:
                mapping[str(url)] = (int(value["status"]), b"", "text/plain")
                continue
            else:
                raise ValueError(f"serve map entry for {url} must be a path or {{'file': path}}")
            file_path = Path(file_name)
            if not file_path.is_absolute():
                file_path = base / file_path
            mapping[str(url)] = (status, file_path.read_bytes(), content_type_for(file_path))
        return cls(mapping, unmapped_unreachable=True)
