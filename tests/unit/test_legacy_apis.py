"""The Backpack's third-party APIs, through the legacy handler, on fakes: every row of the
Backpack's behaviour that does not need a browser."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from backpack_migrate import connect
from backpack_migrate.badgr import Tokens
from backpack_migrate.migration import store_tokens
from backpack_migrate.openbadges import Issue, IssuerInfo, NormalizedBadge, Verdict
from backpack_migrate.openbadges.model import BadgeClassInfo
from backpack_migrate.services import Services, use_services
from tests.events import FakeContext, http_event
from tests.fakes import InMemoryStore, ScriptedBadgr, fake_services
from tests.handlers.conftest import load_handler
from tests.legacy_world import ACCESS_TOKEN, CONNECT_ORIGIN, REFRESH_TOKEN, SVG, Seeded, seed

pytestmark = pytest.mark.unit

GOOD = "https://issuer.example.org/assertions/new.json"
OTHER = "https://issuer.example.org/assertions/not-yours.json"
GONE = "https://gone.example.org/assertions/1.json"


class FakeVerifier:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[str, ...]]] = []

    def verify(self, source: str, recipients: Any = ()) -> Verdict:
        self.calls.append((source, tuple(recipients)))
        badge = NormalizedBadge(
            assertion_id=source,
            issuer=IssuerInfo(name="Example Academy"),
            badge_class=BadgeClassInfo(name="New badge"),
        )
        if source == OTHER and recipients:
            return Verdict(
                valid=False, errors=[Issue(code="RECIPIENT_MISMATCH", message="Not yours.")], badge=badge
            )
        if source == GONE:
            return Verdict(valid=False, errors=[Issue(code="ASSERTION_UNREACHABLE", message="Gone.")])
        if not source.startswith("https://"):
            return Verdict(valid=False, errors=[Issue(code="NOT_A_BADGE", message="This is no badge.")])
        return Verdict(
            valid=True,
            hosted_url=source,
            payload_kind="url",
            assertion={"id": source, "name": "x"},
            badge=badge,
        )


@pytest.fixture
def world() -> Iterator[tuple[Services, InMemoryStore, Seeded, ScriptedBadgr, Any]]:
    badgr = ScriptedBadgr()
    svc, store, _queue, s3, _sender = fake_services(verifier=FakeVerifier(), badgr=badgr)
    seeded = seed(svc, s3.put)
    connect.UNKNOWN_TOKENS.clear()
    use_services(svc)
    try:
        yield svc, store, seeded, badgr, load_handler("legacy")
    finally:
        use_services(None)


def call(
    handler: Any,
    method: str,
    url: str,
    route: str,
    params: dict[str, str] | None = None,
    body: str | None = None,
    headers: dict[str, str] | None = None,
    cookies: list[str] | None = None,
) -> dict[str, Any]:
    event = http_event(method, url, route, params, cookies=cookies, body=body, headers=headers)
    answer: dict[str, Any] = handler.handler(event, FakeContext())
    raw = answer.get("body") or ""
    answer["text"] = base64.b64decode(raw).decode("latin-1") if answer.get("isBase64Encoded") else raw
    answer["headers"] = {k.lower(): v for k, v in (answer.get("headers") or {}).items()}
    return answer


def as_json(answer: dict[str, Any]) -> Any:
    return json.loads(answer["text"])


# ------------------------------------------------------------------------- convert/email


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-www-form-urlencoded", "email=ADA%40example.org"),
        ("application/json", json.dumps({"email": "ADA@example.org"})),
        (
            "multipart/form-data; boundary=XyZ",
            '--XyZ\r\nContent-Disposition: form-data; name="email"\r\n\r\nADA@example.org\r\n--XyZ--\r\n',
        ),
    ],
)
def test_convert_email_takes_form_json_or_multipart_and_matches_an_unverified_primary(
    world, content_type, body
):
    *_, handler = world
    answer = call(
        handler,
        "POST",
        "/displayer/convert/email?callback=cb",
        "/displayer/convert/email",
        body=body,
        headers={"content-type": content_type, "origin": "https://other.example"},
    )
    assert answer["statusCode"] == 200
    assert as_json(answer) == {"status": "okay", "email": "ADA@example.org", "userId": 7}
    assert "access-control-allow-origin" not in answer["headers"]  # no CORS, callback ignored


def test_convert_email_matches_verified_additional_addresses_only(world):
    *_, handler = world
    found = call(
        handler,
        "POST",
        "/displayer/convert/email",
        "/displayer/convert/email",
        body="email=ada.l%40EXAMPLE.org",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert as_json(found)["userId"] == 7
    unverified = call(
        handler,
        "POST",
        "/displayer/convert/email",
        "/displayer/convert/email",
        body="email=ada.old%40example.org",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert unverified["statusCode"] == 404
    assert as_json(unverified) == {
        "status": "missing",
        "error": "Could not find a user by the email address `ada.old@example.org`",
    }
    missing = call(
        handler,
        "POST",
        "/displayer/convert/email",
        "/displayer/convert/email",
        body="",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert missing["statusCode"] == 400
    assert as_json(missing) == {"status": "invalid", "error": "missing `email` parameter"}


# ------------------------------------------------------------------------- groups


def groups_call(handler, user: str, suffix: str = "", query: str = "", headers=None):
    path = f"/displayer/{user}/groups{suffix}"
    return call(
        handler,
        "GET",
        path + query,
        f"/displayer/{{userId}}/groups{suffix}",
        {"userId": user},
        headers=headers,
    )


def group_call(handler, user: str, group: str, query: str = "", headers=None):
    path = f"/displayer/{user}/group/{group}"
    return call(
        handler,
        "GET",
        path + query,
        "/displayer/{userId}/group/{groupId}",
        {"userId": user, "groupId": group},
        headers=headers,
    )


def test_groups_lists_public_groups_with_stored_counts_and_the_collection_a_group_became(world):
    *_, handler = world
    for suffix in ("", ".json"):
        answer = groups_call(handler, "7", suffix)
        assert answer["statusCode"] == 200
        assert answer["headers"]["access-control-allow-origin"] == "*"
        assert as_json(answer) == {
            "userId": 7,
            "groups": [
                {"groupId": 21, "name": "Science", "badges": 3},  # the stale id 99 counts, as it did
                {"groupId": 23, "name": "Moved", "badges": 1},  # now its published Badgr collection
            ],
        }


def test_group_lists_badges_in_id_order_without_stale_ids(world):
    _svc, _store, seeded, *_, handler = world
    answer = group_call(handler, "7", "21.json")
    assert answer["statusCode"] == 200
    assert answer["headers"]["access-control-allow-origin"] == "*"
    body = as_json(answer)
    assert body["userId"] == 7 and body["groupId"] == 21
    assert [b["assertion"]["badge"]["name"] for b in body["badges"]] == ["Badge 11", "Badge 13"]
    first, second = body["badges"]
    assert first == {
        "lastValidated": "2016-02-03T04:05:06.000Z",
        "hostedUrl": "https://issuer.example.org/assertions/11",
        "assertion": first["assertion"],
        "imageUrl": f"https://badges.example.org/images/badge/{seeded.body_hashes[11]}.png",
    }
    assert second["hostedUrl"] is None


def test_private_foreign_unknown_and_erased_groups_are_the_backpacks_404(world):
    _svc, store, seeded, *_, handler = world
    missing = {"httpStatus": 404, "status": "missing"}
    for user, group in (("7", "22"), ("7", "31"), ("7", "404"), ("404", "21"), ("x", "21")):
        answer = group_call(handler, user, group)
        assert (answer["statusCode"], as_json(answer)) == (404, missing), (user, group)
        assert answer["headers"]["access-control-allow-origin"] == "*"
    assert as_json(groups_call(handler, "404")) == missing
    # A learner who erased their data: the records are gone, the answer is the Backpack's 404.
    store.learners.pop(seeded.learners["ada.l@example.org"])
    assert (groups_call(handler, "7")["statusCode"], group_call(handler, "7", "21")["statusCode"]) == (
        404,
        404,
    )


def test_formats_follow_the_backpacks_accept_rules(world):
    *_, handler = world
    html = {"accept": "text/html"}
    refused = groups_call(handler, "7", headers=html)
    assert refused["statusCode"] == 400
    assert refused["headers"]["content-type"].startswith("text/plain")
    assert refused["text"] == "error: could not find formatter"
    assert groups_call(handler, "7", ".json", headers=html)["statusCode"] == 200
    assert groups_call(handler, "7", headers={"accept": "application/json"})["statusCode"] == 200
    for accept in ("*/*", "text/html,application/*;q=0.8", "application/json;q=0.5"):
        assert groups_call(handler, "7", headers={"accept": accept})["statusCode"] == 200, accept
    assert groups_call(handler, "7", headers={"accept": "application/json;q=0"})["statusCode"] == 400
    assert group_call(handler, "7", "21.jsonp", headers=html)["statusCode"] == 200


def test_jsonp_wraps_the_answer_and_forces_200_and_refuses_a_callback_that_is_no_name(world):
    *_, handler = world
    answer = groups_call(handler, "404", query="?callback=jQuery1_2.done")
    assert answer["statusCode"] == 200
    assert answer["text"] == '/**/jQuery1_2.done({"httpStatus":404,"status":"missing"});'
    assert answer["headers"]["content-type"].startswith("application/json")
    for bad in ("alert(1)//", "a;b", "</script>", "a b", "1abc"):
        hostile = groups_call(handler, "7", query=f"?callback={bad}")
        assert hostile["statusCode"] == 400, bad
        assert bad not in hostile["text"]


def test_badge_images_are_served_by_body_hash_and_an_svg_cannot_run(world):
    _svc, _store, seeded, *_, handler = world
    for badge_id, ext, media in ((11, "png", "image/png"), (12, "svg", "image/svg+xml")):
        name = f"{seeded.body_hashes[badge_id]}.{ext}"
        answer = call(handler, "GET", f"/images/badge/{name}", "/images/badge/{file}", {"file": name})
        assert answer["statusCode"] == 200
        assert answer["headers"]["content-type"] == media
        assert (
            answer["headers"]["content-security-policy"]
            == "default-src 'none'; style-src 'unsafe-inline'; sandbox"
        )
        assert answer["headers"]["x-content-type-options"] == "nosniff"
    name = f"{seeded.body_hashes[12]}.svg"
    svg = call(handler, "GET", f"/images/badge/{name}", "/images/badge/{file}", {"file": name})
    assert svg["text"].encode() == SVG
    for name in (f"{'0' * 64}.png", f"{seeded.body_hashes[11]}.svg", "..%2Fx.png", "x.png"):
        missing = call(handler, "GET", f"/images/badge/{name}", "/images/badge/{file}", {"file": name})
        assert missing["statusCode"] == 404, name
        assert missing["headers"]["content-type"].startswith("text/html")


# ------------------------------------------------------------------------- Backpack Connect


def bearer(token: str) -> dict[str, str]:
    return {"authorization": "Bearer " + base64.b64encode(token.encode()).decode()}


def api(handler, method: str, path: str, body: str | None = None, headers=None):
    return call(
        handler,
        method,
        path,
        path,
        body=body,
        headers={"content-type": "application/json", **(headers or {})},
    )


def test_a_grant_from_the_export_issues_into_badgr_once(world):
    svc, _store, seeded, badgr, handler = world
    learner = seeded.learners["ada.l@example.org"]
    store_tokens(
        svc,
        learner,
        Tokens(access_token="badgr-a", refresh_token="badgr-r", expires_at=0, scope="rw:backpack"),
    )
    headers = {**bearer(ACCESS_TOKEN), "origin": CONNECT_ORIGIN}
    first = api(handler, "POST", "/api/issue", json.dumps({"badge": GOOD}), headers)
    assert first["statusCode"] == 201, first["text"]
    assert as_json(first) == {"exists": False, "badge": {"id": GOOD, "name": "x"}}
    assert first["headers"]["access-control-allow-origin"] == CONNECT_ORIGIN
    again = api(handler, "POST", "/api/issue", json.dumps({"badge": GOOD}), headers)
    assert (again["statusCode"], again["text"]) == (304, "")
    assert [i.get("url") for i in badgr.imports] == [GOOD]
    # The recipient was checked against the learner's verified addresses and contact address.
    assert set(svc.verifier.calls[-1][1]) == {"ada.l@example.org"}


def test_api_issue_answers_403_400_and_records_for_a_learner_not_connected_yet(world):
    _svc, store, seeded, badgr, handler = world
    headers = {**bearer(ACCESS_TOKEN), "origin": CONNECT_ORIGIN}
    assert api(handler, "POST", "/api/issue", json.dumps({"badge": OTHER}), headers)["statusCode"] == 403
    assert api(handler, "POST", "/api/issue", json.dumps({"badge": "nonsense"}), headers)["statusCode"] == 400
    assert api(handler, "POST", "/api/issue", json.dumps({}), headers)["statusCode"] == 400
    recorded = api(handler, "POST", "/api/issue", json.dumps({"badge": GOOD}), headers)
    assert recorded["statusCode"] == 201
    assert badgr.imports == []
    learner = seeded.learners["ada.l@example.org"]
    waiting = [b for b in store.list_badges(learner) if b.issued_assertion == GOOD]
    assert len(waiting) == 1 and waiting[0].state.value == "verified"  # moves when they connect


def test_tokens_are_refused_as_the_backpack_refused_them(world):
    _svc, store, *_, handler = world
    wrong_origin = api(
        handler, "GET", "/api/identity", headers={**bearer(ACCESS_TOKEN), "origin": "https://evil.example"}
    )
    assert wrong_origin["statusCode"] == 401
    assert as_json(wrong_origin) == {"status": "unauthorized", "message": "invalid origin"}
    assert wrong_origin["headers"]["www-authenticate"] == 'Bearer realm="openbadges"'
    for headers in (
        {},
        bearer("not a token"),
        {"authorization": "Bearer !!!"},
        bearer("A" * 32 + "_1h2k3l4m6"),
    ):
        unknown = api(handler, "GET", "/api/identity", headers=headers)
        assert (unknown["statusCode"], unknown["text"]) == (401, "Unauthorized"), headers
        assert unknown["headers"]["www-authenticate"] == 'Bearer realm="Users", error="invalid_token"'
    grant = store.grants["g7"]
    store.grants["g7"] = grant.model_copy(update={"access_time_ms": grant.access_time_ms - 3600 * 1000})
    expired = api(handler, "GET", "/api/identity", headers={**bearer(ACCESS_TOKEN), "origin": CONNECT_ORIGIN})
    assert (expired["statusCode"], as_json(expired)["message"]) == (401, "token expired")


def test_a_flood_of_bad_tokens_costs_no_lookup_storm(world):
    _svc, store, *_, handler = world
    lookups = []
    real = store.grant_for_access_digest
    store.grant_for_access_digest = lambda digest: lookups.append(digest) or real(digest)  # type: ignore[method-assign]
    well_formed_unknown = bearer("B" * 32 + "_1h2k3l4m6")
    for _ in range(50):
        assert api(handler, "GET", "/api/identity", headers=bearer("garbage"))["statusCode"] == 401
        assert api(handler, "GET", "/api/identity", headers=well_formed_unknown)["statusCode"] == 401
    assert len(lookups) == 1  # the malformed never looked up; the unknown once, then remembered


def test_identity_hashes_the_primary_address(world):
    *_, handler = world
    import hashlib

    answer = api(handler, "GET", "/api/identity", headers={**bearer(ACCESS_TOKEN), "origin": CONNECT_ORIGIN})
    body = as_json(answer)
    assert body["type"] == "email"
    assert (
        body["recipient"]
        == "sha256$" + hashlib.sha256(("ada@example.org" + body["salt"]).encode()).hexdigest()
    )


def test_refresh_rotates_both_tokens_once(world):
    *_, handler = world
    form = {"content-type": "application/x-www-form-urlencoded"}
    bad_type = call(handler, "POST", "/api/token", "/api/token", body="grant_type=password", headers=form)
    assert (bad_type["statusCode"], bad_type["text"]) == (400, "invalid grant_type")
    bad_token = call(
        handler,
        "POST",
        "/api/token",
        "/api/token",
        body="grant_type=refresh_token&refresh_token=nope",
        headers=form,
    )
    assert (bad_token["statusCode"], bad_token["text"]) == (400, "invalid refresh_token")
    body = f"grant_type=refresh_token&refresh_token={REFRESH_TOKEN}"
    fresh = call(handler, "POST", "/api/token", "/api/token", body=body, headers=form)
    assert fresh["statusCode"] == 200
    tokens = as_json(fresh)
    assert tokens["expires"] == 3600 and connect.plausible_token(tokens["access_token"])
    again = call(handler, "POST", "/api/token", "/api/token", body=body, headers=form)
    assert again["statusCode"] == 400  # the old refresh token was spent
    old = api(handler, "GET", "/api/identity", headers={**bearer(ACCESS_TOKEN), "origin": CONNECT_ORIGIN})
    assert old["statusCode"] == 401
    new = api(
        handler, "GET", "/api/identity", headers={**bearer(tokens["access_token"]), "origin": CONNECT_ORIGIN}
    )
    assert new["statusCode"] == 200


def _session(svc: Services, learner_id: str) -> str:
    svc.store.put_session("sess-1", {"learner_id": learner_id, "csrf": "csrf-1", "link": "LINK"}, 600)
    return "bm_session=sess-1"


def test_access_checks_its_request_and_grants_after_consent_keeping_the_callbacks_query(world):
    svc, _store, seeded, *_, handler = world
    bad = {
        "/access?scope=issue": "callback expected",
        "/access?callback=https%3A%2F%2Fsite.example%2Fcb": "scope expected",
        "/access?callback=javascript%3Aalert(1)&scope=issue": "invalid callback: ",
        "/access?callback=https%3A%2F%2Fsite.example%2Fcb&scope=issue,admin": (
            "invalid scope: invalid permission(s): admin"
        ),
    }
    for url, text in bad.items():
        answer = call(handler, "GET", url, "/access")
        assert answer["statusCode"] == 400 and answer["text"].startswith(text), url
    url = "/access?callback=https%3A%2F%2Fsite.example%2Fcb%3Fkeep%3D1&scope=issue"
    assert call(handler, "GET", url, "/access")["statusCode"] == 403  # no learner session
    cookie = _session(svc, seeded.learners["ada.l@example.org"])
    page = call(handler, "GET", url, "/access", cookies=[cookie])
    assert page["statusCode"] == 200 and "site.example" in page["text"]
    assert page["headers"]["x-frame-options"] == "DENY"
    request_id = page["text"].split("name='request' value='")[1].split("'")[0]
    form = {"content-type": "application/x-www-form-urlencoded", "origin": "https://badges.example.org"}
    # The callback comes from the stored request: a form naming another one changes nothing.
    granted = call(
        handler,
        "POST",
        "/access",
        "/access",
        cookies=[cookie],
        headers=form,
        body=f"request={request_id}&csrf=csrf-1&decision=allow&callback=https%3A%2F%2Fevil.example",
    )
    assert granted["statusCode"] == 303
    location = urlsplit(granted["headers"]["location"])
    assert (location.scheme, location.netloc, location.path) == ("https", "site.example", "/cb")
    query = parse_qs(location.query)
    assert query["keep"] == ["1"] and query["expires"] == ["3600"]
    assert query["api_root"] == ["https://badges.example.org/api"]
    token = query["access_token"][0]
    ok = api(handler, "GET", "/api/identity", headers={**bearer(token), "origin": "https://site.example"})
    assert ok["statusCode"] == 200
    replay = call(
        handler,
        "POST",
        "/access",
        "/access",
        cookies=[cookie],
        headers=form,
        body=f"request={request_id}&csrf=csrf-1&decision=allow",
    )
    assert replay["statusCode"] == 403  # one answer per request


def test_access_deny_and_cross_site_posts(world):
    svc, _store, seeded, *_, handler = world
    cookie = _session(svc, seeded.learners["ada.l@example.org"])
    page = call(
        handler,
        "GET",
        "/access?callback=https%3A%2F%2Fsite.example%2Fcb&scope=issue",
        "/access",
        cookies=[cookie],
    )
    request_id = page["text"].split("name='request' value='")[1].split("'")[0]
    cross = call(
        handler,
        "POST",
        "/access",
        "/access",
        cookies=[cookie],
        headers={"content-type": "application/x-www-form-urlencoded", "origin": "https://site.example"},
        body=f"request={request_id}&csrf=csrf-1&decision=allow",
    )
    assert cross["statusCode"] == 403
    denied = call(
        handler,
        "POST",
        "/access",
        "/access",
        cookies=[cookie],
        headers={"content-type": "application/x-www-form-urlencoded", "sec-fetch-site": "same-origin"},
        body=f"request={request_id}&csrf=csrf-1&decision=deny",
    )
    assert denied["statusCode"] == 303
    assert denied["headers"]["location"] == "https://site.example/cb?error=access_denied"


def test_preflight_is_answered_for_the_calling_origin(world):
    *_, handler = world
    answer = api(handler, "OPTIONS", "/api/issue", headers={"origin": CONNECT_ORIGIN})
    assert answer["statusCode"] == 204
    assert answer["headers"]["access-control-allow-origin"] == CONNECT_ORIGIN
    assert "Authorization" in answer["headers"]["access-control-allow-headers"]


# ------------------------------------------------------------------------- Issuer API


def test_issuer_js_and_the_frame_are_the_only_frameable_page(world):
    *_, handler = world
    script = call(handler, "GET", "/issuer.js", "/issuer.js")
    assert script["headers"]["content-type"].startswith("application/javascript")
    assert (
        'SCOPE = "OpenBadges.issue"' in script["text"]
        and '"::issue"' in script["text"]
        and "issue_no_modal" in script["text"]
    )
    frame = call(handler, "GET", "/issuer/frame?123", "/issuer/frame")
    assert "x-frame-options" not in frame["headers"]
    csp = frame["headers"]["content-security-policy"]
    assert "script-src 'sha256-" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    assert "frame-ancestors" in csp


def test_frameless_post_leads_to_the_learners_own_consent(world):
    svc, _store, seeded, badgr, handler = world
    learner = seeded.learners["ada.l@example.org"]
    store_tokens(
        svc,
        learner,
        Tokens(access_token="badgr-a", refresh_token="badgr-r", expires_at=0, scope="rw:backpack"),
    )
    posted = call(
        handler,
        "POST",
        "/issuer/frameless?1",
        "/issuer/frameless",
        body=f"assertions={GOOD}&assertions={GONE}",
        headers={"content-type": "application/x-www-form-urlencoded", "origin": "https://issuer.example.org"},
    )
    assert posted["statusCode"] == 303
    assert badgr.imports == []  # nothing happens before the learner says so
    consent_path = posted["headers"]["location"]
    request_id = consent_path.rsplit("/", 1)[1]
    route = "/issuer/consent/{request}"
    assert call(handler, "GET", consent_path, route, {"request": request_id})["statusCode"] == 403
    cookie = _session(svc, learner)
    page = call(handler, "GET", consent_path, route, {"request": request_id}, cookies=[cookie])
    assert page["statusCode"] == 200 and "New badge" in page["text"]
    forged = call(
        handler,
        "POST",
        consent_path,
        route,
        {"request": request_id},
        cookies=[cookie],
        headers={"content-type": "application/x-www-form-urlencoded", "origin": "https://issuer.example.org"},
        body="csrf=csrf-1&decision=allow",
    )
    assert forged["statusCode"] == 403
    done = call(
        handler,
        "POST",
        consent_path,
        route,
        {"request": request_id},
        cookies=[cookie],
        headers={"content-type": "application/x-www-form-urlencoded", "origin": "https://badges.example.org"},
        body="csrf=csrf-1&decision=allow",
    )
    assert done["statusCode"] == 200
    assert [i.get("url") for i in badgr.imports] == [GOOD]
