"""The Backpack's Issuer API: ``issuer.js``, the modal frame, and the frameless form post.

The frame runs inside the issuer's page, where browsers do not send this service's session
cookie (it is SameSite=Lax, and third-party cookies are going away). So the frame only shows
the badges with their verdicts; the learner's consent is given in a window of this service's
own (opened from the frame, or reached by the frameless post), where the session says who the
learner is. The frame then reads the outcome with the request's own key and answers the
issuer's page over the jschannel protocol the Backpack spoke.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from .legacy_http import PAGE_CSP, Reply, json_reply
from .legacy_issue import connected, issue
from .legacy_pages import CLOSE_CSP, CLOSE_SCRIPT, FRAME_CSP, FRAME_HTML, ISSUER_JS, page_layout
from .links import new_secret_token, tokens_match
from .pages import message_page
from .services import Services

MAX_ASSERTIONS = 20
REQUEST_TTL = 30 * 60
# The outcome of one badge, as the Backpack's frame named it.
REASONS = {
    "exists": "EXISTS",
    "inaccessible": "INACCESSIBLE",
    "invalid": "INVALID",
    "not_theirs": "INVALID",
}


def issuer_script() -> Reply:
    return Reply(
        200,
        ISSUER_JS,
        content_type="application/javascript; charset=utf-8",
        headers={"Cache-Control": "public, max-age=300"},
        outcome="script",
    )


def frame() -> Reply:
    # The one page meant to be framed: no X-Frame-Options, and frame-ancestors allows any site.
    return Reply(
        200,
        FRAME_HTML,
        content_type="text/html; charset=utf-8",
        headers={"X-Frame-Options": "", "Content-Security-Policy": FRAME_CSP},
        outcome="frame",
    )


def _html(status: int, body: str, outcome: str, csp: str = PAGE_CSP) -> Reply:
    return Reply(
        status,
        body,
        content_type="text/html; charset=utf-8",
        headers={"Content-Security-Policy": csp},
        outcome=outcome,
    )


def _assertion_list(values: Any) -> list[str] | None:
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list) or not 0 < len(values) <= MAX_ASSERTIONS:
        return None
    return [v for v in values if isinstance(v, str)] if all(isinstance(v, str) for v in values) else None


def _describe(svc: Services, assertion: str) -> dict[str, Any]:
    """What the learner sees of a badge before consenting: its name, issuer and verdict."""
    verdict = svc.verifier.verify(assertion.strip()) if assertion.strip() else None
    if verdict is None:
        return {
            "assertion": assertion,
            "ok": False,
            "name": None,
            "issuer": None,
            "verdict": "This is no badge.",
        }
    # The learner is not known inside the frame: the recipient is checked when they consent.
    errors = [e for e in verdict.errors if e.code not in ("RECIPIENT_NOT_CHECKED", "RECIPIENT_MISMATCH")]
    badge = verdict.badge
    return {
        "assertion": assertion,
        "ok": not errors,
        "name": badge.badge_class.name if badge else None,
        "issuer": badge.issuer.name if badge else None,
        "verdict": "This badge is valid." if not errors else errors[0].message,
    }


def new_request(svc: Services, assertions: Any, client_origin: str | None) -> dict[str, Any] | None:
    """Verify the badges an issuer's page hands over and keep them for the learner's consent."""
    items = _assertion_list(assertions)
    if items is None:
        return None
    badges = [_describe(svc, a) for a in items]
    request_id, key = new_secret_token(), new_secret_token()
    svc.store.put_session(
        f"issue-{request_id}",
        {"key": key, "origin": client_origin or "", "badges": json.dumps(badges)},
        REQUEST_TTL,
    )
    return {"request": request_id, "key": key, "badges": badges}


def _request(svc: Services, request_id: str) -> dict[str, str] | None:
    return svc.store.get_session(f"issue-{request_id}") if 0 < len(request_id) <= 128 else None


def request_result(svc: Services, request_id: str, key: str | None) -> Reply:
    pending = _request(svc, request_id)
    if pending is None or not tokens_match(pending.get("key"), key):
        return json_reply(404, {"done": False, "error": "unknown request"})
    if "result" not in pending:
        return json_reply(200, {"done": False})
    errors, successes = json.loads(pending["result"])
    return json_reply(200, {"done": True, "errors": errors, "successes": successes})


def _learner(svc: Services, session_id: str | None) -> tuple[str, dict[str, str]] | None:
    session = svc.store.get_session(session_id) if session_id and len(session_id) <= 256 else None
    if session is None or "learner_id" not in session or session_id is None:
        return None
    return session_id, session


def consent_page(svc: Services, request_id: str, session_id: str | None) -> Reply:
    pending = _request(svc, request_id)
    if pending is None:
        return _html(
            404,
            message_page(
                "Nothing to add",
                "This request has expired. Try again on the issuer's site.",
                svc.settings.support_email,
            ),
            "unknown_request",
        )
    if "result" in pending:
        return _html(
            200,
            message_page(
                "Done",
                "You have answered this request. You can close this window.",
                svc.settings.support_email,
            ),
            "answered",
            CLOSE_CSP,
        )
    found = _learner(svc, session_id)
    if found is None:
        return _html(
            403,
            message_page(
                "Open your badge link first",
                "To add badges to your backpack, first open the link from the email about your "
                "Mozilla Backpack badges in this browser, then try again on the issuer's site.",
                svc.settings.support_email,
            ),
            "no_session",
        )
    session = found[1]
    badges = json.loads(pending["badges"])
    site = escape(pending.get("origin") or "A site")
    items = "".join(
        f"<li class='badge'><strong>{escape(b['name'] or 'A badge')}</strong>"
        f"<div>{escape('Issued by ' + b['issuer']) if b['issuer'] else ''}</div>"
        f"<div class='{'ok' if b['ok'] else 'bad'}'>{escape(b['verdict'])}</div></li>"
        for b in badges
    )
    later = (
        ""
        if connected(svc, session["learner_id"])
        else "<p>Your Badgr account is not connected yet: the badges are kept, and move when you "
        "connect Badgr on the next page.</p>"
    )
    body = (
        f"<h1>Add these badges to your backpack?</h1><p>{site} offers you these badges.</p>"
        f"<ul class='badges'>{items}</ul>{later}"
        f"<form method='post' action='/issuer/consent/{escape(request_id)}'>"
        f"<input type='hidden' name='csrf' value='{escape(session['csrf'])}'>"
        "<button type='submit' name='decision' value='allow'>Add to my Badgr backpack</button>"
        "<button type='submit' name='decision' value='deny' class='secondary'>No, thanks</button></form>"
    )
    return _html(200, page_layout("Add these badges?", body), "consent_page")


def consent_decision(svc: Services, request_id: str, session_id: str | None, form: dict[str, str]) -> Reply:
    pending = _request(svc, request_id)
    found = _learner(svc, session_id)
    if pending is None or found is None or not tokens_match(found[1].get("csrf"), form.get("csrf")):
        return _html(
            403,
            message_page(
                "Please try again",
                "This form expired or did not come from this service.",
                svc.settings.support_email,
            ),
            "bad_form",
        )
    if "result" in pending:
        return _html(
            200,
            message_page(
                "Done",
                "You have answered this request. You can close this window.",
                svc.settings.support_email,
            ),
            "answered",
            CLOSE_CSP,
        )
    learner_id, session = found[1]["learner_id"], found[1]
    badges = json.loads(pending["badges"])
    errors: list[dict[str, str]] = []
    successes: list[str] = []
    if form.get("decision") != "allow":
        errors = [{"assertion": b["assertion"], "reason": "DENIED"} for b in badges]
    else:
        for badge in badges:
            outcome = issue(svc, learner_id, badge["assertion"], pending.get("origin") or None)
            if outcome.outcome in ("imported", "recorded"):
                successes.append(badge["assertion"])
            else:
                errors.append({"assertion": badge["assertion"], "reason": REASONS[outcome.outcome]})
    svc.store.put_session(
        f"issue-{request_id}", {**pending, "result": json.dumps([errors, successes])}, REQUEST_TTL
    )
    if successes and not connected(svc, learner_id) and session.get("link"):
        # Through the Badgr connection first: the badges are on record and move with it.
        reply = Reply(303, "", content_type="text/plain", outcome="to_connect")
        reply.headers["Location"] = f"/l/{session['link']}"
        return reply
    added = len(successes)
    text = (
        f"{added} badge{'s' if added != 1 else ''} added to your Badgr backpack. You can close this window."
        if added
        else "No badge was added. You can close this window."
    )
    body = page_layout("Done", f"<h1>Done</h1><p>{escape(text)}</p>", CLOSE_SCRIPT)
    return _html(200, body, "answered", CLOSE_CSP)
