"""The Backpack's third-party APIs over HTTP against the whole local stack, and in headless
Chromium from a page on another site.

One local stack for the module (Badgr sandbox, issuer site, moto, the functions in-process). A
small Backpack world is stored as intake stores a full-fidelity export (tests/legacy_world.py);
Ada connects Badgr through this service's own pages, as a learner does, which sets the session
cookie the consent pages know her by.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests

from infra.local.demo import Running, forms_of, running
from infra.local.third_party import ThirdPartySite, write_issued_badges
from tests.legacy_world import ACCESS_TOKEN, CONNECT_ORIGIN, REFRESH_TOKEN, SVG, Seeded, seed

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ADA = "ada.l@example.org"  # her first verified address: her learner id is its HMAC
MISSING = {"httpStatus": 404, "status": "missing"}


@dataclass
class World:
    run: Running
    seeded: Seeded
    session: requests.Session  # Ada's browser, connected to Badgr through this service
    badges: list[str]  # hosted assertions for Ada, one per test that issues; the last one not hers

    @property
    def api(self) -> str:
        return self.run.stack.url

    def held(self) -> list[str]:
        """The assertion ids Ada's Badgr backpack holds."""
        return [a.get("openBadgeId") or a.get("id") for a in self.run.sandbox.assertions_of("ada")]


def connect_badgr(link: str, username: str, password: str) -> requests.Session:
    browser = requests.Session()
    page = browser.get(link, timeout=30)
    page.raise_for_status()
    move = next(f for f in forms_of(page.text) if f["action"].endswith("/connect"))
    authorize = browser.post(urljoin(page.url, move["action"]), data=move["fields"], timeout=30)
    consent = forms_of(authorize.text)[0]
    fields = {**consent["fields"], "username": username, "password": password, "decision": "allow"}
    browser.post(urljoin(authorize.url, consent["action"]), data=fields, timeout=60).raise_for_status()
    return browser


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    import boto3

    from backpack_migrate.links import sign_link
    from backpack_migrate.services import get_services

    with running(ROOT, tmp_path_factory.mktemp("legacy-stack")) as run:
        svc = get_services()
        s3 = boto3.client("s3")

        def put(bucket: str, key: str, data: bytes) -> str:
            return str(s3.put_object(Bucket=bucket, Key=key, Body=data)["ETag"])

        seeded = seed(svc, put, bucket=run.stack.resource("ExportsBucket"))
        run.sandbox.add_account("ada", "ada-password", [("ada@example.org", False), (ADA, True)])
        badges = write_issued_badges(run.site.root_dir, run.site.url, [ADA] * 6 + ["someone@else.example"])
        learner_id = seeded.learners[ADA]
        link = f"{run.stack.url}/l/" + sign_link(svc.link_secret(), learner_id, seeded.export.export_id, 3600)
        session = connect_badgr(link, "ada", "ada-password")
        run.stack.wait_idle(timeout=120)
        yield World(run, seeded, session, badges)


def post_email(world: World, **kwargs: Any) -> requests.Response:
    return requests.post(f"{world.api}/displayer/convert/email", timeout=30, **kwargs)


# ------------------------------------------------------------------------- Displayer API


def test_convert_email_in_every_body_form_and_its_errors(world: World) -> None:
    for kwargs in (
        {"data": {"email": "ADA@example.org"}},
        {"json": {"email": "ADA@example.org"}},
        {"files": {"email": (None, "ADA@example.org")}},
    ):
        answer = post_email(
            world, params={"callback": "cb"}, headers={"Origin": "https://x.example"}, **kwargs
        )
        assert answer.status_code == 200, kwargs
        assert answer.json() == {"status": "okay", "email": "ADA@example.org", "userId": 7}
        assert "Access-Control-Allow-Origin" not in answer.headers
    assert post_email(world, data={"email": ADA.upper()}).json()["userId"] == 7
    unverified = post_email(world, data={"email": "ada.old@example.org"})
    assert unverified.status_code == 404
    assert unverified.json()["error"] == "Could not find a user by the email address `ada.old@example.org`"
    missing = post_email(world, data={})
    assert (missing.status_code, missing.json()) == (
        400,
        {"status": "invalid", "error": "missing `email` parameter"},
    )


def _now(world: World) -> list[dict[str, Any]]:
    """Ada's public groups as they are now on record: the Badgr collection a group became once it
    is filled (the collections job runs once she connected Badgr), else the Backpack's group."""
    from backpack_migrate.services import get_services

    svc = get_services()
    learner_id = world.seeded.learners[ADA]
    listed = []
    for group in svc.store.list_groups(learner_id):
        collection = group.collection
        if collection is not None and collection.entity_id and collection.state == "filled":
            if collection.published:
                listed.append(
                    {"groupId": group.group_id, "name": group.name, "badges": len(collection.assertion_ids)}
                )
        elif group.public:
            listed.append({"groupId": group.group_id, "name": group.name, "badges": len(group.badge_ids)})
    return listed


