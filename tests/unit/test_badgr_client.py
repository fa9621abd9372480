"""The Badgr client against canned answers shaped like the real server's (no network)."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from requests.adapters import BaseAdapter

from backpack_migrate.badgr import (
    BadgrAuthError,
    BadgrClient,
    BadgrThrottled,
    BadgrUnavailable,
    ImportResult,
    Tokens,
    image_data_uri,
    new_pkce_pair,
    parse_codes,
    reason_for,
)
from backpack_migrate.domain import BadgrAnswer

pytestmark = pytest.mark.unit

API = "https://api.badgr.test"
ACCESS = "access-token-SECRET-123"
REFRESH = "refresh-token-SECRET-456"


class FakeAdapter(BaseAdapter):
    """Answers every request with the function's ``(status, body, headers)`` or raises what it raises."""

    def __init__(self, answer: Callable[[requests.PreparedRequest], tuple[int, Any, dict[str, str]]]) -> None:
        super().__init__()
        self.answer = answer
        self.requests: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.requests.append(request)
        status, body, headers = self.answer(request)
        response = requests.Response()
        response.status_code = status
        response.request = request
        response.url = request.url or ""
        if isinstance(body, bytes):
            response._content = body
        elif isinstance(body, str):
            response._content = body.encode()
            headers = {"Content-Type": "text/html", **headers}
        else:
            response._content = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **headers}
        response.headers.update(headers)
        return response

    def close(self) -> None:
        return None


def make_client(
    answer: Callable[[requests.PreparedRequest], tuple[int, Any, dict[str, str]]],
) -> tuple[BadgrClient, FakeAdapter]:
    session = requests.Session()
    adapter = FakeAdapter(answer)
    session.mount("https://", adapter)
    return BadgrClient(API + "/", "my-client", "my-secret", session=session, timeout=3), adapter


def fixed(status: int, body: Any, headers: dict[str, str] | None = None) -> Callable[..., Any]:
    return lambda request: (status, body, headers or {})


def raising(exc: Exception) -> Callable[..., Any]:
    def answer(request: requests.PreparedRequest) -> Any:
        raise exc

    return answer


# Badgr's translated pair, then the validator's message, flattened as the real server sends them.
FETCH_ERRORS = ["FETCH_HTTP_NODE", "Unable to reach URL", "FETCH_HTTP_NODE", "False",
                "Response could not be interpreted from url https://issuer.test/a/1", "ERROR",
                "https://issuer.test/a/1"]  # fmt: skip


def envelope_error(**extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "status": {"success": False, "description": extra.pop("description", "bad request")},
        "result": [],
        "fieldErrors": {},
        "validationErrors": [],
    }
    body.update(extra)
    return body


# ---------------------------------------------------------------- OAuth


def test_pkce_pair_is_s256() -> None:
    verifier, challenge = new_pkce_pair()
    assert 43 <= len(verifier) <= 128
    expected = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    assert challenge == expected
    assert new_pkce_pair()[0] != verifier


def test_authorize_url_carries_code_flow_with_pkce() -> None:
    client, _ = make_client(fixed(200, {}))
    url = client.authorize_url(
        "https://badgr.test/auth/oauth2/authorize",
        redirect_uri="https://svc.test/oauth/callback",
        state="st",
        code_challenge="ch",
    )
    parts = urlsplit(url)
    assert parts.path == "/auth/oauth2/authorize"
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert query == {
        "client_id": "my-client",
        "redirect_uri": "https://svc.test/oauth/callback",
        "response_type": "code",
        "scope": "rw:backpack rw:profile",
        "state": "st",
        "code_challenge": "ch",
        "code_challenge_method": "S256",
    }


def token_body(access: str = ACCESS, refresh: str = REFRESH) -> dict[str, Any]:
    return {
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": 86400,
        "refresh_token": refresh,
        "scope": "rw:backpack rw:profile",
    }


