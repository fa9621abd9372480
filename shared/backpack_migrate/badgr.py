"""The one Badgr client: OAuth2 (authorization code + PKCE, refresh rotation) and the backpack API.

It relies only on what the real Badgr server does:

- the token endpoint takes a form body, answers ``invalid_grant`` for bad codes and refresh
  tokens, and throttles *any* client address after a failed request (429 with ``expires``);
- a refresh returns a new refresh token and revokes the old access token, so the caller must
  store the new pair every time;
- ``POST /v2/backpack/import`` takes a JSON body only, reports validation problems as a
  flattened list of strings, and answers 404 (not 403) when the token lacks ``rw:backpack``.

Tokens never appear in log lines, reprs or exception messages.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal
from urllib.parse import urlencode

import requests
from pydantic import Field

from backpack_migrate.domain import BadgrAnswer

from .models import Model

DEFAULT_SCOPE = "rw:backpack rw:profile"

Outcome = Literal["imported", "already_in_badgr", "pending", "rejected", "retry", "unauthorized", "forbidden"]


# --------------------------------------------------------------------------- errors


class BadgrError(Exception):
    """Base of every error this client raises. Messages never hold a token."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class BadgrAuthError(BadgrError):
    """Badgr refused the credentials, code, refresh token or access token (``invalid_grant`` ...)."""

    def __init__(self, error: str, description: str = "", *, status: int | None = None) -> None:
        text = f"Badgr refused the request: {error}"
        if description:
            text += f" ({description})"
        super().__init__(text, status=status)
        self.error = error
        self.description = description


class BadgrThrottled(BadgrError):  # noqa: N818 - the name callers know
    """Badgr asks us to wait ``retry_after`` seconds (429)."""

    def __init__(self, retry_after: float, *, status: int = 429) -> None:
        super().__init__(f"Badgr throttled the request; retry after {retry_after:g} s", status=status)
        self.retry_after = retry_after


class BadgrRefused(BadgrError):  # noqa: N818 - Badgr's own word for it
    """Badgr answered 400 to a collection call; ``field_errors`` name the fields it refused."""

    def __init__(self, message: str, *, status: int, field_errors: Mapping[str, list[str]]) -> None:
        super().__init__(message, status=status)
        self.field_errors = dict(field_errors)


class BadgrNotFound(BadgrError):  # noqa: N818 - the name callers know
    """Badgr has no such entity for this learner (or the token may not see it)."""


class BadgrUnavailable(BadgrError):  # noqa: N818 - the name callers know
    """Badgr did not answer usefully for now: 5xx, timeout, connection error, garbled answer."""


# --------------------------------------------------------------------------- models


