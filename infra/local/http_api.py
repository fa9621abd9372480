"""API Gateway's HTTP API (payload format 2.0) in front of the functions, on a local port."""

from __future__ import annotations

import base64
import http.server
import json
import logging
import os
import re
import urllib.parse
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from infra.local.cloudformation import ACCOUNT_ID
from infra.local.lambda_runtime import FunctionSpec, InvocationKilled, Invoker
from infra.local.serving import KeptAliveHandler

log = logging.getLogger("backpack_migrate.local_stack")

_TEXT_CONTENT_TYPES = (
    "text/",
    "application/json",
    "application/xml",
    "application/javascript",
    "application/problem+json",
)


@dataclass
class HttpRoute:
    method: str  # upper case or ANY
    path: str
    function: FunctionSpec
    pattern: re.Pattern[str] = field(init=False)
    params: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.params = []
        regex = ""
        for segment in self.path.strip("/").split("/"):
            match = re.fullmatch(r"\{([^}]+?)(\+?)\}", segment)
            if match:
                self.params.append(match.group(1))
                regex += "/(.+)" if match.group(2) else "/([^/]+)"
            else:
                regex += "/" + re.escape(segment)
        self.pattern = re.compile(regex or "/")

    @property
    def route_key(self) -> str:
        return f"{self.method} {self.path}"

    def specificity(self) -> tuple[int, int, int]:
        greedy = sum(1 for segment in self.path.split("/") if segment.endswith("+}"))
        return (greedy, len(self.params), -len(self.path))


class HttpApi:
    """The routes of the template's HTTP API and the request handler serving them."""

    def __init__(self, invoker: Invoker, url: str = "", api_id: str = "localapi") -> None:
        self._invoker = invoker
        self.url = url
        self.api_id = api_id
        self.routes: list[HttpRoute] = []

    def match_route(self, method: str, path: str) -> tuple[HttpRoute, dict[str, str]] | None:
        for wanted in (method, "ANY"):
            for route in self.routes:
                if route.method != wanted:
                    continue
                match = route.pattern.fullmatch(path)
                if match:
                    return route, {
                        name: urllib.parse.unquote(value)
                        for name, value in zip(route.params, match.groups(), strict=True)
                    }
        return None

    def http_event(
        self,
        route: HttpRoute,
        path_params: dict[str, str],
        method: str,
        raw_path: str,
        raw_query: str,
        headers: list[tuple[str, str]],
        body: bytes,
        source_ip: str,
    ) -> dict[str, Any]:
        """An API Gateway HTTP API (payload format 2.0) event."""
        lowered: dict[str, str] = {}
        cookies: list[str] = []
        for name, value in headers:
            key = name.lower()
            if key == "cookie":
                cookies.extend(part.strip() for part in value.split(";") if part.strip())
                continue
            lowered[key] = f"{lowered[key]},{value}" if key in lowered else value
        now = datetime.now(UTC)
        host = lowered.get("host", self.url.split("//", 1)[1])
        event: dict[str, Any] = {
            "version": "2.0",
            "routeKey": route.route_key,
            "rawPath": raw_path,
            "rawQueryString": raw_query,
            "headers": lowered,
            "requestContext": {
                "accountId": ACCOUNT_ID,
                "apiId": self.api_id,
                "domainName": host,
                "domainPrefix": host.split(".", 1)[0],
                "http": {
                    "method": method,
                    "path": raw_path,
                    "protocol": "HTTP/1.1",
                    "sourceIp": source_ip,
                    "userAgent": lowered.get("user-agent", ""),
                },
                "requestId": base64.b32encode(os.urandom(10)).decode().rstrip("=")[:16],
                "routeKey": route.route_key,
                "stage": "$default",
                "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
                "timeEpoch": int(now.timestamp() * 1000),
            },
            "isBase64Encoded": False,
        }
        if cookies:
            event["cookies"] = cookies
        if raw_query:
            query: dict[str, list[str]] = {}
            for name, value in urllib.parse.parse_qsl(raw_query, keep_blank_values=True):
                query.setdefault(name, []).append(value)
            event["queryStringParameters"] = {name: ",".join(values) for name, values in query.items()}
        if path_params:
            event["pathParameters"] = path_params
        if body:
            content_type = lowered.get("content-type", "").lower()
            text = content_type.startswith(_TEXT_CONTENT_TYPES) or content_type.split(";")[0].endswith(
                "+json"
            )
            try:
                decoded = body.decode("utf-8") if text else None
            except UnicodeDecodeError:
                decoded = None
            if decoded is None:
                event["body"] = base64.b64encode(body).decode()
                event["isBase64Encoded"] = True
            else:
                event["body"] = decoded
        return event

    def handler_class(self) -> type[http.server.BaseHTTPRequestHandler]:
        stack = self

        class Handler(KeptAliveHandler):
            server_version = "LocalHttpApi/1.0"

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("http %s", format % args)

            def _handle(self) -> None:
                parsed = urllib.parse.urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                matched = stack.match_route(self.command, parsed.path)
                if matched is None:
                    self._reply(404, {"content-type": "application/json"}, [], b'{"message":"Not Found"}')
                    return
                route, params = matched
                event = stack.http_event(
                    route,
                    params,
                    self.command,
                    parsed.path,
                    parsed.query,
                    list(self.headers.items()),
                    body,
                    self.client_address[0],
                )
                try:
                    with stack._invoker.running_one():
                        result = stack._invoker.invoke(route.function, event)
                    status, headers, cookies, payload = http_response(result)
                except (Exception, InvocationKilled):
                    log.exception("%s failed on %s", route.function.logical_id, route.route_key)
                    status, headers, cookies = 500, {"content-type": "application/json"}, []
                    payload = b'{"message":"Internal Server Error"}'
                self._reply(status, headers, cookies, payload)

            def _reply(
                self, status: int, headers: dict[str, str], cookies: list[str], payload: bytes
            ) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() not in {"content-length", "connection", "transfer-encoding"}:
                        self.send_header(name, value)
                for cookie in cookies:
                    self.send_header("Set-Cookie", cookie)
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("apigw-requestid", uuid.uuid4().hex[:16])
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _handle

        return Handler


def http_response(result: Any) -> tuple[int, dict[str, str], list[str], bytes]:
    """Turn a handler's result into an HTTP response the way payload format 2.0 does."""
    if not (isinstance(result, dict) and "statusCode" in result):
        # Without a statusCode, API Gateway takes the result as a JSON body.
        body = result if isinstance(result, str) else json.dumps(result)
        return 200, {"content-type": "application/json"}, [], body.encode()
    headers = {str(k): str(v) for k, v in (result.get("headers") or {}).items()}
    for name, values in (result.get("multiValueHeaders") or {}).items():
        headers[str(name)] = ",".join(str(v) for v in values)
    cookies = [str(c) for c in result.get("cookies") or []]
    raw_body = result.get("body") or ""
    if result.get("isBase64Encoded"):
        payload = base64.b64decode(raw_body)
    else:
        payload = raw_body.encode() if isinstance(raw_body, str) else json.dumps(raw_body).encode()
    return int(result["statusCode"]), headers, cookies, payload
