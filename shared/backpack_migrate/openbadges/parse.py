"""Offline parsing: payload kind, JSON, compact JWS, version, dates, and `extract`."""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import UTC, datetime
from typing import Any

from .errors import UnbakeError
from .model import Extracted, PayloadKind
from .unbake import MAX_PAYLOAD_BYTES, unbake

_JWS_RE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")
_URL_RE = re.compile(r"^https?://[^\s]+$", re.IGNORECASE)
MAX_JSON_DEPTH = 64

V2_CONTEXTS = frozenset(
    {
        "https://w3id.org/openbadges/v2",
        "http://w3id.org/openbadges/v2",
        "https://openbadgespec.org/v2/context.json",
    }
)
V1_CONTEXTS = frozenset(
    {
        "https://w3id.org/openbadges/v1",
        "http://w3id.org/openbadges/v1",
        "https://openbadgespec.org/v1/context.json",
    }
)


class PayloadError(Exception):
    """Payload text could not be parsed; `.code` is an issue code."""

    def __init__(self, code: str, detail: str | None = None) -> None:
        self.code = code
        self.detail = detail
        super().__init__(code)


def classify(text: str) -> PayloadKind | None:
    stripped = text.strip()
    if stripped.startswith("{"):
        return "json"
    if _JWS_RE.match(stripped):
        return "jws"
    if _URL_RE.match(stripped):
        return "url"
    return None


def _depth_ok(text: str) -> bool:
    """Cheap bound on nesting depth, so a hostile document cannot exhaust the stack."""
    depth = 0
    in_string = False
    escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def parse_json_text(text: str | bytes, max_bytes: int = MAX_PAYLOAD_BYTES * 2) -> Any:
    """json.loads with a size cap and a nesting cap; raises PayloadError(MALFORMED_JSON)."""
    if isinstance(text, bytes):
        if len(text) > max_bytes:
            raise PayloadError("MALFORMED_JSON", "too large")
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise PayloadError("MALFORMED_JSON", "not UTF-8") from exc
    if len(text) > max_bytes:
        raise PayloadError("MALFORMED_JSON", "too large")
    # Quick nesting check only when brackets are plentiful (ordinary badges have a handful).
    if (text.count("[") + text.count("{")) > MAX_JSON_DEPTH and not _depth_ok(text):
        raise PayloadError("MALFORMED_JSON", "nested too deeply")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise PayloadError("MALFORMED_JSON", str(exc)[:120]) from exc


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def b64url_decode(part: str) -> bytes:
    if len(part) > MAX_PAYLOAD_BYTES * 2:
        raise PayloadError("JWS_MALFORMED")
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError) as exc:
        raise PayloadError("JWS_MALFORMED") from exc


def split_jws(token: str) -> tuple[dict[str, Any], bytes, bytes, bytes]:
    """(header, payload bytes, signing input, signature) of a compact JWS, not verified."""
    token = token.strip()
    if not _JWS_RE.match(token):
        raise PayloadError("JWS_MALFORMED")
    header_b64, payload_b64, signature_b64 = token.split(".")
    try:
        header = parse_json_text(b64url_decode(header_b64), max_bytes=16_384)
    except PayloadError as exc:
        raise PayloadError("JWS_MALFORMED") from exc
    if not isinstance(header, dict):
        raise PayloadError("JWS_MALFORMED")
    payload = b64url_decode(payload_b64)
    signature = b64url_decode(signature_b64)
    return header, payload, f"{header_b64}.{payload_b64}".encode("ascii"), signature


def jws_payload(token: str) -> dict[str, Any]:
    """The JSON object a compact JWS carries, without checking the signature."""
    _header, payload, _input, _sig = split_jws(token)
    try:
        value = parse_json_text(payload)
    except PayloadError as exc:
        raise PayloadError("JWS_PAYLOAD_UNREADABLE") from exc
    if not isinstance(value, dict):
        raise PayloadError("JWS_PAYLOAD_UNREADABLE")
    return value


def context_iris(doc: dict[str, Any]) -> list[str] | None:
    """The context IRIs of a document, None when it has no @context."""
    if "@context" not in doc:
        return None
    ctx = doc["@context"]
    items = ctx if isinstance(ctx, list) else [ctx]
    return [c.strip().rstrip("/") for c in items if isinstance(c, str)]


