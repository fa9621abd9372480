"""What the real server's validator (IMS ``openbadges.verify``) checks before an import.

The sandbox unbakes images, fetches hosted assertions (and their badge class and issuer) over
HTTP, checks dates, a 2.0 hosted badge's origin and a signed 2.0 badge's signature, key and
revocation list, and matches the recipient against every email of the account. A refusal is
a :class:`RejectionError` carrying ``validationErrors`` flattened as the real server flattens
them: for the codes Badgr translates, its own ``name, description`` pair first, then each
validator message as ``name, "False", text, "ERROR", node``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import html
import importlib
import json
import re
import struct
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from infra.local.badgr_sandbox.fetch import FetchError, LoopbackFetch

# Badgr's BadgeCheckHelper.error_map: the pair it puts before the validator's own message.
TRANSLATED = {
    "FETCH_HTTP_NODE": ("FETCH_HTTP_NODE", "Unable to reach URL"),
    "VERIFY_RECIPIENT_IDENTIFIER": (
        "VERIFY_RECIPIENT_IDENTIFIER",
        "The recipient does not match any of your verified emails",
    ),
    "VERIFY_JWS": ("VERIFY_SIGNATURE", "Could not verify signature"),
    "VERIFY_KEY_OWNERSHIP": ("VERIFY_SIGNATURE", "Could not verify signature"),
    "VERIFY_SIGNED_ASSERTION_NOT_REVOKED": ("ASSERTION_REVOKED", "This assertion has been revoked"),
}
PROFILE_NODE = "_:b0"  # the blank node the validator gives the account's recipient profile


class RejectionError(Exception):
    """An import refused by the validator: carries the flattened ``validationErrors`` list."""

    def __init__(self, errors: list[Any]) -> None:
        super().__init__(str(errors[:2]))
        self.errors = errors


def failure(code: str, message: str, node: str = "_:b0") -> list[str]:
    """One failed validator task, flattened as the real server's ``validationErrors`` show it."""
    translated = list(TRANSLATED[code]) if code in TRANSLATED else []
    return [*translated, code, "False", message, "ERROR", node]


def abbreviate(value: Any, length: int = 48) -> str:
    """The validator's ``abbreviate_value``: lists joined by commas, long values cut at 48."""
    if isinstance(value, list | tuple):
        value = ", ".join(str(v) for v in value)
    text = str(value)
    return text if len(text) < length else text[:length] + "..."


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def is_compact_jws(text: str) -> bool:
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


