"""The Open Badges 0.5 / 1.0 / 1.1 / 2.0 verifier."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urljoin, urlsplit

from .errors import FetchError, UnbakeError
from .fetch import FetchedDocument, Fetcher
from .jws import InvalidKeyError, algorithm_allowed, load_rsa_public_key, signature_valid
from .messages import NON_BLOCKING_ERRORS, NOT_CERTAIN, message_for
from .model import (
    BadgeClassInfo,
    Issue,
    IssuerInfo,
    NormalizedBadge,
    PayloadKind,
    RecipientInfo,
    Verdict,
)
from .parse import (
    DateError,
    PayloadError,
    classify,
    detect_version,
    hosted_url_of,
    parse_date,
    parse_json_text,
    split_jws,
)
from .recipient import HASHED_RE, recipient_matches
from .unbake import MAX_PAYLOAD_BYTES, is_png, looks_like_svg, unbake

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import rsa

log = logging.getLogger(__name__)

_HASH_LENGTHS = {"md5": 32, "sha1": 40, "sha256": 64, "sha384": 96, "sha512": 128}
_RECIPIENT_TYPES = frozenset({"email", "url", "telephone", "id"})
_FUTURE_TOLERANCE = timedelta(hours=1)
_SIGNED = frozenset({"signed", "signedbadge"})
_HOSTED = frozenset({"hosted", "hostedbadge"})


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _is_web_url(value: Any) -> bool:
    return isinstance(value, str) and value.lower().startswith(("http://", "https://"))


def _node_id(value: Any) -> str | None:
    """The id of a node given as an IRI string or as an object with an id."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return _text(value.get("id"))
    return None


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _netloc(url: str) -> str:
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError:
        return ""
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    return host if port is None or port == default else f"{host}:{port}"


def _one_line(text: Any, limit: int = 200) -> str | None:
    if not isinstance(text, str) or not text.strip():
        return None
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


# Properties of an assertion in any version (0.5 to 2.0); JSON with none of them is no badge.
_ASSERTION_MARKERS = frozenset(
    {"recipient", "badge", "verify", "verification", "uid", "issuedOn", "issued_on"}
)


class _Check:
    """The errors and warnings of one verification."""

    def __init__(self) -> None:
        self.errors: list[Issue] = []
        self.warnings: list[Issue] = []
        self.revoked = False

    def error(self, code: str, detail: str | None = None) -> None:
        if any(i.code == code for i in self.errors) and detail is None:
            return
        self.errors.append(
            Issue(code=code, message=message_for(code, detail), blocks_import=code not in NON_BLOCKING_ERRORS)
        )

    def warn(self, code: str, detail: str | None = None) -> None:
        if any(i.code == code for i in self.warnings):
            return
        self.warnings.append(Issue(code=code, message=message_for(code, detail), blocks_import=False))

    def add(self, code: str, detail: str | None, as_warning: bool) -> None:
        if as_warning:
            self.warn(code, detail)
        else:
            self.error(code, detail)


class _Run:
    """State of one verification while it runs."""

    def __init__(self) -> None:
        self.check = _Check()
        self.version: str | None = None
        self.payload_kind: PayloadKind | None = None
        self.assertion: dict[str, Any] | None = None
        self.jws: str | None = None
        self.hosted_url: str | None = None
        self.badge = NormalizedBadge()
        self.issuer_doc: dict[str, Any] | None = None
        self.issuer_fetch_url: str | None = None

    def verdict(self) -> Verdict:
        errors = self.check.errors
        return Verdict(
            valid=not errors,
            version=self.version,
            errors=errors,
            warnings=self.check.warnings,
            badge=self.badge if self.assertion is not None else None,
            revoked=self.check.revoked,
            hosted_url=self.hosted_url,
            payload_kind=self.payload_kind,
            assertion=self.assertion,
            jws=self.jws,
            certain_to_fail=any(e.code not in NOT_CERTAIN for e in errors),
        )


