"""A learner's backpack: ``POST /v2/backpack/import`` and ``/v2/backpack/assertions``.

An import is decided as the real server decides it: the validator's checks
(:mod:`.validator`), then the recipient against every email of the account, then Badgr's own
copy of the badge class image (fetched on every import, as the real server does before it
stores anything; a fetch that fails leaves the badge class with no image and the server
crashes, 500), then the duplicate check. Assertions are rendered with exactly the fields of
the real server's ``BackpackAssertionSerializerV2``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

from infra.local.badgr_sandbox.fetch import FetchError, LoopbackFetch
from infra.local.badgr_sandbox.http import (
    HTML,
    NOT_FOUND,
    NOT_FOUND_PAGE,
    BaseHandler,
    Route,
    bad_request,
    envelope,
)
from infra.local.badgr_sandbox.validator import (
    BadgeCheck,
    RejectionError,
    iso_datetime,
    recipient_identity,
    recipient_matches,
    recipient_mismatch,
)

ACCEPTANCES = ("Unaccepted", "Accepted", "Rejected")
_URL = re.compile(
    r"^(?:http|ftp)s?://(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"(?:[A-Za-z]{2,63}|localhost|\d{1,3}(?:\.\d{1,3}){3}|\[[0-9A-Fa-f:]+\])(?::\d{1,5})?(?:[/?#][^\s]*)?$"
)
_IMAGE_TYPES = {b"\x89PNG\r\n\x1a\n": ".png", b"<svg": ".svg", b"<?xml": ".svg"}


def entity_id() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode("ascii")


def stable_id(value: str) -> str:
    digest = hashlib.sha256(value.encode("utf-8")).digest()[:16]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def utc_z(value: Any) -> str | None:
    """A date as the real server renders it (``DateTimeWithUtcZAtEndField``)."""
    parsed = iso_datetime(value)
    if parsed is None:
        return value if isinstance(value, str) else None
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Account:
    username: str
    password: str
    emails: list[list[Any]]  # [email, verified]
    entity_id: str
    first_name: str = "Sandbox"
    last_name: str = "Learner"
    agreed_terms_version: int = 1


@dataclass
class StoredAssertion:
    entity_id: str
    username: str
    open_badge_id: str
    matched_email: str
    badge: dict[str, Any]
    issuer: dict[str, Any]
    assertion: dict[str, Any]
    created_at: float
    image_path: str  # where Badgr serves its own copy of the badge image
    hashed: bool = True
    salt: str = field(default_factory=lambda: secrets.token_hex(16))
    acceptance: str = "Accepted"


class BackpackState:
    """The learners' accounts and assertions, and the media Badgr hosts (part of the sandbox)."""

    _lock: threading.RLock
    _accounts: dict[str, Account]
    _assertions: list[StoredAssertion]
    _media: dict[str, tuple[bytes, str]]  # path -> (bytes, content type)
    _badge_images: dict[str, str]  # badge class id -> media path of its hosted image
    fetch: LoopbackFetch

    @property
    def _base(self) -> str:
        raise NotImplementedError

    def assertions_of(self, username: str) -> list[dict[str, Any]]:
        """Everything in a learner's backpack, accepted and pending."""
        with self._lock:
            return [self._render(item) for item in self._assertions if item.username == username]

    def _host_badge_image(self, badge: dict[str, Any]) -> str | None:
        """Badgr's own copy of the badge class image: its media path, or None when it has none."""
        image = badge.get("image")
        url = str(image.get("id") or "") if isinstance(image, dict) else str(image or "")
        badge_key = str(badge.get("id") or json.dumps(badge, sort_keys=True))
        data: bytes | None = None
        if url.startswith("data:"):
            header, _, payload = url.partition(",")
            try:
                data = base64.b64decode(payload) if header.endswith(";base64") else unquote_to_bytes(payload)
            except (binascii.Error, ValueError):
                data = None
        else:
            try:
                fetched = self.fetch.get(url, "*/*")
            except FetchError:
                return None  # requests raises on the real server: the import crashes whatever it held
            if fetched.status == 200:
                data = fetched.body
        with self._lock:
            if data is None:
                # A badge class stored by an earlier import keeps the image it got then.
                return self._badge_images.get(badge_key)
            suffix = next((ext for magic, ext in _IMAGE_TYPES.items() if data.lstrip().startswith(magic)), "")
            if not suffix and "." in urlsplit(url).path.rpartition("/")[2]:
                suffix = "." + urlsplit(url).path.rpartition(".")[2]
            name = hashlib.md5(url.encode(), usedforsecurity=False).hexdigest()  # the real server's file name
            path = f"/media/remote/badgeclass/cached/{name}{suffix}"
            content_type = {".png": "image/png", ".svg": "image/svg+xml"}.get(
                suffix, "application/octet-stream"
            )
            self._media[path] = (data, content_type)
            self._badge_images.setdefault(badge_key, path)
            return self._badge_images[badge_key]

    def _import(self, username: str, source: str, value: Any) -> tuple[int, dict[str, Any] | None]:
        """The answer to an import; ``None`` as the body means the real server crashes (500)."""
        try:
            assertion, badge, issuer = BadgeCheck(self.fetch).verify(source, value)
        except RejectionError as rejection:
            return 400, bad_request(validation_errors=rejection.errors)
        with self._lock:
            account = self._accounts[username]
            emails = [email for email, _ in account.emails]
            matched = next(
                (
                    email
                    for email, verified in account.emails
                    if verified and recipient_matches(assertion, email)
                ),
                None,
            ) or next((email for email in emails if recipient_matches(assertion, email)), None)
        if matched is None:
            return 400, bad_request(validation_errors=recipient_mismatch(assertion, emails))
        image_path = self._host_badge_image(badge)
        if image_path is None:
            return 500, None
        open_badge_id = str(assertion.get("id") or (value if source == "url" else "") or "")
        if not open_badge_id:
            open_badge_id = f"urn:sandbox:{stable_id(json.dumps(assertion, sort_keys=True))}"
        with self._lock:
            if any(a.username == username and a.open_badge_id == open_badge_id for a in self._assertions):
                duplicate = {
                    "name": "DUPLICATE_BADGE",
                    "description": "You already have this badge in your backpack",
                }
                return 400, bad_request(validation_errors=[duplicate])
            stored = StoredAssertion(
                entity_id=entity_id(),
                username=username,
                open_badge_id=open_badge_id,
                matched_email=matched,
                badge=badge,
                issuer=issuer,
                assertion=assertion,
                created_at=time.time(),
                image_path=image_path,
                hashed=_stored_hashed(assertion),
            )
            self._assertions.append(stored)
            return 201, envelope(True, "ok", result=[self._render(stored)])

    def _is_pending(self, item: StoredAssertion) -> bool:
        account = self._accounts.get(item.username)
        if account is None:
            return True
        return not any(email.lower() == item.matched_email.lower() and ok for email, ok in account.emails)

    def _render(self, item: StoredAssertion) -> dict[str, Any]:
        badge_id = str(item.badge.get("id") or json.dumps(item.badge, sort_keys=True))
        issuer_id = str(item.issuer.get("id") or json.dumps(item.issuer, sort_keys=True))
        assertion = item.assertion
        recipient: dict[str, Any] = {
            "identity": item.matched_email,
            "hashed": item.hashed,
            "type": "email",
            "plaintextIdentity": item.matched_email,
        }
        if item.hashed:  # re-hashed with Badgr's own salt
            digest = hashlib.sha256((item.matched_email.lower() + item.salt).encode("utf-8")).hexdigest()
            recipient.update(identity=f"sha256${digest}", salt=item.salt)
        return {
            "entityType": "Assertion",
            "entityId": item.entity_id,
            "acceptance": item.acceptance,
            "openBadgeId": item.open_badge_id,
            "badgeclass": stable_id(badge_id),
            "badgeclassOpenBadgeId": badge_id,
            "issuer": stable_id(issuer_id),
            "issuerOpenBadgeId": issuer_id,
            "image": f"{self._base}{item.image_path}",
            "recipient": recipient,
            "issuedOn": utc_z(assertion.get("issuedOn") or assertion.get("issued_on")),
            "narrative": assertion.get("narrative"),
            "revoked": False,
            "revocationReason": None,
            "expires": utc_z(assertion.get("expires")),
            "pending": self._is_pending(item),
        }

    def _list(self, username: str, include_pending: bool) -> list[dict[str, Any]]:
        with self._lock:
            items = [a for a in self._assertions if a.username == username and a.acceptance != "Rejected"]
            return [self._render(a) for a in items if include_pending or not self._is_pending(a)]

    def _find(self, username: str, assertion_id: str) -> StoredAssertion | None:
        return next(
            (
                a
                for a in self._assertions
                if a.username == username and a.entity_id == assertion_id and a.acceptance != "Rejected"
            ),
            None,
        )

    def _delete(self, username: str, assertion_id: str) -> bool:
        with self._lock:
            item = self._find(username, assertion_id)
            if item is None:
                return False
            self._assertions.remove(item)
            return True


