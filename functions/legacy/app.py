"""HTTP API: the Mozilla Backpack's third-party APIs at their old paths (Displayer, issuer.js,
Backpack Connect), answered from what the migration stored."""

from __future__ import annotations

# First of all: it pauses the garbage collector for the rest of init (coldstart.py).
from backpack_migrate import coldstart  # isort: split

import contextlib
import json
import time
from collections.abc import Callable
from email.parser import BytesParser
from email.policy import HTTP
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.shared.cookies import Cookie, SameSite
from aws_lambda_powertools.utilities.typing import LambdaContext

from backpack_migrate import connect, displayer, issuer_api
from backpack_migrate.config import Settings
from backpack_migrate.legacy_http import FormatError, Reply, json_reply, record_call, with_jsonp
from backpack_migrate.links import origin_of
from backpack_migrate.models import build_now
from backpack_migrate.observability import logger, metrics, tracer
from backpack_migrate.services import Services, get_services

# What every job reads is built at init; the other models build on first use (models.py).
build_now(Settings)


app = APIGatewayHttpResolver()
SESSION_COOKIE = "bm_session"  # the learner's session, set by the learner pages on this host


def _svc() -> Services:
    return get_services()


def _base() -> str:
    settings = _svc().settings
    base = settings.legacy_base_url or settings.public_base_url
    return (base or f"https://{app.current_event.request_context.domain_name}").rstrip("/")


def _header(name: str) -> str | None:
    value = app.current_event.headers.get(name)
    return value if isinstance(value, str) else None


def _query(name: str) -> str | None:
    return (app.current_event.query_string_parameters or {}).get(name)


def _session_id() -> str | None:
    jar: SimpleCookie = SimpleCookie()
    for cookie in app.current_event.cookies or []:
        # A malformed cookie is no session.
        with contextlib.suppress(Exception):
            jar.load(cookie)
    morsel = jar.get(SESSION_COOKIE)
    return morsel.value if morsel else None


def _form() -> dict[str, list[str]]:
    """Fields of a urlencoded, JSON or multipart body (the Backpack took all three)."""
    content_type = (_header("content-type") or "").lower()
    body = app.current_event.decoded_body or ""
    if content_type.startswith("application/json"):
        try:
            value = json.loads(body)
        except ValueError:
            return {}
        if not isinstance(value, dict):
            return {}
        return {k: (v if isinstance(v, list) else [v]) for k, v in value.items()}
    if content_type.startswith("multipart/form-data"):
        raw = body.encode("utf-8", "surrogateescape")
        message = BytesParser(policy=HTTP).parsebytes(
            f"Content-Type: {_header('content-type')}\r\n\r\n".encode() + raw
        )
        fields: dict[str, list[str]] = {}
        for part in message.iter_parts() if message.is_multipart() else []:
            name = part.get_param("name", header="content-disposition")
            if isinstance(name, str):
                payload = part.get_payload(decode=True)
                text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
                fields.setdefault(name, []).append(text)
        return fields
    return parse_qs(body, keep_blank_values=True)


def _first(form: dict[str, list[str]], name: str) -> Any:
    values = form.get(name)
    return values[0] if values else None


def _respond(api: str, reply: Reply, started: float, client: str | None = None) -> Response:
    record_call(api, app.current_event.route_key, client, reply, started)
    cookies = []
    if reply.session_id:
        cookies.append(
            Cookie(
                name=SESSION_COOKIE,
                value=reply.session_id,
                path="/",
                http_only=True,
                same_site=SameSite.LAX_MODE,
            )
        )
    headers = reply.all_headers
    return Response(
        status_code=reply.status,
        content_type=reply.content_type or None,
        body=reply.body,
        headers=headers,
        cookies=cookies,
    )


def _client() -> str | None:
    return origin_of(_header("origin")) or origin_of(_header("referer"))


# -- Displayer API -----------------------------------------------------------------------------
def _displayer(build: Callable[[], Reply], *, cors: bool, jsonp: bool) -> Response:
    started = time.monotonic()
    path = app.current_event.path
    try:
        displayer.check_format(path, _header("accept"))
        reply = build()
    except FormatError:
        reply = displayer.format_error()
    if jsonp:
        reply = with_jsonp(reply, _query("callback"))
    if cors:
        reply.headers["Access-Control-Allow-Origin"] = "*"
    return _respond("displayer", reply, started, _client())


@app.post("/displayer/convert/email")
def convert_email() -> Response:
    # No CORS and no JSONP here, as in the Backpack: an address must not be looked up from a page.
    started = time.monotonic()
    email = _first(_form(), "email")
    reply = displayer.convert_email(_svc(), email if isinstance(email, str) else None)
    return _respond("displayer", reply, started, _client())


@app.get("/displayer/<user_id>/groups")
@app.get("/displayer/<user_id>/groups.json")
@app.get("/displayer/<user_id>/groups.jsonp")
def groups(user_id: str) -> Response:
    return _displayer(lambda: displayer.groups(_svc(), user_id), cors=True, jsonp=True)


@app.get("/displayer/<user_id>/group/<group_id>")
def group(user_id: str, group_id: str) -> Response:
    return _displayer(lambda: displayer.group(_svc(), user_id, group_id, _base()), cors=True, jsonp=True)


@app.get("/images/badge/<file_name>")
def badge_image(file_name: str) -> Response:
    started = time.monotonic()
    return _respond("images", displayer.badge_image(_svc(), file_name), started, _client())


