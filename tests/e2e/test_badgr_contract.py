"""The sandbox answers each call as the real Badgr server does: status, content type, body shape.

One row per case of Badgr's API as the real server behaves (the facts the sandbox is built on:
the cases of the import table, the token endpoint, the assertions, collections and profile).
A shape names every key a body has (no more, no fewer), each value's type, and the values the
real server always sends as they are (descriptions, codes and messages it words itself).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from backpack_migrate.badgr import image_data_uri
from infra.local.badgr_sandbox import BadgrSandbox
from tests.e2e.badgr_world import (
    CLIENT_ID,
    CLIENT_SECRET,
    LEARNER,
    PASSWORD,
    REDIRECT,
    IssuerSite,
    bake_png,
    running_sandbox,
    running_site,
)

pytestmark = pytest.mark.e2e

JSON = "application/json"
JSON_LD = "application/ld+json"
HTML = "text/html; charset=utf-8"
NOTHING = None  # no Content-Type header at all (a 204)


class Starts:
    """A list that begins with these values (the real server flattens more after them)."""

    def __init__(self, *head: Any, item: Any = str) -> None:
        self.head, self.item = head, item


class Includes:
    """A list of ``item`` values that holds these among them."""

    def __init__(self, *members: Any, item: Any = str) -> None:
        self.members, self.item = members, item


def conforms(value: Any, spec: Any, where: str = "body") -> None:
    """Asserts ``value`` has the shape ``spec`` describes (see the module's docstring)."""
    if isinstance(spec, type) or (isinstance(spec, tuple) and all(isinstance(s, type) for s in spec)):
        kinds = spec if isinstance(spec, tuple) else (spec,)
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        assert ok, f"{where}: {value!r} is not {spec}"
    elif isinstance(spec, dict):
        assert isinstance(value, dict), f"{where}: {value!r} is not an object"
        assert set(value) == set(spec), f"{where}: keys {sorted(value)} != {sorted(spec)}"
        for key, inner in spec.items():
            conforms(value[key], inner, f"{where}.{key}")
    elif isinstance(spec, list):
        assert isinstance(value, list), f"{where}: {value!r} is not a list"
        assert len(value) == len(spec), f"{where}: {len(value)} items, expected {len(spec)}"
        for index, (item, inner) in enumerate(zip(value, spec, strict=True)):
            conforms(item, inner, f"{where}[{index}]")
    elif isinstance(spec, Starts):
        assert isinstance(value, list) and value[: len(spec.head)] == list(spec.head), f"{where}: {value!r}"
        for index, item in enumerate(value):
            conforms(item, spec.item, f"{where}[{index}]")
    elif isinstance(spec, Includes):
        assert isinstance(value, list), f"{where}: {value!r} is not a list"
        for member in spec.members:
            assert member in value, f"{where}: {member!r} not in {value!r}"
        for index, item in enumerate(value):
            conforms(item, spec.item, f"{where}[{index}]")
    else:
        assert value == spec, f"{where}: {value!r} != {spec!r}"


# ---------------------------------------------------------------- the real server's shapes

RECIPIENT_HASHED = {"identity": str, "hashed": True, "type": "email", "plaintextIdentity": str, "salt": str}
RECIPIENT_PLAIN = {"identity": LEARNER, "hashed": False, "type": "email", "plaintextIdentity": LEARNER}


def assertion(recipient: dict[str, Any] = RECIPIENT_HASHED, *, pending: bool = False) -> dict[str, Any]:
    """``BackpackAssertionSerializerV2``: these fields and no others."""
    return {
        "entityType": "Assertion",
        "entityId": str,
        "acceptance": "Accepted",
        "openBadgeId": str,
        "badgeclass": str,
        "badgeclassOpenBadgeId": str,
        "issuer": str,
        "issuerOpenBadgeId": str,
        "image": str,
        "recipient": recipient,
        "issuedOn": str,
        "narrative": (str, type(None)),
        "revoked": False,
        "revocationReason": None,
        "expires": (str, type(None)),
        "pending": pending,
    }


def ok(*result: Any) -> dict[str, Any]:
    return {"status": {"success": True, "description": "ok"}, "result": list(result)}


def refused(description: str, *, field_errors: Any = None, validation_errors: Any = None) -> dict[str, Any]:
    return {
        "status": {"success": False, "description": description},
        "result": [],
        "fieldErrors": {} if field_errors is None else field_errors,
        "validationErrors": [] if validation_errors is None else validation_errors,
    }


COLLECTION = {
    "entityType": "BackpackCollection",
    "entityId": str,
    "name": str,
    "description": str,
    "share_url": (str, type(None)),
    "shareHash": str,
    "published": bool,
    "assertions": Includes(item=str),
}
PROFILE = {
    "entityType": "BadgeUser",
    "entityId": str,
    "firstName": str,
    "lastName": str,
    "emails": [
        {"email": LEARNER, "verified": True, "primary": True, "caseVariants": []},
        {"email": "old@example.org", "verified": False, "primary": False, "caseVariants": []},
    ],
    "url": [],
    "telephone": [],
    "agreedTermsVersion": int,
    "hasAgreedToLatestTermsVersion": bool,
    "marketingOptIn": bool,
    "badgrDomain": None,
    "hasPasswordSet": bool,
    "recipient": {"type": "email", "identity": LEARNER},
}
TOKENS = {
    "access_token": str,
    "token_type": "Bearer",
    "expires_in": 86400,
    "refresh_token": str,
    "scope": str,
}
THROTTLED = {
    "error": "login attempts throttled",
    "error_description": "Too many login attempts. Please wait and try again.",
    "expires": (int, float),
}
NOT_FOUND = "entity not found or insufficient privileges"


# ---------------------------------------------------------------- the calls


@dataclass
class World:
    sandbox: BadgrSandbox
    site: IssuerSite
    token: str

    def api(
        self, method: str, path: str, body: Any = None, *, token: str | None = None, accept: str = JSON
    ) -> requests.Response:
        headers = {"Authorization": f"Bearer {token or self.token}"}
        if accept:
            headers["Accept"] = accept
        return requests.request(method, f"{self.sandbox.url}{path}", json=body, headers=headers, timeout=10)

    def post_token(self, form: dict[str, str], *, basic: bool = True, query: str = "") -> requests.Response:
        auth = (CLIENT_ID, CLIENT_SECRET) if basic else None
        url = f"{self.sandbox.url}/o/token{query}"
        return requests.post(url, data=form, auth=auth, headers={"Accept": JSON}, timeout=10)

    def code(self, challenge: str | None) -> str:
        body: dict[str, Any] = {"client_id": CLIENT_ID, "redirect_uri": REDIRECT, "response_type": "code",
                                "state": "s", "scopes": ["rw:backpack"], "allow": True}  # fmt: skip
        if challenge:
            body.update(code_challenge=challenge, code_challenge_method="S256")
        answer = self.api("POST", "/o/authorize", body)
        return str(answer.json()["success_url"].split("code=", 1)[1].split("&", 1)[0])

    def imported(self, slug: str) -> str:
        answer = self.api("POST", "/v2/backpack/import", {"url": self.site.badge(slug, LEARNER)["id"]})
        assert answer.status_code == 201, answer.text
        return str(answer.json()["result"][0]["entityId"])

    def collection(self, **fields: Any) -> str:
        answer = self.api("POST", "/v2/backpack/collections", {"name": "Mine", **fields})
        assert answer.status_code == 201, answer.text
        return str(answer.json()["result"][0]["entityId"])


def _exchange(world: World, *, challenge: bool, verifier: bool) -> requests.Response:
    from backpack_migrate.badgr import new_pkce_pair

    secret, digest = new_pkce_pair()
    form = {"grant_type": "authorization_code", "code": world.code(digest if challenge else None),
            "redirect_uri": REDIRECT}  # fmt: skip
    if verifier:
        form["code_verifier"] = secret
    return world.post_token(form)


def _throttled(world: World) -> requests.Response:
    world.sandbox.backoff_base = 5.0  # a window no slow machine outlasts between the two requests
    world.post_token({"grant_type": "refresh_token", "refresh_token": "not-a-refresh-token"})
    return world.post_token({"grant_type": "refresh_token", "refresh_token": "still-not"})


def _refresh(world: World) -> requests.Response:
    issued = world.sandbox.issue_token(LEARNER)
    return world.post_token({"grant_type": "refresh_token", "refresh_token": issued["refresh_token"]})


def _duplicate(world: World) -> requests.Response:
    url = world.site.badge("twice", LEARNER)["id"]
    world.api("POST", "/v2/backpack/import", {"url": url})
    return world.api("POST", "/v2/backpack/import", {"url": url})


def _gone(world: World) -> requests.Response:
    url = world.site.badge("gone", LEARNER)["id"]
    world.site.documents.pop("/assertions/gone")
    return world.api("POST", "/v2/backpack/import", {"url": url})


def _image_gone(world: World) -> requests.Response:
    url = world.site.badge("no-image", LEARNER)["id"]
    world.site.documents.pop("/badges/no-image.png")
    return world.api("POST", "/v2/backpack/import", {"url": url})


def _form_import(world: World) -> requests.Response:
    headers = {"Authorization": f"Bearer {world.token}", "Accept": JSON}
    url = f"{world.sandbox.url}/v2/backpack/import"
    return requests.post(url, data={"url": "http://127.0.0.1:9/a"}, headers=headers, timeout=10)


def _filled(world: World) -> requests.Response:
    badge, collection = world.imported("in-collection"), world.collection()
    body = {"name": "Mine", "assertions": [badge], "published": True}
    return world.api("PUT", f"/v2/backpack/collections/{collection}", body)


def _scope(scope: str) -> Callable[[World], str]:
    return lambda world: str(world.sandbox.issue_token(LEARNER, scope)["access_token"])


@dataclass
class Case:
    name: str
    call: Callable[[World], requests.Response]
    status: int
    content_type: str | None
    body: Any  # a shape, or bytes for a body compared as it is


IMPORT = "/v2/backpack/import"
ONLY_ONE = "Must provide only one of 'url', 'image' or 'assertion'."

CASES = [
    # ------------------------------------------------------------ token endpoint
    Case("code exchange with PKCE", lambda w: _exchange(w, challenge=True, verifier=True), 200, JSON, TOKENS),
    Case("code with no challenge, verifier sent (RFC 9700)",
         lambda w: _exchange(w, challenge=False, verifier=True), 400, JSON, {"error": "invalid_grant"}),
    Case("refresh rotates", _refresh, 200, JSON, TOKENS),
    Case("bad refresh token", lambda w: w.post_token({"grant_type": "refresh_token", "refresh_token": "x"}),
         400, JSON, {"error": "invalid_grant"}),
    Case("throttled after a failure", _throttled, 429, HTML, THROTTLED),
    Case("bad password",
         lambda w: w.post_token({"grant_type": "password", "client_id": CLIENT_ID, "username": LEARNER,
                                 "password": "nope"}, basic=False),
         400, JSON, {"error": "invalid_grant", "error_description": "Invalid credentials given."}),
    Case("scope beyond the app's",
         lambda w: w.post_token({"grant_type": "password", "client_id": CLIENT_ID, "username": LEARNER,
                                 "password": PASSWORD, "scope": "rw:everything"}, basic=False),
         400, HTML, {"error": "invalid scope requested"}),
    Case("parameters in the query string", lambda w: w.post_token({}, query="?grant_type=password"),
         400, HTML, {"error": "Token grant parameters must be sent in post body, not query parameters"}),
    Case("GET /o/token", lambda w: requests.get(f"{w.sandbox.url}/o/token", timeout=10), 405, HTML, b""),
    # ------------------------------------------------------------ authorize API behind the web app
    Case("authorize refused", lambda w: w.api("POST", "/o/authorize", {
        "client_id": CLIENT_ID, "redirect_uri": REDIRECT, "response_type": "code", "scopes": ["rw:backpack"],
        "allow": False}), 400, JSON, {"error": ""}),
    Case("authorize with another redirect URI", lambda w: w.api("POST", "/o/authorize", {
        "client_id": CLIENT_ID, "redirect_uri": "http://127.0.0.1:9/evil", "response_type": "code",
        "scopes": ["rw:backpack"], "allow": True}), 400, JSON, {"error": "Mismatching redirect URI."}),
    # ------------------------------------------------------------ import
    Case("import by url", lambda w: w.api("POST", IMPORT, {"url": w.site.badge("u", LEARNER)["id"]}),
         201, JSON, ok(assertion())),
    Case("import of a plain recipient",
         lambda w: w.api("POST", IMPORT, {"url": w.site.badge("p", LEARNER, hashed=False)["id"]}),
         201, JSON, ok(assertion(RECIPIENT_PLAIN))),
    Case("import by baked image", lambda w: w.api("POST", IMPORT, {
        "image": image_data_uri(bake_png(json.dumps(w.site.badge("i", LEARNER))))}),
         201, JSON, ok(assertion())),
    Case("import by assertion object",
         lambda w: w.api("POST", IMPORT, {"assertion": w.site.badge("a", LEARNER)}),
         201, JSON, ok(assertion())),
    Case("revoked hosted badge is still accepted",
         lambda w: w.api("POST", IMPORT, {"url": w.site.badge("r", LEARNER, revoked=True)["id"]}),
         201, JSON, ok(assertion())),
    Case("recipient is an unverified email",
         lambda w: w.api("POST", IMPORT, {"url": w.site.badge("o", "old@example.org")["id"]}),
         201, JSON, ok(assertion(pending=True))),
    Case("already in the backpack", _duplicate, 400, JSON, refused("bad request", validation_errors=[
        {"name": "DUPLICATE_BADGE", "description": "You already have this badge in your backpack"}])),
    Case("recipient matches no email",
         lambda w: w.api("POST", IMPORT, {"url": w.site.badge("x", "someone@else.org")["id"]}),
         400, JSON, refused("bad request", validation_errors=Starts(
             "VERIFY_RECIPIENT_IDENTIFIER", "The recipient does not match any of your verified emails",
             "VERIFY_RECIPIENT_IDENTIFIER", "False"))),
    Case("malformed assertion", lambda w: w.api("POST", IMPORT, {"assertion": {"id": "urn:uuid:1"}}),
         400, JSON, refused("bad request", validation_errors=Includes(
             "VALIDATE_PROPERTY", "Required property recipient not present in unknown type node _:b0"))),
    Case("hosted url unreachable", _gone, 400, JSON,
         refused("bad request", validation_errors=Starts("FETCH_HTTP_NODE", "Unable to reach URL"))),
    Case("badge class image cannot be fetched", _image_gone, 500, HTML, b"<h1>Server Error (500)</h1>"),
    Case("two of url, image and assertion",
         lambda w: w.api("POST", IMPORT, {"url": "http://127.0.0.1:9/a", "image": "data:,"}),
         400, JSON, refused("bad request", validation_errors=[ONLY_ONE])),
    Case("none of them", lambda w: w.api("POST", IMPORT, {}), 400, JSON,
         refused("bad request", validation_errors=[ONLY_ONE])),
    Case("url that is not a URL", lambda w: w.api("POST", IMPORT, {"url": "not a url"}), 400, JSON,
         refused("bad request", field_errors={"url": ["Enter a valid URL."]})),
    Case("form body", _form_import, 500, HTML, b"<h1>Server Error (500)</h1>"),
    Case("no valid token", lambda w: w.api("POST", IMPORT, {"url": "http://127.0.0.1:9/a"}, token="bad"),
         401, JSON, refused("no valid auth token found")),
    Case("token without rw:backpack",
         lambda w: w.api("POST", IMPORT, {"url": "http://127.0.0.1:9/a"}, token=_scope("rw:profile")(w)),
         404, JSON, refused(NOT_FOUND)),
    Case("JSON-LD unless JSON is asked for",
         lambda w: w.api("POST", IMPORT, {}, accept=""), 400, JSON_LD,
         refused("bad request", validation_errors=[ONLY_ONE])),
    # ------------------------------------------------------------ assertions
    Case("list assertions", lambda w: (w.imported("l"), w.api("GET", "/v2/backpack/assertions"))[1],
         200, JSON, ok(assertion())),
    Case("list with pending", lambda w: (
        w.api("POST", IMPORT, {"url": w.site.badge("lp", "old@example.org")["id"]}),
        w.api("GET", "/v2/backpack/assertions?include_pending=true"))[1],
         200, JSON, ok(assertion(pending=True))),
    Case("list without pending", lambda w: (
        w.api("POST", IMPORT, {"url": w.site.badge("ln", "old@example.org")["id"]}),
        w.api("GET", "/v2/backpack/assertions"))[1], 200, JSON, ok()),
    Case("one assertion", lambda w: w.api("GET", f"/v2/backpack/assertions/{w.imported('g')}"),
         200, JSON, ok(assertion())),
    Case("accept an assertion",
         lambda w: w.api("PUT", f"/v2/backpack/assertions/{w.imported('pa')}", {"acceptance": "Accepted"}),
         200, JSON, ok(assertion())),
    Case("delete an assertion", lambda w: w.api("DELETE", f"/v2/backpack/assertions/{w.imported('d')}"),
         204, NOTHING, b""),
    Case("unknown assertion", lambda w: w.api("GET", "/v2/backpack/assertions/nope"),
         404, JSON, refused(NOT_FOUND)),
    Case("method not allowed", lambda w: w.api("PATCH", "/v2/backpack/assertions"), 405, JSON,
         refused("miscellaneous error", field_errors='Method "PATCH" not allowed.')),
    # ------------------------------------------------------------ collections
    Case("create a collection", lambda w: w.api("POST", "/v2/backpack/collections", {"name": "Mine"}),
         201, JSON, ok({**COLLECTION, "share_url": None, "shareHash": "", "published": False,
                        "assertions": []})),
    Case("create with assertions crashes", lambda w: w.api("POST", "/v2/backpack/collections", {
        "name": "Mine", "assertions": [w.imported("ca")]}), 500, HTML, b"<h1>Server Error (500)</h1>"),
    Case("create without a name", lambda w: w.api("POST", "/v2/backpack/collections", {"description": "d"}),
         400, JSON, refused("bad request", field_errors={"name": ["This field is required."]})),
    Case("fill and publish by PUT", _filled, 200, JSON,
         ok({**COLLECTION, "share_url": str, "published": True, "assertions": Includes(item=str)})),
    Case("PUT without a name", lambda w: w.api("PUT", f"/v2/backpack/collections/{w.collection()}", {}),
         400, JSON, refused("bad request", field_errors={"name": ["This field is required."]})),
    Case("PUT an unknown assertion",
         lambda w: w.api("PUT", f"/v2/backpack/collections/{w.collection()}",
                         {"name": "M", "assertions": ["no"]}),
         400, JSON, refused("bad request", field_errors={
             "assertions": ['Invalid entity_id "no" - object does not exist.']})),
    Case("list collections", lambda w: (w.collection(), w.api("GET", "/v2/backpack/collections"))[1],
         200, JSON, ok(COLLECTION)),
    Case("one collection", lambda w: w.api("GET", f"/v2/backpack/collections/{w.collection()}"),
         200, JSON, ok(COLLECTION)),
    Case("delete a collection", lambda w: w.api("DELETE", f"/v2/backpack/collections/{w.collection()}"),
         204, NOTHING, b""),
    Case("unknown collection", lambda w: w.api("GET", "/v2/backpack/collections/nope"),
         404, JSON, refused(NOT_FOUND)),
    # ------------------------------------------------------------ profile
    Case("the learner's profile", lambda w: w.api("GET", "/v2/users/self"), 200, JSON,
         {**ok(PROFILE), "latestTermsVersion": int, "latestTermsDescription": str}),
    Case("profile without a profile scope",
         lambda w: w.api("GET", "/v2/users/self", token=_scope("rw:backpack")(w)),
         404, JSON, refused(NOT_FOUND)),
]  # fmt: skip


@pytest.fixture(scope="module")
def site() -> Iterator[IssuerSite]:
    with running_site() as running:
        yield running


@pytest.fixture
def world(site: IssuerSite) -> Iterator[World]:
    with running_sandbox() as sandbox:
        yield World(sandbox, site, str(sandbox.issue_token(LEARNER)["access_token"]))


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_the_sandbox_answers_as_the_real_server(world: World, case: Case) -> None:
    answer = case.call(world)
    assert answer.status_code == case.status, answer.text[:500]
    assert answer.headers.get("Content-Type") == case.content_type
    if isinstance(case.body, bytes):
        assert answer.content == case.body
    else:
        conforms(answer.json(), case.body)


def test_every_case_has_its_own_name() -> None:
    assert len({case.name for case in CASES}) == len(CASES)
