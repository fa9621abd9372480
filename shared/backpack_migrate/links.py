"""Signed, expiring links bound to one learner; browser sessions; CSRF and OAuth state."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import ConfigDict, StringConstraints

from .models import Model

LINK_VERSION = "v1"


class LinkError(Exception):
    """A link that cannot be trusted. ``code`` is stable; ``message`` is for the learner."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class LinkClaims:
    learner_id: str
    export_id: str
    expires_at: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, body: str) -> str:
    return _b64(hmac.new(secret, b"link:" + body.encode(), hashlib.sha256).digest())


def _signed_by(secret: bytes, body: str, signature: str) -> bool:
    return hmac.compare_digest(_mac(secret, body), signature)


def no_other_secrets() -> Iterable[bytes]:
    return ()


def sign_link(
    secret: bytes, learner_id: str, export_id: str, ttl_seconds: int, now: float | None = None
) -> str:
    expires_at = int((now if now is not None else time.time()) + ttl_seconds)
    body = _b64(f"{LINK_VERSION}|{learner_id}|{export_id}|{expires_at}".encode())
    return f"{body}.{_mac(secret, body)}"


def verify_link(
    secret: bytes,
    token: str,
    now: float | None = None,
    *,
    other_secrets: Callable[[], Iterable[bytes]] = no_other_secrets,
) -> LinkClaims:
    """The claims of a link signed with ``secret``, or with another key the link may hold.

    ``other_secrets`` (the key before the last rotation, say) is read only when ``secret`` does
    not match, and only as far as needed, so links emailed before a key rotation keep working
    until they expire at no cost to the others.
    """
    body, dot, signature = token.partition(".")
    if not dot or not body or not signature or len(token) > 512:
        raise LinkError(
            "LINK_MALFORMED", "This link is incomplete. Please open the link from your email again."
        )
    if not _signed_by(secret, body, signature) and not any(
        _signed_by(other, body, signature) for other in other_secrets()
    ):
        raise LinkError("LINK_FORGED", "This link is not valid. Please open the link from your email again.")
    try:
        version, learner_id, export_id, expires = _unb64(body).decode().split("|")
        expires_at = int(expires)
    except (ValueError, UnicodeDecodeError) as error:
        raise LinkError("LINK_MALFORMED", "This link is incomplete.") from error
    if version != LINK_VERSION:
        raise LinkError("LINK_MALFORMED", "This link is from an older version of the service.")
    if expires_at < (now if now is not None else time.time()):
        raise LinkError(
            "LINK_EXPIRED",
            "This link has expired.",
        )
    return LinkClaims(learner_id=learner_id, export_id=export_id, expires_at=expires_at)


def new_secret_token() -> str:
    return secrets.token_urlsafe(32)


def tokens_match(expected: str | None, given: str | None) -> bool:
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


# ------------------------------------------------------------------------------------------
# What a browser names in a request, checked at the edge before anything is looked up: a key
# past DynamoDB's limits (2048 bytes for a partition key, 1024 for a sort key) would make the
# lookup itself fail. Everything this service issues is far shorter and in these alphabets.

SESSION_ID_MAX = 128  # new_secret_token() gives 43 characters
BADGE_ID_MAX = 64  # badge ids are 24 hex digits

SessionId = Annotated[
    str, StringConstraints(min_length=1, max_length=SESSION_ID_MAX, pattern=r"^[A-Za-z0-9_-]+$")
]
BadgeId = Annotated[str, StringConstraints(min_length=1, max_length=BADGE_ID_MAX, pattern=r"^[0-9a-f]+$")]


class BrowserSession(Model):
    """The session cookie a browser sent, if any."""

    model_config = ConfigDict(frozen=True)

    session_id: SessionId | None = None


class BadgeRef(Model):
    """A badge named in a path."""

    model_config = ConfigDict(frozen=True)

    badge_id: BadgeId


def origin_of(value: str | None) -> str | None:
    """``scheme://host[:port]`` of a URL or Origin header, or None when it is not one."""
    if not value:
        return None
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    default = {"http": 80, "https": 443}[parts.scheme]
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


def from_another_site(origin: str | None, fetch_site: str | None, own: Iterable[str]) -> bool:
    """Whether a form POST says it was sent from a page of another site.

    A browser sends ``Sec-Fetch-Site`` on every request (``same-origin`` for our own form) and
    ``Origin`` on a POST. Our pages send no referrer, so a browser may write ``Origin: null`` for
    our own form: that value says nothing either way. A request with neither header (an old
    browser, a tool) is left to the CSRF token, which every form carries anyway.
    """
    site = (fetch_site or "").strip().lower()
    if site and site not in ("same-origin", "none"):
        return True
    given = (origin or "").strip()
    if not given or given.lower() == "null":
        return False
    ours = {o for o in (origin_of(u) for u in own) if o}
    return origin_of(given) not in ours