def test_groups_and_group_with_cors_formats_and_jsonp(world: World) -> None:
    expected = _now(world)
    assert {"groupId": 21, "name": "Science", "badges": 3} in expected  # the stale id 99 counts
    for path in ("/displayer/7/groups", "/displayer/7/groups.json"):
        answer = requests.get(world.api + path, timeout=30)
        assert answer.status_code == 200
        assert answer.headers["Access-Control-Allow-Origin"] == "*"
        assert answer.json() == {"userId": 7, "groups": expected}
    group = requests.get(f"{world.api}/displayer/7/group/21.json", timeout=30)
    body = group.json()
    assert [b["assertion"]["badge"]["name"] for b in body["badges"]] == ["Badge 11", "Badge 13"]
    assert body["badges"][0]["hostedUrl"] == "https://issuer.example.org/assertions/11"
    assert body["badges"][0]["lastValidated"] == "2016-02-03T04:05:06.000Z"
    image = requests.get(body["badges"][0]["imageUrl"], timeout=30)
    assert image.status_code == 200 and image.headers["Content-Type"] == "image/png"
    refused = requests.get(f"{world.api}/displayer/7/groups", headers={"Accept": "text/html"}, timeout=30)
    assert (refused.status_code, refused.text) == (400, "error: could not find formatter")
    assert refused.headers["Content-Type"].startswith("text/plain")
    jsonp = requests.get(f"{world.api}/displayer/7/group/22", params={"callback": "show"}, timeout=30)
    assert (jsonp.status_code, jsonp.text) == (200, '/**/show({"httpStatus":404,"status":"missing"});')
    hostile = requests.get(f"{world.api}/displayer/7/groups", params={"callback": "alert(1)//"}, timeout=30)
    assert hostile.status_code == 400 and "alert" not in hostile.text


def test_private_foreign_and_unknown_are_the_backpacks_404(world: World) -> None:
    for path in (
        "/displayer/7/group/22",
        "/displayer/7/group/31",
        "/displayer/9999/group/21",
        "/displayer/9999/groups",
    ):
        answer = requests.get(world.api + path, timeout=30)
        assert (answer.status_code, answer.json()) == (404, MISSING), path
        assert answer.headers["Access-Control-Allow-Origin"] == "*"


def test_images_by_body_hash_and_svg_served_safely(world: World) -> None:
    svg = requests.get(f"{world.api}/images/badge/{world.seeded.body_hashes[12]}.svg", timeout=30)
    assert svg.status_code == 200 and svg.content == SVG
    assert svg.headers["Content-Security-Policy"] == "default-src 'none'; style-src 'unsafe-inline'; sandbox"
    unknown = requests.get(f"{world.api}/images/badge/{'0' * 64}.png", timeout=30)
    assert unknown.status_code == 404 and unknown.headers["Content-Type"].startswith("text/html")


# ------------------------------------------------------------------------- Backpack Connect


def bearer(token: str, origin: str | None = CONNECT_ORIGIN) -> dict[str, str]:
    headers = {"Authorization": "Bearer " + base64.b64encode(token.encode()).decode()}
    if origin:
        headers["Origin"] = origin
    return headers