def test_exchange_code_posts_form_with_basic_auth() -> None:
    client, adapter = make_client(fixed(200, token_body()))
    before = time.time()
    tokens = client.exchange_code("the-code", "the-verifier", "https://svc.test/cb")
    request = adapter.requests[0]
    assert request.method == "POST"
    assert request.url == f"{API}/o/token"
    assert urlsplit(request.url).query == ""
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(b"my-client:my-secret").decode()
    assert isinstance(request.body, str)
    form = {k: v[0] for k, v in parse_qs(request.body).items()}
    assert form == {
        "grant_type": "authorization_code",
        "code": "the-code",
        "redirect_uri": "https://svc.test/cb",
        "code_verifier": "the-verifier",
    }
    assert tokens.access_token == ACCESS
    assert tokens.refresh_token == REFRESH
    assert tokens.has_scope("rw:backpack")
    assert before + 86400 - 1 <= tokens.expires_at <= time.time() + 86400 + 1
    assert not tokens.expired()
    assert ACCESS not in repr(tokens) and REFRESH not in repr(tokens) and ACCESS not in str(tokens)


def test_refresh_returns_the_rotated_refresh_token() -> None:
    client, adapter = make_client(fixed(200, token_body("new-access", "new-refresh")))
    tokens = client.refresh(REFRESH)
    assert (tokens.access_token, tokens.refresh_token) == ("new-access", "new-refresh")
    assert isinstance(adapter.requests[0].body, str)
    assert parse_qs(adapter.requests[0].body) == {"grant_type": ["refresh_token"], "refresh_token": [REFRESH]}


def test_invalid_grant_is_an_auth_error_without_the_token() -> None:
    client, _ = make_client(fixed(400, {"error": "invalid_grant"}))
    with pytest.raises(BadgrAuthError) as caught:
        client.refresh(REFRESH)
    assert caught.value.error == "invalid_grant"
    assert caught.value.status == 400
    assert REFRESH not in str(caught.value)


def test_invalid_client_is_an_auth_error() -> None:
    client, _ = make_client(fixed(401, {"error": "invalid_client"}))
    with pytest.raises(BadgrAuthError, match="invalid_client"):
        client.exchange_code("c", "v", "https://svc.test/cb")


def test_token_throttle_uses_expires_from_the_body() -> None:
    body = {
        "error": "login attempts throttled",
        "error_description": "Too many login attempts. Please wait and try again.",
        "expires": 4,
    }
    client, _ = make_client(fixed(429, body))
    with pytest.raises(BadgrThrottled) as caught:
        client.refresh(REFRESH)
    assert caught.value.retry_after == 4


def test_token_throttle_falls_back_to_retry_after() -> None:
    client, _ = make_client(fixed(429, "slow down", {"Retry-After": "7"}))
    with pytest.raises(BadgrThrottled) as caught:
        client.refresh(REFRESH)
    assert caught.value.retry_after == 7


@pytest.mark.parametrize(
    "answer",
    [
        fixed(503, "<h1>Service Unavailable</h1>"),
        fixed(500, "<h1>Server Error (500)</h1>"),
        raising(requests.ConnectTimeout("timed out")),
        raising(requests.ConnectionError("refused")),
        fixed(200, "<html>not json</html>"),
    ],
)
def test_token_endpoint_unavailable(answer: Callable[..., Any]) -> None:
    client, _ = make_client(answer)
    with pytest.raises(BadgrUnavailable) as caught:
        client.refresh(REFRESH)
    assert REFRESH not in str(caught.value)


# ---------------------------------------------------------------- import

OK_RESULT = {
    "entityType": "Assertion",
    "entityId": "abc123",
    "acceptance": "Accepted",
    "openBadgeId": "https://issuer.test/a/1",
    "pending": False,
}
RECIPIENT_ERRORS = [
    "VERIFY_RECIPIENT_IDENTIFIER",
    "The recipient does not match any of your verified emails",
    "VERIFY_RECIPIENT_IDENTIFIER",
    "False",
    "Profile {'email': ['learner@example.org']} did not match recipient identity",
    "ERROR",
    "_:b15",
]


