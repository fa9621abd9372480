"""A local stand-in for the Badgr server, answering the way the real one does.

It covers what the migration service calls: the web app's OAuth2 authorize page (and the JSON
API behind it), the token endpoint with its throttle, ``/v2/backpack/import``,
``/v2/backpack/assertions`` and ``/v2/users/self``. Outcomes of an import are decided from the
same facts the real server uses: it unbakes images, fetches hosted assertions (and their badge
class and issuer) over HTTP, compares the recipient with every email of the account, and checks a
signed 2.0 badge's signature, signing key and revocation list as the validator does.

Run it alone with ``python -m infra.local.badgr_sandbox`` (prints its URL and a demo account).
Only ever listens on 127.0.0.1. It is a tool for tests and demos, not deployed code.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import html
import importlib
import ipaddress
import json
import math
import re
import secrets
import struct
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlencode, urlsplit

from infra.local.serving import LoopbackServer

ALL_SCOPES = ("r:profile", "rw:profile", "r:backpack", "rw:backpack", "rw:issuer")
SESSION_COOKIE = "badgr_sandbox_session"
ACCESS_TOKEN_SECONDS = 86400
CODE_SECONDS = 60.0
SERVER_ERROR_PAGE = "<h1>Server Error (500)</h1>"


class LoggedRequest(NamedTuple):
    method: str
    path: str  # without the query string, so no code or secret lands here
    status: int


@dataclass
class Account:
    username: str
    password: str
    emails: list[list[Any]]  # [email, verified]
    entity_id: str
    first_name: str = "Sandbox"
    last_name: str = "Learner"


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
    salt: str = field(default_factory=lambda: secrets.token_hex(16))
    acceptance: str = "Accepted"


@dataclass
class StoredCollection:
    entity_id: str
    username: str
    name: str
    description: str = ""
    share_hash: str = ""  # published when set, as on the real server
    assertions: list[str] = field(default_factory=list)  # assertion entityIds, in the order given


@dataclass
class _Grant:
    username: str
    client_id: str
    scope: str
    expires_at: float = 0.0
    pair: str = ""  # the refresh token of an access token, or the access token of a refresh token


@dataclass
class _Code:
    username: str
    client_id: str
    redirect_uri: str
    scope: str
    challenge: str | None
    method: str | None
    expires_at: float


@dataclass
class _Failure:
    status: int
    delay: float


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _is_compact_jws(text: str) -> bool:
    parts = text.strip().split(".")
    return len(parts) == 3 and all(re.fullmatch(r"[A-Za-z0-9_-]+", part) for part in parts)


def _signature_holds(compact: str, public_pem: str) -> bool:
    """RS256 over ``header.payload``, as the validator's ``jws.verify`` checks it."""
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    header, payload, signature = compact.strip().split(".")
    try:
        if json.loads(_b64url(header)).get("alg", "").upper() != "RS256":
            return False
        key = load_pem_public_key(public_pem.encode("utf-8"))
        if not isinstance(key, rsa.RSAPublicKey):
            return False
        key.verify(
            _b64url(signature), f"{header}.{payload}".encode("ascii"), padding.PKCS1v15(), hashes.SHA256()
        )
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError, AttributeError):
        return False
    return True


def _ids(value: Any) -> list[str]:
    """The ids a property names: a string, an object with an id, or a list of those."""
    values = value if isinstance(value, list) else [value]
    return [str(v.get("id")) if isinstance(v, dict) else str(v) for v in values if v]


