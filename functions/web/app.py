"""HTTP API: the learner's link, the Badgr connection, the status page, badge images, the
learner's download and erasure, and a page for every unknown path."""

from __future__ import annotations

# First of all: it pauses the garbage collector for the rest of init (coldstart.py).
from backpack_migrate import coldstart  # isort: split

import json
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.shared.cookies import Cookie, SameSite
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from backpack_migrate import portal
from backpack_migrate.config import Settings
from backpack_migrate.domain import BadgeRecord, LearnerRecord
from backpack_migrate.links import BadgeRef, BrowserSession
from backpack_migrate.models import build_now
from backpack_migrate.observability import logger, metrics, tracer
from backpack_migrate.pages import SCRIPT_HASH
from backpack_migrate.services import Services, get_services

# What every job reads is built at init; the other models build on first use (models.py).
build_now(Settings, LearnerRecord, BadgeRecord)


app = APIGatewayHttpResolver()

# The only script a page may run is the status page's own, by its hash; it may fetch only from
# this origin. Images (SVG included) must never run any.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        f"default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; script-src '{SCRIPT_HASH}'; "
        "connect-src 'self'; form-action 'self' https: http:"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
# A badge image opened on its own is a document of its own: an SVG may hold markup (a form in a
# foreignObject, say). `sandbox` gives it an opaque origin with no scripts and no forms.
IMAGE_POLICY = "default-src 'none'; style-src 'unsafe-inline'; sandbox"


def _svc() -> Services:
    return get_services()


def _session_id() -> str | None:
    """The session cookie, checked for shape before it is used as a key."""
    cookies = app.current_event.cookies or []
    jar: SimpleCookie = SimpleCookie()
    for cookie in cookies:
        jar.load(cookie)
    morsel = jar.get(portal.SESSION_COOKIE)
    try:
        return BrowserSession(session_id=morsel.value if morsel else None).session_id
    except ValidationError as error:
        raise portal.PortalError(
            400,
            "Please start again",
            "Your browser sent a visit we did not start. Open the link from your email again.",
            clear_session=True,
        ) from error


def _badge_id(raw: str) -> str | None:
    """The badge id of the path, None when it cannot be one of ours (the link is checked first)."""
    try:
        return BadgeRef(badge_id=raw).badge_id
    except ValidationError:
        return None


def _own_origins() -> list[str]:
    """Where our own pages are served from: the public URL, and the domain the request came to."""
    return [_svc().settings.public_base_url, f"https://{app.current_event.request_context.domain_name}"]


def _redirect_uri() -> str:
    """Our OAuth callback. The template cannot hand this function its own API's URL (a cycle),
    so without a configured public URL it is the domain the request came in on."""
    base = _svc().settings.public_base_url or f"https://{app.current_event.request_context.domain_name}"
    return f"{base.rstrip('/')}/oauth/callback"


def _respond(page: portal.Page, policy: str | None = None) -> Response:
    headers: dict[str, str] = {**SECURITY_HEADERS, **page.headers}
    if policy:
        headers["Content-Security-Policy"] = policy
    if page.location:
        headers["Location"] = page.location
    cookies = []
    if page.session_id:
        # Lax, so the cookie comes back on Badgr's redirect to the callback (a top-level GET).
        cookies.append(
            Cookie(
                name=portal.SESSION_COOKIE,
                value=page.session_id,
                path="/",
                http_only=True,
                # Only a plain-http local run (make local) goes without Secure.
                secure=not _svc().settings.public_base_url.startswith("http://"),
                same_site=SameSite.LAX_MODE,
                max_age=portal.SESSION_TTL,
            )
        )
    elif page.clear_session:
        cookies.append(
            Cookie(
                name=portal.SESSION_COOKIE,
                value="",
                path="/",
                http_only=True,
                secure=not _svc().settings.public_base_url.startswith("http://"),
                same_site=SameSite.LAX_MODE,
                max_age=0,
            )
        )
    return Response(
        status_code=page.status,
        content_type=page.content_type,
        body=page.body,
        headers=headers,
        cookies=cookies,
    )


@app.exception_handler(portal.PortalError)
def _portal_error(error: portal.PortalError) -> Response:
    return _respond(portal.error_page(_svc(), error))


@app.not_found
def _not_found(_: Exception) -> Response:
    # A browser gets a page it can read; an API client the JSON API Gateway would have sent.
    if "text/html" in (app.current_event.headers or {}).get("accept", ""):
        return _respond(portal.not_found(_svc()))
    return _respond(portal.Page(404, json.dumps({"message": "Not Found"}), content_type="application/json"))


def _form_field(name: str) -> str | None:
    form = parse_qs(app.current_event.decoded_body or "")
    return form.get(name, [None])[0]


@app.get("/l/<token>")
def landing(token: str) -> Response:
    return _respond(portal.landing(_svc(), token, _session_id()))


@app.post("/l/<token>/connect")
def connect(token: str) -> Response:
    headers = app.current_event.headers or {}
    return _respond(
        portal.connect(
            _svc(),
            token,
            _session_id(),
            _form_field("csrf"),
            _redirect_uri(),
            origin=headers.get("origin"),
            fetch_site=headers.get("sec-fetch-site"),
            own_origins=_own_origins(),
        )
    )


@app.get("/oauth/callback")
def oauth_callback() -> Response:
    params = {k: v for k, v in (app.current_event.query_string_parameters or {}).items()}
    return _respond(portal.callback(_svc(), _session_id(), params, _redirect_uri()))


@app.get("/l/<token>/status")
def status(token: str) -> Response:
    return _respond(portal.status(_svc(), token))


@app.get("/l/<token>/status.json")
def status_json(token: str) -> Response:
    body = json.dumps(portal.status_json(_svc(), token))
    return _respond(portal.Page(200, body, content_type="application/json"))


@app.get("/l/<token>/badges/<badge_id>/image")
def badge_image(token: str, badge_id: str) -> Response:
    page = portal.badge_image(_svc(), token, _badge_id(badge_id))
    return _respond(page, policy=IMAGE_POLICY if page.status == 200 else None)


@app.get("/l/<token>/download")
def download(token: str) -> Response:
    return _respond(portal.download(_svc(), token))


@app.get("/l/<token>/erase")
def erase_confirm(token: str) -> Response:
    return _respond(portal.erase_confirm(_svc(), token, _session_id()))


@app.post("/l/<token>/erase")
def erase(token: str) -> Response:
    return _respond(portal.erase(_svc(), token, _session_id(), _form_field("csrf")))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    _svc().register_context(context)  # an idempotent call's record expires with this invocation
    return app.resolve(event, context)


coldstart.finished()