def iso_datetime(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None  # not an ISO 8601 string: the validator's property checks, not modelled here
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _check_dates(assertion: dict[str, Any], node: str) -> None:
    """The validator's ASSERTION_TIMESTAMP_CHECKS."""
    issued_on, expires = iso_datetime(assertion.get("issuedOn")), iso_datetime(assertion.get("expires"))
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
        raise RejectionError(failure("ASSERTION_TIMESTAMP_CHECKS", problem, node))


def _check_hosted_origin(node: str, issuer: dict[str, Any]) -> None:
    """The validator's HOSTED_ID_IN_VERIFICATION_SCOPE for a 2.0 hosted badge."""
    policy = issuer.get("verification")
    policy = policy if isinstance(policy, dict) else {}
    starts = policy.get("startsWith")
    starts = [starts] if isinstance(starts, str) else starts or []
    if starts and not any(node.startswith(str(prefix)) for prefix in starts):
        # The validator's text runs the id into the next word; kept as it reads.
        raise RejectionError(
            failure(
                "HOSTED_ID_IN_VERIFICATION_SCOPE",
                f"Assertion id {node}does not start with any permitted values in its issuer's "
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
        raise RejectionError(
            failure(
                "HOSTED_ID_IN_VERIFICATION_SCOPE",
                f"Assertion {abbreviate(node)} not hosted in allowed origins {abbreviate(allowed)}",
                node,
            )
        )


# ------------------------------------------------------------------ unbaking


def local_unbake(data: bytes) -> str:
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
        return local_unbake(data)
    try:
        return project_unbake(data)
    except error_type as exc:
        raise ValueError(str(exc)) from exc


# ------------------------------------------------------------------ recipient


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


def recipient_identity(assertion: dict[str, Any]) -> tuple[str, bool, str]:
    """The assertion's recipient as the validator reads it: ``(identity, hashed, salt)``."""
    recipient = assertion.get("recipient")
    if isinstance(recipient, str):  # 0.5: the email, or "sha256$..." with a top-level salt
        hashed = "$" in recipient and "@" not in recipient
        return recipient.strip(), hashed, str(assertion.get("salt") or "")
    if not isinstance(recipient, dict):
        return "", False, ""
    identity = str(recipient.get("identity") or "")
    flag = recipient.get("hashed")
    hashed = identity.startswith(("sha256$", "md5$")) if flag is None else flag in (True, "true", "True")
    return identity, hashed, str(recipient.get("salt") or "")


def recipient_matches(assertion: dict[str, Any], email: str) -> bool:
    recipient = assertion.get("recipient")
    if isinstance(recipient, dict) and str(recipient.get("type") or "email").lower() != "email":
        return False
    identity, hashed, salt = recipient_identity(assertion)
    if hashed:
        return _hash_matches(identity, salt, email)
    return bool(identity) and identity.lower() == email.lower()


def recipient_mismatch(assertion: dict[str, Any], emails: list[str]) -> list[str]:
    """VERIFY_RECIPIENT_IDENTIFIER in the validator's words, for a recipient no email matched."""
    identity, hashed, _ = recipient_identity(assertion)
    node = abbreviate(assertion.get("id") or "_:b1")
    if hashed:
        text = (
            f"Profile {abbreviate(PROFILE_NODE)} identifier(s) {abbreviate(emails)} of type email did not "
            f"match assertion {node} recipient hash {identity}."
        )
    else:
        text = (
            f"Profile {abbreviate(PROFILE_NODE)} identifier {emails} of type email did not match "
            f"assertion {node} recipient value {identity}"
        )
    return failure("VERIFY_RECIPIENT_IDENTIFIER", text, PROFILE_NODE)


# ------------------------------------------------------------------ the checks


class BadgeCheck:
    """Verifies one import (``url``, ``image`` or ``assertion``) as the real server's validator does."""

    def __init__(self, fetch: LoopbackFetch) -> None:
        self.fetch = fetch

    def _fetch_json(self, url: str) -> dict[str, Any]:
        """GET a hosted document; like the validator, the HTTP status is ignored when the body is JSON."""
        try:
            body = self.fetch.document(url)
        except FetchError as exc:
            raise RejectionError(failure("FETCH_HTTP_NODE", exc.message, url)) from None
        try:
            document = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            message = f"Response could not be interpreted from url {url}"
            raise RejectionError(failure("FETCH_HTTP_NODE", message, url)) from None
        if not isinstance(document, dict):
            raise RejectionError(failure("VALIDATE_PROPERTY", "Fetched document is not a JSON object", url))
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
                raise RejectionError(
                    failure("DETECT_INPUT_TYPE", "Could not parse the baked badge JSON")
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
        raise RejectionError(failure("DETECT_INPUT_TYPE", "Could not determine the input type of the badge"))

    def verify(self, source: str, value: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """The assertion, badge class and issuer, fetched and checked like Badgr's validator."""
        fetched = source == "url"
        compact: str | None = None  # the JWS a signed badge came as
        if source == "url":
            assertion = self._fetch_json(value)
        elif source == "image":
            match = re.match(r"^data:([\w.+/-]+)?(;[\w=.-]+)*;base64,(.*)$", str(value), re.S)
            if not match:
                raise RejectionError(failure("IMAGE_VALIDATION", "Could not read the image data URI"))
            try:
                data = base64.b64decode(match.group(3), validate=False)
                text = unbake(data)
            except (binascii.Error, ValueError):
                raise RejectionError(
                    failure("DETECT_INPUT_TYPE", "Could not find baked badge data in the image")
                ) from None
            fetched = text.strip().startswith(("http://", "https://"))
            compact = text if is_compact_jws(text) else None
            assertion = self._assertion_from_text(text)
        elif isinstance(value, dict):
            assertion = value
        elif isinstance(value, str):
            compact = value if is_compact_jws(value) else None
            assertion = self._assertion_from_text(value)
        else:
            raise RejectionError(
                failure("DETECT_INPUT_TYPE", "Could not determine the input type of the badge")
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
        for required in ("recipient", "badge"):
            if not assertion.get(required):
                errors += failure(
                    "VALIDATE_PROPERTY", f"Required property {required} not present in unknown type node _:b0"
                )
        if errors:
            raise RejectionError(errors)
        badge = self._resolve(assertion["badge"])
        if not isinstance(badge, dict):
            raise RejectionError(failure("VALIDATE_PROPERTY", "Property badge is not a BadgeClass"))
        if not badge.get("image"):
            badge_node = str(badge.get("id") or "_:b1")
            raise RejectionError(
                failure(
                    "VALIDATE_PROPERTY",
                    f"Required property image not present in BadgeClass node {badge_node}",
                    badge_node,
                )
            )
        issuer = self._resolve(badge.get("issuer")) or {}
        if not isinstance(issuer, dict):
            raise RejectionError(failure("VALIDATE_PROPERTY", "Property issuer is not a Profile"))
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
            raise RejectionError(
                failure("VERIFY_JWS", f"Signature for node {node} failed verification", node)
            )
        key_id = str(key.get("id") or creator)
        if key_id not in _ids(issuer.get("publicKey")):
            raise RejectionError(
                failure(
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
            raise RejectionError(
                failure(
                    "VERIFY_SIGNED_ASSERTION_NOT_REVOKED",
                    f"Assertion {node} has been revoked in RevocationList {revocation_url}{reason}",
                    node,
                )
            )
