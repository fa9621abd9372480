"""The real Badgr client against the local Badgr sandbox, over loopback HTTP.

Hosted assertions, badge classes and issuers are served by a tiny issuer site on 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from backpack_migrate.badgr import (
    BadgrAuthError,
    BadgrClient,
    BadgrThrottled,
    Tokens,
    image_data_uri,
    new_pkce_pair,
)
from infra.local.badgr_sandbox import BadgrSandbox
from infra.local.bakery import tamper_jws
from tests.e2e.badgr_world import (
    CLIENT_ID,
    CLIENT_SECRET,
    LEARNER,
    PASSWORD,
    REDIRECT,
    IssuerSite,
    bake_png,
    client_for,
    running_sandbox,
    running_site,
    signed_badge,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def site() -> Iterator[IssuerSite]:
    with running_site() as running:
        yield running


@pytest.fixture
def sandbox() -> Iterator[BadgrSandbox]:
    with running_sandbox() as running:
        yield running


@pytest.fixture
def client(sandbox: BadgrSandbox) -> BadgrClient:
    return client_for(sandbox)


@pytest.fixture
def token(sandbox: BadgrSandbox) -> str:
    return str(sandbox.issue_token(LEARNER)["access_token"])


# ---------------------------------------------------------------- OAuth


def authorize_in_browser(
    sandbox: BadgrSandbox, client: BadgrClient, challenge: str, state: str, decision: str = "allow"
) -> requests.Response:
    browser = requests.Session()
    url = client.authorize_url(
        sandbox.authorize_endpoint, redirect_uri=REDIRECT, state=state, code_challenge=challenge
    )
    page = browser.get(url, timeout=5)
    assert page.status_code == 200
    assert "<form" in page.text and 'name="password"' in page.text.replace("'", '"')
    fields = dict(re.findall(r"<input type='hidden' name='(\w+)' value='([^']*)'>", page.text))
    fields.update(username=LEARNER, password=PASSWORD, decision=decision)
    return browser.post(f"{sandbox.url}/auth/oauth2/authorize", data=fields, allow_redirects=False, timeout=5)


def test_authorization_code_with_pkce_round_trip(sandbox: BadgrSandbox, client: BadgrClient) -> None:
    verifier, challenge = new_pkce_pair()
    answer = authorize_in_browser(sandbox, client, challenge, "state-123")
    assert answer.status_code == 302
    location = urlsplit(answer.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    query = {k: v[0] for k, v in parse_qs(location.query).items()}
    assert query["state"] == "state-123"
    assert query["scope"] == "rw:backpack rw:profile"

    tokens = client.exchange_code(query["code"], verifier, REDIRECT)
    assert tokens.has_scope("rw:backpack")
    assert tokens.expires_at > time.time() + 86000
    profile = client.get_profile(tokens.access_token)
    assert [e["email"] for e in profile["emails"]] == [LEARNER, "old@example.org"]

    # A code is single use.
    with pytest.raises(BadgrAuthError) as caught:
        client.exchange_code(query["code"], verifier, REDIRECT)
    assert caught.value.error == "invalid_grant"
    assert query["code"] not in str(caught.value)


def test_pkce_verifier_must_match(sandbox: BadgrSandbox, client: BadgrClient) -> None:
    _, challenge = new_pkce_pair()
    answer = authorize_in_browser(sandbox, client, challenge, "s")
    code = parse_qs(urlsplit(answer.headers["Location"]).query)["code"][0]
    other_verifier, _ = new_pkce_pair()
    with pytest.raises(BadgrAuthError) as caught:
        client.exchange_code(code, other_verifier, REDIRECT)
    assert caught.value.error == "invalid_grant"


def test_deny_shows_a_refusal_page_without_redirect(sandbox: BadgrSandbox, client: BadgrClient) -> None:
    answer = authorize_in_browser(sandbox, client, new_pkce_pair()[1], "s", decision="deny")
    assert answer.status_code == 200
    assert "Location" not in answer.headers
    assert "denied" in answer.text.lower()


def test_wrong_redirect_uri_is_refused(sandbox: BadgrSandbox, client: BadgrClient) -> None:
    url = client.authorize_url(
        sandbox.authorize_endpoint, redirect_uri="http://127.0.0.1:9/evil", state="s", code_challenge="c"
    )
    answer = requests.get(url, timeout=5)
    assert answer.status_code == 400
    assert answer.json() == {"error": "Mismatching redirect URI."}


def test_json_authorize_api_behind_the_page(sandbox: BadgrSandbox, client: BadgrClient) -> None:
    web_token = sandbox.issue_token(LEARNER, "rw:profile")["access_token"]
    headers = {"Authorization": f"Bearer {web_token}"}
    params = {"client_id": CLIENT_ID, "redirect_uri": REDIRECT, "response_type": "code",
              "scope": "rw:backpack", "state": "x"}  # fmt: skip
    described = requests.get(f"{sandbox.url}/o/authorize", params=params, headers=headers, timeout=5)
    assert described.status_code == 200 and described.json()["scopes"] == ["rw:backpack"]
    body = {"client_id": CLIENT_ID, "redirect_uri": REDIRECT, "response_type": "code", "state": "x",
            "scopes": ["rw:backpack"], "allow": True}  # fmt: skip
    granted = requests.post(f"{sandbox.url}/o/authorize", json=body, headers=headers, timeout=5)
    assert granted.status_code == 200
    assert granted.json()["success_url"].startswith(REDIRECT + "?code=")
    refused = requests.post(
        f"{sandbox.url}/o/authorize", json={**body, "allow": False}, headers=headers, timeout=5
    )
    assert (refused.status_code, refused.json()) == (400, {"error": ""})


def test_refresh_rotates_and_revokes_then_throttles(sandbox: BadgrSandbox, client: BadgrClient) -> None:
    sandbox.backoff_base = 1.0  # a throttle window no slow machine outlasts between two requests
    issued = sandbox.issue_token(LEARNER)
    old = Tokens(access_token=issued["access_token"], refresh_token=issued["refresh_token"], expires_at=0)
    new = client.refresh(old.refresh_token)
    assert new.refresh_token != old.refresh_token and new.access_token != old.access_token

    # The old access token is revoked, the new one works.
    assert client.import_badge(old.access_token, url="http://127.0.0.1:9/x").outcome == "unauthorized"
    with pytest.raises(BadgrAuthError):
        client.list_assertions(old.access_token)
    assert client.list_assertions(new.access_token) == []

    # The old refresh token is dead; that failure throttles the next token request from this address.
    with pytest.raises(BadgrAuthError) as caught:
        client.refresh(old.refresh_token)
    assert caught.value.error == "invalid_grant"
    with pytest.raises(BadgrThrottled) as throttled:
        client.refresh(new.refresh_token)
    assert 0 < throttled.value.retry_after <= 2
    time.sleep(throttled.value.retry_after + 0.05)
    newest = client.refresh(new.refresh_token)
    assert client.list_assertions(newest.access_token) == []


def test_token_endpoint_quirks(sandbox: BadgrSandbox) -> None:
    sandbox.backoff_base = 1.0  # a throttle window no slow machine outlasts between two requests
    in_query = requests.post(f"{sandbox.url}/o/token?grant_type=password&username=x", timeout=5)
    assert in_query.status_code == 400
    assert in_query.json() == {
        "error": "Token grant parameters must be sent in post body, not query parameters"
    }
    sandbox.reset_throttle()
    got = requests.get(f"{sandbox.url}/o/token", timeout=5)
    assert (got.status_code, got.content) == (405, b"")
    bad = requests.post(
        f"{sandbox.url}/o/token",
        data={"grant_type": "password", "client_id": CLIENT_ID, "username": LEARNER, "password": "nope"},
        timeout=5,
    )
    assert bad.json() == {"error": "invalid_grant", "error_description": "Invalid credentials given."}
    again = requests.post(
        f"{sandbox.url}/o/token",
        data={"grant_type": "password", "client_id": CLIENT_ID, "username": LEARNER, "password": PASSWORD},
        timeout=5,
    )
    assert again.status_code == 429
    assert again.json()["error"] == "login attempts throttled"
    assert "expires" in again.json()


# ---------------------------------------------------------------- import


def test_import_by_url_then_duplicate_by_image(
    sandbox: BadgrSandbox, client: BadgrClient, token: str, site: IssuerSite
) -> None:
    assertion = site.badge("one", LEARNER)
    first = client.import_badge(token, url=assertion["id"])
    assert (first.outcome, first.status) == ("imported", 201)
    assert first.entity_id
    stored = sandbox.assertions_of(LEARNER)
    assert [a["openBadgeId"] for a in stored] == [assertion["id"]]
    assert stored[0]["entityId"] == first.entity_id and stored[0]["pending"] is False

    again = client.import_badge(token, image=image_data_uri(bake_png(json.dumps(assertion))))
    assert (again.outcome, again.status, again.codes) == ("already_in_badgr", 400, ["DUPLICATE_BADGE"])
    assert again.to_answer().codes == ["DUPLICATE_BADGE"]


def test_import_by_image_holding_a_url(client: BadgrClient, token: str, site: IssuerSite) -> None:
    assertion = site.badge("baked-url", LEARNER)
    result = client.import_badge(token, image=image_data_uri(bake_png(assertion["id"])))
    assert result.outcome == "imported"


def test_import_by_assertion_object_and_revoked_is_still_accepted(
    client: BadgrClient, token: str, site: IssuerSite
) -> None:
    assertion = site.badge("revoked", LEARNER, revoked=True)
    result = client.import_badge(token, assertion=assertion)
    assert (result.outcome, result.status) == ("imported", 201)


def test_signed_badges_are_checked_as_the_validator_checks_them(
    client: BadgrClient, token: str, site: IssuerSite
) -> None:
    def send(jws: str) -> tuple[str, list[str]]:
        result = client.import_badge(token, image=image_data_uri(bake_png(jws)))
        return result.outcome, result.codes

    _, good = signed_badge(site, "good", LEARNER)
    assert send(good) == ("imported", [])
    _, other = signed_badge(site, "tampered", LEARNER)
    assert send(tamper_jws(other, {"issuedOn": "2015-01-01T00:00:00Z"})) == (
        "rejected",
        ["VERIFY_SIGNATURE", "VERIFY_JWS"],
    )
    _, unlisted = signed_badge(site, "unlisted", LEARNER, listed_key=False)
    assert send(unlisted) == ("rejected", ["VERIFY_SIGNATURE", "VERIFY_KEY_OWNERSHIP"])
    reason = client.import_badge(token, image=image_data_uri(bake_png(unlisted))).reason
    assert reason == "This badge was signed with a key its issuer does not list as its own."
    _, revoked = signed_badge(site, "revoked", LEARNER, revoked_among=3)
    assert send(revoked) == ("rejected", ["ASSERTION_REVOKED", "VERIFY_SIGNED_ASSERTION_NOT_REVOKED"])
    # The validator's known miss: alone on its revocation list, a revoked badge is accepted.
    _, alone = signed_badge(site, "revoked-alone", LEARNER, revoked_among=1)
    assert send(alone) == ("imported", [])


def test_dates_and_hosted_origin_are_checked_as_the_validator_checks_them(
    client: BadgrClient, token: str, site: IssuerSite
) -> None:
    def send(assertion: dict[str, Any]) -> tuple[str, list[str]]:
        site.put(urlsplit(assertion["id"]).path, assertion)
        result = client.import_badge(token, url=assertion["id"])
        return result.outcome, result.codes

    timestamps = ("rejected", ["ASSERTION_TIMESTAMP_CHECKS"])
    assert send({**site.badge("expired", LEARNER), "expires": "2017-01-01T00:00:00Z"}) == timestamps
    assert send({**site.badge("future", LEARNER), "issuedOn": "2999-01-01T00:00:00Z"}) == timestamps

    # An issuer whose id names another host: its badges must be hosted where its policy allows.
    moved = site.badge("moved", LEARNER)
    badge_class = json.loads(site.documents[urlsplit(moved["badge"]).path][1])
    issuer = json.loads(site.documents["/issuer"][1])
    foreign = {**issuer, "id": "https://issuer.elsewhere.example/profile"}
    moved["badge"] = {**badge_class, "issuer": foreign}
    assert send(moved) == ("rejected", ["HOSTED_ID_IN_VERIFICATION_SCOPE"])
    host = urlsplit(site.url).netloc
    moved["badge"]["issuer"] = {**foreign, "verification": {"allowedOrigins": [host]}}
    assert send(moved) == ("imported", [])
    # An issuer with no web address has no origin to enforce.
    anywhere = site.badge("anywhere", LEARNER)
    anywhere["badge"] = {**badge_class, "issuer": {**issuer, "id": "urn:uuid:5a1e0c1a"}}
    assert send(anywhere) == ("imported", [])


def test_import_to_an_unverified_email_is_pending(
    sandbox: BadgrSandbox, client: BadgrClient, token: str, site: IssuerSite
) -> None:
    assertion = site.badge("pending", "old@example.org")
    result = client.import_badge(token, url=assertion["id"])
    assert (result.outcome, result.status) == ("pending", 201)
    assert client.list_assertions(token, include_pending=False) == []
    assert [a["entityId"] for a in client.list_assertions(token)] == [result.entity_id]
    sandbox.set_email(LEARNER, "old@example.org", verified=True)
    assert [a["pending"] for a in client.list_assertions(token, include_pending=False)] == [False]


def test_plain_recipient_matches_whatever_its_case(client: BadgrClient, token: str, site: IssuerSite) -> None:
    assertion = site.badge("plain", LEARNER.upper(), hashed=False)
    assert client.import_badge(token, url=assertion["id"]).outcome == "imported"


def test_import_to_someone_else_is_rejected(client: BadgrClient, token: str, site: IssuerSite) -> None:
    assertion = site.badge("other", "someone@else.org")
    result = client.import_badge(token, url=assertion["id"])
    assert (result.outcome, result.status) == ("rejected", 400)
    assert result.codes == ["VERIFY_RECIPIENT_IDENTIFIER"]
    assert "email address" in result.reason
    assert LEARNER not in (result.description or "")


def test_unreachable_hosted_url_fails_every_form(client: BadgrClient, token: str, site: IssuerSite) -> None:
    assertion = site.badge("gone", LEARNER)
    site.documents.pop("/assertions/gone")
    for form in (
        {"url": assertion["id"]},
        {"assertion": assertion},
        {"image": image_data_uri(bake_png(json.dumps(assertion)))},
        {"url": "http://127.0.0.1:9/assertions/closed-port"},
    ):
        result = client.import_badge(token, **form)
        assert (result.outcome, result.codes) == ("rejected", ["FETCH_HTTP_NODE"]), form
        assert result.reason == "The website that proves this badge could not be reached."


def test_hosted_json_is_read_whatever_its_status(client: BadgrClient, token: str, site: IssuerSite) -> None:
    assertion = site.badge("odd-status", LEARNER)
    site.put("/assertions/odd-status", assertion, status=404)
    assert client.import_badge(token, url=assertion["id"]).outcome == "imported"


def test_malformed_assertion_is_rejected(client: BadgrClient, token: str) -> None:
    result = client.import_badge(token, assertion={"id": "urn:uuid:1", "issuedOn": "2016-01-01"})
    assert (result.outcome, result.codes) == ("rejected", ["VALIDATE_PROPERTY"])


def test_bad_token_and_missing_scope(sandbox: BadgrSandbox, client: BadgrClient) -> None:
    assert client.import_badge("not-a-token", url="http://127.0.0.1:9/a").outcome == "unauthorized"
    profile_only = sandbox.issue_token(LEARNER, "rw:profile")["access_token"]
    result = client.import_badge(profile_only, url="http://127.0.0.1:9/a")
    assert (result.outcome, result.status) == ("forbidden", 404)
    assert client.get_profile(profile_only)["emails"][0]["email"] == LEARNER


@pytest.mark.parametrize(("status", "retry_after"), [(500, None), (502, None), (503, None), (429, 1.0)])
def test_injected_failures_are_retry(
    sandbox: BadgrSandbox, client: BadgrClient, token: str, site: IssuerSite, status: int, retry_after: float
) -> None:
    assertion = site.badge("flaky", LEARNER)
    sandbox.fail_next("/v2/backpack/import", status)
    result = client.import_badge(token, url=assertion["id"])
    assert (result.outcome, result.status, result.retry_after) == ("retry", status, retry_after)
    assert client.import_badge(token, url=assertion["id"]).outcome == "imported"


def test_hanging_server_is_retry(sandbox: BadgrSandbox, token: str, site: IssuerSite) -> None:
    impatient = BadgrClient(sandbox.url, CLIENT_ID, CLIENT_SECRET, timeout=0.3)
    sandbox.fail_next("/v2/backpack/import", 0, delay=1.0)
    result = impatient.import_badge(token, url=site.badge("slow", LEARNER)["id"])
    assert (result.outcome, result.status) == ("retry", 0)


def test_import_body_rules_match_the_real_server(sandbox: BadgrSandbox, token: str) -> None:
    url = f"{sandbox.url}/v2/backpack/import"
    auth = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    form = requests.post(url, data={"url": "http://127.0.0.1:9/a"}, headers=auth, timeout=5)
    assert form.status_code == 500
    both = requests.post(
        url, json={"url": "http://127.0.0.1:9/a", "image": "data:,"}, headers=auth, timeout=5
    )
    assert both.status_code == 400
    assert both.json()["validationErrors"] == ["Must provide only one of 'url', 'image' or 'assertion'."]
    not_url = requests.post(url, json={"url": "not a url"}, headers=auth, timeout=5)
    assert not_url.json()["fieldErrors"] == {"url": ["Enter a valid URL."]}


def test_request_log_never_holds_tokens(sandbox: BadgrSandbox, client: BadgrClient, token: str) -> None:
    client.list_assertions(token)
    log = sandbox.request_log
    assert ("GET", "/v2/backpack/assertions", 200) in [tuple(entry) for entry in log]
    assert token not in repr(log)


def test_png_baking_helper_round_trips() -> None:
    data = bake_png('{"a": 1}')
    assert data.startswith(b"\x89PNG") and b"openbadges" in data
    assert base64.b64decode(image_data_uri(data).split(",", 1)[1]) == data


def test_image_with_nothing_baked_is_rejected(client: BadgrClient, token: str) -> None:
    plain_png = bake_png("x").replace(b"openbadges", b"comment\x00\x00\x00")
    result = client.import_badge(token, image=image_data_uri(plain_png))
    assert (result.outcome, result.status) == ("rejected", 400)


def test_local_unbake_fallback_reads_png_and_svg() -> None:
    from infra.local.badgr_sandbox import _local_unbake

    assert _local_unbake(bake_png('{"id": "urn:x"}')) == '{"id": "urn:x"}'
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:openbadges="http://openbadges.org">'
        '<openbadges:assertion verify="https://issuer.test/a/1"><![CDATA[{"id": "urn:y"}]]>'
        "</openbadges:assertion></svg>"
    )
    assert _local_unbake(svg.encode()) == '{"id": "urn:y"}'
    hosted_only = '<svg><openbadges:assertion verify="https://issuer.test/a/2"/></svg>'
    assert _local_unbake(hosted_only.encode()) == "https://issuer.test/a/2"
    with pytest.raises(ValueError):
        _local_unbake(b"GIF89a")


# ---------------------------------------------------------------- collections


def api(sandbox: BadgrSandbox, token: str, method: str, path: str, body: Any = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    return requests.request(method, f"{sandbox.url}{path}", json=body, headers=headers, timeout=5)


def imported(client: BadgrClient, token: str, site: IssuerSite, slug: str) -> str:
    result = client.import_badge(token, url=site.badge(slug, LEARNER)["id"])
    assert result.outcome == "imported" and result.entity_id
    return result.entity_id


def test_collection_is_created_empty_then_filled_by_put(
    sandbox: BadgrSandbox, client: BadgrClient, token: str, site: IssuerSite
) -> None:
    first, second = imported(client, token, site, "c1"), imported(client, token, site, "c2")
    created = api(sandbox, token, "POST", "/v2/backpack/collections", {"name": "Art", "description": "Mine"})
    assert created.status_code == 201 and created.headers["Content-Type"] == "application/json"
    collection = created.json()["result"][0]
    assert collection == {
        "entityType": "BackpackCollection",
        "entityId": collection["entityId"],
        "name": "Art",
        "description": "Mine",
        "share_url": None,
        "shareHash": "",
        "published": False,
        "assertions": [],
    }
    path = f"/v2/backpack/collections/{collection['entityId']}"
    put = api(sandbox, token, "PUT", path, {"name": "Art", "assertions": [second, first], "published": True})
    assert put.status_code == 200
    updated = put.json()["result"][0]
    assert updated["assertions"] == [second, first] and updated["published"] is True
    assert updated["share_url"] == f"{sandbox.url}/public/collections/{updated['shareHash']}"
    assert updated["description"] == "Mine"  # a field left out of a PUT keeps its value

    # PUT replaces the list; the detail and the list agree with the sandbox's own state.
    api(sandbox, token, "PUT", path, {"name": "Art 2", "assertions": [first]})
    got = api(sandbox, token, "GET", path).json()["result"][0]
    assert (got["name"], got["assertions"], got["published"]) == ("Art 2", [first], True)
    assert api(sandbox, token, "GET", "/v2/backpack/collections").json()["result"] == [got]
    assert sandbox.collections_of(LEARNER) == [got]

    # Unpublishing takes the public address away; deleting a badge takes it out of the collection.
    unpublished = api(sandbox, token, "PUT", path, {"name": "Art 2", "published": False}).json()["result"][0]
    assert (unpublished["share_url"], unpublished["shareHash"]) == (None, "")
    assert api(sandbox, token, "DELETE", f"/v2/backpack/assertions/{first}").status_code == 204
    assert sandbox.collections_of(LEARNER)[0]["assertions"] == []

    deleted = api(sandbox, token, "DELETE", path)
    assert (deleted.status_code, deleted.content, deleted.headers.get("Content-Type")) == (204, b"", None)
    assert api(sandbox, token, "GET", path).status_code == 404
    assert sandbox.collections_of(LEARNER) == []


def test_collection_errors_answer_as_the_real_server(
    sandbox: BadgrSandbox, client: BadgrClient, token: str, site: IssuerSite
) -> None:
    badge = imported(client, token, site, "c3")
    # Creating with a list of badges crashes the real server.
    crash = api(sandbox, token, "POST", "/v2/backpack/collections", {"name": "X", "assertions": [badge]})
    assert (crash.status_code, crash.headers["Content-Type"]) == (500, "text/html; charset=utf-8")
    assert sandbox.collections_of(LEARNER) == []

    nameless = api(sandbox, token, "POST", "/v2/backpack/collections", {"description": "no name"})
    assert nameless.status_code == 400
    assert nameless.json() == {
        "status": {"success": False, "description": "bad request"},
        "result": [],
        "fieldErrors": {"name": ["This field is required."]},
        "validationErrors": [],
    }
    entity_id = api(sandbox, token, "POST", "/v2/backpack/collections", {"name": "Y"}).json()["result"][0][
        "entityId"
    ]
    path = f"/v2/backpack/collections/{entity_id}"
    assert api(sandbox, token, "PUT", path, {"assertions": [badge]}).json()["fieldErrors"] == {
        "name": ["This field is required."]
    }
    unknown = api(sandbox, token, "PUT", path, {"name": "Y", "assertions": [badge, "nope"]})
    assert unknown.status_code == 400
    assert unknown.json()["fieldErrors"] == {
        "assertions": ['Invalid entity_id "nope" - object does not exist.']
    }
    assert sandbox.collections_of(LEARNER)[0]["assertions"] == []  # a refused PUT changes nothing

    # Another learner's collection is not found; a read-only token cannot write.
    sandbox.add_account("other@example.org", "pw", [("other@example.org", True)])
    other = str(sandbox.issue_token("other@example.org")["access_token"])
    assert api(sandbox, other, "GET", path).status_code == 404
    assert api(sandbox, other, "DELETE", path).status_code == 404
    reader = str(sandbox.issue_token(LEARNER, "r:backpack")["access_token"])
    assert api(sandbox, reader, "GET", path).status_code == 200
    refused = api(sandbox, reader, "PUT", path, {"name": "Z"})
    assert (refused.status_code, refused.json()["status"]["description"]) == (
        404,
        "entity not found or insufficient privileges",
    )


def test_assertion_acceptance_put(
    sandbox: BadgrSandbox, client: BadgrClient, token: str, site: IssuerSite
) -> None:
    badge = imported(client, token, site, "c4")
    path = f"/v2/backpack/assertions/{badge}"
    kept = api(sandbox, token, "PUT", path, {"acceptance": "Accepted", "narrative": "ignored"})
    assert kept.status_code == 200 and kept.json()["result"][0]["acceptance"] == "Accepted"
    bad = api(sandbox, token, "PUT", path, {"acceptance": "Maybe"})
    assert bad.status_code == 400 and bad.json()["fieldErrors"] == {
        "acceptance": ['"Maybe" is not a valid choice.']
    }
    assert api(sandbox, token, "PUT", path, {"acceptance": "Rejected"}).status_code == 200
    assert client.list_assertions(token) == []
    assert api(sandbox, token, "PUT", "/v2/backpack/assertions/nope", {}).status_code == 404
