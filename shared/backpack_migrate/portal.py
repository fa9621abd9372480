"""What happens when a learner follows their link: the pages, the Badgr connection, the status.

Sessions are server-side (a random id in an HttpOnly cookie); each holds the learner it belongs
to, a CSRF token for the form, and the OAuth ``state`` and PKCE verifier of a pending connection.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .addresses import learner_email
from .domain import LearnerRecord
from .group_pages import groups_after, groups_before
from .links import (
    LinkClaims,
    LinkError,
    from_another_site,
    new_secret_token,
    tokens_match,
    verify_link,
)
from .observability import logger
from .pages import (
    PageContext,
    erase_confirm_page,
    erased_page,
    landing_page,
    message_page,
    not_found_page,
    progress_of,
    readable_date,
    status_page,
    status_region,
)
from .services import Services

SESSION_COOKIE = "bm_session"
SESSION_TTL = 2 * 3600


class PortalError(Exception):
    """A request the learner cannot go on with: ``status`` is the HTTP status of the answer page."""

    def __init__(self, status: int, title: str, message: str, *, clear_session: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message
        self.clear_session = clear_session  # the browser's session cookie is unusable: drop it


@dataclass
class Page:
    status: int
    body: str | bytes
    content_type: str = "text/html; charset=utf-8"
    location: str | None = None
    session_id: str | None = None  # set the session cookie to this
    clear_session: bool = False  # remove the session cookie
    headers: dict[str, str] = field(default_factory=dict)


def _claims(svc: Services, token: str) -> LinkClaims:
    try:
        return verify_link(svc.link_secret(), token, other_secrets=svc.other_link_secrets)
    except LinkError as error:
        if error.code == "LINK_EXPIRED":
            message = f"{error.message} To receive a new one, write to {svc.settings.support_email}."
            raise PortalError(410, "This link cannot be used", message) from error
        raise PortalError(403, "This link cannot be used", error.message) from error


def _learner(svc: Services, claims: LinkClaims) -> LearnerRecord:
    from .learner_data import is_erased

    learner = svc.store.get_learner(claims.learner_id)
    if learner is not None:
        return learner
    if is_erased(svc, claims.learner_id):
        raise PortalError(
            410, "Your data has been erased", "You asked us to erase your data, so this link shows nothing."
        )
    raise PortalError(404, "Nothing here yet", "We have no badges on record for this link.")


def _context(svc: Services, token: str, claims: LinkClaims, learner: LearnerRecord | None) -> PageContext:
    """The page's context, with the learner's address decrypted for this page alone."""
    email = None
    if learner is not None:
        try:
            email = learner_email(svc, learner)
        except Exception:  # the page is still useful without it; the failure is on record
            logger.exception("could not read or decrypt the learner's address for their page")
    return PageContext(
        token=token,
        support_email=svc.settings.support_email,
        badgr_web_url=svc.settings.badgr_web_url,
        email=email,
        expires_at=claims.expires_at,
    )


def _export_gone_by(svc: Services, learner: LearnerRecord) -> str | None:
    """When S3 deletes the export's bytes at the latest: retention, then the link's lifetime."""
    export = svc.store.get_export(learner.export_id)
    if export is None or not export.created_at:
        return None
    try:
        created = calendar.timegm(time.strptime(export.created_at, "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return None
    days = svc.settings.export_retention_days + svc.settings.link_ttl_days
    return readable_date(int(created + days * 86400))


def _session(svc: Services, session_id: str | None, learner_id: str) -> tuple[str, dict[str, str], bool]:
    """The learner's session, or a new one when there is none or it belongs to someone else."""
    if session_id:
        data = svc.store.get_session(session_id)
        if data is not None and data.get("learner_id") == learner_id:
            return session_id, data, False
    data = {"learner_id": learner_id, "csrf": new_secret_token()}
    new_id = new_secret_token()
    svc.store.put_session(new_id, data, SESSION_TTL)
    svc.store.remember_session(learner_id, new_id, SESSION_TTL)
    return new_id, data, True


def landing(svc: Services, token: str, session_id: str | None) -> Page:
    claims = _claims(svc, token)
    learner = _learner(svc, claims)
    sid, session, created = _session(svc, session_id, claims.learner_id)
    if session.get("link") != token:
        session = {**session, "link": token}
        svc.store.put_session(sid, session, SESSION_TTL)
        created = True
    badges = svc.store.list_badges(claims.learner_id)
    groups = svc.store.list_groups(claims.learner_id) if learner.backpack_user_id is not None else []
    groups_html = groups_before(groups, badges)
    body = landing_page(
        _context(svc, token, claims, learner),
        session["csrf"],
        badges,
        learner.migration_requested_at is not None,
        groups_html,
    )
    return Page(200, body, session_id=sid if created else None)


def _form_session(
    svc: Services, claims: LinkClaims, session_id: str | None, csrf: str | None, consequence: str
) -> dict[str, str]:
    """The learner's session behind a form post, or a 403 when the form's CSRF token is not its own."""
    session = svc.store.get_session(session_id) if session_id else None
    if (
        session is None
        or session.get("learner_id") != claims.learner_id
        or not tokens_match(session.get("csrf"), csrf)
    ):
        raise PortalError(
            403,
            "Please try again",
            f"This form expired or did not come from your badge page{consequence}. Open your link again.",
        )
    return session


