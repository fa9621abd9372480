"""The sandbox itself: one registered OAuth2 application, learners' accounts and their profile.

It is the state of every route (OAuth, backpack, collections) in one object, locked by one
lock, with the hooks tests and demos use: accounts and emails, tokens without the browser,
the request log (no tokens in it) and injected failures.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from typing import Any, NamedTuple

from infra.local.badgr_sandbox.backpack import Account, BackpackRoutes, StoredAssertion, entity_id
from infra.local.badgr_sandbox.backpack_collections import CollectionRoutes, CollectionState, StoredCollection
from infra.local.badgr_sandbox.fetch import LoopbackFetch
from infra.local.badgr_sandbox.http import Route, envelope
from infra.local.badgr_sandbox.oauth import (
    ALL_SCOPES,
    CODE_SECONDS,
    Code,
    Grant,
    OAuthRoutes,
    OAuthState,
)
from infra.local.serving import LoopbackServer

LATEST_TERMS_VERSION = 2
LATEST_TERMS_DESCRIPTION = "We have updated our Terms of Service."


class LoggedRequest(NamedTuple):
    method: str
    path: str  # without the query string, so no code or secret lands here
    status: int


@dataclass
class _Failure:
    status: int
    delay: float


class BadgrSandbox(OAuthState, CollectionState, LoopbackServer):
    """An in-memory Badgr server on 127.0.0.1 with one registered OAuth2 application."""

    thread_name = "badgr-sandbox"
    poll_interval = 0.05

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        redirect_uris: list[str],
        *,
        allowed_scopes: Iterable[str] = ALL_SCOPES,
        backoff_base: float = 1.0,
        backoff_max: float = 3600.0,
        code_lifetime: float = CODE_SECONDS,
        fetch_timeout: float = 5.0,
        port: int = 0,
        app_name: str = "Backpack migration",
    ) -> None:
        super().__init__()
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uris = list(redirect_uris)
        self.allowed_scopes = tuple(allowed_scopes)
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.code_lifetime = code_lifetime
        self.fetch = LoopbackFetch(timeout=fetch_timeout)
        self.app_name = app_name
        self._port = port
        self._lock = threading.RLock()
        self._accounts: dict[str, Account] = {}
        self._assertions: list[StoredAssertion] = []
        self._collections: list[StoredCollection] = []
        self._media: dict[str, tuple[bytes, str]] = {}
        self._badge_images: dict[str, str] = {}
        self._codes: dict[str, Code] = {}
        self._access: dict[str, Grant] = {}
        self._refresh: dict[str, Grant] = {}
        self._sessions: dict[str, str] = {}
        self._backoff: dict[str, tuple[int, float]] = {}
        self._failures: dict[str, list[_Failure]] = {}
        self._log: list[LoggedRequest] = []

    # ---------------------------------------------------------- life cycle

    def _make_server(self) -> ThreadingHTTPServer:
        handler = type("BoundBadgrHandler", (_Handler,), {"sandbox": self})
        server = ThreadingHTTPServer(("127.0.0.1", self._port), handler)
        server.daemon_threads = True
        server.block_on_close = False
        return server

    @property
    def authorize_endpoint(self) -> str:
        """The web app's authorize page (the real one lives on Badgr's UI origin)."""
        return f"{self.url}/auth/oauth2/authorize"

    @property
    def _base(self) -> str:
        return self.url if self._server is not None else "http://127.0.0.1"

    # ---------------------------------------------------------- set-up and inspection

    def add_account(self, username: str, password: str, emails: list[tuple[str, bool]]) -> str:
        """Register a learner; returns its entityId. ``emails`` are ``(email, verified)`` pairs."""
        with self._lock:
            account = Account(
                username=username,
                password=password,
                emails=[[email, bool(verified)] for email, verified in emails],
                entity_id=entity_id(),
            )
            self._accounts[username] = account
            return account.entity_id

    def set_email(self, username: str, email: str, verified: bool = True) -> None:
        """Add an email to an account, or change whether it is verified."""
        with self._lock:
            account = self._accounts[username]
            for entry in account.emails:
                if entry[0].lower() == email.lower():
                    entry[1] = verified
                    return
            account.emails.append([email, verified])

    @property
    def request_log(self) -> list[LoggedRequest]:
        with self._lock:
            return list(self._log)

    def fail_next(self, path: str, status: int, count: int = 1, delay: float = 0) -> None:
        """Make the next ``count`` requests to ``path`` wait ``delay`` seconds, then answer ``status``.

        ``status=0`` only delays: the request is then served normally (to test client timeouts).
        """
        path = path.split("?", 1)[0].rstrip("/") or "/"
        with self._lock:
            self._failures.setdefault(path, []).extend(_Failure(status, delay) for _ in range(count))

    # ---------------------------------------------------------- internals used by the handler

    def _take_failure(self, path: str) -> _Failure | None:
        with self._lock:
            queue = self._failures.get(path)
            return queue.pop(0) if queue else None

    def _record(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self._log.append(LoggedRequest(method, path, status))

    def _check_password(self, username: str, password: str) -> str | None:
        with self._lock:
            account = self._accounts.get(username)
        if account is None or not secrets.compare_digest(account.password, password):
            return None
        return account.username

    def _profile(self, username: str) -> dict[str, Any]:
        """``GET /v2/users/self`` with the real ``BadgeUserSerializerV2``'s fields."""
        with self._lock:
            account = self._accounts[username]
            primary = next((email for email, ok in account.emails if ok), None)
            return {
                "entityType": "BadgeUser",
                "entityId": account.entity_id,
                "firstName": account.first_name,
                "lastName": account.last_name,
                "emails": [
                    {"email": email, "verified": bool(ok), "primary": email == primary, "caseVariants": []}
                    for email, ok in account.emails
                ],
                "url": [],
                "telephone": [],
                "agreedTermsVersion": account.agreed_terms_version,
                "hasAgreedToLatestTermsVersion": account.agreed_terms_version == LATEST_TERMS_VERSION,
                "marketingOptIn": False,
                "badgrDomain": None,
                "hasPasswordSet": True,
                "recipient": {"type": "email", "identity": primary} if primary else None,
            }

    def _profile_answer(self, username: str) -> dict[str, Any]:
        """The envelope, with the terms the learner has yet to agree to beside ``result``."""
        body = envelope(True, "ok", result=[self._profile(username)])
        body["latestTermsVersion"] = LATEST_TERMS_VERSION
        if self._accounts[username].agreed_terms_version != LATEST_TERMS_VERSION:
            body["latestTermsDescription"] = LATEST_TERMS_DESCRIPTION
        return body


class _Handler(OAuthRoutes, BackpackRoutes, CollectionRoutes):
    sandbox: BadgrSandbox

    def routes(self) -> list[Route]:
        return [
            *self.oauth_routes(),
            *self.backpack_routes(),
            *self.collection_routes(),
            ("GET", "/v2/users/self", self._self),
        ]

    def _self(self) -> None:
        user = self._api_user(read="r:profile", write="rw:profile")
        if user is None:
            return
        self._json(200, self.sandbox._profile_answer(user))


def main() -> None:  # pragma: no cover - manual use
    import argparse

    parser = argparse.ArgumentParser(description="Run a local Badgr stand-in on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--client-id", default="backpack-migrate")
    parser.add_argument("--client-secret", default="sandbox-secret")
    parser.add_argument("--redirect-uri", action="append", default=["http://127.0.0.1:3000/oauth/callback"])
    args = parser.parse_args()
    sandbox = BadgrSandbox(args.client_id, args.client_secret, args.redirect_uri, port=args.port)
    sandbox.add_account("learner@example.org", "password", [("learner@example.org", True)])
    print(f"Badgr sandbox on {sandbox.start().url} (account learner@example.org / password)")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        sandbox.stop()