# -- Issuer API --------------------------------------------------------------------------------
@app.get("/issuer.js")
def issuer_js() -> Response:
    return _respond("issuer", issuer_api.issuer_script(), time.monotonic(), _client())


@app.get("/issuer/frame")
def issuer_frame() -> Response:
    return _respond("issuer", issuer_api.frame(), time.monotonic(), _client())


def _own_origin() -> str | None:
    return origin_of(_base())


def _same_site() -> bool:
    """A form or call that must come from this service's own pages."""
    origin, fetch_site = _header("origin"), _header("sec-fetch-site")
    if connect.same_site_post(origin, fetch_site, _own_origin()):
        return True
    logger.warning("cross-site post refused", extra={"origin": origin, "sec_fetch_site": fetch_site})
    return False


@app.post("/issuer/verify")
def issuer_verify() -> Response:
    started = time.monotonic()
    # Only the frame (this service's own page) may ask: no other site makes us fetch for it.
    if not _same_site():
        return _respond("issuer", json_reply(403, {"error": "cross-site request"}), started, _client())
    try:
        body = json.loads(app.current_event.decoded_body or "{}")
    except ValueError:
        body = None
    request = issuer_api.new_request(
        _svc(),
        body.get("assertions") if isinstance(body, dict) else None,
        origin_of(body.get("origin"))
        if isinstance(body, dict) and isinstance(body.get("origin"), str)
        else None,
    )
    reply = (
        json_reply(400, {"error": "expected 1 to 20 assertions"})
        if request is None
        else json_reply(200, request)
    )
    return _respond("issuer", reply, started, _client())


@app.get("/issuer/requests/<request_id>")
def issuer_request(request_id: str) -> Response:
    started = time.monotonic()
    return _respond(
        "issuer", issuer_api.request_result(_svc(), request_id, _query("key")), started, _client()
    )


@app.get("/issuer/consent/<request_id>")
def issuer_consent(request_id: str) -> Response:
    started = time.monotonic()
    return _respond("issuer", issuer_api.consent_page(_svc(), request_id, _session_id()), started, _client())


@app.post("/issuer/consent/<request_id>")
def issuer_consent_decision(request_id: str) -> Response:
    started = time.monotonic()
    if not _same_site():
        return _respond("issuer", json_reply(403, {"error": "cross-site request"}), started, _client())
    form = {k: v[0] for k, v in _form().items() if v}
    reply = issuer_api.consent_decision(_svc(), request_id, _session_id(), form)
    return _respond("issuer", reply, started, _client())


@app.post("/issuer/frameless")
def issuer_frameless() -> Response:
    # Cross-site by design (the issuer's page posts it): nothing happens before the learner
    # consents on the page this leads to.
    started = time.monotonic()
    client = _client()
    request = issuer_api.new_request(_svc(), _form().get("assertions"), client)
    if request is None:
        reply = Reply(400, "expected 1 to 20 assertions", content_type="text/plain; charset=utf-8")
    else:
        reply = Reply(303, "", content_type="text/plain", outcome="to_consent")
        reply.headers["Location"] = f"/issuer/consent/{request['request']}"
    return _respond("issuer", reply, started, client)


# -- Backpack Connect --------------------------------------------------------------------------
@app.get("/access")
def access() -> Response:
    started = time.monotonic()
    checked = connect.check_access_request(_query("callback"), _query("scope"))
    client = checked.origin if isinstance(checked, connect.AccessRequest) else _client()
    reply = checked if isinstance(checked, Reply) else connect.access_page(_svc(), checked, _session_id())
    return _respond("connect", reply, started, client)


@app.post("/access")
def access_decision() -> Response:
    started = time.monotonic()
    if not _same_site():
        return _respond("connect", json_reply(403, {"error": "cross-site request"}), started, _client())
    form = {k: v[0] for k, v in _form().items() if v}
    reply = connect.access_decision(_svc(), _session_id(), form, f"{_base()}/api")
    return _respond("connect", reply, started, _client())


@app.post("/api/token")
def api_token() -> Response:
    started = time.monotonic()
    form = _form()
    grant_type, refresh_token = _first(form, "grant_type"), _first(form, "refresh_token")
    reply = connect.refresh(
        _svc(),
        grant_type if isinstance(grant_type, str) else None,
        refresh_token if isinstance(refresh_token, str) else None,
    )
    return _respond("connect", connect.cors(reply, _header("origin")), started, _client())


def _authenticated(permission: str | None, then: Callable[[connect.Caller], Reply]) -> Response:
    started = time.monotonic()
    origin = _header("origin")
    caller = connect.authenticate(_svc(), _header("authorization"), origin, permission)
    reply = caller if isinstance(caller, Reply) else then(caller)
    client = caller.grant.origin if isinstance(caller, connect.Caller) else _client()
    return _respond("connect", connect.cors(reply, origin), started, client)


@app.post("/api/issue")
def api_issue() -> Response:
    badge = _first(_form(), "badge")
    return _authenticated("issue", lambda caller: connect.api_issue(_svc(), caller, badge))


@app.get("/api/identity")
def api_identity() -> Response:
    return _authenticated(None, lambda caller: connect.identity(_svc(), caller))


@app.route("/api/issue", method="OPTIONS")
@app.route("/api/identity", method="OPTIONS")
@app.route("/api/token", method="OPTIONS")
def api_preflight() -> Response:
    return _respond("connect", connect.preflight(_header("origin")), time.monotonic(), _client())


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    _svc().register_context(context)  # an idempotent call's record expires with this invocation
    return app.resolve(event, context)


coldstart.finished()