@pytest.mark.parametrize(
    ("status", "body", "headers", "outcome", "codes", "entity_id", "retry_after"),
    [
        (201, {"status": {"success": True, "description": "ok"}, "result": [OK_RESULT]}, {}, "imported", [],
         "abc123", None),
        (201, {"status": {"success": True, "description": "ok"}, "result": [{**OK_RESULT, "pending": True}]},
         {}, "pending", [], "abc123", None),
        (400, envelope_error(validationErrors=[
            {"name": "DUPLICATE_BADGE", "description": "You already have this badge in your backpack"}]),
         {}, "already_in_badgr", ["DUPLICATE_BADGE"], None, None),
        (400, envelope_error(validationErrors=RECIPIENT_ERRORS), {}, "rejected",
         ["VERIFY_RECIPIENT_IDENTIFIER"], None, None),
        (400, envelope_error(validationErrors=FETCH_ERRORS),
         {}, "rejected", ["FETCH_HTTP_NODE"], None, None),
        (400, envelope_error(validationErrors=[
            "VALIDATE_PROPERTY", "Required property recipient not present in unknown type node _:b0",
            "ERROR", "_:b0"]), {}, "rejected", ["VALIDATE_PROPERTY"], None, None),
        (400, envelope_error(fieldErrors={"url": ["Enter a valid URL."]}), {}, "rejected", [], None, None),
        (401, envelope_error(description="no valid auth token found"), {}, "unauthorized", [], None, None),
        (404, envelope_error(description="entity not found or insufficient privileges"), {}, "forbidden", [],
         None, None),
        (429, {"detail": "Request was throttled."}, {"Retry-After": "12"}, "retry", [], None, 12.0),
        (500, "<h1>Server Error (500)</h1>", {}, "retry", [], None, None),
        (502, "Bad Gateway", {}, "retry", [], None, None),
        (503, "busy", {"Retry-After": "3"}, "retry", [], None, 3.0),
    ],
)  # fmt: skip
def test_import_outcomes(
    status: int,
    body: Any,
    headers: dict[str, str],
    outcome: str,
    codes: list[str],
    entity_id: str | None,
    retry_after: float | None,
) -> None:
    client, _ = make_client(fixed(status, body, headers))
    result = client.import_badge(ACCESS, url="https://issuer.test/a/1")
    assert result.outcome == outcome
    assert result.status == status
    assert result.codes == codes
    assert result.entity_id == entity_id
    assert result.retry_after == retry_after
    assert result.reason and result.reason.endswith(".")
    assert ACCESS not in (result.description or "")


def test_import_recipient_mismatch_reason_and_redacted_description() -> None:
    client, _ = make_client(fixed(400, envelope_error(validationErrors=RECIPIENT_ERRORS)))
    result = client.import_badge(ACCESS, url="https://issuer.test/a/1")
    assert result.reason.startswith("This badge was issued to an email address that is not on your Badgr")
    assert "learner@example.org" not in (result.description or "")
    assert "<email>" in (result.description or "")
    assert "The recipient does not match any of your verified emails" in (result.description or "")


def test_import_fetch_failure_reason() -> None:
    body = envelope_error(validationErrors=FETCH_ERRORS)
    client, _ = make_client(fixed(400, body))
    result = client.import_badge(ACCESS, url="https://issuer.test/a/1")
    assert result.reason == "The website that proves this badge could not be reached."


@pytest.mark.parametrize(
    "exc", [requests.ReadTimeout("slow"), requests.ConnectionError("refused"), requests.ConnectTimeout("x")]
)
def test_import_without_an_answer_is_retry(exc: Exception) -> None:
    client, _ = make_client(raising(exc))
    result = client.import_badge(ACCESS, url="https://issuer.test/a/1")
    assert (result.outcome, result.status, result.retry_after) == ("retry", 0, None)


def test_import_sends_json_with_exactly_one_field() -> None:
    client, adapter = make_client(fixed(201, {"status": {"success": True}, "result": [OK_RESULT]}))
    image = image_data_uri(b"\x89PNG...", "image/png")
    client.import_badge(ACCESS, image=image)
    client.import_badge(ACCESS, assertion={"id": "urn:x", "recipient": {}})
    client.import_badge(ACCESS, url="https://issuer.test/a/1")
    bodies = []
    for request in adapter.requests:
        assert request.url == f"{API}/v2/backpack/import"
        assert request.headers["Content-Type"] == "application/json"
        assert request.headers["Accept"] == "application/json"
        assert request.headers["Authorization"] == f"Bearer {ACCESS}"
        assert isinstance(request.body, bytes)
        bodies.append(json.loads(request.body))
    assert bodies == [
        {"image": image},
        {"assertion": {"id": "urn:x", "recipient": {}}},
        {"url": "https://issuer.test/a/1"},
    ]
    assert image.startswith("data:image/png;base64,")