def _iso_datetime(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None  # not an ISO 8601 string: the validator's property checks, not modelled here
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _check_dates(assertion: dict[str, Any], node: str) -> None:
    """The validator's ASSERTION_TIMESTAMP_CHECKS."""
    issued_on, expires = _iso_datetime(assertion.get("issuedOn")), _iso_datetime(assertion.get("expires"))
    now = datetime.now(UTC)
    problem = None
    if issued_on is None:
        return
    if issued_on > now:
        problem = f"Assertion {node} has issue date {issued_on} in the future."
    elif expires is not None and expires < issued_on:
        problem = f"Assertion {node} expiration is prior to issue date."
    elif expires is not None and expires < now:
        problem = f"Assertion {node} expired on {assertion['expires']}"
    if problem:
        raise _RejectionError(_flat("ASSERTION_TIMESTAMP_CHECKS", problem, node))


def _check_hosted_origin(node: str, issuer: dict[str, Any]) -> None:
    """The validator's HOSTED_ID_IN_VERIFICATION_SCOPE for a 2.0 hosted badge."""
    policy = issuer.get("verification")
    policy = policy if isinstance(policy, dict) else {}
    starts = policy.get("startsWith")
    starts = [starts] if isinstance(starts, str) else starts or []
    if starts and not any(node.startswith(str(prefix)) for prefix in starts):
        raise _RejectionError(
            _flat(
                "HOSTED_ID_IN_VERIFICATION_SCOPE",
                f"Assertion id {node} does not start with any permitted values in its issuer's "
                "verification policy.",
                node,
            )
        )
    issuer_id = str(issuer.get("id") or "")
    allowed = policy.get("allowedOrigins", urlsplit(issuer_id).netloc)
    allowed = [allowed] if isinstance(allowed, str) else allowed or []
    if not allowed or not issuer_id.startswith("http"):
        return  # an issuer with no web address has no origin to hold its badges to
    if urlsplit(node).netloc not in allowed:
        raise _RejectionError(
            _flat(
                "HOSTED_ID_IN_VERIFICATION_SCOPE",
                f"Assertion {node} not hosted in allowed origins {allowed}",
                node,
            )
        )


class _RejectionError(Exception):
    """An import refused by the validator: carries the flattened ``validationErrors`` list."""

    def __init__(self, errors: list[Any]) -> None:
        super().__init__(str(errors[:2]))
        self.errors = errors


def _flat(code: str, description: str, node: str = "_:b0", level: str = "ERROR") -> list[str]:
    return [code, description, level, node]


def _now() -> float:
    return time.time()


def _entity_id() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode("ascii")


def _stable_id(value: str) -> str:
    digest = hashlib.sha256(value.encode("utf-8")).digest()[:16]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


# ------------------------------------------------------------------ unbaking (fallback only)


def _local_unbake(data: bytes) -> str:
    """A minimal PNG iTXt/tEXt and SVG reader, used only when the project's unbaker is absent."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        pos = 8
        while pos + 8 <= len(data):
            (length,) = struct.unpack(">I", data[pos : pos + 4])
            kind = data[pos + 4 : pos + 8]
            chunk = data[pos + 8 : pos + 8 + length]
            pos += 12 + length
            if kind == b"iTXt" and chunk.startswith(b"openbadges\x00"):
                rest = chunk[len(b"openbadges\x00") :]
                compressed, rest = rest[0], rest[2:]
                _lang, _, rest = rest.partition(b"\x00")
                _translated, _, text = rest.partition(b"\x00")
                return (zlib.decompress(text) if compressed else text).decode("utf-8")
            if kind == b"tEXt" and chunk.startswith(b"openbadges\x00"):
                return chunk[len(b"openbadges\x00") :].decode("latin-1")
            if kind == b"IEND":
                break
        raise ValueError("the PNG holds no openbadges chunk")
    svg = data.decode("utf-8", errors="replace")
    match = re.search(r"<openbadges:assertion\b([^>]*?)(/>|>(.*?)</openbadges:assertion>)", svg, re.S)
    if not match:
        raise ValueError("not a baked PNG or SVG")
    inner = (match.group(3) or "").strip()
    if inner.startswith("<![CDATA[") and inner.endswith("]]>"):
        inner = inner[9:-3].strip()
    if inner:
        return html.unescape(inner)
    verify = re.search(r'verify\s*=\s*"([^"]*)"', match.group(1))
    if verify:
        return html.unescape(verify.group(1))
    raise ValueError("the SVG assertion element is empty")


def unbake(data: bytes) -> str:
    """The project's unbaker when it is installed, else the small local fallback."""
    try:
        module = importlib.import_module("backpack_migrate.openbadges")
        project_unbake: Callable[[bytes], str] = module.unbake
        error_type: type[Exception] = module.UnbakeError
    except (ImportError, AttributeError):
        return _local_unbake(data)
    try:
        return project_unbake(data)
    except error_type as exc:
        raise ValueError(str(exc)) from exc


# ------------------------------------------------------------------ recipient matching


def _hash_matches(identity: str, salt: str, email: str) -> bool:
    algorithm, _, digest = identity.partition("$")
    algorithm = algorithm.lower()
    if algorithm not in ("sha256", "md5") or not digest:
        return False
    for variant in {email, email.lower()}:
        computed = hashlib.new(algorithm, (variant + salt).encode("utf-8")).hexdigest()
        if computed.lower() == digest.lower():
            return True
    return False


def _recipient_matches(assertion: dict[str, Any], email: str) -> bool:
    recipient = assertion.get("recipient")
    if isinstance(recipient, str):  # 0.5: the email, or "sha256$..." with a top-level salt
        salt = str(assertion.get("salt") or "")
        if "$" in recipient and "@" not in recipient:
            return _hash_matches(recipient, salt, email)
        return recipient.strip().lower() == email.lower()
    if not isinstance(recipient, dict):
        return False
    kind = str(recipient.get("type") or "email").lower()
    if kind != "email":
        return False
    identity = str(recipient.get("identity") or "")
    if recipient.get("hashed") in (True, "true", "True") or identity.startswith(("sha256$", "md5$")):
        return _hash_matches(identity, str(recipient.get("salt") or ""), email)
    return identity.strip().lower() == email.lower()


# ------------------------------------------------------------------ the sandbox


class BadgrSandbox(LoopbackServer):
    """An in-memory Badgr server on 127.0.0.1 with one registered OAuth2 application."""

    thread_name = "badgr-sandbox"
    poll_interval = 0.05

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        redirect_uris: list[str],
        fetch_allow_loopback: bool = True,
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
        self.fetch_allow_loopback = fetch_allow_loopback
        self.allowed_scopes = tuple(allowed_scopes)
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.code_lifetime = code_lifetime
        self.fetch_timeout = fetch_timeout
        self.app_name = app_name
        self._port = port
        self._lock = threading.RLock()
        self._accounts: dict[str, Account] = {}
        self._assertions: list[StoredAssertion] = []
        self._collections: list[StoredCollection] = []
        self._codes: dict[str, _Code] = {}
        self._access: dict[str, _Grant] = {}
        self._refresh: dict[str, _Grant] = {}
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

    # ---------------------------------------------------------- set-up and inspection

    def add_account(self, username: str, password: str, emails: list[tuple[str, bool]]) -> str:
        """Register a learner; returns its entityId. ``emails`` are ``(email, verified)`` pairs."""
        with self._lock:
            account = Account(
                username=username,
                password=password,
                emails=[[email, bool(verified)] for email, verified in emails],
                entity_id=_entity_id(),
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

    def issue_token(self, username: str, scope: str = "rw:backpack rw:profile") -> dict[str, Any]:
        """Tokens for a learner without the browser dance (for tests and demos)."""
        with self._lock:
            return self._new_tokens(username, self.client_id, scope)

    def assertions_of(self, username: str) -> list[dict[str, Any]]:
        """Everything in a learner's backpack, accepted and pending."""
        with self._lock:
            return [self._render(item) for item in self._assertions if item.username == username]

    def collections_of(self, username: str) -> list[dict[str, Any]]:
        """A learner's collections, as ``GET /v2/backpack/collections`` lists them."""
        with self._lock:
            return [self._render_collection(c) for c in self._collections if c.username == username]

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

    def reset_throttle(self) -> None:
        with self._lock:
            self._backoff.clear()

    # ---------------------------------------------------------- internals used by the handler

    def _take_failure(self, path: str) -> _Failure | None:
        with self._lock:
            queue = self._failures.get(path)
            return queue.pop(0) if queue else None

    def _record(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self._log.append(LoggedRequest(method, path, status))

    def _new_tokens(self, username: str, client_id: str, scope: str) -> dict[str, Any]:
        access, refresh = secrets.token_urlsafe(30), secrets.token_urlsafe(30)
        self._access[access] = _Grant(
            username, client_id, scope, expires_at=_now() + ACCESS_TOKEN_SECONDS, pair=refresh
        )
        self._refresh[refresh] = _Grant(username, client_id, scope, pair=access)
        return {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": ACCESS_TOKEN_SECONDS,
            "refresh_token": refresh,
            "scope": scope,
        }

    def _grant_for(self, token: str) -> _Grant | None:
        with self._lock:
            grant = self._access.get(token)
            if grant is None:
                return None
            if grant.expires_at <= _now():
                del self._access[token]
                return None
            grant.expires_at = _now() + ACCESS_TOKEN_SECONDS  # sliding
            return grant

    def _throttle_key(self, ip: str, username: str | None) -> str:
        return f"user:{username}" if username else f"ip:{ip}"

    def _throttled_for(self, key: str) -> float | None:
        with self._lock:
            entry = self._backoff.get(key)
            if entry is None:
                return None
            remaining = entry[1] - _now()
            return remaining if remaining > 0 else None

    def _bump(self, key: str) -> None:
        with self._lock:
            count = self._backoff.get(key, (0, 0.0))[0] + 1
            wait = min(self.backoff_base * 2**count, self.backoff_max)
            self._backoff[key] = (count, _now() + wait)

    def _clear_backoff(self, key: str) -> None:
        with self._lock:
            self._backoff.pop(key, None)

    def _check_scope(self, requested: str) -> str | None:
        scopes = [s for s in requested.split() if s]
        if any(s not in self.allowed_scopes for s in scopes):
            return None
        return " ".join(scopes) if scopes else " ".join(self.allowed_scopes)

    # ---------------------------------------------------------- import

    def _fetch_json(self, url: str) -> dict[str, Any]:
        """GET a hosted document; like Badgr, the HTTP status is ignored when the body is JSON."""
        host = urlsplit(url).hostname or ""
        if not self.fetch_allow_loopback and _is_loopback(host):
            raise _RejectionError(_flat("FETCH_HTTP_NODE", "Unable to reach URL", url))
        request = urllib.request.Request(
            url, headers={"Accept": "application/ld+json, application/json, */*"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.fetch_timeout) as response:
                body = response.read(2_000_000)
        except urllib.error.HTTPError as exc:
            body = exc.read(2_000_000) if exc.fp is not None else b""
        except (OSError, ValueError):
            raise _RejectionError(_flat("FETCH_HTTP_NODE", "Unable to reach URL", url)) from None
        try:
            document = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise _RejectionError(_flat("FETCH_HTTP_NODE", "Unable to reach URL", url)) from None
        if not isinstance(document, dict):
            raise _RejectionError(_flat("VALIDATE_PROPERTY", "Fetched document is not a JSON object", url))
        return document

    def _resolve(self, value: Any) -> Any:
        if isinstance(value, str) and value.startswith(("http://", "https://")):
            return self._fetch_json(value)
        return value

    def _assertion_from_text(self, text: str) -> dict[str, Any]:
        text = text.strip()
        if text.startswith(("http://", "https://")):
            return self._fetch_json(text)
        if text.startswith("{"):
            try:
                value = json.loads(text)
            except ValueError:
                raise _RejectionError(
                    _flat("DETECT_INPUT_TYPE", "Could not parse the baked badge JSON")
                ) from None
            if isinstance(value, dict):
                return value
        parts = text.split(".")
        if len(parts) == 3:  # a compact JWS: its payload (the signature is checked by _verify_signed)
            try:
                value = json.loads(_b64url(parts[1]))
            except (binascii.Error, ValueError):
                value = None
            if isinstance(value, dict):
                return value
        raise _RejectionError(_flat("DETECT_INPUT_TYPE", "Could not determine the input type of the badge"))

    def _verify(self, source: str, value: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """The assertion, badge class and issuer, fetched and checked like Badgr's validator."""
        fetched = source == "url"
        compact: str | None = None  # the JWS a signed badge came as
        if source == "url":
            assertion = self._fetch_json(value)
        elif source == "image":
            match = re.match(r"^data:([\w.+/-]+)?(;[\w=.-]+)*;base64,(.*)$", str(value), re.S)
            if not match:
                raise _RejectionError(_flat("IMAGE_VALIDATION", "Could not read the image data URI"))
            try:
                data = base64.b64decode(match.group(3), validate=False)
                text = unbake(data)
            except (binascii.Error, ValueError):
                raise _RejectionError(
                    _flat("DETECT_INPUT_TYPE", "Could not find baked badge data in the image")
                ) from None
            fetched = text.strip().startswith(("http://", "https://"))
            compact = text if _is_compact_jws(text) else None
            assertion = self._assertion_from_text(text)
        elif isinstance(value, dict):
            assertion = value
        elif isinstance(value, str):
            compact = value if _is_compact_jws(value) else None
            assertion = self._assertion_from_text(value)
        else:
            raise _RejectionError(
                _flat("DETECT_INPUT_TYPE", "Could not determine the input type of the badge")
            )

        # A hosted badge is always checked against its issuer's copy, whatever form it came in.
        verify = assertion.get("verify") or assertion.get("verification")
        hosted_url = None
        if isinstance(verify, dict) and str(verify.get("type", "")).lower() in ("hosted", "hostedbadge"):
            for candidate in (assertion.get("id"), verify.get("url")):
                if isinstance(candidate, str) and candidate.startswith(("http://", "https://")):
                    hosted_url = candidate
                    break
        if hosted_url and not fetched:
            assertion = self._fetch_json(hosted_url)

        errors: list[str] = []
        if not assertion.get("recipient"):
            errors += _flat(
                "VALIDATE_PROPERTY", "Required property recipient not present in unknown type node _:b0"
            )
        if not assertion.get("badge"):
            errors += _flat(
                "VALIDATE_PROPERTY", "Required property badge not present in unknown type node _:b0"
            )
        if errors:
            raise _RejectionError(errors)
        badge = self._resolve(assertion["badge"])
        if not isinstance(badge, dict):
            raise _RejectionError(_flat("VALIDATE_PROPERTY", "Property badge is not a BadgeClass"))
        issuer = self._resolve(badge.get("issuer")) or {}
        if not isinstance(issuer, dict):
            raise _RejectionError(_flat("VALIDATE_PROPERTY", "Property issuer is not a Profile"))
        node = str(assertion.get("id") or "_:b0")
        _check_dates(assertion, node)
        # 2.0 names it "verification" (1.x "verify"); "hosted" and "signed" are its short forms.
        verification = assertion.get("verification")
        kind = str(verification.get("type", "")).lower() if isinstance(verification, dict) else ""
        if kind in ("hosted", "hostedbadge"):
            _check_hosted_origin(node, issuer)
        if compact and isinstance(verification, dict) and kind in ("signed", "signedbadge"):
            self._verify_signed(compact, assertion, issuer, verification)
        return assertion, badge, issuer

    def _verify_signed(
        self, compact: str, assertion: dict[str, Any], issuer: dict[str, Any], verify: dict[str, Any]
    ) -> None:
        """A signed 2.0 badge: the validator's VERIFY_JWS, VERIFY_KEY_OWNERSHIP and
        VERIFY_SIGNED_ASSERTION_NOT_REVOKED. (It never checks 1.0 signatures.)"""
        node = str(assertion.get("id") or "_:b0")
        creator = verify.get("creator")
        key = self._resolve(creator) if isinstance(creator, str) else creator
        if not isinstance(key, dict) or not _signature_holds(compact, str(key.get("publicKeyPem", ""))):
            raise _RejectionError(_flat("VERIFY_JWS", f"Signature for node {node} failed verification", node))
        key_id = str(key.get("id") or creator)
        if key_id not in _ids(issuer.get("publicKey")):
            raise _RejectionError(
                _flat(
                    "VERIFY_KEY_OWNERSHIP",
                    f"Assertion signed by a key {key_id} other than those authorized by issuer profile",
                    node,
                )
            )
        revocation_url = issuer.get("revocationList")
        if not isinstance(revocation_url, str):
            return
        entries = self._fetch_json(revocation_url).get("revokedAssertions")
        # JSON-LD compaction turns a one-entry list into a bare object, and the validator then
        # finds nothing in it: a badge revoked in a one-entry list is accepted.
        if not isinstance(entries, list) or len(entries) < 2:
            return
        revoked = [e for e in entries if (e.get("id") if isinstance(e, dict) else e) == node]
        if revoked:
            reasons = [e.get("revocationReason") for e in revoked if isinstance(e, dict)]
            reason = next((f" with reason: {r}" for r in reversed(reasons) if r), "")
            raise _RejectionError(
                _flat(
                    "VERIFY_SIGNED_ASSERTION_NOT_REVOKED",
                    f"Assertion {node} has been revoked in RevocationList {revocation_url}{reason}",
                    node,
                )
            )

    def _import(self, username: str, source: str, value: Any) -> tuple[int, dict[str, Any]]:
        try:
            assertion, badge, issuer = self._verify(source, value)
        except _RejectionError as rejection:
            return 400, _envelope(False, "bad request", validation_errors=rejection.errors)
        with self._lock:
            account = self._accounts[username]
            matched = next(
                (
                    email
                    for email, verified in account.emails
                    if verified and _recipient_matches(assertion, email)
                ),
                None,
            ) or next((email for email, _ in account.emails if _recipient_matches(assertion, email)), None)
        if matched is None:
            profile = {"email": [email for email, _ in account.emails]}
            errors = [
                "VERIFY_RECIPIENT_IDENTIFIER",
                "The recipient does not match any of your verified emails",
                "VERIFY_RECIPIENT_IDENTIFIER",
                "False",
                f"Profile {profile} did not match recipient identity {assertion.get('recipient')}",
                "ERROR",
                "_:b0",
            ]
            return 400, _envelope(False, "bad request", validation_errors=errors)
        open_badge_id = str(assertion.get("id") or (value if source == "url" else "") or "")
        if not open_badge_id:
            open_badge_id = f"urn:sandbox:{_stable_id(json.dumps(assertion, sort_keys=True))}"
        with self._lock:
            if any(a.username == username and a.open_badge_id == open_badge_id for a in self._assertions):
                return 400, _envelope(
                    False,
                    "bad request",
                    validation_errors=[
                        {
                            "name": "DUPLICATE_BADGE",
                            "description": "You already have this badge in your backpack",
                        }
                    ],
                )
            stored = StoredAssertion(
                entity_id=_entity_id(),
                username=username,
                open_badge_id=open_badge_id,
                matched_email=matched,
                badge=badge,
                issuer=issuer,
                assertion=assertion,
                created_at=_now(),
            )
            self._assertions.append(stored)
            return 201, _envelope(True, "ok", result=[self._render(stored)])

    def _is_pending(self, item: StoredAssertion) -> bool:
        account = self._accounts.get(item.username)
        if account is None:
            return True
        return not any(email.lower() == item.matched_email.lower() and ok for email, ok in account.emails)

    def _render(self, item: StoredAssertion) -> dict[str, Any]:
        badge_id = str(item.badge.get("id") or json.dumps(item.badge, sort_keys=True))
        issuer_id = str(item.issuer.get("id") or json.dumps(item.issuer, sort_keys=True))
        assertion = item.assertion
        identity = hashlib.sha256((item.matched_email + item.salt).encode("utf-8")).hexdigest()
        base = self.url if self._server is not None else "http://127.0.0.1"
        return {
            "entityType": "Assertion",
            "entityId": item.entity_id,
            "openBadgeId": item.open_badge_id,
            "createdAt": _iso(item.created_at),
            "createdBy": None,
            "badgeclass": _stable_id(badge_id),
            "badgeclassOpenBadgeId": badge_id,
            "badgeclassName": item.badge.get("name"),
            "issuer": _stable_id(issuer_id),
            "issuerOpenBadgeId": issuer_id,
            "image": f"{base}/media/uploads/badges/assertion-{item.entity_id}.png",
            "recipient": {
                "identity": f"sha256${identity}",
                "hashed": True,
                "type": "email",
                "plaintextIdentity": item.matched_email,
                "salt": item.salt,
            },
            "issuedOn": assertion.get("issuedOn") or assertion.get("issued_on"),
            "narrative": assertion.get("narrative"),
            "evidence": [],
            "revoked": False,
            "revocationReason": None,
            "acceptance": "Accepted",
            "expires": assertion.get("expires"),
            "pending": self._is_pending(item),
            "extensions": {},
        }

    def _list(self, username: str, include_pending: bool) -> list[dict[str, Any]]:
        with self._lock:
            items = [a for a in self._assertions if a.username == username and a.acceptance != "Rejected"]
            return [self._render(a) for a in items if include_pending or not self._is_pending(a)]

    def _delete(self, username: str, entity_id: str) -> bool:
        with self._lock:
            for item in self._assertions:
                if item.username == username and item.entity_id == entity_id:
                    self._assertions.remove(item)
                    for collection in self._collections:  # its collection rows go with it
                        if entity_id in collection.assertions:
                            collection.assertions.remove(entity_id)
                    return True
            return False

    def _set_acceptance(self, username: str, entity_id: str, acceptance: str) -> dict[str, Any] | None:
        with self._lock:
            for item in self._assertions:
                if item.username == username and item.entity_id == entity_id:
                    item.acceptance = acceptance
                    return self._render(item)
            return None

    # ---------------------------------------------------------- collections

    def _render_collection(self, collection: StoredCollection) -> dict[str, Any]:
        base = self.url if self._server is not None else "http://127.0.0.1"
        live = {a.entity_id for a in self._assertions if a.acceptance != "Rejected"}
        return {
            "entityType": "BackpackCollection",
            "entityId": collection.entity_id,
            "name": collection.name,
            "description": collection.description,
            "share_url": f"{base}/public/collections/{collection.share_hash}"
            if collection.share_hash
            else None,
            "shareHash": collection.share_hash,
            "published": bool(collection.share_hash),
            "assertions": [entity_id for entity_id in collection.assertions if entity_id in live],
        }

    def _collection(self, username: str, entity_id: str) -> StoredCollection | None:
        # Another learner's collection is "not found", as the owner check makes it on the real server.
        return next(
            (c for c in self._collections if c.entity_id == entity_id and c.username == username), None
        )

    def _collection_fields(self, data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, list[str]]]:
        """The writable fields of a collection, checked as the real serializer checks them."""
        values: dict[str, Any] = {}
        errors: dict[str, list[str]] = {}
        name = data.get("name")
        if name is None:
            errors["name"] = ["This field may not be null." if "name" in data else "This field is required."]
        elif not isinstance(name, str | int | float) or isinstance(name, bool):
            errors["name"] = ["Not a valid string."]
        elif not str(name).strip():
            errors["name"] = ["This field may not be blank."]
        else:
            values["name"] = str(name).strip()
        if "description" in data:
            description = data["description"]
            if description is None or not isinstance(description, str):
                errors["description"] = ["Not a valid string."]
            else:
                values["description"] = description.strip()
        if "published" in data:
            published = _boolean(data["published"])
            if published is None:
                errors["published"] = [f'"{data["published"]}" is not a valid boolean.']
            else:
                values["published"] = published
        if "assertions" in data:
            given = data["assertions"]
            if not isinstance(given, list):
                errors["assertions"] = [f'Expected a list of items but got type "{_py_type(given)}".']
            else:
                known = {a.entity_id for a in self._assertions}
                problems = []
                for entity_id in given:
                    if not isinstance(entity_id, str):
                        problems.append(
                            f"Incorrect type. Expected entity_id value, got {_py_type(entity_id)}."
                        )
                    elif entity_id not in known:
                        problems.append(f'Invalid entity_id "{entity_id}" - object does not exist.')
                if problems:
                    errors["assertions"] = problems
                else:
                    values["assertions"] = list(dict.fromkeys(given))
        return values, errors

    def _create_collection(self, username: str, data: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
        """201 with the new collection; ``None`` as the body means the server crashed (500)."""
        with self._lock:
            values, errors = self._collection_fields(data)
            if errors:
                return 400, _envelope(False, "bad request", field_errors=errors)
            if "assertions" in values:
                # The real server sets the badge list on a collection not saved yet, and crashes.
                return 500, None
            collection = StoredCollection(
                entity_id=_entity_id(),
                username=username,
                name=values["name"],
                description=values.get("description", ""),
                share_hash=secrets.token_hex(16) if values.get("published") else "",
            )
            self._collections.append(collection)
            return 201, _envelope(True, "ok", result=[self._render_collection(collection)])

    def _update_collection(
        self, username: str, entity_id: str, data: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        with self._lock:
            collection = self._collection(username, entity_id)
            if collection is None:
                return 404, _envelope(False, "entity not found or insufficient privileges")
            values, errors = self._collection_fields(data)
            if errors:
                return 400, _envelope(False, "bad request", field_errors=errors)
            collection.name = values["name"]
            collection.description = values.get("description", collection.description)
            if "published" in values:
                if values["published"] and not collection.share_hash:
                    collection.share_hash = secrets.token_hex(16)
                elif not values["published"]:
                    collection.share_hash = ""
            if "assertions" in values:
                collection.assertions = values["assertions"]  # PUT replaces the list
            return 200, _envelope(True, "ok", result=[self._render_collection(collection)])

    def _delete_collection(self, username: str, entity_id: str) -> bool:
        with self._lock:
            collection = self._collection(username, entity_id)
            if collection is None:
                return False
            self._collections.remove(collection)
            return True

    def _profile(self, username: str) -> dict[str, Any]:
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
                "agreedTermsVersion": 1,
                "hasAgreedToLatestTermsVersion": True,
                "marketingOptIn": False,
                "badgrDomain": "127.0.0.1",
                "hasPasswordSet": True,
                "recipient": {"identity": primary, "type": "email"} if primary else None,
            }


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _boolean(value: Any) -> bool | None:
    """A value as the real serializer's BooleanField reads it, or None when it is not one."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "1", "yes", "on", "t", "y"):
            return True
        if lowered in ("false", "0", "no", "off", "f", "n"):
            return False
    return None


def _py_type(value: Any) -> str:
    """The Python type name the real server (Python) reports for a JSON value."""
    return {dict: "dict", list: "list", str: "str", bool: "bool", int: "int", float: "float"}.get(
        type(value), "NoneType"
    )


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _envelope(
    success: bool,
    description: str,
    *,
    result: list[Any] | None = None,
    field_errors: dict[str, Any] | None = None,
    validation_errors: list[Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "status": {"success": success, "description": description},
        "result": result or [],
    }
    if not success:
        body["fieldErrors"] = field_errors or {}
        body["validationErrors"] = validation_errors or []
    return body


_URL = re.compile(
    r"^(?:http|ftp)s?://(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"(?:[A-Za-z]{2,63}|localhost|\d{1,3}(?:\.\d{1,3}){3}|\[[0-9A-Fa-f:]+\])(?::\d{1,5})?(?:[/?#][^\s]*)?$"
)


# ------------------------------------------------------------------ HTTP


class _Handler(BaseHTTPRequestHandler):
    sandbox: BadgrSandbox
    server_version = "BadgrSandbox/1.0"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return  # the sandbox keeps its own token-free log

    # ---------------------------------------------------------- plumbing

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        self._path = parts.path.rstrip("/") or "/"
        self._query = parse_qs(parts.query, keep_blank_values=True)
        self._query_string = parts.query
        length = int(self.headers.get("Content-Length") or 0)
        self._body = self.rfile.read(length) if length > 0 else b""
        self._status = 500
        self._method = method
        self._recorded = False
        try:
            failure = self.sandbox._take_failure(self._path)
            if failure is not None:
                if failure.delay:
                    time.sleep(failure.delay)
                if failure.status:
                    self._injected(failure.status)
                    return
            self._route(method)
        except (BrokenPipeError, ConnectionResetError):
            return
        except Exception:
            self._send(500, SERVER_ERROR_PAGE.encode(), "text/html")
        finally:
            if not self._recorded:
                self.sandbox._record(method, self._path, self._status)

    def _route(self, method: str) -> None:
        path = self._path
        routes: dict[tuple[str, str], Callable[[], None]] = {
            ("GET", "/auth/oauth2/authorize"): self._authorize_page,
            ("POST", "/auth/oauth2/authorize"): self._authorize_form,
            ("GET", "/o/authorize"): self._authorize_describe,
            ("POST", "/o/authorize"): self._authorize_json,
            ("POST", "/o/token"): self._token,
            ("POST", "/v2/backpack/import"): self._import,
            ("GET", "/v2/backpack/assertions"): self._assertions,
            ("GET", "/v2/users/self"): self._self,
            ("GET", "/v2/backpack/collections"): self._collections,
            ("POST", "/v2/backpack/collections"): self._collection_create,
        }
        handler = routes.get((method, path))
        if handler is not None:
            handler()
            return
        if path == "/o/token":
            self._send(405, b"", "text/html")
            return
        match = re.fullmatch(r"/v2/backpack/assertions/([\w-]+)", path)
        if match and method in ("GET", "PUT", "DELETE"):
            self._assertion_detail(method, match.group(1))
            return
        match = re.fullmatch(r"/v2/backpack/collections/([\w-]+)", path)
        if match and method in ("GET", "PUT", "DELETE"):
            self._collection_detail(method, match.group(1))
            return
        if any(p == path for _, p in routes):
            self._json(405, {"detail": f'Method "{method}" not allowed.'})
            return
        self._send(404, b"<h1>Not Found</h1>", "text/html")

    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self._status = status
        # Recorded before the reply leaves: a client that reads the log right after its
        # answer arrives must find its request there.
        if not self._recorded:
            self._recorded = True
            self.sandbox._record(self._method, self._path, status)
        self.send_response(status)
        if status != 204:  # the real server sends a 204 with no content type
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        accept = self.headers.get("Accept") or ""
        kind = (
            "application/json"
            if "application/json" in accept or not self._path.startswith("/v2")
            else ("application/ld+json")
        )
        self._send(status, json.dumps(body).encode("utf-8"), kind, headers)

    def _html(self, status: int, title: str, inner: str, headers: dict[str, str] | None = None) -> None:
        page = (
            "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title></head><body><main>{inner}</main></body></html>"
        )
        self._send(status, page.encode("utf-8"), "text/html; charset=utf-8", headers)

    def _injected(self, status: int) -> None:
        if status == 429:
            self._json(
                429,
                {"detail": "Request was throttled. Expected available in 1 second."},
                {"Retry-After": "1"},
            )
        elif status >= 500:
            reason = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
            self._send(status, f"<h1>{status} {reason}</h1>".encode(), "text/html")
        else:
            self._json(status, _envelope(False, "injected failure"))

    def _form(self) -> dict[str, str]:
        fields = parse_qs(self._body.decode("utf-8", errors="replace"), keep_blank_values=True)
        return {key: values[0] for key, values in fields.items()}

    def _cookie_user(self) -> str | None:
        cookie = SimpleCookie(self.headers.get("Cookie") or "")
        morsel = cookie.get(SESSION_COOKIE)
        if morsel is None:
            return None
        with self.sandbox._lock:
            return self.sandbox._sessions.get(morsel.value)

    def _bearer(self) -> _Grant | None:
        header = self.headers.get("Authorization") or ""
        kind, _, token = header.partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            return None
        return self.sandbox._grant_for(token.strip())

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
            with self.sandbox._lock:
                account = self.sandbox._accounts.get(form.get("username", ""))
            if account is None or not secrets.compare_digest(account.password, form.get("password", "")):
                self._consent_page(checked, scope, None, "The email or password you entered is incorrect.")
                return
            user = account.username
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
            self.sandbox._codes[code] = _Code(
                username=username,
                client_id=params["client_id"],
                redirect_uri=params["redirect_uri"],
                scope=scope,
                challenge=challenge,
                method=(params.get("code_challenge_method") or "plain") if challenge else None,
                expires_at=_now() + self.sandbox.code_lifetime,
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

    def _token(self) -> None:
        sandbox = self.sandbox
        if self._query_string:
            self._token_answer(
                None, 400, {"error": "Token grant parameters must be sent in post body, not query parameters"}
            )
            return
        form = self._form()
        grant_type = form.get("grant_type") or "password"
        key = sandbox._throttle_key(
            self.client_address[0], form.get("username") if grant_type == "password" else None
        )
        remaining = sandbox._throttled_for(key)
        if remaining is not None:
            expires: float = math.ceil(remaining) if remaining >= 1 else round(remaining, 3)
            self._json(
                429,
                {
                    "error": "login attempts throttled",
                    "error_description": "Too many login attempts. Please wait and try again.",
                    "expires": expires,
                },
            )
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

    def _token_answer(self, key: str | None, status: int, body: dict[str, Any]) -> None:
        if key is not None:
            if 200 <= status < 300:
                self.sandbox._clear_backoff(key)
            else:
                self.sandbox._bump(key)
        elif status >= 400:
            self.sandbox._bump(self.sandbox._throttle_key(self.client_address[0], None))
        self._json(status, body, {"Cache-Control": "no-store", "Pragma": "no-cache"})

    def _grant_code(self, form: dict[str, str], authenticated: bool) -> tuple[int, dict[str, Any]]:
        sandbox = self.sandbox
        if not authenticated:
            return 401, {"error": "invalid_client"}
        with sandbox._lock:
            code = sandbox._codes.get(form.get("code", ""))
            if code is None or code.expires_at <= _now() or code.client_id != sandbox.client_id:
                return 400, {"error": "invalid_grant"}
            if form.get("redirect_uri") != code.redirect_uri:
                return 400, {"error": "invalid_request", "error_description": "Mismatching redirect URI."}
            if code.challenge:
                verifier = form.get("code_verifier")
                if not verifier:
                    return 400, {"error": "invalid_request", "error_description": "Code verifier required."}
                if code.method == "S256":
                    digest = hashlib.sha256(verifier.encode("ascii", errors="replace")).digest()
                    computed = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
                else:
                    computed = verifier
                if not secrets.compare_digest(computed, code.challenge):
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
            return 400, {"error": "invalid scope requested"}
        with sandbox._lock:
            account = sandbox._accounts.get(form.get("username", ""))
            if account is None or not secrets.compare_digest(account.password, form.get("password", "")):
                return 400, {"error": "invalid_grant", "error_description": "Invalid credentials given."}
            return 200, sandbox._new_tokens(account.username, sandbox.client_id, scope)

    # ---------------------------------------------------------- API

    def _api_user(self, *, read: str | None, write: str) -> str | None:
        """The learner behind the bearer token, or None after answering 401/404 (Badgr's way)."""
        grant = self._bearer()
        if grant is None:
            self._json(
                401, _envelope(False, "no valid auth token found"), {"WWW-Authenticate": 'Bearer realm="api"'}
            )
            return None
        scopes = grant.scope.split()
        if write not in scopes and (read is None or read not in scopes):
            self._json(404, _envelope(False, "entity not found or insufficient privileges"))
            return None
        return grant.username

    def _content_type(self) -> str:
        return (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()

    def _data(self) -> dict[str, Any] | None:
        """The request body as the real server's parsers read it, or None after answering."""
        if self._content_type() == "application/x-www-form-urlencoded":
            return dict(self._form())
        try:
            data = json.loads(self._body or b"{}")
        except ValueError as exc:
            # A parse error gets the error envelope with no status of its own: 200.
            self._json(200, _envelope(False, "bad request", validation_errors=[f"JSON parse error - {exc}"]))
            return None
        if not isinstance(data, dict):
            self._json(
                400,
                _envelope(
                    False,
                    "bad request",
                    validation_errors=[f"Invalid data. Expected a dictionary, but got {_py_type(data)}."],
                ),
            )
            return None
        return data

    def _import(self) -> None:
        user = self._api_user(read=None, write="rw:backpack")
        if user is None:
            return
        if self._content_type() != "application/json":
            self._send(500, SERVER_ERROR_PAGE.encode(), "text/html")  # what the real server does
            return
        data = self._data()
        if data is None:
            return
        given = {key: data[key] for key in ("url", "image", "assertion") if data.get(key)}
        if len(given) != 1:
            self._json(
                400,
                _envelope(
                    False,
                    "bad request",
                    validation_errors=["Must provide only one of 'url', 'image' or 'assertion'."],
                ),
            )
            return
        (source, value), *_ = given.items()
        if source == "url" and (not isinstance(value, str) or not _URL.match(value)):
            self._json(400, _envelope(False, "bad request", field_errors={"url": ["Enter a valid URL."]}))
            return
        status, body = self.sandbox._import(user, source, value)
        self._json(status, body)

    def _assertions(self) -> None:
        user = self._api_user(read="r:backpack", write="rw:backpack")
        if user is None:
            return
        flag = (self._query.get("include_pending") or ["false"])[0].lower()
        result = self.sandbox._list(user, include_pending=flag in ("true", "1", "yes"))
        self._json(200, _envelope(True, "ok", result=result))

    def _assertion_detail(self, method: str, entity_id: str) -> None:
        user = self._api_user(read="r:backpack" if method == "GET" else None, write="rw:backpack")
        if user is None:
            return
        if method == "DELETE":
            if self.sandbox._delete(user, entity_id):
                self._send(204, b"", "")
            else:
                self._json(404, _envelope(False, "entity not found or insufficient privileges"))
            return
        if method == "PUT":
            self._assertion_acceptance(user, entity_id)
            return
        found = [a for a in self.sandbox._list(user, include_pending=True) if a["entityId"] == entity_id]
        if not found:
            self._json(404, _envelope(False, "entity not found or insufficient privileges"))
            return
        self._json(200, _envelope(True, "ok", result=found))

    def _assertion_acceptance(self, user: str, entity_id: str) -> None:
        """``PUT /v2/backpack/assertions/{id}``: only ``acceptance`` is read, as on the real server."""
        if not any(a["entityId"] == entity_id for a in self.sandbox._list(user, include_pending=True)):
            self._json(404, _envelope(False, "entity not found or insufficient privileges"))
            return
        data = self._data()
        if data is None:
            return
        acceptance = data.get("acceptance", "Accepted")
        if acceptance not in ("Unaccepted", "Accepted", "Rejected"):
            errors = {"acceptance": [f'"{acceptance}" is not a valid choice.']}
            self._json(400, _envelope(False, "bad request", field_errors=errors))
            return
        rendered = self.sandbox._set_acceptance(user, entity_id, str(acceptance))
        self._json(200, _envelope(True, "ok", result=[rendered]))

    def _collections(self) -> None:
        user = self._api_user(read="r:backpack", write="rw:backpack")
        if user is None:
            return
        self._json(200, _envelope(True, "ok", result=self.sandbox.collections_of(user)))

    def _collection_create(self) -> None:
        user = self._api_user(read=None, write="rw:backpack")
        if user is None:
            return
        data = self._data()
        if data is None:
            return
        status, body = self.sandbox._create_collection(user, data)
        if body is None:
            self._send(status, SERVER_ERROR_PAGE.encode(), "text/html")
            return
        self._json(status, body)

    def _collection_detail(self, method: str, entity_id: str) -> None:
        user = self._api_user(read="r:backpack" if method == "GET" else None, write="rw:backpack")
        if user is None:
            return
        not_found = _envelope(False, "entity not found or insufficient privileges")
        if method == "DELETE":
            if self.sandbox._delete_collection(user, entity_id):
                self._send(204, b"", "")
            else:
                self._json(404, not_found)
            return
        if method == "PUT":
            with self.sandbox._lock:
                exists = self.sandbox._collection(user, entity_id) is not None
            if not exists:
                self._json(404, not_found)
                return
            data = self._data()
            if data is None:
                return
            self._json(*self.sandbox._update_collection(user, entity_id, data))
            return
        with self.sandbox._lock:
            collection = self.sandbox._collection(user, entity_id)
            rendered = self.sandbox._render_collection(collection) if collection is not None else None
        if rendered is None:
            self._json(404, not_found)
            return
        self._json(200, _envelope(True, "ok", result=[rendered]))

    def _self(self) -> None:
        user = self._api_user(read="r:profile", write="rw:profile")
        if user is None:
            return
        self._json(200, _envelope(True, "ok", result=[self.sandbox._profile(user)]))


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


if __name__ == "__main__":  # pragma: no cover
    main()
