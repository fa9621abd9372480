"""HTTP plumbing shared by every route: dispatch, the v2 envelope, content types, bearer tokens.

Answers take the real server's forms: Django REST framework JSON (``application/json`` when
asked for, else ``application/ld+json`` under ``/v2``), Django's own HTML pages for crashes and
unknown paths, and no content type on a 204.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from infra.local.serving import KeptAliveHandler

if TYPE_CHECKING:
    from infra.local.badgr_sandbox.oauth import Grant
    from infra.local.badgr_sandbox.server import BadgrSandbox

HTML = "text/html; charset=utf-8"  # Django's default for the pages and bodies it writes itself
SERVER_ERROR_PAGE = b"<h1>Server Error (500)</h1>"
NOT_FOUND_PAGE = b"<h1>Not Found</h1><p>The requested resource was not found on this server.</p>"
NOT_FOUND = "entity not found or insufficient privileges"

Route = tuple[str, str, Callable[..., None]]  # method, path pattern, handler taking the groups


def envelope(
    success: bool,
    description: str,
    *,
    result: list[Any] | None = None,
    field_errors: dict[str, Any] | str | None = None,
    validation_errors: list[Any] | None = None,
) -> dict[str, Any]:
    """The v2 answer: ``status`` and ``result``, plus both error lists on a failure."""
    body: dict[str, Any] = {
        "status": {"success": success, "description": description},
        "result": result or [],
    }
    if not success:
        body["fieldErrors"] = field_errors if field_errors is not None else {}
        body["validationErrors"] = validation_errors or []
    return body


def bad_request(
    *, field_errors: dict[str, Any] | None = None, validation_errors: list[Any] | None = None
) -> dict[str, Any]:
    """A serializer's ValidationError, as the v2 exception handler words it."""
    return envelope(False, "bad request", field_errors=field_errors, validation_errors=validation_errors)


def py_type(value: Any) -> str:
    """The Python type name the real server (Python) reports for a JSON value."""
    names = {dict: "dict", list: "list", str: "str", bool: "bool", int: "int", float: "float"}
    return names.get(type(value), "NoneType")


class BaseHandler(KeptAliveHandler):
    sandbox: BadgrSandbox
    server_version = "BadgrSandbox/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        return  # the sandbox keeps its own token-free log

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def routes(self) -> list[Route]:
        raise NotImplementedError

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        self._path = parts.path.rstrip("/") or "/"
        self._query = parse_qs(parts.query, keep_blank_values=True)
        self._query_string = parts.query
        length = int(self.headers.get("Content-Length") or 0)
        self._body = self.rfile.read(length) if length > 0 else b""
        self._status = 500
        self._method = method
        self._recorded = False
        try:
            failure = self.sandbox._take_failure(self._path)
            if failure is not None:
                if failure.delay:
                    time.sleep(failure.delay)
                if failure.status:
                    self._injected(failure.status)
                    return
            self._route(method)
        except (BrokenPipeError, ConnectionResetError):
            return
        except Exception:
            self._send(500, SERVER_ERROR_PAGE, HTML)
        finally:
            if not self._recorded:
                self.sandbox._record(method, self._path, self._status)

    def _route(self, method: str) -> None:
        path_known = False
        for route_method, pattern, handler in self.routes():
            match = re.fullmatch(pattern, self._path)
            if match is None:
                continue
            if route_method == method:
                handler(*match.groups())
                return
            path_known = True
        if not path_known:
            self._send(404, NOT_FOUND_PAGE, HTML)
        elif self._path.startswith("/v2/"):
            # DRF's MethodNotAllowed through the v2 exception handler: its detail lands in fieldErrors.
            detail = f'Method "{method}" not allowed.'
            self._json(405, envelope(False, "miscellaneous error", field_errors=detail))
        else:
            self._json(405, {"detail": f'Method "{method}" not allowed.'})

    # ---------------------------------------------------------- answers

    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self._status = status
        # Recorded before the reply leaves: a client that reads the log right after its
        # answer arrives must find its request there.
        if not self._recorded:
            self._recorded = True
            self.sandbox._record(self._method, self._path, status)
        self.send_response(status)
        if status != 204:  # the real server sends a 204 with no content type
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _no_content(self) -> None:
        self._send(204, b"", "")

    def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        """A Django REST framework answer: JSON when asked for, JSON-LD by default under /v2."""
        accept = self.headers.get("Accept") or ""
        wants_json = "application/json" in accept or not self._path.startswith("/v2")
        kind = "application/json" if wants_json else "application/ld+json"
        self._send(status, json.dumps(body).encode("utf-8"), kind, headers)

    def _django_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        """JSON written into a plain Django HttpResponse, which labels it as HTML."""
        self._send(status, json.dumps(body).encode("utf-8"), HTML, headers)

    def _html(self, status: int, title: str, inner: str, headers: dict[str, str] | None = None) -> None:
        from html import escape

        page = (
            "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{escape(title)}</title></head><body><main>{inner}</main></body></html>"
        )
        self._send(status, page.encode("utf-8"), HTML, headers)

    def _server_error(self) -> None:
        self._send(500, SERVER_ERROR_PAGE, HTML)

    def _injected(self, status: int) -> None:
        """A fault a test asked for (not an answer of the real server's code)."""
        if status == 429:
            self._json(
                429,
                {"detail": "Request was throttled. Expected available in 1 second."},
                {"Retry-After": "1"},
            )
        elif status >= 500:
            reason = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
            self._send(status, f"<h1>{status} {reason}</h1>".encode(), HTML)
        else:
            self._json(status, envelope(False, "injected failure"))

    # ---------------------------------------------------------- requests

    def _content_type(self) -> str:
        return (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()

    def _form(self) -> dict[str, str]:
        fields = parse_qs(self._body.decode("utf-8", errors="replace"), keep_blank_values=True)
        return {key: values[0] for key, values in fields.items()}

    def _data(self) -> dict[str, Any] | None:
        """The request body as the real server's parsers read it, or None after answering."""
        if self._content_type() == "application/x-www-form-urlencoded":
            return dict(self._form())
        try:
            data = json.loads(self._body or b"{}")
        except ValueError as exc:
            # The v2 handler gives a parse error the error envelope and no status of its own: 200.
            self._json(200, bad_request(validation_errors=[f"JSON parse error - {exc}"]))
            return None
        if not isinstance(data, dict):
            message = f"Invalid data. Expected a dictionary, but got {py_type(data)}."
            self._json(400, bad_request(validation_errors=[message]))
            return None
        return data

    def _bearer(self) -> Grant | None:
        header = self.headers.get("Authorization") or ""
        kind, _, token = header.partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            return None
        return self.sandbox._grant_for(token.strip())

    def _api_user(self, *, read: str | None, write: str) -> str | None:
        """The learner behind the bearer token, or None after answering 401/404 (Badgr's way)."""
        grant = self._bearer()
        if grant is None:
            self._json(
                401, envelope(False, "no valid auth token found"), {"WWW-Authenticate": 'Bearer realm="api"'}
            )
            return None
        scopes = grant.scope.split()
        if write not in scopes and (read is None or read not in scopes):
            self._json(404, envelope(False, NOT_FOUND))
            return None
        return grant.username