def test_import_requires_exactly_one_form() -> None:
    client, adapter = make_client(fixed(201, {}))
    with pytest.raises(ValueError, match="exactly one"):
        client.import_badge(ACCESS)
    with pytest.raises(ValueError, match="exactly one"):
        client.import_badge(ACCESS, url="https://x.test/a", image="data:image/png;base64,AA==")
    assert adapter.requests == []


def test_to_answer_keeps_badgr_word() -> None:
    result = ImportResult(
        outcome="rejected", status=400, codes=["FETCH_HTTP_NODE"], description="d", reason="r"
    )
    assert result.to_answer() == BadgrAnswer(status=400, codes=["FETCH_HTTP_NODE"], description="d")


def test_parse_codes_reads_flat_lists_and_dicts() -> None:
    assert parse_codes(RECIPIENT_ERRORS) == ["VERIFY_RECIPIENT_IDENTIFIER"]
    assert parse_codes([{"name": "DUPLICATE_BADGE", "description": "x"}]) == ["DUPLICATE_BADGE"]
    assert parse_codes(["Must provide only one of 'url', 'image' or 'assertion'."]) == []
    assert parse_codes(None) == []
    assert reason_for("rejected", ["SOMETHING_NEW"]) == "Badgr could not accept this badge."


# ---------------------------------------------------------------- reads


def test_list_assertions_asks_for_pending() -> None:
    client, adapter = make_client(fixed(200, {"status": {"success": True}, "result": [OK_RESULT]}))
    assert client.list_assertions(ACCESS) == [OK_RESULT]
    assert parse_qs(urlsplit(adapter.requests[0].url or "").query) == {"include_pending": ["true"]}
    client.list_assertions(ACCESS, include_pending=False)
    assert urlsplit(adapter.requests[1].url or "").query == ""


def test_get_profile_returns_first_result() -> None:
    profile = {"entityId": "u1", "emails": [{"email": "a@b.test", "verified": True}]}
    client, adapter = make_client(fixed(200, {"status": {"success": True}, "result": [profile]}))
    assert client.get_profile(ACCESS) == profile
    assert adapter.requests[0].url == f"{API}/v2/users/self"


@pytest.mark.parametrize(
    ("status", "error", "exc_type"),
    [
        (401, "unauthorized", BadgrAuthError),
        (404, "insufficient_scope", BadgrAuthError),
        (429, None, BadgrThrottled),
        (502, None, BadgrUnavailable),
    ],
)
def test_reads_raise_on_failure(status: int, error: str | None, exc_type: type[Exception]) -> None:
    client, _ = make_client(fixed(status, envelope_error(description="x"), {"Retry-After": "2"}))
    with pytest.raises(exc_type) as caught:
        client.list_assertions(ACCESS)
    if error:
        assert isinstance(caught.value, BadgrAuthError) and caught.value.error == error
    assert ACCESS not in str(caught.value)


def test_tokens_expiry() -> None:
    tokens = Tokens(access_token="a", refresh_token="r", expires_at=1000.0, scope="")
    assert tokens.expired(now=950.0)
    assert not tokens.expired(now=900.0)


def test_the_code_recorded_for_a_refusal_is_the_one_its_sentence_explains() -> None:
    from backpack_migrate.badgr import reason_code, reason_for

    codes = ["VALIDATE_PROPERTY", "VERIFY_RECIPIENT_IDENTIFIER"]
    assert reason_code(codes) == "VERIFY_RECIPIENT_IDENTIFIER"
    assert "add that address in Badgr" in reason_for("rejected", codes)
    assert reason_code(["SOMETHING_NEW", "OTHER"]) == "SOMETHING_NEW"
    assert reason_code([]) is None