def test_a_grant_from_the_export_issues_into_badgr_once_and_refreshes(world: World) -> None:
    badge = world.badges[0]
    first = requests.post(
        f"{world.api}/api/issue", json={"badge": badge}, headers=bearer(ACCESS_TOKEN), timeout=60
    )
    assert first.status_code == 201, first.text
    assert first.json()["exists"] is False and first.json()["badge"]["id"] == badge
    assert first.headers["Access-Control-Allow-Origin"] == CONNECT_ORIGIN
    again = requests.post(
        f"{world.api}/api/issue", json={"badge": badge}, headers=bearer(ACCESS_TOKEN), timeout=60
    )
    assert (again.status_code, again.text) == (304, "")
    assert world.held().count(badge) == 1
    other = requests.post(
        f"{world.api}/api/issue", json={"badge": world.badges[-1]}, headers=bearer(ACCESS_TOKEN), timeout=60
    )
    assert other.status_code == 403
    bad = requests.post(
        f"{world.api}/api/issue", json={"badge": "no badge"}, headers=bearer(ACCESS_TOKEN), timeout=60
    )
    assert bad.status_code == 400
    identity = requests.get(f"{world.api}/api/identity", headers=bearer(ACCESS_TOKEN), timeout=30).json()
    assert (
        identity["recipient"]
        == "sha256$" + hashlib.sha256(f"ada@example.org{identity['salt']}".encode()).hexdigest()
    )

    wrong = requests.get(
        f"{world.api}/api/identity", headers=bearer(ACCESS_TOKEN, "https://evil.example"), timeout=30
    )
    assert (wrong.status_code, wrong.json()["message"]) == (401, "invalid origin")
    assert wrong.headers["WWW-Authenticate"] == 'Bearer realm="openbadges"'
    for headers in ({}, bearer("forged-token"), {"Authorization": "Bearer %%%"}):
        unknown = requests.get(f"{world.api}/api/identity", headers=headers, timeout=30)
        assert (unknown.status_code, unknown.text) == (401, "Unauthorized")
        assert unknown.headers["WWW-Authenticate"] == 'Bearer realm="Users", error="invalid_token"'
    preflight = requests.options(f"{world.api}/api/issue", headers={"Origin": CONNECT_ORIGIN}, timeout=30)
    assert preflight.status_code == 204 and preflight.headers["Access-Control-Allow-Origin"] == CONNECT_ORIGIN

    bad_grant = requests.post(f"{world.api}/api/token", data={"grant_type": "password"}, timeout=30)
    assert (bad_grant.status_code, bad_grant.text) == (400, "invalid grant_type")
    fresh = requests.post(
        f"{world.api}/api/token",
        data={"grant_type": "refresh_token", "refresh_token": REFRESH_TOKEN},
        timeout=30,
    )
    assert fresh.status_code == 200 and fresh.json()["expires"] == 3600
    spent = requests.post(
        f"{world.api}/api/token",
        data={"grant_type": "refresh_token", "refresh_token": REFRESH_TOKEN},
        timeout=30,
    )
    assert (spent.status_code, spent.text) == (400, "invalid refresh_token")
    tokens = fresh.json()
    assert requests.get(f"{world.api}/api/identity", headers=bearer(tokens["access_token"]), timeout=30).ok
    assert (
        requests.get(f"{world.api}/api/identity", headers=bearer(ACCESS_TOKEN), timeout=30).status_code == 401
    )


def test_access_grants_after_consent_and_never_redirects_elsewhere(world: World) -> None:
    for params, text in (
        ({"scope": "issue"}, "callback expected"),
        ({"callback": "https://site.example/cb"}, "scope expected"),
        ({"callback": "javascript:alert(1)", "scope": "issue"}, "invalid callback: "),
        (
            {"callback": "https://site.example/cb", "scope": "issue,all"},
            "invalid scope: invalid permission(s): all",
        ),
    ):
        answer = requests.get(f"{world.api}/access", params=params, timeout=30, allow_redirects=False)
        assert answer.status_code == 400 and answer.text.startswith(text), params
    params = {"callback": "https://site.example/cb?state=1", "scope": "issue"}
    stranger = requests.get(f"{world.api}/access", params=params, timeout=30, allow_redirects=False)
    assert stranger.status_code == 403 and "Location" not in stranger.headers
    page = world.session.get(f"{world.api}/access", params=params, timeout=30)
    assert page.status_code == 200 and page.headers["X-Frame-Options"] == "DENY"
    (form,) = forms_of(page.text)
    fields = {**form["fields"], "decision": "allow", "callback": "https://evil.example/"}
    granted = world.session.post(
        urljoin(page.url, form["action"]),
        data=fields,
        headers={"Origin": world.api},
        allow_redirects=False,
        timeout=30,
    )
    assert granted.status_code == 303
    location = urlsplit(granted.headers["Location"])
    assert location.netloc == "site.example" and location.path == "/cb"
    query = parse_qs(location.query)
    assert query["state"] == ["1"] and query["api_root"] == [f"{world.api}/api"]
    ok = requests.get(
        f"{world.api}/api/identity",
        headers=bearer(query["access_token"][0], "https://site.example"),
        timeout=30,
    )
    assert ok.status_code == 200

    page = world.session.get(f"{world.api}/access", params=params, timeout=30)
    (form,) = forms_of(page.text)
    cross = world.session.post(
        urljoin(page.url, form["action"]),
        data={**form["fields"], "decision": "allow"},
        headers={"Origin": "https://site.example"},
        allow_redirects=False,
        timeout=30,
    )
    assert cross.status_code == 403
    denied = world.session.post(
        urljoin(page.url, form["action"]),
        data={**form["fields"], "decision": "deny"},
        allow_redirects=False,
        timeout=30,
    )
    assert denied.headers["Location"] == "https://site.example/cb?state=1&error=access_denied"


def test_a_flood_of_bad_tokens_gets_401s(world: World) -> None:
    started = time.monotonic()
    statuses = {
        requests.get(
            f"{world.api}/api/identity", headers=bearer("A" * 32 + f"_1h2k3l4m{i % 10}"), timeout=30
        ).status_code
        for i in range(40)
    }
    assert statuses == {401}
    assert time.monotonic() - started < 120  # a sanity bound, not a benchmark