def detect_version(doc: dict[str, Any]) -> str | None:
    """'0.5', '1.0', '1.1', '2.0', or None for an unknown (draft) context."""
    iris = context_iris(doc)
    if iris is not None:
        if any(i in V2_CONTEXTS for i in iris):
            return "2.0"
        if any(i in V1_CONTEXTS for i in iris):
            return "1.1"
        return None
    recipient = doc.get("recipient")
    if isinstance(recipient, str) and "verify" not in doc and "uid" not in doc:
        return "0.5"
    return "1.0"


class DateError(ValueError):
    pass


_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TZ_NO_COLON = re.compile(r"([+-]\d{2})(\d{2})$")


def parse_date(value: Any) -> datetime:
    """A UTC datetime from an ISO 8601 string, a date, or a Unix timestamp; DateError otherwise."""
    if isinstance(value, bool):
        raise DateError(repr(value))
    if isinstance(value, int | float):
        return _from_timestamp(float(value))
    if not isinstance(value, str) or not value.strip() or len(value) > 64:
        raise DateError(str(value)[:40])
    text = value.strip()
    if re.fullmatch(r"-?\d{1,12}(\.\d+)?", text):
        return _from_timestamp(float(text))
    candidate = text
    if candidate.endswith(("z", "Z")):
        candidate = candidate[:-1] + "+00:00"
    if "T" in candidate or " " in candidate:
        candidate = _TZ_NO_COLON.sub(r"\1:\2", candidate)
    try:
        parsed = datetime.fromisoformat(candidate)
    except ValueError as exc:
        raise DateError(text) from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _from_timestamp(seconds: float) -> datetime:
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise DateError(str(seconds)) from exc


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def hosted_url_of(doc: dict[str, Any], version: str | None) -> str | None:
    """Where a hosted assertion says it lives (verify.url for 1.0, id for 1.1/2.0)."""
    verify = doc.get("verification", doc.get("verify")) if version == "2.0" else doc.get("verify")
    vtype = verify.get("type") if isinstance(verify, dict) else None
    if isinstance(vtype, str) and vtype.lower() in ("signed", "signedbadge"):
        return None
    if version in ("1.1", "2.0"):
        ident = _text(doc.get("id"))
        if ident and ident.lower().startswith(("http://", "https://")):
            return ident
    if isinstance(verify, dict):
        url = _text(verify.get("url"))
        if url and url.lower().startswith(("http://", "https://")):
            return url
    return None


def offline_facts(doc: dict[str, Any]) -> dict[str, Any]:
    """Version, badge name, issuer name, issued date and hosted URL, from the assertion alone."""
    version = detect_version(doc)
    badge = doc.get("badge")
    badge_name = issuer_name = None
    if isinstance(badge, dict):
        badge_name = _text(badge.get("name"))
        issuer = badge.get("issuer")
        if isinstance(issuer, dict):
            issuer_name = _text(issuer.get("name"))
    issued_raw = doc.get("issued_on") if version == "0.5" else doc.get("issuedOn")
    issued_on = None
    if issued_raw is not None:
        try:
            issued_on = parse_date(issued_raw)
        except DateError:
            issued_on = None
    return {
        "version": version,
        "badge_name": badge_name,
        "issuer_name": issuer_name,
        "issued_on": issued_on,
        "hosted_url": hosted_url_of(doc, version),
    }


def extract(data: bytes) -> Extracted:
    """Unbake an image and read what its payload says, with no network.

    Raises UnbakeError when nothing usable can be read.
    """
    text = unbake(data)
    return extract_text(text)


def extract_text(text: str) -> Extracted:
    kind = classify(text)
    payload = text.strip()
    if kind is None:
        raise UnbakeError("BAKED_DATA_UNREADABLE")
    if kind == "url":
        return Extracted(payload_kind="url", payload=payload, hosted_url=payload)
    try:
        if kind == "json":
            doc = parse_json_text(payload)
            if not isinstance(doc, dict):
                raise PayloadError("MALFORMED_JSON")
            jws = None
        else:
            doc = jws_payload(payload)
            jws = payload
    except PayloadError as exc:
        raise UnbakeError("BAKED_DATA_UNREADABLE") from exc
    return Extracted(payload_kind=kind, payload=payload, assertion=doc, jws=jws, **offline_facts(doc))
