"""The Badgr client's collection calls against canned answers shaped like the real server's."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from backpack_migrate.badgr import (
    BadgrAuthError,
    BadgrNotFound,
    BadgrRefused,
    BadgrThrottled,
    BadgrUnavailable,
)
from tests.unit.test_badgr_client import ACCESS, fixed, make_client, raising

pytestmark = pytest.mark.unit

COLLECTION = {
    "entityType": "Collection",
    "entityId": "C1",
    "name": "Work",
    "description": "My work",
    "published": False,
    "assertions": [],
    "share_url": None,
}


def envelope(result: list[Any]) -> dict[str, Any]:
    return {"status": {"success": True, "description": "ok"}, "result": result}


def error(fields: dict[str, list[str]], status_description: str = "bad request") -> dict[str, Any]:
    return {
        "status": {"success": False, "description": status_description},
        "result": [],
        "fieldErrors": fields,
        "validationErrors": [],
    }


def test_create_sends_no_assertions_and_returns_the_collection() -> None:
    client, adapter = make_client(fixed(201, envelope([COLLECTION])))
    made = client.create_collection(ACCESS, name="Work", description="My work", published=False)
    assert made["entityId"] == "C1"
    (request,) = adapter.requests
    assert request.method == "POST" and request.url.endswith("/v2/backpack/collections")
    sent = json.loads(request.body or b"{}")
    assert sent == {"name": "Work", "description": "My work", "published": False}
    assert request.headers["Authorization"] == f"Bearer {ACCESS}"


def test_put_sends_the_whole_object_with_the_list() -> None:
    filled = {**COLLECTION, "assertions": ["A1", "A2"], "published": True, "share_url": "https://b/x"}
    client, adapter = make_client(fixed(200, envelope([filled])))
    answer = client.put_collection(
        ACCESS, "C1", name="Work", description="My work", published=True, assertions=["A1", "A2"]
    )
    assert answer["share_url"] == "https://b/x"
    (request,) = adapter.requests
    assert request.method == "PUT" and request.url.endswith("/v2/backpack/collections/C1")
    assert json.loads(request.body or b"{}") == {
        "name": "Work",
        "description": "My work",
        "published": True,
        "assertions": ["A1", "A2"],
    }


def test_an_unknown_assertion_is_a_refusal_naming_the_field() -> None:
    client, _ = make_client(fixed(400, error({"assertions": ['Invalid pk "X" - object does not exist.']})))
    with pytest.raises(BadgrRefused) as refused:
        client.put_collection(ACCESS, "C1", name="Work", description="", published=False, assertions=["X"])
    assert set(refused.value.field_errors) == {"assertions"}
    assert ACCESS not in str(refused.value)


@pytest.mark.parametrize(
    ("status", "body", "raised"),
    [
        (404, error({}, "entity not found or insufficient privileges"), BadgrNotFound),
        (401, error({}, "no valid auth token found"), BadgrAuthError),
        (429, {"detail": "throttled"}, BadgrThrottled),
        (500, "<h1>Server Error (500)</h1>", BadgrUnavailable),
        (503, b"", BadgrUnavailable),
    ],
)
def test_other_answers_raise_what_the_caller_decides_by(
    status: int, body: Any, raised: type[Exception]
) -> None:
    client, _ = make_client(fixed(status, body, {"Retry-After": "7"} if status == 429 else {}))
    with pytest.raises(raised):
        client.put_collection(ACCESS, "C1", name="Work", description="", published=False, assertions=[])


def test_a_timeout_or_reset_is_unavailable() -> None:
    for exc in (requests.Timeout("slow"), requests.ConnectionError("reset")):
        client, _ = make_client(raising(exc))
        with pytest.raises(BadgrUnavailable):
            client.create_collection(ACCESS, name="Work", description="", published=False)


def test_listing_and_getting_collections() -> None:
    client, adapter = make_client(fixed(200, envelope([COLLECTION, {**COLLECTION, "entityId": "C2"}])))
    assert [c["entityId"] for c in client.list_collections(ACCESS)] == ["C1", "C2"]
    assert adapter.requests[0].url.endswith("/v2/backpack/collections")
    client, _ = make_client(fixed(200, envelope([COLLECTION])))
    assert client.get_collection(ACCESS, "C1") == COLLECTION
    client, _ = make_client(fixed(404, error({}, "entity not found or insufficient privileges")))
    assert client.get_collection(ACCESS, "C9") is None