class Tokens(Model):
    """An access/refresh token pair. The tokens are kept out of ``repr`` so they never reach logs."""

    access_token: str = Field(repr=False)
    refresh_token: str = Field(repr=False)
    expires_at: float  # epoch seconds
    scope: str = ""

    def expired(self, *, leeway: float = 60.0, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.expires_at - leeway

    def has_scope(self, scope: str) -> bool:
        return scope in self.scope.split()


class ImportResult(Model):
    """What one ``POST /v2/backpack/import`` came to, in our words and in Badgr's."""

    outcome: Outcome
    status: int  # HTTP status; 0 when no answer came (timeout, connection error)
    entity_id: str | None = None
    codes: list[str] = Field(default_factory=list)
    description: str | None = None
    reason: str = ""
    retry_after: float | None = None

    def to_answer(self) -> BadgrAnswer:
        return BadgrAnswer(
            status=self.status, entity_id=self.entity_id, description=self.description, codes=self.codes
        )


# --------------------------------------------------------------------------- PKCE and helpers


def new_pkce_pair() -> tuple[str, str]:
    """A fresh PKCE ``(code_verifier, code_challenge)`` pair for the S256 method (RFC 7636)."""
    verifier = secrets.token_urlsafe(64)  # 86 characters of the unreserved alphabet
    return verifier, pkce_challenge(verifier)


def pkce_challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def image_data_uri(data: bytes, media_type: str = "image/png") -> str:
    """The ``image`` field Badgr's import takes: a base64 data URI of the baked PNG or SVG."""
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"


_CODE = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+$")
_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")
_MAX_DESCRIPTION = 600


def parse_codes(validation_errors: Any) -> list[str]:
    """Codes out of Badgr's ``validationErrors``: a flattened list of strings, or dicts with ``name``."""
    found: list[str] = []

    def add(value: Any) -> None:
        if isinstance(value, str) and _CODE.match(value) and value not in found:
            found.append(value)

    for item in _iter_items(validation_errors):
        if isinstance(item, Mapping):
            add(item.get("name"))
        else:
            add(item)
    return found


def _iter_items(value: Any) -> Iterable[Any]:
    if isinstance(value, list | tuple):
        for item in value:
            if isinstance(item, list | tuple):
                yield from _iter_items(item)
            else:
                yield item
    elif value not in (None, "", {}):
        yield value


def _messages(body: Mapping[str, Any]) -> list[str]:
    """The human parts of a v2 error envelope (no codes, no levels, no node ids), emails redacted."""
    out: list[str] = []
    for item in _iter_items(body.get("validationErrors")):
        if isinstance(item, Mapping):
            text = str(item.get("description") or "")
        elif isinstance(item, str):
            text = item
        else:
            continue
        if not text or _CODE.match(text) or text in {"ERROR", "WARNING", "INFO", "True", "False"}:
            continue
        if text.startswith("_:"):
            continue
        out.append(text)
    field_errors = body.get("fieldErrors")
    if isinstance(field_errors, Mapping):
        for name, errs in field_errors.items():
            for err in _iter_items(errs):
                out.append(f"{name}: {err}")
    return [_EMAIL.sub("<email>", text) for text in out]


def _describe(body: Any, fallback: str) -> str:
    if not isinstance(body, Mapping):
        return fallback
    parts: list[str] = []
    status = body.get("status")
    if isinstance(status, Mapping) and status.get("description"):
        parts.append(str(status["description"]))
    for message in _messages(body):
        if message not in parts:
            parts.append(message)
    text = "; ".join(parts) or fallback
    return text[:_MAX_DESCRIPTION]


# Plain words for a learner, by Badgr's code, first match wins.
_REASONS: list[tuple[str, str]] = [
    ("DUPLICATE_BADGE", "This badge is already in your Badgr backpack."),
    (
        "VERIFY_RECIPIENT_IDENTIFIER",
        "This badge was issued to an email address that is not on your Badgr account: "
        "add that address in Badgr and try again.",
    ),
    ("FETCH_HTTP_NODE", "The website that proves this badge could not be reached."),
    ("VERIFY_SIGNED_ASSERTION_NOT_REVOKED", "The issuer has revoked this badge."),
    ("ASSERTION_TIMESTAMP_CHECKS", "This badge has expired, or its dates cannot be right."),
    ("HOSTED_ID_IN_VERIFICATION_SCOPE", "This badge is not kept on its issuer's own website."),
    ("VERIFY_JWS", "The signature on this badge could not be checked."),
    ("VERIFY_KEY_OWNERSHIP", "This badge was signed with a key its issuer does not list as its own."),
    ("VALIDATE_PROPERTY", "This badge is missing information Badgr needs, so Badgr cannot accept it."),
]

_OUTCOME_REASONS: dict[str, str] = {
    "imported": "This badge is now in your Badgr backpack.",
    "already_in_badgr": "This badge is already in your Badgr backpack.",
    "pending": "Badgr is holding this badge until you confirm its email address in your Badgr account.",
    "rejected": "Badgr could not accept this badge.",
    "retry": "Badgr could not be reached just now; we will try again.",
    "unauthorized": "Your Badgr connection has expired: connect your Badgr account again.",
    "forbidden": (
        "We were not given permission to add badges to your Badgr backpack: connect again and allow it."
    ),
}


def _reason(codes: Iterable[str]) -> tuple[str, str] | None:
    """The first of Badgr's codes we have plain words for, in order of what matters most."""
    code_set = set(codes)
    return next(((code, sentence) for code, sentence in _REASONS if code in code_set), None)


def reason_for(outcome: str, codes: Iterable[str] = ()) -> str:
    """One plain-words sentence for a learner about an import outcome."""
    found = _reason(codes) if outcome == "rejected" else None
    return found[1] if found else _OUTCOME_REASONS.get(outcome, _OUTCOME_REASONS["rejected"])


def reason_code(codes: Sequence[str]) -> str | None:
    """The code :func:`reason_for` explains a refusal by (else Badgr's first), to record beside it."""
    found = _reason(codes)
    return found[0] if found else (codes[0] if codes else None)


def _retry_after(response: requests.Response, body: Any = None) -> float | None:
    """Seconds to wait, from a throttle body's ``expires`` or the ``Retry-After`` header."""
    if isinstance(body, Mapping):
        expires = body.get("expires")
        if isinstance(expires, int | float) and not isinstance(expires, bool) and expires >= 0:
            value = float(expires)
            if value > 1e9:  # an epoch rather than a number of seconds
                value = max(0.0, value - time.time())
            return value
    header = response.headers.get("Retry-After")
    if header:
        try:
            return max(0.0, float(header))
        except ValueError:
            from email.utils import parsedate_to_datetime

            try:
                return max(0.0, parsedate_to_datetime(header).timestamp() - time.time())
            except (TypeError, ValueError):
                return None
    return None


def _wait(response: requests.Response, body: Any) -> float:
    value = _retry_after(response, body)
    return 1.0 if value is None else value


def _first(body: Any, what: str) -> dict[str, Any]:
    """``result[0]`` of a v2 envelope."""
    result = body.get("result") if isinstance(body, Mapping) else None
    if not isinstance(result, list) or not result or not isinstance(result[0], Mapping):
        raise BadgrUnavailable(f"Badgr gave no {what}", status=200)
    return dict(result[0])


def _json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


# --------------------------------------------------------------------------- client


class BadgrClient:
    """Talks to one Badgr API server as one registered OAuth2 application."""

    def __init__(
        self,
        api_url: str,
        client_id: str,
        client_secret: str,
        session: requests.Session | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.client_id = client_id
        self._client_secret = client_secret
        self.session = session or requests.Session()
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"BadgrClient(api_url={self.api_url!r}, client_id={self.client_id!r})"

    # ----------------------------------------------------------------- OAuth2

    def authorize_url(
        self,
        authorize_endpoint: str,
        *,
        redirect_uri: str,
        state: str,
        code_challenge: str,
        scope: str = DEFAULT_SCOPE,
    ) -> str:
        """Where to send the learner's browser: Badgr's web-app authorize page."""
        query = urlencode(
            {
                "client_id": self.client_id,
                "redirect_uri": redirect_uri,
                "response_type": "code",
                "scope": scope,
                "state": state,
                "code_challenge": code_challenge,
                "code_challenge_method": "S256",
            }
        )
        separator = "&" if "?" in authorize_endpoint else "?"
        return f"{authorize_endpoint}{separator}{query}"

    def exchange_code(self, code: str, code_verifier: str, redirect_uri: str) -> Tokens:
        """Trade an authorization code (single use, lives 60 s) for tokens."""
        return self._token_request(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
                "code_verifier": code_verifier,
            }
        )

    def refresh(self, refresh_token: str) -> Tokens:
        """New tokens from a refresh token. Badgr rotates: store the returned refresh token."""
        return self._token_request({"grant_type": "refresh_token", "refresh_token": refresh_token})

    def _token_request(self, form: dict[str, str]) -> Tokens:
        url = f"{self.api_url}/o/token"
        try:
            response = self.session.post(
                url,
                data=form,
                auth=(self.client_id, self._client_secret),
                headers={"Accept": "application/json"},
                timeout=self.timeout,
            )
        except requests.Timeout:
            raise BadgrUnavailable("Badgr token endpoint timed out") from None
        except requests.RequestException as exc:
            raise BadgrUnavailable(f"Badgr token endpoint unreachable ({type(exc).__name__})") from None
        body = _json(response)
        status = response.status_code
        if status == 429:
            raise BadgrThrottled(_wait(response, body))
        if status >= 500:
            raise BadgrUnavailable(f"Badgr token endpoint answered {status}", status=status)
        if status != 200:
            error = "unexpected_status"
            description = f"HTTP {status}"
            if isinstance(body, Mapping):
                error = str(body.get("error") or error)
                description = str(body.get("error_description") or "")
            raise BadgrAuthError(error, description, status=status)
        if not isinstance(body, Mapping) or not body.get("access_token"):
            raise BadgrUnavailable("Badgr token endpoint gave no token", status=status)
        try:
            expires_in = float(body.get("expires_in") or 86400)
        except (TypeError, ValueError):
            expires_in = 86400.0
        refresh_token = body.get("refresh_token") or form.get("refresh_token")
        if not refresh_token:
            raise BadgrUnavailable("Badgr token endpoint gave no refresh token", status=status)
        return Tokens(
            access_token=str(body["access_token"]),
            refresh_token=str(refresh_token),
            expires_at=time.time() + expires_in,
            scope=str(body.get("scope") or ""),
        )

    # ----------------------------------------------------------------- backpack

    def import_badge(
        self,
        access_token: str,
        *,
        url: str | None = None,
        image: str | None = None,
        assertion: Mapping[str, Any] | str | None = None,
    ) -> ImportResult:
        """Import one badge by hosted ``url``, baked ``image`` data URI, or ``assertion`` object.

        Never raises for an answer from Badgr: every case becomes an :class:`ImportResult`.
        """
        given = {
            key: value
            for key, value in (("url", url), ("image", image), ("assertion", assertion))
            if value is not None
        }
        if len(given) != 1:
            raise ValueError("give exactly one of url, image or assertion")
        # A compact JWS goes as the string it is; Badgr takes both.
        payload = json.dumps(
            given if assertion is None or isinstance(assertion, str) else {"assertion": dict(assertion)}
        )
        try:
            response = self.session.post(
                f"{self.api_url}/v2/backpack/import",
                data=payload.encode("utf-8"),
                headers={**self._auth(access_token), "Content-Type": "application/json"},
                timeout=self.timeout,
            )
        except requests.Timeout:
            return self._result("retry", 0, description="Badgr did not answer in time")
        except requests.RequestException as exc:
            return self._result("retry", 0, description=f"Badgr could not be reached ({type(exc).__name__})")
        return self._import_result(response)

    def _import_result(self, response: requests.Response) -> ImportResult:
        status = response.status_code
        body = _json(response)
        description = _describe(body, f"HTTP {status}")
        if 200 <= status < 300:
            result = body.get("result") if isinstance(body, Mapping) else None
            first = (
                result[0] if isinstance(result, list) and result and isinstance(result[0], Mapping) else {}
            )
            pending = first.get("pending") is True
            entity_id = first.get("entityId")
            return self._result(
                "pending" if pending else "imported",
                status,
                entity_id=str(entity_id) if entity_id else None,
                description=description,
            )
        if status == 429 or status >= 500:
            return self._result(
                "retry", status, description=description, retry_after=_retry_after(response, body)
            )
        if status == 401:
            return self._result("unauthorized", status, description=description)
        if status in (403, 404):
            return self._result("forbidden", status, description=description)
        codes = parse_codes(body.get("validationErrors")) if isinstance(body, Mapping) else []
        if "DUPLICATE_BADGE" in codes:
            return self._result("already_in_badgr", status, codes=codes, description=description)
        return self._result("rejected", status, codes=codes, description=description)

    @staticmethod
    def _result(
        outcome: Outcome,
        status: int,
        *,
        entity_id: str | None = None,
        codes: list[str] | None = None,
        description: str | None = None,
        retry_after: float | None = None,
    ) -> ImportResult:
        codes = codes or []
        return ImportResult(
            outcome=outcome,
            status=status,
            entity_id=entity_id,
            codes=codes,
            description=description,
            reason=reason_for(outcome, codes),
            retry_after=retry_after,
        )

    def list_assertions(self, access_token: str, include_pending: bool = True) -> list[dict[str, Any]]:
        """The learner's assertions (Badgr does not paginate this list)."""
        params = {"include_pending": "true"} if include_pending else {}
        body = self._get("/v2/backpack/assertions", access_token, params)
        result = body.get("result")
        return (
            [dict(item) for item in result if isinstance(item, Mapping)] if isinstance(result, list) else []
        )

    def get_profile(self, access_token: str) -> dict[str, Any]:
        """The learner's Badgr profile (``GET /v2/users/self`` ``result[0]``): names and emails."""
        body = self._get("/v2/users/self", access_token, {})
        result = body.get("result")
        if not isinstance(result, list) or not result or not isinstance(result[0], Mapping):
            raise BadgrUnavailable("Badgr gave no profile", status=200)
        return dict(result[0])

    def _get(self, path: str, access_token: str, params: Mapping[str, str]) -> Mapping[str, Any]:
        try:
            response = self.session.get(
                f"{self.api_url}{path}",
                params=dict(params),
                headers=self._auth(access_token),
                timeout=self.timeout,
            )
        except requests.Timeout:
            raise BadgrUnavailable(f"Badgr timed out on {path}") from None
        except requests.RequestException as exc:
            raise BadgrUnavailable(f"Badgr unreachable on {path} ({type(exc).__name__})") from None
        status = response.status_code
        body = _json(response)
        if status == 429:
            raise BadgrThrottled(_wait(response, body))
        if status >= 500:
            raise BadgrUnavailable(f"Badgr answered {status} on {path}", status=status)
        if status == 401:
            raise BadgrAuthError("unauthorized", _describe(body, "no valid auth token found"), status=status)
        if status in (403, 404):
            raise BadgrAuthError(
                "insufficient_scope",
                _describe(body, "entity not found or insufficient privileges"),
                status=status,
            )
        if status != 200 or not isinstance(body, Mapping):
            raise BadgrUnavailable(f"Badgr answered {status} on {path}", status=status)
        return body

    # ----------------------------------------------------------------- collections
    # Badgr crashes (500) on a POST that carries ``assertions``: a collection is created empty
    # and then filled by a PUT of the whole object (``name`` required; the list is replaced).

    def list_collections(self, access_token: str) -> list[dict[str, Any]]:
        body = self._get("/v2/backpack/collections", access_token, {})
        result = body.get("result")
        return (
            [dict(item) for item in result if isinstance(item, Mapping)] if isinstance(result, list) else []
        )

    def get_collection(self, access_token: str, entity_id: str) -> dict[str, Any] | None:
        """The collection, or None when Badgr has none by that id (deleted by the learner)."""
        try:
            body = self._get(f"/v2/backpack/collections/{entity_id}", access_token, {})
        except BadgrAuthError as error:
            if error.status == 404:
                return None
            raise
        return _first(body, "collection")

    def create_collection(
        self, access_token: str, *, name: str, description: str, published: bool
    ) -> dict[str, Any]:
        """Create an empty collection; returns it (``entityId``, ``share_url`` ...)."""
        body = {"name": name, "description": description, "published": published}
        return self._send("POST", "/v2/backpack/collections", access_token, body, expect=(200, 201))

    def put_collection(
        self,
        access_token: str,
        entity_id: str,
        *,
        name: str,
        description: str,
        published: bool,
        assertions: Sequence[str],
    ) -> dict[str, Any]:
        """Replace the whole collection, its list of assertion entity ids included.

        Raises :class:`BadgrRefused` (400) naming the field, e.g. ``assertions`` for an id that is
        not in the learner's backpack, and :class:`BadgrNotFound` for an unknown collection.
        """
        body = {
            "name": name,
            "description": description,
            "published": published,
            "assertions": list(assertions),
        }
        return self._send("PUT", f"/v2/backpack/collections/{entity_id}", access_token, body, expect=(200,))

    def _send(
        self,
        method: str,
        path: str,
        access_token: str,
        payload: Mapping[str, Any],
        *,
        expect: tuple[int, ...],
    ) -> dict[str, Any]:
        try:
            response = self.session.request(
                method,
                f"{self.api_url}{path}",
                data=json.dumps(payload).encode("utf-8"),
                headers={**self._auth(access_token), "Content-Type": "application/json"},
                timeout=self.timeout,
            )
        except requests.Timeout:
            raise BadgrUnavailable(f"Badgr timed out on {method} {path}") from None
        except requests.RequestException as exc:
            raise BadgrUnavailable(f"Badgr unreachable on {method} {path} ({type(exc).__name__})") from None
        status = response.status_code
        body = _json(response)
        if status in expect:
            return _first(body, "collection") if isinstance(body, Mapping) else {}
        if status == 429:
            raise BadgrThrottled(_wait(response, body))
        if status >= 500:
            raise BadgrUnavailable(f"Badgr answered {status} on {method} {path}", status=status)
        if status == 401:
            raise BadgrAuthError("unauthorized", _describe(body, "no valid auth token found"), status=status)
        if status == 404:
            raise BadgrNotFound(_describe(body, "entity not found or insufficient privileges"), status=status)
        if status == 403:
            raise BadgrAuthError("insufficient_scope", _describe(body, "forbidden"), status=status)
        fields: dict[str, list[str]] = {}
        if isinstance(body, Mapping) and isinstance(body.get("fieldErrors"), Mapping):
            fields = {str(k): [str(m) for m in _iter_items(v)] for k, v in body["fieldErrors"].items()}
        raise BadgrRefused(_describe(body, f"HTTP {status}"), status=status, field_errors=fields)

    @staticmethod
    def _auth(access_token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {access_token}", "Accept": "application/json"}


__all__ = [
    "DEFAULT_SCOPE",
    "BadgrAuthError",
    "BadgrClient",
    "BadgrError",
    "BadgrNotFound",
    "BadgrRefused",
    "BadgrThrottled",
    "BadgrUnavailable",
    "ImportResult",
    "Outcome",
    "Tokens",
    "image_data_uri",
    "new_pkce_pair",
    "parse_codes",
    "pkce_challenge",
    "reason_for",
]
