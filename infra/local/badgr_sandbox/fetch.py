"""The sandbox's only way out: HTTP GETs that reach loopback test sites and nothing else.

The real server fetches hosted assertions, badge classes, issuers, keys, revocation lists and
badge images from anywhere. The sandbox answers the same way for the sites tests and demos
run on 127.0.0.1, and treats any other address (also as a redirect target) as unreachable, so
a test can never reach the network through it.
"""

from __future__ import annotations

import ipaddress
import urllib.error
import urllib.request
from typing import Any, NamedTuple
from urllib.parse import urlsplit

MAX_BYTES = 2_000_000


class FetchError(Exception):
    """Nothing came back: the message is the validator's words for it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Fetched(NamedTuple):
    status: int
    body: bytes
    content_type: str


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _unreachable(url: str) -> FetchError:
    # requests' words when nothing answers, as the validator passes them on
    return FetchError(f"<class 'requests.exceptions.ConnectionError'> Could not connect to {url}")


class _LoopbackRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        if not is_loopback(urlsplit(newurl).hostname or ""):
            raise _unreachable(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class LoopbackFetch:
    """GETs on 127.0.0.1 (any port) and ``localhost``; everything else is unreachable."""

    def __init__(self, timeout: float = 5.0) -> None:
        self.timeout = timeout
        self._opener = urllib.request.build_opener(_LoopbackRedirects)

    def get(self, url: str, accept: str) -> Fetched:
        """The answer whatever its status; :class:`FetchError` when none came."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not is_loopback(parts.hostname or ""):
            raise _unreachable(url)
        request = urllib.request.Request(url, headers={"Accept": accept})
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return Fetched(
                    response.status, response.read(MAX_BYTES), response.headers.get("Content-Type", "")
                )
        except urllib.error.HTTPError as exc:
            body = exc.read(MAX_BYTES) if exc.fp is not None else b""
            return Fetched(exc.code, body, exc.headers.get("Content-Type", "") if exc.headers else "")
        except FetchError:
            raise
        except (OSError, ValueError):
            raise _unreachable(url) from None

    def document(self, url: str) -> bytes:
        """A hosted JSON document's bytes, as the validator's FETCH_HTTP_NODE asks for it."""
        accept = "application/ld+json, application/json, image/png, image/svg+xml"
        return self.get(url, accept).body
