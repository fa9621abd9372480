"""What happens when a learner follows their link: the pages, the Badgr connection, the status.

Sessions are server-side (a random id in an HttpOnly cookie); each holds the learner it belongs
to, a CSRF token for the form, and the OAuth ``state`` and PKCE verifier of a pending connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .export import ExportError, read_member
from .group_pages import groups_after, groups_before
from .intake import open_export
from .links import LinkClaims, LinkError, new_secret_token, tokens_match, verify_link
from .migration import request_migration, store_tokens
from .observability import logger
from .pages import landing_page, message_page, status_page
from .services import Services

SESSION_COOKIE = "bm_session"
SESSION_TTL = 2 * 3600


class PortalError(Exception):
    """A request the learner cannot go on with: ``status`` is the HTTP status of the answer page."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message


@dataclass
class Page:
    status: int
    body: str | bytes
    content_type: str = "text/html; charset=utf-8"
    location: str | None = None
    session_id: str | None = None  # set the session cookie to this


def _claims(svc: Services, token: str) -> LinkClaims:
    try:
        return verify_link(svc.link_secret(), token, other_secrets=svc.other_link_secrets)
    except LinkError as error:
        status = 410 if error.code == "LINK_EXPIRED" else 403
        raise PortalError(status, "This link cannot be used", error.message) from error


def _session(svc: Services, session_id: str | None, learner_id: str) -> tuple[str, dict[str, str], bool]:
    """The learner's session, or a new one when there is none or it belongs to someone else."""
    if session_id:
        data = svc.store.get_session(session_id)
        if data is not None and data.get("learner_id") == learner_id:
            return session_id, data, False
    data = {"learner_id": learner_id, "csrf": new_secret_token()}
    new_id = new_secret_token()
    svc.store.put_session(new_id, data, SESSION_TTL)
    return new_id, data, True


def landing(svc: Services, token: str, session_id: str | None) -> Page:
    claims = _claims(svc, token)
    learner = svc.store.get_learner(claims.learner_id)
    if learner is None:
        raise PortalError(404, "Nothing here yet", "We have no badges on record for this link.")
    sid, session, created = _session(svc, session_id, claims.learner_id)
    if session.get("link") != token:
        session = {**session, "link": token}
        svc.store.put_session(sid, session, SESSION_TTL)
        created = True
    badges = svc.store.list_badges(claims.learner_id)
    groups = svc.store.list_groups(claims.learner_id) if learner.backpack_user_id is not None else []
    groups_html = groups_before(groups, badges)
    body = landing_page(
        token,
        session["csrf"],
        badges,
        learner.migration_requested_at is not None,
        groups_html,
    )
    return Page(200, body, session_id=sid if created else None)


def connect(svc: Services, token: str, session_id: str | None, csrf: str | None, redirect_uri: str) -> Page:
    claims = _claims(svc, token)
    session = svc.store.get_session(session_id) if session_id else None
    if (
        session is None
        or session.get("learner_id") != claims.learner_id
        or not tokens_match(session.get("csrf"), csrf)
    ):
        raise PortalError(
            403,
            "Please try again",
            "This form expired or did not come from your badge page. Open your link again.",
        )
    from .badgr import new_pkce_pair

    verifier, challenge = new_pkce_pair()
    state = new_secret_token()
    assert session_id is not None
    svc.store.put_session(
        session_id, {**session, "state": state, "pkce": verifier, "link": token}, SESSION_TTL
    )
    url = svc.badgr.authorize_url(
        svc.settings.badgr_authorize_url,
        redirect_uri=redirect_uri,
        state=state,
        code_challenge=challenge,
    )
    return Page(303, "", location=url)


def callback(svc: Services, session_id: str | None, params: dict[str, str], redirect_uri: str) -> Page:
    session = svc.store.get_session(session_id) if session_id else None
    if session is None or "state" not in session:
        raise PortalError(
            400,
            "Please start again",
            "We could not match this answer from Badgr to your visit. Open your link again.",
        )
    if not tokens_match(session.get("state"), params.get("state")):
        raise PortalError(403, "Please start again", "This answer from Badgr was not meant for this visit.")
    if "code" not in params:
        raise PortalError(
            400,
            "Badgr was not connected",
            "Badgr did not give us permission, so no badge was moved. You can try again from your link.",
        )
    from .badgr import BadgrError

    try:
        tokens = svc.badgr.exchange_code(params["code"], session["pkce"], redirect_uri)
    except BadgrError as error:
        logger.warning("code exchange failed", extra={"error": type(error).__name__})
        raise PortalError(
            502,
            "Badgr was not connected",
            "Badgr did not confirm the connection. Please try again from your link.",
        ) from error
    if not tokens.has_scope("rw:backpack"):
        raise PortalError(
            400,
            "Badgr was not connected",
            "Badgr did not allow us to add badges to your backpack, so no badge was moved. "
            "You can try again from your link.",
        )
    learner_id = session["learner_id"]
    store_tokens(svc, learner_id, tokens)
    assert session_id is not None
    remaining = {k: v for k, v in session.items() if k not in ("state", "pkce")}
    svc.store.put_session(session_id, remaining, SESSION_TTL)
    request_migration(svc, learner_id)
    return Page(303, "", location=f"/l/{session['link']}/status")


def status(svc: Services, token: str) -> Page:
    claims = _claims(svc, token)
    badges = svc.store.list_badges(claims.learner_id)
    groups_html = groups_after(svc.store.list_groups(claims.learner_id), badges)
    return Page(200, status_page(token, badges, groups_html))


def status_json(svc: Services, token: str) -> dict[str, Any]:
    claims = _claims(svc, token)
    badges = svc.store.list_badges(claims.learner_id)
    return {
        "badges": [
            {
                "id": b.badge_id,
                "name": b.verdict.name if b.verdict else None,
                "state": b.state.value,
                "reason": b.problem.message if b.problem else None,
                "verdict": {"valid": b.verdict.valid, "errors": [e.model_dump() for e in b.verdict.errors]}
                if b.verdict
                else None,
                "badgr": b.badgr.model_dump() if b.badgr else None,
            }
            for b in badges
        ]
    }


def badge_image(svc: Services, token: str, badge_id: str) -> Page:
    claims = _claims(svc, token)
    badge = svc.store.get_badge(claims.learner_id, badge_id)
    if badge is None or badge.member is None:
        raise PortalError(404, "No image", "This badge has no image.")
    export = svc.store.get_export(badge.export_id)
    if export is None:
        raise PortalError(404, "No image", "This badge has no image.")
    try:
        data = read_member(open_export(svc, export), badge.member)
    except ExportError as error:
        raise PortalError(404, "No image", "This badge's image is no longer kept.") from error
    media_type = (
        badge.media_type if badge.media_type in ("image/png", "image/svg+xml") else "application/octet-stream"
    )
    return Page(200, data, content_type=media_type)


def error_page(error: PortalError) -> Page:
    return Page(error.status, message_page(error.title, error.message))