def _fetch_error_code(role: str, exc: FetchError) -> str:
    if exc.kind == "refused":
        return "ADDRESS_REFUSED"
    if exc.kind == "timeout":
        return f"{role}_NOT_ANSWERING"
    if exc.kind == "too_large":
        return f"{role}_UNREADABLE"
    return f"{role}_UNREACHABLE"


def _status_code(role: str, status: int) -> str | None:
    if 200 <= status < 300:
        return None
    if status == 429 or status >= 500:
        return f"{role}_NOT_ANSWERING"
    if 300 <= status < 400:
        return f"{role}_UNREACHABLE"
    return f"{role}_NOT_FOUND"


class Verifier:
    """Verifies badges; fetched issuer documents are shared across calls and threads."""

    def __init__(
        self,
        fetcher: Fetcher,
        now: Callable[[], datetime] | None = None,
        cache_size: int = 4096,
    ) -> None:
        self._fetcher = fetcher
        self._now = now or (lambda: datetime.now(UTC))
        self._cache: OrderedDict[str, Future[FetchedDocument]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._keys: dict[str, rsa.RSAPublicKey | InvalidKeyError] = {}

    # ----------------------------------------------------------------------------------- fetching

    def _get(self, url: str, cached: bool) -> FetchedDocument:
        if not cached:
            try:
                return self._fetcher.get(url)
            except FetchError:
                raise
            except Exception as exc:  # a fetcher bug is reported as an unreachable document
                log.warning("fetcher failed on %s: %s", url, type(exc).__name__)
                raise FetchError("http", type(exc).__name__) from exc
        with self._lock:
            future = self._cache.get(url)
            owner = future is None
            if future is None:
                future = Future()
                self._cache[url] = future
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
            else:
                self._cache.move_to_end(url)
        if owner:
            try:
                doc = self._fetcher.get(url)
            except FetchError as exc:
                future.set_exception(exc)
                if exc.kind == "timeout":
                    self._forget(url, future)
            except Exception as exc:  # a fetcher bug must not leave other threads waiting
                future.set_exception(FetchError("http", type(exc).__name__))
                self._forget(url, future)
            else:
                future.set_result(doc)
                if doc.status == 429 or doc.status >= 500:
                    self._forget(url, future)
        return future.result()

    def _forget(self, url: str, future: Future[FetchedDocument]) -> None:
        with self._lock:
            if self._cache.get(url) is future:
                del self._cache[url]

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()
            self._keys.clear()

    def _fetch_doc(
        self, url: str, role: str, run: _Run, cached: bool = True, as_warning: bool = False
    ) -> tuple[FetchedDocument | None, Any]:
        """(document, parsed JSON or None). Problems are recorded under the role's codes."""
        try:
            doc = self._get(url, cached)
        except FetchError as exc:
            run.check.add(_fetch_error_code(role, exc), None, as_warning)
            return None, None
        problem = _status_code(role, doc.status)
        if problem:
            run.check.add(problem, None, as_warning)
            return doc, None
        try:
            return doc, parse_json_text(doc.body)
        except PayloadError:
            return doc, None

    def _fetch_json_object(
        self, url: str, role: str, run: _Run, as_warning: bool = False
    ) -> dict[str, Any] | None:
        if not _is_web_url(url):
            run.check.add(f"{role}_UNREACHABLE", None, as_warning)
            return None
        doc, value = self._fetch_doc(url, role, run, as_warning=as_warning)
        if doc is None or not (200 <= doc.status < 300):
            return None
        if not isinstance(value, dict):
            run.check.add(f"{role}_UNREADABLE", None, as_warning)
            return None
        return value

    # ----------------------------------------------------------------------------------- public API

    def verify(self, source: bytes | str, recipients: Sequence[str] = ()) -> Verdict:
        run = _Run()
        try:
            self._verify(run, source, [r for r in recipients if isinstance(r, str) and r.strip()])
        except Exception:
            log.exception("badge verification failed unexpectedly")
            run.check.error("CHECK_FAILED")
        return run.verdict()

    def verify_many(
        self, sources: Sequence[bytes | str], recipients: Sequence[str] = (), workers: int = 16
    ) -> list[Verdict]:
        if not sources:
            return []
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(sources)))) as pool:
            return list(pool.map(lambda s: self.verify(s, recipients), sources))

    # ----------------------------------------------------------------------------------- the steps

    def _verify(self, run: _Run, source: bytes | str, recipients: list[str]) -> None:
        text = self._payload_text(run, source)
        if text is None:
            return
        kind = classify(text)
        if kind is None:
            run.check.error("NOT_A_BADGE")
            return
        run.payload_kind = kind
        text = text.strip()
        signed_input = False
        doc: dict[str, Any] | None
        if kind == "url":
            doc, jws = self._fetch_hosted(run, text)
            if jws is not None:
                text, signed_input = jws, True
        elif kind == "json":
            doc = self._parse_json_payload(run, text)
        else:
            doc = None
        if kind == "jws" or signed_input:
            run.jws = text
            doc = self._open_jws(run, text)
        if doc is None:
            return
        run.assertion = doc

        version = detect_version(doc)
        run.version = version
        if version is None:
            run.check.error("UNSUPPORTED_VERSION")
            return

        vtype = self._verification_type(doc, version)
        if run.jws is None and vtype == "signed":
            run.check.error("SIGNATURE_MISSING")
        if vtype is None:
            run.check.error("VERIFICATION_UNKNOWN")
        run.badge.verification_type = vtype

        if vtype == "hosted" and version != "0.5":
            fetched = self._ensure_hosted(run, doc, version, kind)
            if fetched is None:
                return
            doc = fetched
            run.assertion = doc
            version = detect_version(doc)
            run.version = version
            if version is None:
                run.check.error("UNSUPPORTED_VERSION")
                return
        elif version == "0.5" and run.hosted_url is None:
            # A 0.5 badge is proved only by being served from its issuer's site; data alone
            # could have been written by anyone, and Badgr refuses it. Its contents are still
            # checked, so the learner hears about every other problem too.
            run.check.error("NOT_VERIFIABLE")

        self._check_assertion(run, doc, version, recipients)
        badge_class = self._badge_class(run, doc, version)
        issuer = self._issuer(run, badge_class, version) if badge_class is not None else None
        if vtype == "hosted" and run.hosted_url and issuer is not None:
            self._check_origin(run, run.hosted_url, issuer, version)
        if run.jws is not None and vtype == "signed":
            self._check_signed(run, doc, version, issuer)

    def _payload_text(self, run: _Run, source: bytes | str) -> str | None:
        if isinstance(source, str):
            if len(source) > MAX_PAYLOAD_BYTES * 2:
                run.check.error("NOT_A_BADGE")
                return None
            return source
        data = bytes(source)
        if is_png(data) or looks_like_svg(data):
            try:
                return unbake(data)
            except UnbakeError as exc:
                run.check.error(exc.code)
                return None
        if len(data) > MAX_PAYLOAD_BYTES * 2:
            run.check.error("NOT_A_BADGE")
            return None
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError:
            run.check.error("NOT_AN_IMAGE")
            return None

    def _parse_json_payload(self, run: _Run, text: str) -> dict[str, Any] | None:
        try:
            doc = parse_json_text(text)
        except PayloadError:
            run.check.error("MALFORMED_JSON")
            return None
        speaks_of_a_badge = isinstance(doc, dict) and (
            bool(_ASSERTION_MARKERS & doc.keys()) or doc.get("type") == "Assertion"
        )
        if not speaks_of_a_badge:
            # Some JSON, but nothing in it speaks of a badge: unusable, not a badge that fails.
            run.check.error("NOT_A_BADGE")
            return None
        return doc

    def _open_jws(self, run: _Run, token: str) -> dict[str, Any] | None:
        try:
            header, payload, _signing_input, _signature = split_jws(token)
        except PayloadError:
            run.check.error("JWS_MALFORMED")
            return None
        if not algorithm_allowed(header):
            run.check.error("JWS_ALGORITHM")
            return None
        try:
            doc = parse_json_text(payload)
        except PayloadError:
            doc = None
        if not isinstance(doc, dict):
            run.check.error("JWS_PAYLOAD_UNREADABLE")
            return None
        return doc

    def _fetch_assertion(self, run: _Run, url: str) -> tuple[dict[str, Any] | None, str | None]:
        """(assertion JSON, or a compact JWS served at the URL). Records not-found / revoked."""
        run.hosted_url = url
        try:
            doc = self._get(url, cached=False)
        except FetchError as exc:
            run.check.error(_fetch_error_code("ASSERTION", exc))
            return None, None
        run.hosted_url = doc.url or url
        if doc.status == 410:
            run.check.revoked = True
            reason = None
            try:
                body = parse_json_text(doc.body)
                if isinstance(body, dict):
                    reason = _one_line(body.get("revocationReason"))
            except PayloadError:
                pass
            run.check.error("REVOKED", reason)
            return None, None
        problem = _status_code("ASSERTION", doc.status)
        if problem:
            run.check.error(problem)
            return None, None
        try:
            text = doc.body.decode("utf-8-sig").strip()
        except UnicodeDecodeError:
            run.check.error("ASSERTION_UNREADABLE")
            return None, None
        if classify(text) == "jws":
            return None, text
        try:
            value = parse_json_text(text)
        except PayloadError:
            run.check.error("ASSERTION_UNREADABLE")
            return None, None
        if not isinstance(value, dict):
            run.check.error("ASSERTION_UNREADABLE")
            return None, None
        if value.get("revoked") is True or str(value.get("revoked")).lower() == "true":
            run.check.revoked = True
            run.check.error("REVOKED", _one_line(value.get("revocationReason")))
            run.assertion = value
            run.version = detect_version(value)
            return None, None
        return value, None

    def _fetch_hosted(self, run: _Run, url: str) -> tuple[dict[str, Any] | None, str | None]:
        return self._fetch_assertion(run, url)

    def _ensure_hosted(
        self, run: _Run, doc: dict[str, Any], version: str, kind: PayloadKind
    ) -> dict[str, Any] | None:
        """The authoritative hosted copy of the assertion (fetched from where it says it lives)."""
        declared = hosted_url_of(doc, version)
        if declared is None:
            if run.hosted_url is None:
                run.check.error("ASSERTION_INCOMPLETE", "it gives no web address to check it at")
                return None
            return doc
        if run.hosted_url is not None and declared in (run.hosted_url,):
            return doc
        fetched, jws = self._fetch_assertion(run, declared)
        if jws is not None:
            run.check.error("ASSERTION_UNREADABLE")
            return None
        if fetched is None:
            return None
        again = hosted_url_of(fetched, detect_version(fetched))
        if again is not None and again != declared:
            run.check.error("ASSERTION_ID_MISMATCH")
        return fetched

    @staticmethod
    def _verification_type(doc: dict[str, Any], version: str) -> Literal["hosted", "signed"] | None:
        if version == "0.5":
            return "hosted"
        verify = doc.get("verification", doc.get("verify")) if version == "2.0" else doc.get("verify")
        if not isinstance(verify, dict):
            return None
        vtype = verify.get("type")
        if not isinstance(vtype, str):
            return None
        lowered = vtype.strip().lower()
        if lowered in _HOSTED:
            return "hosted"
        if lowered in _SIGNED:
            return "signed"
        return None

    # ----------------------------------------------------------------------------------- assertion

    def _check_assertion(self, run: _Run, doc: dict[str, Any], version: str, recipients: list[str]) -> None:
        chk = run.check
        badge = run.badge
        if version == "0.5":
            required = ["recipient", "badge"]
        elif version == "1.0":
            required = ["uid", "recipient", "badge", "verify", "issuedOn"]
        elif version == "1.1":
            required = ["recipient", "badge", "verify", "issuedOn"]
        else:
            required = ["id", "recipient", "badge", "issuedOn"]
            if "verification" not in doc and "verify" not in doc:
                required.append("verification")
        for prop in required:
            if doc.get(prop) in (None, "", [], {}):
                if version == "1.1" and prop == "verify" and "verification" in doc:
                    chk.error("ASSERTION_INCOMPLETE", "'verification' is not an Open Badges 1.1 term")
                else:
                    chk.error("ASSERTION_INCOMPLETE", f"no '{prop}'")

        if version in ("1.1", "2.0"):
            ident = _text(doc.get("id"))
            if ident and not (_is_web_url(ident) or ident.startswith("urn:")):
                chk.error("ASSERTION_INCOMPLETE", "its id is not a web address")
            badge.assertion_id = ident
        else:
            badge.assertion_id = run.hosted_url or hosted_url_of(doc, version)
        uid = doc.get("uid")
        badge.uid = str(uid) if isinstance(uid, str | int) and not isinstance(uid, bool) else None
        image = _node_id(doc.get("image"))
        badge.image = image
        evidence = doc.get("evidence")
        badge.evidence = _node_id(evidence[0] if isinstance(evidence, list) and evidence else evidence)

        recipient = self._recipient(run, doc, version)
        if recipient is not None:
            badge.recipient = recipient
            self._check_recipient(run, recipient, recipients)
        self._check_dates(run, doc, version)

    def _recipient(self, run: _Run, doc: dict[str, Any], version: str) -> RecipientInfo | None:
        chk = run.check
        raw = doc.get("recipient")
        if raw is None:
            return None
        if version == "0.5":
            if not isinstance(raw, str):
                chk.error("RECIPIENT_MALFORMED", "it is not an email address or hash")
                return None
            salt = doc.get("salt")
            match = HASHED_RE.match(raw)
            if match:
                if len(match.group(2)) != _HASH_LENGTHS[match.group(1)]:
                    chk.error("RECIPIENT_MALFORMED", "the hash has the wrong length")
                    return None
                return RecipientInfo(type="email", identity=raw, hashed=True, salt=_salt(salt))
            if "$" in raw or "@" not in raw:
                chk.error("RECIPIENT_MALFORMED", "it is not an email address or hash")
                return None
            return RecipientInfo(type="email", identity=raw, hashed=False, salt=_salt(salt))
        if not isinstance(raw, dict):
            chk.error("RECIPIENT_MALFORMED", "it is not an identity object")
            return None
        identity = raw.get("identity")
        if not isinstance(identity, str) or not identity:
            chk.error("RECIPIENT_MALFORMED", "no identity")
            return None
        rtype = raw.get("type")
        if not isinstance(rtype, str) or rtype not in _RECIPIENT_TYPES:
            chk.error("RECIPIENT_MALFORMED", "no valid identity type")
            return None
        hashed_raw = raw.get("hashed")
        if isinstance(hashed_raw, str):
            hashed_raw = hashed_raw.strip().lower() == "true"
        hashed = bool(hashed_raw) if hashed_raw is not None else bool(HASHED_RE.match(identity))
        if hashed:
            match = HASHED_RE.match(identity)
            if not match or len(match.group(2)) != _HASH_LENGTHS[match.group(1)]:
                chk.error("RECIPIENT_MALFORMED", "the identity hash is malformed")
                return None
        return RecipientInfo(type=rtype, identity=identity, hashed=hashed, salt=_salt(raw.get("salt")))

    @staticmethod
    def _check_recipient(run: _Run, recipient: RecipientInfo, recipients: list[str]) -> None:
        if not recipients:
            run.check.warn("RECIPIENT_NOT_CHECKED")
            return
        if not any(recipient_matches(recipient, r) for r in recipients):
            run.check.error("RECIPIENT_MISMATCH")

    def _check_dates(self, run: _Run, doc: dict[str, Any], version: str) -> None:
        chk = run.check
        now = self._now()
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        issued_raw = doc.get("issued_on") if version == "0.5" else doc.get("issuedOn")
        if version == "0.5" and issued_raw is None:
            issued_raw = doc.get("issuedOn")
        issued: datetime | None = None
        if issued_raw is not None:
            try:
                issued = parse_date(issued_raw)
            except DateError as exc:
                chk.error("DATE_INVALID", str(exc)[:40])
        elif version == "0.5":
            chk.warn("ISSUED_ON_MISSING")
        expires: datetime | None = None
        if doc.get("expires") is not None:
            try:
                expires = parse_date(doc["expires"])
            except DateError as exc:
                chk.error("DATE_INVALID", str(exc)[:40])
        run.badge.issued_on = issued
        run.badge.expires = expires
        if issued is not None and issued > now + _FUTURE_TOLERANCE:
            chk.error("ISSUED_IN_FUTURE")
        if issued is not None and expires is not None and expires < issued:
            chk.error("EXPIRES_BEFORE_ISSUED")
        elif expires is not None and expires < now:
            chk.error("EXPIRED", expires.date().isoformat())

    # ----------------------------------------------------------------------------------- badge class

    def _badge_class(self, run: _Run, doc: dict[str, Any], version: str) -> dict[str, Any] | None:
        raw = doc.get("badge")
        chk = run.check
        if raw is None:
            return None
        if version == "0.5":
            if not isinstance(raw, dict):
                chk.error("BADGECLASS_INCOMPLETE", "the badge is not described in the badge itself")
                return None
            issuer = raw.get("issuer")
            origin = _text(issuer.get("origin")) if isinstance(issuer, dict) else None
            self._check_badge_class(run, raw, base=origin)
            return raw
        url: str | None = None
        if isinstance(raw, dict) and (raw.get("name") is not None or not _is_web_url(raw.get("id"))):
            badge_class: dict[str, Any] | None = raw
        elif isinstance(raw, dict | str):
            url = _node_id(raw) or ""
            badge_class = self._fetch_json_object(url, "BADGECLASS", run)
        else:
            chk.error("ASSERTION_INCOMPLETE", "'badge' is not a badge description or address")
            return None
        if badge_class is None:
            return None
        self._check_badge_class(run, badge_class, base=None, location=url)
        return badge_class

    def _check_badge_class(
        self, run: _Run, bc: dict[str, Any], base: str | None, location: str | None = None
    ) -> None:
        """``location``: where the badge class was fetched from, its id when it names none (1.0)."""
        chk = run.check
        for prop in ("name", "description", "image", "criteria", "issuer"):
            value = bc.get(prop)
            if value in (None, "", [], {}):
                chk.error("BADGECLASS_INCOMPLETE", f"no '{prop}'")
        criteria = bc.get("criteria")
        criteria_text: str | None
        if isinstance(criteria, dict):
            criteria_text = _text(criteria.get("id")) or _text(criteria.get("narrative"))
        else:
            criteria_text = _text(criteria)
        image = _node_id(bc.get("image"))
        if base:
            criteria_text = (
                urljoin(base, criteria_text)
                if criteria_text and criteria_text.startswith("/")
                else criteria_text
            )
            image = urljoin(base, image) if image and image.startswith("/") else image
        ident = _text(bc.get("id")) or location
        run.badge.badge_class = BadgeClassInfo(
            id=ident,
            name=_text(bc.get("name")),
            description=_text(bc.get("description")),
            image=image,
            criteria=criteria_text,
        )

    # ----------------------------------------------------------------------------------- issuer

    def _issuer(self, run: _Run, badge_class: dict[str, Any], version: str) -> dict[str, Any] | None:
        raw = badge_class.get("issuer")
        chk = run.check
        if raw is None:
            return None
        if version == "0.5":
            if not isinstance(raw, dict):
                chk.error("ISSUER_INCOMPLETE", "the issuer is not described in the badge")
                return None
            for prop in ("origin", "name"):
                if not _text(raw.get(prop)):
                    chk.error("ISSUER_INCOMPLETE", f"no '{prop}'")
            origin = _text(raw.get("origin"))
            if origin and not _is_web_url(origin):
                chk.error("ISSUER_INCOMPLETE", "its origin is not a web address")
            run.badge.issuer = IssuerInfo(
                id=origin, name=_text(raw.get("name")), url=origin, email=_text(raw.get("contact"))
            )
            run.issuer_doc = raw
            return raw
        if isinstance(raw, dict) and (raw.get("name") is not None or not _is_web_url(raw.get("id"))):
            issuer: dict[str, Any] | None = raw
        elif isinstance(raw, dict | str):
            url = _node_id(raw) or ""
            issuer = self._fetch_json_object(url, "ISSUER", run)
            run.issuer_fetch_url = url
        else:
            chk.error("BADGECLASS_INCOMPLETE", "its issuer is not an organization or address")
            return None
        if issuer is None:
            return None
        for prop in ("name", "url"):
            if not _text(issuer.get(prop)):
                chk.error("ISSUER_INCOMPLETE", f"no '{prop}'")
        if version == "2.0" and not _text(issuer.get("email")):
            chk.warn("ISSUER_EMAIL_MISSING")
        run.badge.issuer = IssuerInfo(
            id=_text(issuer.get("id")) or run.issuer_fetch_url,
            name=_text(issuer.get("name")),
            url=_text(issuer.get("url")),
            email=_text(issuer.get("email")),
        )
        run.issuer_doc = issuer
        return issuer

    # ----------------------------------------------------------------------------------- hosted

    def _check_origin(self, run: _Run, hosted_url: str, issuer: dict[str, Any], version: str) -> None:
        netloc = _netloc(hosted_url)
        if version == "0.5":
            origin = _text(issuer.get("origin"))
            if origin and netloc != _netloc(origin):
                run.check.error("ORIGIN_MISMATCH")
            return
        policy = issuer.get("verification") if version == "2.0" else None
        policy = policy if isinstance(policy, dict) else {}
        starts = [s for s in _as_list(policy.get("startsWith")) if isinstance(s, str) and s]
        allowed = [a for a in _as_list(policy.get("allowedOrigins")) if isinstance(a, str) and a]
        if starts and not any(hosted_url.startswith(s) for s in starts):
            run.check.error("ORIGIN_MISMATCH")
            return
        if allowed:
            if netloc not in {a.strip().lower() for a in allowed}:
                run.check.error("ORIGIN_MISMATCH")
            return
        if starts:
            return
        issuer_id = _text(issuer.get("id"))
        reference = issuer_id if _is_web_url(issuer_id) else run.issuer_fetch_url
        if not _is_web_url(reference):
            reference = _text(issuer.get("url"))
        if reference and netloc != _netloc(reference):
            run.check.error("ORIGIN_MISMATCH")

    # ----------------------------------------------------------------------------------- signed

    def _load_key(self, run: _Run, url: str) -> rsa.RSAPublicKey | None:
        """The public key at ``url``: a CryptographicKey document (2.0) or a bare PEM (1.0)."""
        if not _is_web_url(url):
            run.check.error("KEY_UNREACHABLE")
            return None
        doc, value = self._fetch_doc(url, "KEY", run)
        if doc is None or not (200 <= doc.status < 300):
            return None
        key_doc = value if isinstance(value, dict) else None
        pem: str | bytes | None
        if key_doc is not None:
            pem = _text(key_doc.get("publicKeyPem"))
        elif b"-----BEGIN" in doc.body:
            pem = doc.body
        else:
            pem = None
        if pem is None:
            run.check.error("KEY_UNREADABLE")
            return None
        with self._lock:
            cached = self._keys.get(url)
        if cached is None:
            try:
                cached = load_rsa_public_key(pem)
            except InvalidKeyError as exc:
                cached = exc
            with self._lock:
                self._keys[url] = cached
        if isinstance(cached, InvalidKeyError):
            run.check.error("KEY_INVALID")
            return None
        return cached

    def _check_signed(
        self, run: _Run, doc: dict[str, Any], version: str, issuer: dict[str, Any] | None
    ) -> None:
        assert run.jws is not None
        _header, _payload, signing_input, signature = split_jws(run.jws)
        chk = run.check
        if version in ("1.0", "0.5"):
            verify = doc.get("verify")
            key_url = _text(verify.get("url")) if isinstance(verify, dict) else None
            if not key_url:
                chk.error("KEY_UNKNOWN")
                return
            key = self._load_key(run, key_url)
            if key is None:
                return
            if not signature_valid(key, signing_input, signature):
                chk.error("SIGNATURE_INVALID")
                return
            if issuer is not None:
                hosts = {_netloc(u) for u in (run.issuer_fetch_url, _text(issuer.get("url"))) if u}
                if hosts and _netloc(key_url) not in hosts:
                    chk.error("KEY_NOT_ISSUERS")
        else:
            verify = doc.get("verification", doc.get("verify")) if version == "2.0" else doc.get("verify")
            creator = _node_id(verify.get("creator")) if isinstance(verify, dict) else None
            issuer_keys = [k for k in (_node_id(v) for v in _as_list((issuer or {}).get("publicKey"))) if k]
            candidates = [creator] if creator else issuer_keys
            if not candidates:
                chk.error("KEY_UNKNOWN")
                return
            signer = next(
                (
                    url
                    for url in candidates
                    if (key := self._load_key(run, url)) is not None
                    and signature_valid(key, signing_input, signature)
                ),
                None,
            )
            if signer is None:
                if not chk.errors or all(not e.code.startswith("KEY_") for e in chk.errors):
                    chk.error("SIGNATURE_INVALID")
                return
            # Only the issuer's own profile can vouch for a key: the key document's "owner" is
            # written by whoever hosts the key, so it proves nothing.
            if issuer is not None and signer not in issuer_keys:
                chk.error("KEY_NOT_ISSUERS")
        if issuer is not None:
            self._check_revocation(run, doc, issuer)

    def _check_revocation(self, run: _Run, doc: dict[str, Any], issuer: dict[str, Any]) -> None:
        raw = issuer.get("revocationList")
        if raw is None:
            return
        if isinstance(raw, dict) and "revokedAssertions" in raw:
            rl: dict[str, Any] | None = raw
        else:
            url = _node_id(raw) or ""
            rl = self._fetch_json_object(url, "REVOCATION_LIST", run, as_warning=True)
        if rl is None:
            return
        ids = {i for i in (_text(doc.get("id")), run.badge.assertion_id) if i}
        uid = run.badge.uid
        if "revokedAssertions" in rl:
            for entry in _as_list(rl.get("revokedAssertions")):
                entry_id = entry if isinstance(entry, str) else None
                entry_uid = None
                reason = None
                if isinstance(entry, dict):
                    entry_id = _text(entry.get("id"))
                    entry_uid = entry.get("uid")
                    reason = _one_line(entry.get("revocationReason"))
                if (entry_id and entry_id in ids) or (
                    uid is not None and entry_uid is not None and str(entry_uid) == uid
                ):
                    run.check.revoked = True
                    run.check.error("REVOKED", reason)
                    return
            return
        # 1.0: an object mapping uid -> reason.
        if uid is not None and uid in rl:
            run.check.revoked = True
            run.check.error("REVOKED", _one_line(rl.get(uid)))


def _salt(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None
