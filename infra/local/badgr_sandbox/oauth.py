"""OAuth2 as the real server runs it (django-oauth-toolkit under Badgr's own token view).

The web app's authorize page and the JSON API behind it, the token endpoint with its grants,
refresh rotation and its throttle: any answer from ``/o/token`` that is not 2xx (a ``GET``'s
405 included) arms a backoff keyed by username, or by client address when there is none.
Bodies Badgr's token view writes itself (the throttle, parameters in the query string, an
unknown ``client_id``, scopes beyond the app's) go out as Django labels them, ``text/html``;
oauthlib's own errors are ``application/json``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import html
import math
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from infra.local.badgr_sandbox.http import BaseHandler, Route

ALL_SCOPES = ("r:profile", "rw:profile", "r:backpack", "rw:backpack", "rw:issuer")
SESSION_COOKIE = "badgr_sandbox_session"
ACCESS_TOKEN_SECONDS = 86400
CODE_SECONDS = 60.0
TOKEN_HEADERS = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@dataclass
class Grant:
    username: str
    client_id: str
    scope: str
    expires_at: float = 0.0
    pair: str = ""  # the refresh token of an access token, or the access token of a refresh token


@dataclass
class Code:
    username: str
    client_id: str
    redirect_uri: str
    scope: str
    challenge: str | None
    method: str | None
    expires_at: float


class OAuthState:
    """Tokens, codes, browser sessions and the token endpoint's backoff (part of the sandbox)."""

    client_id: str
    client_secret: str
    redirect_uris: list[str]
    allowed_scopes: tuple[str, ...]
    backoff_base: float
    backoff_max: float
    code_lifetime: float
    _lock: threading.RLock
    _codes: dict[str, Code]
    _access: dict[str, Grant]
    _refresh: dict[str, Grant]
    _sessions: dict[str, str]
    _backoff: dict[str, tuple[int, float]]

    @staticmethod
    def _now() -> float:
        return time.time()

    def issue_token(self, username: str, scope: str = "rw:backpack rw:profile") -> dict[str, Any]:
        """Tokens for a learner without the browser dance (for tests and demos)."""
        with self._lock:
            return self._new_tokens(username, self.client_id, scope)

    def reset_throttle(self) -> None:
        with self._lock:
            self._backoff.clear()

    def _new_tokens(self, username: str, client_id: str, scope: str) -> dict[str, Any]:
        access, refresh = secrets.token_urlsafe(30), secrets.token_urlsafe(30)
        self._access[access] = Grant(
            username, client_id, scope, expires_at=self._now() + ACCESS_TOKEN_SECONDS, pair=refresh
        )
        self._refresh[refresh] = Grant(username, client_id, scope, pair=access)
        return {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": ACCESS_TOKEN_SECONDS,
            "refresh_token": refresh,
            "scope": scope,
        }

    def _grant_for(self, token: str) -> Grant | None:
        with self._lock:
            grant = self._access.get(token)
            if grant is None:
                return None
            if grant.expires_at <= self._now():
                del self._access[token]
                return None
            grant.expires_at = self._now() + ACCESS_TOKEN_SECONDS  # sliding
            return grant

    @staticmethod
    def _throttle_key(ip: str, username: str | None) -> str:
        return f"user:{username}" if username else f"ip:{ip}"

    def _throttled_for(self, key: str) -> float | None:
        with self._lock:
            entry = self._backoff.get(key)
            if entry is None:
                return None
            remaining = entry[1] - self._now()
            return remaining if remaining > 0 else None

    def _bump(self, key: str) -> None:
        with self._lock:
            count = self._backoff.get(key, (0, 0.0))[0] + 1
            wait = min(self.backoff_base * 2**count, self.backoff_max)
            self._backoff[key] = (count, self._now() + wait)

    def _clear_backoff(self, key: str) -> None:
        with self._lock:
            self._backoff.pop(key, None)

    def _check_scope(self, requested: str) -> str | None:
        scopes = [s for s in requested.split() if s]
        if any(s not in self.allowed_scopes for s in scopes):
            return None
        return " ".join(scopes) if scopes else " ".join(self.allowed_scopes)


