"""Backpack Connect: grants carried over from the Backpack, new ones after the learner's consent,
token refresh, and ``/api/issue`` and ``/api/identity`` answered as the Backpack answered them.

Tokens are never stored: a grant holds their SHA-256 digests, found through an index and then
compared again in constant time. Each grant is bound to the origin it was given to.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from html import escape
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .domain import GrantRecord
from .legacy_http import PAGE_CSP, Reply, json_reply, text_reply, token_digest
from .legacy_issue import issue, primary_address
from .legacy_pages import page_layout
from .links import new_secret_token, origin_of, tokens_match
from .pages import message_page
from .services import Services

ACCESS_TTL_MS = 3600 * 1000
PERMISSIONS = frozenset({"issue"})
REQUEST_TTL = 15 * 60
# The Backpack's tokens: base64 of 24 random bytes, "_", Date.now() in base 32.
_TOKEN = re.compile(r"[A-Za-z0-9+/]{32}_([0-9a-v]{8,10})")
_EARLIEST_MS = 1_293_840_000_000  # 2011: the Backpack issued no token before
_BACKPACK_REALM = 'Bearer realm="openbadges"'


def new_token(now_ms: int | None = None) -> str:
    stamp = now_ms if now_ms is not None else int(time.time() * 1000)
    return base64.b64encode(os.urandom(24)).decode() + "_" + _base32(stamp)


def _base32(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuv"
    out = ""
    while True:
        number, rest = divmod(number, 32)
        out = digits[rest] + out
        if number == 0:
            return out


def plausible_token(token: str) -> bool:
    """The shape of a Backpack token, with a time that has passed: checked before any lookup."""
    match = _TOKEN.fullmatch(token)
    if match is None:
        return False
    issued = int(match.group(1), 32)
    return _EARLIEST_MS <= issued <= time.time() * 1000 + 60_000


class _NegativeCache:
    """Digests of tokens just found unknown, so a client repeating one costs no lookup."""

    def __init__(self, size: int = 4096, ttl: float = 60.0) -> None:
        self._items: OrderedDict[str, float] = OrderedDict()
        self._size = size
        self._ttl = ttl
        self._lock = threading.Lock()

    def __contains__(self, digest: str) -> bool:
        with self._lock:
            until = self._items.get(digest)
            if until is None:
                return False
            if until < time.monotonic():
                del self._items[digest]
                return False
            return True

    def add(self, digest: str) -> None:
        with self._lock:
            self._items[digest] = time.monotonic() + self._ttl
            self._items.move_to_end(digest)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


UNKNOWN_TOKENS = _NegativeCache()


def _unknown_token() -> Reply:
    reply = text_reply(
        401, "Unauthorized", **{"WWW-Authenticate": 'Bearer realm="Users", error="invalid_token"'}
    )
    reply.outcome = "unknown_token"
    return reply


def _unauthorized(message: str, outcome: str) -> Reply:
    reply = json_reply(
        401, {"status": "unauthorized", "message": message}, **{"WWW-Authenticate": _BACKPACK_REALM}
    )
    reply.outcome = outcome
    return reply


def cors(reply: Reply, origin: str | None) -> Reply:
    """Bearer tokens, no cookies: any site may call, the grant's origin check decides."""
    if origin:
        reply.headers.update({"Access-Control-Allow-Origin": origin, "Vary": "Origin"})
    return reply


def preflight(origin: str | None) -> Reply:
    reply = Reply(204, "", content_type="text/plain", outcome="preflight")
    reply.headers.update(
        {
            "Access-Control-Allow-Methods": "GET, POST",
            "Access-Control-Allow-Headers": "Authorization, Content-Type",
            "Access-Control-Max-Age": "600",
        }
    )
    return cors(reply, origin)


def _lookup(svc: Services, token: str, kind: str) -> GrantRecord | None:
    if not plausible_token(token):
        return None
    digest = token_digest(token)
    if digest in UNKNOWN_TOKENS:
        return None
    find = svc.store.grant_for_access_digest if kind == "access" else svc.store.grant_for_refresh_digest
    grant = find(digest)
    stored = (
        None
        if grant is None
        else (grant.access_token_sha256 if kind == "access" else grant.refresh_token_sha256)
    )
    if grant is None or stored is None or not hmac.compare_digest(stored, digest):
        UNKNOWN_TOKENS.add(digest)
        return None
    return grant