def _stored_hashed(assertion: dict[str, Any]) -> bool:
    """Whether Badgr keeps the recipient hashed: as the assertion says, true when it does not say."""
    recipient = assertion.get("recipient")
    if isinstance(recipient, dict):
        return recipient.get("hashed", True) in (True, "true", "True")
    return recipient_identity(assertion)[1]


class BackpackRoutes(BaseHandler):
    """Import, the assertion list and each assertion; Badgr's hosted copies of badge images."""

    def backpack_routes(self) -> list[Route]:
        one = r"/v2/backpack/assertions/([\w-]+)"
        return [
            ("POST", "/v2/backpack/import", self._import),
            ("GET", "/v2/backpack/assertions", self._assertions),
            ("GET", one, self._assertion_get),
            ("PUT", one, self._assertion_put),
            ("DELETE", one, self._assertion_delete),
            ("GET", r"/media/[\w./-]+", self._media),
        ]

    def _import(self) -> None:
        user = self._api_user(read=None, write="rw:backpack")
        if user is None:
            return
        if self._content_type() != "application/json":
            self._server_error()  # a form or multipart body crashes the real server
            return
        data = self._data()
        if data is None:
            return
        given = {key: data[key] for key in ("url", "image", "assertion") if data.get(key)}
        if len(given) != 1:
            only_one = "Must provide only one of 'url', 'image' or 'assertion'."
            self._json(400, bad_request(validation_errors=[only_one]))
            return
        (source, value), *_ = given.items()
        if source == "url" and (not isinstance(value, str) or not _URL.match(value)):
            self._json(400, bad_request(field_errors={"url": ["Enter a valid URL."]}))
            return
        status, body = self.sandbox._import(user, source, value)
        if body is None:
            self._server_error()
            return
        self._json(status, body)

    def _assertions(self) -> None:
        user = self._api_user(read="r:backpack", write="rw:backpack")
        if user is None:
            return
        flag = (self._query.get("include_pending") or ["false"])[0].lower()
        result = self.sandbox._list(user, include_pending=flag in ("true", "1"))
        self._json(200, envelope(True, "ok", result=result))

    def _assertion_get(self, assertion_id: str) -> None:
        user = self._api_user(read="r:backpack", write="rw:backpack")
        if user is None:
            return
        with self.sandbox._lock:
            item = self.sandbox._find(user, assertion_id)
            rendered = self.sandbox._render(item) if item is not None else None
        if rendered is None:
            self._json(404, envelope(False, NOT_FOUND))
            return
        self._json(200, envelope(True, "ok", result=[rendered]))

    def _assertion_put(self, assertion_id: str) -> None:
        """Only ``acceptance`` is read, as the real server's whitelist does."""
        user = self._api_user(read=None, write="rw:backpack")
        if user is None:
            return
        with self.sandbox._lock:
            found = self.sandbox._find(user, assertion_id) is not None
        if not found:
            self._json(404, envelope(False, NOT_FOUND))
            return
        data = self._data()
        if data is None:
            return
        acceptance = data.get("acceptance", "Accepted")
        if acceptance not in ACCEPTANCES:
            self._json(
                400, bad_request(field_errors={"acceptance": [f'"{acceptance}" is not a valid choice.']})
            )
            return
        with self.sandbox._lock:
            item = self.sandbox._find(user, assertion_id)
            if item is None:
                rendered = None
            else:
                item.acceptance = str(acceptance)
                rendered = self.sandbox._render(item)
        if rendered is None:
            self._json(404, envelope(False, NOT_FOUND))
            return
        self._json(200, envelope(True, "ok", result=[rendered]))

    def _assertion_delete(self, assertion_id: str) -> None:
        user = self._api_user(read=None, write="rw:backpack")
        if user is None:
            return
        if self.sandbox._delete(user, assertion_id):
            self._no_content()
        else:
            self._json(404, envelope(False, NOT_FOUND))

    def _media(self) -> None:
        with self.sandbox._lock:
            hosted = self.sandbox._media.get(self._path)
        if hosted is None:
            self._send(404, NOT_FOUND_PAGE, HTML)
            return
        self._send(200, hosted[0], hosted[1])