class OAuthRoutes(BaseHandler):
    """``/auth/oauth2/authorize`` (the web app), ``/o/authorize`` (its JSON API) and ``/o/token``."""

    def oauth_routes(self) -> list[Route]:
        return [
            ("GET", "/auth/oauth2/authorize", self._authorize_page),
            ("POST", "/auth/oauth2/authorize", self._authorize_form),
            ("GET", "/o/authorize", self._authorize_describe),
            ("POST", "/o/authorize", self._authorize_json),
            ("POST", "/o/token", self._token),
            ("GET", "/o/token", self._token_not_allowed),
        ]

    def _cookie_user(self) -> str | None:
        from http.cookies import SimpleCookie

        cookie = SimpleCookie(self.headers.get("Cookie") or "")
        morsel = cookie.get(SESSION_COOKIE)
        if morsel is None:
            return None
        with self.sandbox._lock:
            return self.sandbox._sessions.get(morsel.value)

    # ---------------------------------------------------------- authorize (web app and JSON API)

    def _authorize_params(self, source: dict[str, str]) -> tuple[dict[str, str], str] | tuple[None, str]:
        """Checked authorize parameters and the granted scope, or None and the JSON error."""
        sandbox = self.sandbox
        if source.get("client_id") != sandbox.client_id:
            return None, "Invalid client_id parameter value."
        if source.get("redirect_uri") not in sandbox.redirect_uris:
            return None, "Mismatching redirect URI."
        if source.get("response_type", "code") != "code":
            return None, "unsupported_response_type"
        method = source.get("code_challenge_method") or ""
        if source.get("code_challenge") and method not in ("", "S256", "plain"):
            return None, "Transform algorithm not supported."
        scope = sandbox._check_scope(source.get("scope", ""))
        if scope is None:
            return None, "invalid scope requested"
        return source, scope

    def _authorize_page(self) -> None:
        params = {key: values[0] for key, values in self._query.items()}
        checked, scope_or_error = self._authorize_params(params)
        if checked is None:
            self._json(400, {"error": scope_or_error})
            return
        self._consent_page(checked, scope_or_error, self._cookie_user(), None)

    def _consent_page(self, params: dict[str, str], scope: str, user: str | None, error: str | None) -> None:
        keep = ("client_id", "redirect_uri", "response_type", "scope", "state", "code_challenge")
        hidden = "".join(
            f"<input type='hidden' name='{name}' value='{html.escape(params.get(name, ''), quote=True)}'>"
            for name in (*keep, "code_challenge_method")
        )
        scopes = "".join(f"<li>{html.escape(s)}</li>" for s in scope.split())
        sign_in = (
            f"<p>Signed in as <strong>{html.escape(user)}</strong>.</p>"
            if user
            else (
                "<label for='username'>Email or username</label> <input id='username' name='username' "
                "autocomplete='username'><br><label for='password'>Password</label> "
                "<input id='password' name='password' type='password' autocomplete='current-password'><br>"
            )
        )
        problem = f"<p role='alert' class='error'>{html.escape(error)}</p>" if error else ""
        inner = (
            f"<h1>Sign in to Badgr</h1><p><strong>{html.escape(self.sandbox.app_name)}</strong> "
            f"would like to:</p><ul>{scopes}</ul>{problem}"
            f"<form method='post' action='/auth/oauth2/authorize'>{hidden}{sign_in}"
            "<button type='submit' name='decision' value='allow' id='allow'>Allow</button> "
            "<button type='submit' name='decision' value='deny' id='deny'>Deny</button></form>"
        )
        self._html(401 if error else 200, "Authorize - Badgr", inner)

    def _authorize_form(self) -> None:
        form = self._form()
        checked, scope_or_error = self._authorize_params(form)
        if checked is None:
            self._json(400, {"error": scope_or_error})
            return
        scope = scope_or_error
        user = self._cookie_user()
        headers: dict[str, str] = {}
        if form.get("username") or not user:
            account = self.sandbox._check_password(form.get("username", ""), form.get("password", ""))
            if account is None:
                self._consent_page(checked, scope, None, "The email or password you entered is incorrect.")
                return
            user = account
            session = secrets.token_urlsafe(24)
            with self.sandbox._lock:
                self.sandbox._sessions[session] = user
            headers["Set-Cookie"] = f"{SESSION_COOKIE}={session}; Path=/; HttpOnly; SameSite=Lax"
        if form.get("decision") != "allow":
            self._html(
                200,
                "Authorization denied - Badgr",
                "<h1>Authorization denied</h1><p>You did not allow this application to use your "
                "Badgr account. You can close this page.</p>",
                headers,
            )
            return
        headers["Location"] = self._success_url(user, checked, scope)
        self._send(302, b"", "text/html", headers)

    def _success_url(self, username: str, params: dict[str, str], scope: str) -> str:
        code = secrets.token_urlsafe(24)
        challenge = params.get("code_challenge") or None
        with self.sandbox._lock:
            self.sandbox._codes[code] = Code(
                username=username,
                client_id=params["client_id"],
                redirect_uri=params["redirect_uri"],
                scope=scope,
                challenge=challenge,
                method=(params.get("code_challenge_method") or "plain") if challenge else None,
                expires_at=self.sandbox._now() + self.sandbox.code_lifetime,
            )
        query = {"code": code, "scope": scope}
        if params.get("state"):
            query["state"] = params["state"]
        separator = "&" if "?" in params["redirect_uri"] else "?"
        return f"{params['redirect_uri']}{separator}{urlencode(query)}"

    def _web_user(self) -> str | None:
        grant = self._bearer()
        return grant.username if grant is not None else self._cookie_user()

    def _authorize_describe(self) -> None:
        if self._web_user() is None:
            self._json(401, {"detail": "Authentication credentials were not provided."})
            return
        params = {key: values[0] for key, values in self._query.items()}
        checked, scope_or_error = self._authorize_params(params)
        if checked is None:
            self._json(400, {"error": scope_or_error})
            return
        self._json(
            200,
            {
                "application": {"name": self.sandbox.app_name, "client_id": self.sandbox.client_id},
                "scopes": scope_or_error.split(),
                "redirect_uri": checked["redirect_uri"],
                "state": checked.get("state", ""),
                "response_type": "code",
            },
        )

    def _authorize_json(self) -> None:
        import json

        user = self._web_user()
        if user is None:
            self._json(401, {"detail": "Authentication credentials were not provided."})
            return
        try:
            data = json.loads(self._body or b"{}")
        except ValueError:
            self._json(400, {"error": "invalid_request"})
            return
        if not isinstance(data, dict):
            self._json(400, {"error": "invalid_request"})
            return
        params = {key: str(value) for key, value in data.items() if isinstance(value, str)}
        scopes = data.get("scopes")
        params["scope"] = " ".join(scopes) if isinstance(scopes, list) else str(data.get("scope", ""))
        checked, scope_or_error = self._authorize_params(params)
        if checked is None:
            self._json(400, {"error": scope_or_error})
            return
        if data.get("allow") is not True:
            self._json(400, {"error": ""})
            return
        self._json(200, {"success_url": self._success_url(user, checked, scope_or_error)})

    # ---------------------------------------------------------- token endpoint

    def _token_not_allowed(self) -> None:
        """Django's 405 for a GET: an empty page, and like any failure it arms the backoff."""
        self.sandbox._bump(self.sandbox._throttle_key(self.client_address[0], None))
        self._send(405, b"", "text/html; charset=utf-8", {"Allow": "POST, OPTIONS"})

    def _token(self) -> None:
        sandbox = self.sandbox
        form = self._form()
        grant_type = form.get("grant_type") or "password"
        key = sandbox._throttle_key(
            self.client_address[0], form.get("username") if grant_type == "password" else None
        )
        if self._query_string:
            error = "Token grant parameters must be sent in post body, not query parameters"
            self._token_answer(key, 400, {"error": error}, written_by_badgr=True)
            return
        remaining = sandbox._throttled_for(key)
        if remaining is not None:
            expires: float = math.ceil(remaining) if remaining >= 1 else round(remaining, 3)
            body = {
                "error": "login attempts throttled",
                "error_description": "Too many login attempts. Please wait and try again.",
                "expires": expires,
            }
            self._django_json(429, body, TOKEN_HEADERS)
            return
        # Badgr's view checks a client_id given in the body, and its scopes, before oauthlib runs.
        if form.get("client_id") and form["client_id"] != sandbox.client_id:
            self._token_answer(key, 400, {"error": "invalid client_id"}, written_by_badgr=True)
            return
        if form.get("client_id") and sandbox._check_scope(form.get("scope", "")) is None:
            self._token_answer(key, 400, {"error": "invalid scope requested"}, written_by_badgr=True)
            return
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        header = self.headers.get("Authorization") or ""
        if header.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(header[6:].strip()).decode("utf-8")
                client_id, _, client_secret = decoded.partition(":")
            except (binascii.Error, UnicodeDecodeError):
                client_id = client_secret = None
        if client_id != sandbox.client_id:
            self._token_answer(key, 401, {"error": "invalid_client"})
            return
        authenticated = client_secret is not None and secrets.compare_digest(
            client_secret, sandbox.client_secret
        )
        if client_secret is not None and not authenticated:
            self._token_answer(key, 401, {"error": "invalid_client"})
            return
        if grant_type == "authorization_code":
            status, body = self._grant_code(form, authenticated)
        elif grant_type == "refresh_token":
            status, body = self._grant_refresh(form, authenticated)
        elif grant_type == "password":
            status, body = self._grant_password(form)
        else:
            status, body = 400, {"error": "unsupported_grant_type"}
        self._token_answer(key, status, body)

    def _token_answer(
        self, key: str, status: int, body: dict[str, Any], *, written_by_badgr: bool = False
    ) -> None:
        if 200 <= status < 300:
            self.sandbox._clear_backoff(key)
        else:
            self.sandbox._bump(key)
        if written_by_badgr:
            self._django_json(status, body, TOKEN_HEADERS)
        else:
            self._json(status, body, TOKEN_HEADERS)

    def _grant_code(self, form: dict[str, str], authenticated: bool) -> tuple[int, dict[str, Any]]:
        sandbox = self.sandbox
        if not authenticated:
            return 401, {"error": "invalid_client"}
        with sandbox._lock:
            code = sandbox._codes.get(form.get("code", ""))
            if code is None or code.expires_at <= sandbox._now() or code.client_id != sandbox.client_id:
                return 400, {"error": "invalid_grant"}
            if form.get("redirect_uri") != code.redirect_uri:
                return 400, {"error": "invalid_request", "error_description": "Mismatching redirect URI."}
            verifier = form.get("code_verifier")
            if code.challenge:
                if not verifier:
                    return 400, {"error": "invalid_request", "error_description": "Code verifier required."}
                if code.method == "S256":
                    digest = hashlib.sha256(verifier.encode("ascii", errors="replace")).digest()
                    computed = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
                else:
                    computed = verifier
                if not secrets.compare_digest(computed, code.challenge):
                    return 400, {"error": "invalid_grant"}
            elif verifier:
                # RFC 9700 2.1.1: a verifier for a code issued without a challenge is a downgrade.
                return 400, {"error": "invalid_grant"}
            del sandbox._codes[form["code"]]
            return 200, sandbox._new_tokens(code.username, code.client_id, code.scope)

    def _grant_refresh(self, form: dict[str, str], authenticated: bool) -> tuple[int, dict[str, Any]]:
        sandbox = self.sandbox
        if not authenticated:
            return 401, {"error": "invalid_client"}
        with sandbox._lock:
            old = sandbox._refresh.get(form.get("refresh_token", ""))
            if old is None or old.client_id != sandbox.client_id:
                return 400, {"error": "invalid_grant"}
            scope = old.scope
            if form.get("scope"):
                asked = form["scope"].split()
                if any(s not in old.scope.split() for s in asked):
                    return 400, {"error": "invalid_scope"}
                scope = " ".join(asked)
            del sandbox._refresh[form["refresh_token"]]
            sandbox._access.pop(old.pair, None)  # rotation revokes the old access token
            return 200, sandbox._new_tokens(old.username, old.client_id, scope)

    def _grant_password(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        sandbox = self.sandbox
        scope = sandbox._check_scope(form.get("scope", ""))
        if scope is None:
            return 400, {"error": "invalid_scope"}
        username = sandbox._check_password(form.get("username", ""), form.get("password", ""))
        if username is None:
            return 400, {"error": "invalid_grant", "error_description": "Invalid credentials given."}
        with sandbox._lock:
            return 200, sandbox._new_tokens(username, sandbox.client_id, scope)