def issued_ms(access_time: int) -> int:
    """When an access token was issued, in ms. The Backpack's column is a 32-bit int, so its
    rows hold seconds; a value at the int's ceiling is a clamped time, taken as long past."""
    if access_time == 2**31 - 1:
        return 0
    return access_time * 1000 if access_time < 10**11 else access_time


@dataclass
class Caller:
    grant: GrantRecord


def authenticate(
    svc: Services, authorization: str | None, origin: str | None, permission: str | None
) -> Caller | Reply:
    """The grant behind ``Authorization: Bearer <base64(access token)>``, or the 401 to answer."""
    scheme, _, value = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return _unknown_token()
    try:
        token = base64.b64decode(value.strip(), validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return _unknown_token()
    grant = _lookup(svc, token, "access")
    if grant is None:
        return _unknown_token()
    if time.time() * 1000 - issued_ms(grant.access_time_ms) > ACCESS_TTL_MS:
        return _unauthorized("token expired", "expired")
    # Browsers always name the calling page's origin; a server-side client names none.
    given = origin_of(origin) if origin else grant.origin
    if given != origin_of(grant.origin):
        return _unauthorized("invalid origin", "wrong_origin")
    if permission and permission not in grant.permissions:
        return _unauthorized("insufficient permissions", "wrong_scope")
    return Caller(grant)


# -- /api/token --------------------------------------------------------------------------------
def refresh(svc: Services, grant_type: str | None, refresh_token: str | None) -> Reply:
    if grant_type != "refresh_token":
        return text_reply(400, "invalid grant_type")
    grant = _lookup(svc, refresh_token or "", "refresh")
    if grant is None:
        return text_reply(400, "invalid refresh_token")
    access, refreshed = new_token(), new_token()
    rotated = grant.model_copy(
        update={
            "access_token_sha256": token_digest(access),
            "refresh_token_sha256": token_digest(refreshed),
            "access_time_ms": int(time.time() * 1000),
        }
    )
    if not svc.store.rotate_grant(grant, rotated):
        # Another refresh with the same token won: this one is spent.
        return text_reply(400, "invalid refresh_token")
    reply = json_reply(200, {"expires": 3600, "access_token": access, "refresh_token": refreshed})
    reply.outcome = "refreshed"
    return reply


# -- /api/issue and /api/identity ----------------------------------------------------------------
def api_issue(svc: Services, caller: Caller, badge: object) -> Reply:
    if not isinstance(badge, str) or not badge.strip():
        return json_reply(400, {"status": "invalid", "message": "missing `badge` parameter"})
    result = issue(svc, caller.grant.learner_id, badge, caller.grant.origin)
    if result.outcome in ("imported", "recorded"):
        reply = json_reply(201, {"exists": False, "badge": result.assertion})
    elif result.outcome == "exists":
        reply = Reply(304, "", content_type="")
    elif result.outcome == "not_theirs":
        reply = json_reply(403, {"status": "forbidden", "message": result.message})
    else:
        reply = json_reply(400, {"status": "invalid", "message": result.message})
    reply.outcome = result.outcome
    return reply


def identity(svc: Services, caller: Caller) -> Reply:
    learner = svc.store.get_learner(caller.grant.learner_id)
    if learner is None:
        return _unknown_token()
    salt = secrets.token_hex(8)
    digest = hashlib.sha256((primary_address(svc, learner) + salt).encode()).hexdigest()
    reply = json_reply(200, {"recipient": f"sha256${digest}", "salt": salt, "type": "email"})
    reply.outcome = "okay"
    return reply


# -- /access: a new grant after the learner's consent --------------------------------------------
@dataclass
class AccessRequest:
    callback: str
    origin: str
    permissions: list[str]


def check_access_request(callback: str | None, scope: str | None) -> AccessRequest | Reply:
    if not callback:
        return text_reply(400, "callback expected")
    if not scope:
        return text_reply(400, "scope expected")
    origin = origin_of(callback)
    parts = urlsplit(callback)
    if origin is None or parts.username or parts.password or parts.fragment:
        return text_reply(400, "invalid callback: must be an absolute http or https URL without credentials")
    asked = [p.strip() for p in scope.split(",") if p.strip()]
    wrong = [p for p in asked if p not in PERMISSIONS]
    if wrong or not asked:
        return text_reply(400, f"invalid scope: invalid permission(s): {','.join(wrong) or scope}")
    return AccessRequest(callback, origin, sorted(set(asked)))


def _learner_session(svc: Services, session_id: str | None) -> tuple[str, dict[str, str]] | None:
    session = svc.store.get_session(session_id) if session_id and len(session_id) <= 256 else None
    if session is None or "learner_id" not in session or session_id is None:
        return None
    return session_id, session


def _sign_in_first(svc: Services) -> Reply:
    body = message_page(
        "Open your badge link first",
        "To let a site add badges to your backpack, first open the link from the email about "
        "your Mozilla Backpack badges in this browser, then try again on that site.",
        svc.settings.support_email,
    )
    return Reply(
        403,
        body,
        content_type="text/html; charset=utf-8",
        outcome="no_session",
        headers={"Content-Security-Policy": PAGE_CSP},
    )


def access_page(svc: Services, request: AccessRequest, session_id: str | None) -> Reply:
    found = _learner_session(svc, session_id)
    if found is None:
        return _sign_in_first(svc)
    _, session = found
    request_id = new_secret_token()
    svc.store.put_session(
        f"access-{request_id}",
        {
            "learner_id": session["learner_id"],
            "callback": request.callback,
            "origin": request.origin,
            "permissions": ",".join(request.permissions),
        },
        REQUEST_TTL,
    )
    site = escape(request.origin)
    body = page_layout(
        "Allow this site?",
        f"<h1>Allow {site} to add badges to your backpack?</h1>"
        f"<p>{site} asks to send badges it issued you. They will go into your Badgr backpack. "
        "It cannot see or change your other badges.</p>"
        "<form method='post' action='/access'>"
        f"<input type='hidden' name='request' value='{escape(request_id)}'>"
        f"<input type='hidden' name='csrf' value='{escape(session['csrf'])}'>"
        "<button type='submit' name='decision' value='allow'>Allow</button> "
        "<button type='submit' name='decision' value='deny' class='secondary'>Deny</button>"
        "</form>",
    )
    # The answer is a redirect to the site: a form may go there, and nowhere else.
    return Reply(
        200,
        body,
        content_type="text/html; charset=utf-8",
        outcome="consent_page",
        headers={"Content-Security-Policy": f"{PAGE_CSP} {request.origin}"},
    )


def _with_query(url: str, params: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


def same_site_post(origin: str | None, fetch_site: str | None, own_origin: str | None) -> bool:
    """A consent form must be posted by our own page, never by another site.

    Browsers name the initiator in ``Sec-Fetch-Site``; where a browser sends none, the
    ``Origin`` header must be ours (``null``, as a sandboxed frame sends, is not).
    """
    if fetch_site:
        return fetch_site.lower() == "same-origin"
    return not origin or origin_of(origin) == own_origin


def access_decision(
    svc: Services,
    session_id: str | None,
    form: dict[str, str],
    api_root: str,
) -> Reply:
    found = _learner_session(svc, session_id)
    request_id = form.get("request", "")
    pending = svc.store.get_session(f"access-{request_id}") if 0 < len(request_id) <= 128 else None
    if (
        found is None
        or pending is None
        or pending.get("learner_id") != found[1]["learner_id"]
        or not tokens_match(found[1].get("csrf"), form.get("csrf"))
    ):
        body = message_page(
            "Please try again",
            "This form expired or did not come from this service.",
            svc.settings.support_email,
        )
        return Reply(403, body, content_type="text/html; charset=utf-8", outcome="bad_form")
    svc.store.put_session(f"access-{request_id}", {}, -1)  # one answer per request
    # The callback is the one checked and stored when the site asked, never one from this form.
    callback = pending["callback"]
    if form.get("decision") != "allow":
        reply = Reply(303, "", content_type="text/plain", outcome="denied")
        reply.headers["Location"] = _with_query(callback, {"error": "access_denied"})
        return reply
    learner = svc.store.get_learner(found[1]["learner_id"])
    access, refresh_token = new_token(), new_token()
    grant = GrantRecord(
        grant_id=secrets.token_hex(16),
        learner_id=found[1]["learner_id"],
        origin=pending["origin"],
        permissions=pending["permissions"].split(","),
        access_token_sha256=token_digest(access),
        refresh_token_sha256=token_digest(refresh_token),
        access_time_ms=int(time.time() * 1000),
        export_id=learner.export_id if learner else None,
    )
    svc.store.put_grants_if_absent([grant])
    reply = Reply(303, "", content_type="text/plain", outcome="granted")
    reply.headers["Location"] = _with_query(
        callback,
        {"access_token": access, "refresh_token": refresh_token, "expires": "3600", "api_root": api_root},
    )
    return reply