def connect(
    svc: Services,
    token: str,
    session_id: str | None,
    csrf: str | None,
    redirect_uri: str,
    *,
    origin: str | None = None,
    fetch_site: str | None = None,
    own_origins: Sequence[str] = (),
) -> Page:
    # Defence in depth beside the CSRF token: a form sent from another site is refused outright.
    if from_another_site(origin, fetch_site, own_origins):
        raise PortalError(
            403,
            "This form came from another website",
            "For your safety, Badgr can only be connected from your own badge page. "
            "Open the link from your email and press the button there.",
        )
    claims = _claims(svc, token)
    session = _form_session(svc, claims, session_id, csrf, "")
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
    verifier = session.get("pkce")
    if not verifier:
        # A session written before the connection started, or by another version of the service.
        raise PortalError(
            400,
            "Please start again",
            "We lost track of this connection to Badgr, so nothing was moved. "
            "Open the link from your email and connect Badgr again.",
        )
    from .badgr import BadgrError

    try:
        tokens = svc.badgr.exchange_code(params["code"], verifier, redirect_uri)
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
    from .migration import request_migration, store_tokens

    learner_id = session["learner_id"]
    stored = store_tokens(svc, learner_id, tokens)
    assert session_id is not None
    remaining = {k: v for k, v in session.items() if k not in ("state", "pkce")}
    svc.store.put_session(session_id, remaining, SESSION_TTL)
    request_migration(svc, learner_id, stored)
    return Page(303, "", location=f"/l/{session['link']}/status")


def status(svc: Services, token: str) -> Page:
    claims = _claims(svc, token)
    learner = _learner(svc, claims)
    ctx = _context(svc, token, claims, learner)
    badges = svc.store.list_badges(claims.learner_id)
    groups_html = groups_after(svc.store.list_groups(claims.learner_id), badges)
    return Page(200, status_page(ctx, badges, groups_html))


def status_json(svc: Services, token: str) -> dict[str, Any]:
    claims = _claims(svc, token)
    learner = _learner(svc, claims)
    badges = svc.store.list_badges(claims.learner_id)
    progress = progress_of(badges)
    return {
        "total": progress.total,
        "done": progress.done,
        "finished": progress.finished,
        "digest": progress.digest,
        # The page's changing part, rendered here so the page's script only swaps it in.
        "html": status_region(_context(svc, token, claims, learner), badges),
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
        ],
    }


def badge_image(svc: Services, token: str, badge_id: str | None) -> Page:
    """``badge_id`` is None when the path named no id we could have issued: never looked up."""
    claims = _claims(svc, token)
    badge = svc.store.get_badge(claims.learner_id, badge_id) if badge_id else None
    if badge is None or badge.member is None:
        raise PortalError(404, "No image", "This badge has no image.")
    export = svc.store.get_export(badge.export_id)
    if export is None:
        raise PortalError(404, "No image", "This badge has no image.")
    from .export import ExportError, open_export, read_member

    try:
        data = read_member(open_export(svc, export), badge.member)
    except ExportError as error:
        raise PortalError(404, "No image", "This badge's image is no longer kept.") from error
    media_type = (
        badge.media_type if badge.media_type in ("image/png", "image/svg+xml") else "application/octet-stream"
    )
    return Page(200, data, content_type=media_type)


def download(svc: Services, token: str) -> Page:
    """The learner's badges as a ZIP, built now from the export; nothing of it is kept here."""
    from .learner_data import build_download

    claims = _claims(svc, token)
    _learner(svc, claims)
    built = build_download(svc, claims.learner_id)
    if built.url is not None:
        return Page(303, "", location=built.url)
    assert built.data is not None
    return Page(
        200,
        built.data,
        content_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{built.file_name}"'},
    )


def erase_confirm(svc: Services, token: str, session_id: str | None) -> Page:
    claims = _claims(svc, token)
    learner = _learner(svc, claims)
    sid, session, created = _session(svc, session_id, claims.learner_id)
    body = erase_confirm_page(
        _context(svc, token, claims, learner),
        session["csrf"],
        len(svc.store.list_badges(claims.learner_id)),
        _export_gone_by(svc, learner),
    )
    return Page(200, body, session_id=sid if created else None)


def erase(svc: Services, token: str, session_id: str | None, csrf: str | None) -> Page:
    from .learner_data import erase_learner

    claims = _claims(svc, token)
    learner = _learner(svc, claims)
    _form_session(svc, claims, session_id, csrf, ", so nothing was erased")
    gone_by = _export_gone_by(svc, learner)
    erase_learner(svc, claims.learner_id, [session_id] if session_id else [])
    return Page(200, erased_page(svc.settings.support_email, gone_by))


def error_page(svc: Services, error: PortalError) -> Page:
    return Page(
        error.status,
        message_page(error.title, error.message, svc.settings.support_email),
        clear_session=error.clear_session,
    )


def not_found(svc: Services) -> Page:
    return Page(404, not_found_page(svc.settings.support_email))