# ------------------------------------------------------------------------- Issuer API


def test_issuer_script_and_frame_headers(world: World) -> None:
    script = requests.get(f"{world.api}/issuer.js", timeout=30)
    assert script.headers["Content-Type"].startswith("application/javascript")
    frame = requests.get(f"{world.api}/issuer/frame?1", timeout=30)
    assert "X-Frame-Options" not in frame.headers
    assert "script-src 'sha256-" in frame.headers["Content-Security-Policy"]
    for path in ("/displayer/7/groups", "/access?callback=https://a.example/&scope=issue", "/issuer.js"):
        assert requests.get(world.api + path, timeout=30).headers["X-Frame-Options"] == "DENY", path
    cross = requests.post(
        f"{world.api}/issuer/verify",
        json={"assertions": [world.badges[0]]},
        headers={"Origin": "https://evil.example"},
        timeout=30,
    )
    assert cross.status_code == 403


# ------------------------------------------------------------------------- in Chromium


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from tests.e2e.test_pages_browser import CHROMIUM_ARGS, _chromium

    executable = _chromium()
    if executable is None:
        pytest.skip("Chromium is not installed; install it with `make browser`")
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
    finally:
        playwright.stop()


@pytest.fixture
def page_for(world: World, browser: Any) -> Iterator[Any]:
    """A browser that holds Ada's session on the service, opening a third-party page."""
    contexts = []

    def make(assertions: list[str]) -> tuple[Any, Any]:
        context = browser.new_context()
        context.set_default_timeout(30_000)
        cookie = world.session.cookies.get("bm_session")
        context.add_cookies(
            [{"name": "bm_session", "value": cookie, "url": world.api, "httpOnly": True, "sameSite": "Lax"}]
        )
        contexts.append(context)
        site = ThirdPartySite(world.api, assertions).start()
        contexts.append(site)
        page = context.new_page()
        page.goto(site.url + "/")
        return context, page

    yield make
    for item in contexts:
        (item.close if hasattr(item, "close") else item.stop)()


pytestmark_browser = pytest.mark.browser


@pytestmark_browser
def test_openbadges_issue_from_another_site_lands_in_badgr(world: World, page_for: Any) -> None:
    badge, gone = world.badges[1], "http://127.0.0.1:9/gone.json"
    context, page = page_for([badge, gone])
    page.click("#issue")
    frame = page.frame_locator("iframe")
    frame.locator("li.badge").nth(1).wait_for()
    with context.expect_page() as opened:
        frame.locator("#add").click()
    consent = opened.value
    consent.wait_for_load_state()
    consent.get_by_role("button", name="Add to my Badgr backpack").click()
    page.wait_for_function("() => window.issued !== undefined", timeout=60_000)
    issued = page.evaluate("window.issued")
    assert issued["successes"] == [badge]
    assert issued["errors"] == [{"assertion": gone, "reason": "INACCESSIBLE"}]
    assert page.locator("iframe").count() == 0
    assert badge in world.held()


@pytestmark_browser
def test_escape_denies_every_badge(world: World, page_for: Any) -> None:
    badges = world.badges[2:4]
    _context, page = page_for(badges)
    page.click("#issue")
    page.frame_locator("iframe").locator("#cancel").wait_for()
    page.frame_locator("iframe").locator("body").press("Escape")
    page.wait_for_function("() => window.issued !== undefined")
    assert page.evaluate("window.issued") == {
        "errors": [{"assertion": b, "reason": "DENIED"} for b in badges],
        "successes": [],
    }
    assert not set(badges) & set(world.held())


@pytestmark_browser
def test_issue_no_modal_asks_the_learner_first(world: World, page_for: Any) -> None:
    badge = world.badges[4]
    _context, page = page_for([badge])
    page.click("#frameless")
    page.wait_for_url("**/issuer/consent/**")
    assert badge not in world.held()
    page.get_by_role("button", name="Add to my Badgr backpack").click()
    page.wait_for_load_state()
    assert "1 badge added" in page.locator("main").inner_text()
    assert badge in world.held()


@pytestmark_browser
def test_backpack_connect_page_gets_a_grant_and_issues(world: World, page_for: Any) -> None:
    badge = world.badges[5]
    _context, page = page_for([badge])
    page.click("#connect")
    page.get_by_role("button", name="Allow").click()
    page.wait_for_url("**/connected?**")
    assert "granted: true" in page.locator("#result").inner_text()
    page.click("#send")
    page.wait_for_function("() => window.sent !== undefined", timeout=60_000)
    sent = page.evaluate("window.sent")
    assert sent["status"] == 201, sent
    assert json.loads(sent["body"])["badge"]["id"] == badge
    assert badge in world.held()
