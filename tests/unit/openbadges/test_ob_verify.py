"""Every check of the verifier, on badges made and signed here."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from ob_helpers import CountingFetcher, itxt, json_doc, public_pem, sign_jws, svg_with, tiny_png

from backpack_migrate.domain import VerdictSummary
from backpack_migrate.openbadges import FetchedDocument, FetchError, MapFetcher, Verdict, Verifier

pytestmark = pytest.mark.unit

V2 = "https://w3id.org/openbadges/v2"
BASE = "https://issuer.example"
ASSERTION_URL = f"{BASE}/assertions/42"
BADGE_URL = f"{BASE}/badges/kites"
ISSUER_URL = f"{BASE}/issuer"
KEY_URL = f"{BASE}/keys/1"
RL_URL = f"{BASE}/revocations"
EMAIL = "Learner@Example.org"
NOW = datetime(2024, 6, 1, tzinfo=UTC)


def hashed(email: str, alg: str = "sha256", salt: str = "pepper") -> str:
    return f"{alg}${hashlib.new(alg, (email + salt).encode()).hexdigest()}"


def assertion_v2(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "@context": V2,
        "type": "Assertion",
        "id": ASSERTION_URL,
        "recipient": {"type": "email", "hashed": True, "salt": "pepper", "identity": hashed(EMAIL)},
        "badge": BADGE_URL,
        "issuedOn": "2020-01-02T03:04:05Z",
        "verification": {"type": "hosted"},
    }
    doc.update(over)
    return {k: v for k, v in doc.items() if v is not None}


def badge_class_v2(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "@context": V2,
        "type": "BadgeClass",
        "id": BADGE_URL,
        "name": "Kite Flying",
        "description": "Flew a kite.",
        "image": f"{BASE}/images/kite.png",
        "criteria": {"narrative": "Fly a kite."},
        "issuer": ISSUER_URL,
    }
    doc.update(over)
    return {k: v for k, v in doc.items() if v is not None}


def issuer_v2(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "@context": V2,
        "type": "Issuer",
        "id": ISSUER_URL,
        "name": "Kite School",
        "url": BASE,
        "email": "hello@issuer.example",
    }
    doc.update(over)
    return {k: v for k, v in doc.items() if v is not None}


def world(**docs: Any) -> dict[str, tuple[int, bytes, str]]:
    mapping = {
        ASSERTION_URL: json_doc(assertion_v2()),
        BADGE_URL: json_doc(badge_class_v2()),
        ISSUER_URL: json_doc(issuer_v2()),
    }
    names = {
        "assertion": ASSERTION_URL,
        "badge": BADGE_URL,
        "issuer": ISSUER_URL,
        "key": KEY_URL,
        "rl": RL_URL,
    }
    for name, value in docs.items():
        url = names[name]
        if value is None:
            mapping.pop(url, None)
        elif isinstance(value, tuple):
            mapping[url] = value
        else:
            mapping[url] = json_doc(value)
    return mapping


def verify(
    source: bytes | str, mapping: dict[str, tuple[int, bytes, str]], recipients: list[str] | None = None
) -> Verdict:
    return Verifier(MapFetcher(mapping), now=lambda: NOW).verify(source, recipients or [])


def codes(verdict: Verdict) -> list[str]:
    return [e.code for e in verdict.errors]


# ------------------------------------------------------------------------------------------ hosted


def test_hosted_v2_valid_and_normalized() -> None:
    verdict = verify(ASSERTION_URL, world(), [EMAIL])
    assert verdict.valid, verdict.errors
    assert verdict.version == "2.0" and verdict.payload_kind == "url"
    assert verdict.hosted_url == ASSERTION_URL
    badge = verdict.badge
    assert badge is not None
    assert badge.issuer.name == "Kite School" and badge.issuer.email == "hello@issuer.example"
    assert badge.badge_class.name == "Kite Flying" and badge.badge_class.criteria == "Fly a kite."
    assert badge.recipient.hashed and badge.recipient.salt == "pepper"
    assert badge.issued_on == datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert badge.verification_type == "hosted" and badge.assertion_id == ASSERTION_URL
    assert not verdict.warnings


def test_json_input_is_checked_against_the_hosted_copy() -> None:
    verdict = verify(json.dumps(assertion_v2()), world())
    assert verdict.valid and verdict.payload_kind == "json"
    assert [w.code for w in verdict.warnings] == ["RECIPIENT_NOT_CHECKED"]


def test_baked_png_and_svg_inputs() -> None:
    assert verify(tiny_png(itxt(ASSERTION_URL)), world(), [EMAIL]).valid
    assert verify(svg_with(verify=ASSERTION_URL), world(), [EMAIL]).valid
    assert verify(tiny_png(itxt(json.dumps(assertion_v2()), compressed=True)), world(), [EMAIL]).valid


@pytest.mark.parametrize("alg", ["md5", "sha1", "sha256", "sha512"])
@pytest.mark.parametrize("stored", [EMAIL, EMAIL.lower(), "Learner@example.org"])
def test_hashed_recipient_every_alg_and_case(alg: str, stored: str) -> None:
    recipient = {"type": "email", "hashed": True, "salt": "s@lt", "identity": hashed(stored, alg, "s@lt")}
    mapping = world(assertion=assertion_v2(recipient=recipient))
    assert verify(ASSERTION_URL, mapping, ["someone@else.example", EMAIL]).valid


@pytest.mark.parametrize(
    "stored", ["ada.lovelace@example.org", "Ada.lovelace@example.org", "Ada.Lovelace@example.org",
               "ADA.LOVELACE@EXAMPLE.ORG"],
)  # fmt: skip
def test_hashed_recipient_as_issuers_wrote_a_lowercase_address(stored: str) -> None:
    recipient = {
        "type": "email",
        "hashed": True,
        "salt": "pepper",
        "identity": hashed(stored, "sha256", "pepper"),
    }
    mapping = world(assertion=assertion_v2(recipient=recipient))
    assert verify(ASSERTION_URL, mapping, ["ada.lovelace@example.org"]).valid


def test_plain_recipient_case_insensitive() -> None:
    recipient = {"type": "email", "hashed": False, "identity": "TEST@example.com"}
    mapping = world(assertion=assertion_v2(recipient=recipient))
    assert verify(ASSERTION_URL, mapping, ["test@EXAMPLE.com"]).valid


def test_recipient_mismatch_is_not_certain_to_fail() -> None:
    verdict = verify(ASSERTION_URL, world(), ["other@example.org"])
    assert not verdict.valid and codes(verdict) == ["RECIPIENT_MISMATCH"]
    assert verdict.errors[0].message == (
        "This badge was issued to another email address: add that address to your Badgr account."
    )
    assert not verdict.errors[0].blocks_import
    assert not verdict.certain_to_fail


@pytest.mark.parametrize(
    "recipient",
    [
        "plain@example.org",
        {"type": "email", "hashed": True, "identity": "sha256$" + "ab" * 20},
        {"type": "email", "hashed": True, "identity": "crc32$abcd"},
        {"hashed": False, "identity": "a@b.example"},
        {"type": "email", "hashed": False},
        {"type": "email", "hashed": False, "id": "a@b.example"},
    ],
)
def test_malformed_recipient(recipient: Any) -> None:
    verdict = verify(ASSERTION_URL, world(assertion=assertion_v2(recipient=recipient)))
    assert "RECIPIENT_MALFORMED" in codes(verdict) and verdict.certain_to_fail


def test_assertion_404_and_unreachable() -> None:
    verdict = verify(ASSERTION_URL, world(assertion=None))
    assert codes(verdict) == ["ASSERTION_NOT_FOUND"] and verdict.certain_to_fail

    class Down:
        def __init__(self, kind: str) -> None:
            self.kind = kind

        def get(self, url: str) -> FetchedDocument:
            raise FetchError(self.kind, "down")

    gone = Verifier(Down("dns")).verify(ASSERTION_URL)
    assert codes(gone) == ["ASSERTION_UNREACHABLE"] and gone.certain_to_fail
    assert gone.errors[0].message == (
        "The organization that issued this badge no longer runs the website that proves it."
    )
    slow = Verifier(Down("timeout")).verify(ASSERTION_URL)
    assert codes(slow) == ["ASSERTION_NOT_ANSWERING"] and not slow.certain_to_fail
    refused = Verifier(Down("refused")).verify(ASSERTION_URL)
    assert codes(refused) == ["ADDRESS_REFUSED"]


def test_server_error_is_not_certain() -> None:
    verdict = verify(ASSERTION_URL, world(assertion=(503, b"busy", "text/plain")))
    assert codes(verdict) == ["ASSERTION_NOT_ANSWERING"] and not verdict.certain_to_fail


def test_hosted_revoked_by_410_and_by_flag() -> None:
    gone = json.dumps({"id": ASSERTION_URL, "revoked": True, "revocationReason": "Cheated."}).encode()
    verdict = verify(ASSERTION_URL, world(assertion=(410, gone, "application/json")))
    assert verdict.revoked and codes(verdict) == ["REVOKED"] and "(Cheated)" in verdict.errors[0].message
    flagged = verify(ASSERTION_URL, world(assertion=(200, gone, "application/json")))
    assert flagged.revoked and codes(flagged) == ["REVOKED"] and flagged.certain_to_fail


def test_html_page_is_not_a_badge() -> None:
    verdict = verify(ASSERTION_URL, world(assertion=(200, b"<html>moved</html>", "text/html")))
    assert codes(verdict) == ["ASSERTION_UNREADABLE"]


def test_origin_default_is_issuer_host() -> None:
    other = "https://elsewhere.example/a/1"
    mapping = world(assertion=assertion_v2(id=other))
    mapping[other] = mapping[ASSERTION_URL]
    verdict = verify(other, mapping)
    assert codes(verdict) == ["ORIGIN_MISMATCH"]


def test_allowed_origins_and_starts_with() -> None:
    other = "https://cdn.example/a/1"
    base = world(assertion=assertion_v2(id=other))
    base[other] = base[ASSERTION_URL]
    allowed = dict(base, **{ISSUER_URL: json_doc(issuer_v2(verification={"allowedOrigins": "cdn.example"}))})
    assert verify(other, allowed).valid
    starts = dict(
        base, **{ISSUER_URL: json_doc(issuer_v2(verification={"startsWith": ["https://cdn.example/a/"]}))}
    )
    assert verify(other, starts).valid
    wrong = dict(
        base, **{ISSUER_URL: json_doc(issuer_v2(verification={"startsWith": "https://cdn.example/b/"}))}
    )
    assert codes(verify(other, wrong)) == ["ORIGIN_MISMATCH"]


def test_url_input_follows_declared_id() -> None:
    alias = f"{BASE}/short/42"
    mapping = world()
    mapping[alias] = mapping[ASSERTION_URL]
    verdict = verify(alias, mapping)
    assert verdict.valid and verdict.hosted_url == ASSERTION_URL


def test_badge_class_and_issuer_problems() -> None:
    broken = (200, b'{"name": "x" "oops"}', "application/json")
    assert "BADGECLASS_UNREADABLE" in codes(verify(ASSERTION_URL, world(badge=broken)))
    assert "ISSUER_UNREADABLE" in codes(verify(ASSERTION_URL, world(issuer=broken)))
    assert "BADGECLASS_NOT_FOUND" in codes(verify(ASSERTION_URL, world(badge=None)))
    assert "ISSUER_NOT_FOUND" in codes(verify(ASSERTION_URL, world(issuer=None)))
    incomplete = verify(ASSERTION_URL, world(badge=badge_class_v2(criteria=None)))
    assert codes(incomplete) == ["BADGECLASS_INCOMPLETE"] and "criteria" in incomplete.errors[0].message
    assert codes(verify(ASSERTION_URL, world(issuer=issuer_v2(name=None)))) == ["ISSUER_INCOMPLETE"]


def test_unreachable_image_does_not_fail() -> None:
    mapping = world(badge=badge_class_v2(image="https://gone.example/kite.png"))
    assert verify(ASSERTION_URL, mapping).valid


def test_v1_1_document_using_v2_verification_term_is_invalid() -> None:
    doc = assertion_v2(**{"@context": "https://w3id.org/openbadges/v1"})
    verdict = verify(ASSERTION_URL, world(assertion=doc))
    assert verdict.version == "1.1" and "ASSERTION_INCOMPLETE" in codes(verdict)
    ok = assertion_v2(**{"@context": "https://w3id.org/openbadges/v1"}, verification=None)
    ok["verify"] = {"type": "hosted", "url": ASSERTION_URL}
    assert verify(ASSERTION_URL, world(assertion=ok)).valid


def test_unknown_context_is_unsupported() -> None:
    doc = assertion_v2(**{"@context": "http://openbadges.org/standard/1.1/context"})
    assert codes(verify(json.dumps(doc), world())) == ["UNSUPPORTED_VERSION"]


def test_missing_required_properties() -> None:
    for prop in ("recipient", "badge", "issuedOn"):
        doc = assertion_v2(**{prop: None})
        verdict = verify(ASSERTION_URL, world(assertion=doc))
        assert "ASSERTION_INCOMPLETE" in codes(verdict), prop


# ------------------------------------------------------------------------------------------ dates


@pytest.mark.parametrize(
    ("over", "code"),
    [
        ({"issuedOn": "2031-01-01T00:00:00Z"}, "ISSUED_IN_FUTURE"),
        ({"expires": "2019-01-01T00:00:00Z"}, "EXPIRES_BEFORE_ISSUED"),
        ({"expires": "2024-05-31T00:00:00Z"}, "EXPIRED"),
        ({"issuedOn": "2015-04-31"}, "DATE_INVALID"),
        ({"expires": "soon"}, "DATE_INVALID"),
    ],
)
def test_date_checks(over: dict[str, str], code: str) -> None:
    verdict = verify(ASSERTION_URL, world(assertion=assertion_v2(**over)))
    assert codes(verdict) == [code] and verdict.certain_to_fail


def test_future_expiry_is_fine() -> None:
    assert verify(ASSERTION_URL, world(assertion=assertion_v2(expires="2030-01-01T00:00:00Z"))).valid


# ------------------------------------------------------------------------------------------ 1.0 / 0.5


def test_v1_0_hosted_with_unix_timestamp() -> None:
    url = "http://old.example/instance"
    assertion = {
        "uid": "abc",
        "recipient": {"type": "email", "hashed": False, "identity": "a@b.example"},
        "badge": "http://old.example/badge",
        "issuedOn": 1359217910,
        "verify": {"type": "hosted", "url": url},
    }
    badge = {
        "name": "Old",
        "description": "d",
        "image": "http://old.example/i.png",
        "criteria": "http://old.example/c",
        "issuer": "http://old.example/issuer",
    }
    issuer = {"name": "Old Issuer", "url": "http://old.example"}
    mapping = {
        url: json_doc(assertion),
        "http://old.example/badge": json_doc(badge),
        "http://old.example/issuer": json_doc(issuer),
    }
    verdict = verify(url, mapping, ["A@B.example"])
    assert verdict.valid and verdict.version == "1.0", verdict.errors
    assert verdict.badge and verdict.badge.issued_on == datetime(2013, 1, 26, 16, 31, 50, tzinfo=UTC)
    # 1.0 documents carry no id of their own: they are known by where they were fetched from.
    assert verdict.badge.badge_class and verdict.badge.badge_class.id == "http://old.example/badge"
    assert verdict.badge.issuer and verdict.badge.issuer.id == "http://old.example/issuer"
    no_uid = dict(assertion)
    del no_uid["uid"]
    assert "ASSERTION_INCOMPLETE" in codes(verify(url, {**mapping, url: json_doc(no_uid)}))


def test_v0_5_hosted_hashed_with_top_level_salt() -> None:
    url = "http://oldstyle.example/instance"
    doc = {
        "recipient": hashed("kid@example.org", "sha256", "sel"),
        "salt": "sel",
        "issued_on": "2011-06-01",
        "evidence": "/evidence/1",
        "badge": {
            "version": "0.5.0",
            "name": "McBadge",
            "image": "/img/1.png",
            "description": "Basic.",
            "criteria": "/criteria/1",
            "issuer": {"origin": "http://oldstyle.example", "name": "Basic Issuer", "contact": "x@y.example"},
        },
    }
    verdict = verify(url, {url: json_doc(doc)}, ["kid@example.org"])
    assert verdict.valid and verdict.version == "0.5", verdict.errors
    assert verdict.badge and verdict.badge.badge_class.criteria == "http://oldstyle.example/criteria/1"
    assert verdict.badge.issuer.url == "http://oldstyle.example"
    wrong_origin = {
        **doc,
        "badge": {**doc["badge"], "issuer": {"origin": "http://other.example", "name": "x"}},
    }
    assert codes(verify(url, {url: json_doc(wrong_origin)})) == ["ORIGIN_MISMATCH"]


def test_v0_5_as_bare_json_is_not_verifiable_but_still_checked() -> None:
    doc = {
        "recipient": hashed("kid@example.org", "sha256", "sel"),
        "salt": "sel",
        "issued_on": "2011-06-01",
        "badge": {
            "version": "0.5.0",
            "name": "McBadge",
            "image": "/img/1.png",
            "description": "Basic.",
            "criteria": "/criteria/1",
            "issuer": {"origin": "http://oldstyle.example", "name": "Basic Issuer", "contact": "x@y.example"},
        },
    }
    # As JSON (pasted, or baked as JSON), no hosted copy proves the issuer made it.
    pasted = verify(json.dumps(doc), {}, ["kid@example.org"])
    assert not pasted.valid and codes(pasted) == ["NOT_VERIFIABLE"]
    assert pasted.certain_to_fail  # Badgr cannot accept it either
    assert pasted.version == "0.5"
    [issue] = pasted.errors
    assert issue.message.endswith(".") and "Badgr cannot accept it" in issue.message
    assert issue.message.count(".") == 1  # one sentence
    # Its contents are still checked and reported: the recipient, and the structure.
    assert pasted.badge and pasted.badge.recipient.identity == doc["recipient"]
    assert pasted.badge.issuer.name == "Basic Issuer"
    other = verify(json.dumps(doc), {}, ["someone@example.org"])
    assert codes(other) == ["NOT_VERIFIABLE", "RECIPIENT_MISMATCH"]
    broken = {**doc, "badge": {**doc["badge"], "name": ""}}
    assert codes(verify(json.dumps(broken), {})) == ["NOT_VERIFIABLE", "BADGECLASS_INCOMPLETE"]
    baked = verify(tiny_png(itxt(json.dumps(doc))), {}, ["kid@example.org"])
    assert codes(baked) == ["NOT_VERIFIABLE"]


# ------------------------------------------------------------------------------------------ signed


def signed_world(signing_key: rsa.RSAPrivateKey, **over: Any) -> dict[str, tuple[int, bytes, str]]:
    key_doc = {"@context": V2, "type": "CryptographicKey", "id": KEY_URL, "owner": ISSUER_URL}
    key_doc["publicKeyPem"] = public_pem(signing_key)
    docs: dict[str, Any] = {
        "assertion": None,
        "issuer": issuer_v2(publicKey=KEY_URL),
        "key": key_doc,
    }
    docs.update(over)
    return world(**docs)


def signed_assertion(**over: Any) -> dict[str, Any]:
    return assertion_v2(
        id="urn:uuid:2b7c3a9e-0b1c-4bfa-9d0a-8a4f6d7e1c00",
        verification={"type": "signed", "creator": KEY_URL},
        **over,
    )


def test_signed_v2_valid(rsa_key: rsa.RSAPrivateKey) -> None:
    token = sign_jws(signed_assertion(), rsa_key)
    verdict = verify(token, signed_world(rsa_key), [EMAIL])
    assert verdict.valid, verdict.errors
    assert verdict.payload_kind == "jws" and verdict.jws == token
    assert verdict.badge and verdict.badge.verification_type == "signed"
    # Baked, too.
    assert verify(tiny_png(itxt(token)), signed_world(rsa_key), [EMAIL]).valid


def test_signed_v2_baked_in_svg_verifies_and_tampering_fails(rsa_key: rsa.RSAPrivateKey) -> None:
    from infra.local.bakery import bake_svg, make_svg, tamper_jws

    payload = signed_assertion()
    token = sign_jws(payload, rsa_key)
    svg = bake_svg(make_svg("#336699", "Kites"), json.dumps(payload), token).encode()
    verdict = verify(svg, signed_world(rsa_key), [EMAIL])
    assert verdict.valid, verdict.errors
    assert verdict.payload_kind == "jws" and verdict.jws == token
    # The JWS tampered with in the attribute (the CDATA copy left as it was): the signature fails.
    forged = tamper_jws(token, {"evidence": "https://evil.example"})
    tampered = bake_svg(make_svg("#336699", "Kites"), json.dumps(payload), forged).encode()
    assert codes(verify(tampered, signed_world(rsa_key), [EMAIL])) == ["SIGNATURE_INVALID"]
    # The CDATA copy edited alone changes nothing: only the signed payload is read.
    edited = bake_svg(make_svg("#336699", "Kites"), json.dumps({**payload, "evidence": "x"}), token)
    kept = verify(edited.encode(), signed_world(rsa_key), [EMAIL])
    assert kept.valid and kept.badge is not None and kept.badge.evidence is None


def test_signed_lowercase_alg_is_accepted(rsa_key: rsa.RSAPrivateKey) -> None:
    assert verify(sign_jws(signed_assertion(), rsa_key, alg="rs256"), signed_world(rsa_key)).valid


def test_hs256_and_none_are_rejected(rsa_key: rsa.RSAPrivateKey) -> None:
    for alg in ("HS256", "none", "RS512"):
        token = sign_jws(signed_assertion(), rsa_key, alg=alg)
        assert codes(verify(token, signed_world(rsa_key))) == ["JWS_ALGORITHM"]


def test_tampered_and_wrong_key(rsa_key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey) -> None:
    token = sign_jws(signed_assertion(), rsa_key)
    header, _payload, signature = token.split(".")
    from ob_helpers import b64url

    forged = b64url(json.dumps(signed_assertion(evidence="https://evil.example")).encode())
    assert codes(verify(f"{header}.{forged}.{signature}", signed_world(rsa_key))) == ["SIGNATURE_INVALID"]
    assert codes(verify(sign_jws(signed_assertion(), other_key), signed_world(rsa_key))) == [
        "SIGNATURE_INVALID"
    ]


def test_unusable_key_and_missing_key(rsa_key: rsa.RSAPrivateKey) -> None:
    token = sign_jws(signed_assertion(), rsa_key)
    bad = {
        "id": KEY_URL,
        "owner": ISSUER_URL,
        "publicKeyPem": "-----BEGIN PUBLIC KEY-----\nMIIBG0BA\n-----END",
    }
    assert codes(verify(token, signed_world(rsa_key, key=bad))) == ["KEY_INVALID"]
    assert codes(verify(token, signed_world(rsa_key, key=None))) == ["KEY_NOT_FOUND"]


def test_key_must_belong_to_issuer(rsa_key: rsa.RSAPrivateKey) -> None:
    token = sign_jws(signed_assertion(), rsa_key)
    key_doc = {"id": KEY_URL, "owner": "https://mallory.example/issuer", "publicKeyPem": public_pem(rsa_key)}
    mapping = signed_world(rsa_key, key=key_doc, issuer=issuer_v2(publicKey="https://issuer.example/keys/2"))
    assert codes(verify(token, mapping)) == ["KEY_NOT_ISSUERS"]
    # A key document that names the issuer as its owner proves nothing: anyone can write one.
    # Only the issuer's profile listing the key does.
    claimed = signed_world(rsa_key, issuer=issuer_v2())
    assert codes(verify(token, claimed)) == ["KEY_NOT_ISSUERS"]
    assert verify(token, signed_world(rsa_key, issuer=issuer_v2(publicKey=[KEY_URL]))).valid


def test_creator_missing_uses_issuer_keys(rsa_key: rsa.RSAPrivateKey) -> None:
    doc = signed_assertion()
    doc["verification"] = {"type": "SignedBadge"}
    assert verify(sign_jws(doc, rsa_key), signed_world(rsa_key)).valid


def test_signed_json_without_signature(rsa_key: rsa.RSAPrivateKey) -> None:
    assert "SIGNATURE_MISSING" in codes(verify(json.dumps(signed_assertion()), signed_world(rsa_key)))


def test_unparsable_jws_payload(rsa_key: rsa.RSAPrivateKey) -> None:
    assert codes(verify(sign_jws(b"hey there", rsa_key), signed_world(rsa_key))) == ["JWS_PAYLOAD_UNREADABLE"]


ASSERTION_ID = "urn:uuid:2b7c3a9e-0b1c-4bfa-9d0a-8a4f6d7e1c00"


@pytest.mark.parametrize(
    "revoked",
    [
        [ASSERTION_ID],
        ASSERTION_ID,
        {"id": ASSERTION_ID, "revocationReason": "Oops."},
        [{"id": ASSERTION_ID}],
        ["urn:uuid:other", {"id": "urn:uuid:x"}, {"id": ASSERTION_ID, "revocationReason": "Oops."}],
        [{"uid": "u-7"}],
    ],
)
def test_revocation_list_forms(rsa_key: rsa.RSAPrivateKey, revoked: Any) -> None:
    token = sign_jws(signed_assertion(uid="u-7"), rsa_key)
    rl = {"@context": V2, "id": RL_URL, "type": "RevocationList", "revokedAssertions": revoked}
    mapping = signed_world(rsa_key, issuer=issuer_v2(publicKey=KEY_URL, revocationList=RL_URL), rl=rl)
    verdict = verify(token, mapping)
    assert verdict.revoked and codes(verdict) == ["REVOKED"]


def test_revocation_list_without_this_badge(rsa_key: rsa.RSAPrivateKey) -> None:
    token = sign_jws(signed_assertion(), rsa_key)
    rl = {"id": RL_URL, "revokedAssertions": ["urn:uuid:other", {"uid": "zzz"}]}
    mapping = signed_world(rsa_key, issuer=issuer_v2(publicKey=KEY_URL, revocationList=RL_URL), rl=rl)
    assert verify(token, mapping).valid
    missing = signed_world(rsa_key, issuer=issuer_v2(publicKey=KEY_URL, revocationList=RL_URL))
    verdict = verify(token, missing)
    assert verdict.valid and "REVOCATION_LIST_NOT_FOUND" in [w.code for w in verdict.warnings]


def _v1_signed(
    rsa_key: rsa.RSAPrivateKey, uid: str, revocations: dict[str, str]
) -> tuple[str, dict[str, Any]]:
    payload = {
        "uid": uid,
        "recipient": {"type": "email", "hashed": True, "salt": "s", "identity": hashed(EMAIL, "sha256", "s")},
        "badge": f"{BASE}/v1/badge",
        "issuedOn": "2013-02-18T18:10+0500",
        "verify": {"type": "signed", "url": f"{BASE}/v1/public-key"},
    }
    mapping = {
        f"{BASE}/v1/public-key": (200, public_pem(rsa_key).encode(), "application/x-pem-file"),
        f"{BASE}/v1/badge": json_doc(
            {
                "name": "B",
                "description": "d",
                "image": "x.png",
                "criteria": "c",
                "issuer": f"{BASE}/v1/issuer",
            }
        ),
        f"{BASE}/v1/issuer": json_doc({"name": "I", "url": BASE, "revocationList": f"{BASE}/v1/rl"}),
        f"{BASE}/v1/rl": json_doc(revocations),
    }
    return sign_jws(payload, rsa_key, alg="rs256"), mapping


def test_signed_v1_0_checks_signature_and_uid_revocation(
    rsa_key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey
) -> None:
    token, mapping = _v1_signed(rsa_key, "d3c4ff", {"abc123": "my bad"})
    verdict = verify(token, mapping, [EMAIL])
    assert verdict.valid and verdict.version == "1.0", verdict.errors
    revoked_token, revoked_map = _v1_signed(rsa_key, "abc123", {"abc123": "my bad"})
    revoked = verify(revoked_token, revoked_map)
    assert revoked.revoked and codes(revoked) == ["REVOKED"]
    wrong = dict(mapping)
    wrong[f"{BASE}/v1/public-key"] = (200, public_pem(other_key).encode(), "text/plain")
    assert codes(verify(token, wrong)) == ["SIGNATURE_INVALID"]


# ------------------------------------------------------------------------------------------ caching


def test_issuer_documents_are_cached_but_assertions_are_not() -> None:
    fetcher = CountingFetcher(world())
    verifier = Verifier(fetcher, now=lambda: NOW)
    for _ in range(5):
        assert verifier.verify(ASSERTION_URL).valid
    assert fetcher.calls[ASSERTION_URL] == 5
    assert fetcher.calls[BADGE_URL] == 1 and fetcher.calls[ISSUER_URL] == 1
    # Nothing else is fetched: no JSON-LD context, no image.
    assert set(fetcher.calls) == {ASSERTION_URL, BADGE_URL, ISSUER_URL}


def test_verify_many_is_parallel_and_shares_fetches() -> None:
    mapping = world()
    urls = []
    for i in range(40):
        url = f"{BASE}/assertions/{i}"
        mapping[url] = json_doc(assertion_v2(id=url))
        urls.append(url)
    fetcher = CountingFetcher(mapping, delay=0.02)
    verifier = Verifier(fetcher, now=lambda: NOW)
    verdicts = verifier.verify_many(urls, [EMAIL], workers=16)
    assert all(v.valid for v in verdicts) and len(verdicts) == 40
    assert fetcher.calls[BADGE_URL] == 1 and fetcher.calls[ISSUER_URL] == 1
    assert fetcher.most_in_flight > 1  # fetches overlapped (how much faster: make bench)


def test_timeouts_are_not_cached() -> None:
    class Flaky:
        def __init__(self) -> None:
            self.failed = False
            self.inner = MapFetcher(world())

        def get(self, url: str) -> FetchedDocument:
            if url == ISSUER_URL and not self.failed:
                self.failed = True
                raise FetchError("timeout", "slow")
            return self.inner.get(url)

    verifier = Verifier(Flaky(), now=lambda: NOW)
    assert codes(verifier.verify(ASSERTION_URL)) == ["ISSUER_NOT_ANSWERING"]
    assert verifier.verify(ASSERTION_URL).valid


def test_a_broken_fetcher_yields_a_verdict() -> None:
    class Broken:
        def get(self, url: str) -> FetchedDocument:
            raise RuntimeError("bug")

    verdict = Verifier(Broken()).verify(ASSERTION_URL)
    assert not verdict.valid and codes(verdict) == ["ASSERTION_UNREACHABLE"]


# ------------------------------------------------------------------------------------------ summary


def test_to_summary() -> None:
    verdict = verify(ASSERTION_URL, world(), ["nobody@else.example"])
    summary = verdict.to_summary()
    assert isinstance(summary, VerdictSummary)
    assert summary.name == "Kite Flying" and summary.issuer_name == "Kite School"
    assert summary.issuer_url == BASE and summary.image_url == f"{BASE}/images/kite.png"
    assert summary.issued_on == "2020-01-02T03:04:05+00:00"
    assert summary.payload_kind == "url" and summary.hosted_url == ASSERTION_URL
    assert [p.code for p in summary.errors] == ["RECIPIENT_MISMATCH"]
    assert not summary.certain_to_fail and not summary.valid


def test_not_a_badge_inputs() -> None:
    assert codes(verify("hello there", {})) == ["NOT_A_BADGE"]
    assert codes(verify(b"\x89PNG\r\n\x1a\n", {})) == ["NOTHING_BAKED"]
    assert codes(verify("[1, 2]", {})) == ["NOT_A_BADGE"]
    assert codes(verify('{"a": ', {})) == ["MALFORMED_JSON"]
    assert verify(b"\xff\xfe\x00garbage", {}).certain_to_fail


def test_default_clock_is_now() -> None:
    future = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    verdict = Verifier(MapFetcher(world(assertion=assertion_v2(issuedOn=future)))).verify(ASSERTION_URL)
    assert codes(verdict) == ["ISSUED_IN_FUTURE"]
