"""Idempotency records of concurrent invocations stay apart, as in separate Lambda environments.

The local stack runs every function in one process, an invocation per thread. Powertools keeps
the running call's key prefix on its persistence layer, so one layer shared by all threads let
a second function's call rename the first one's record while it was in progress.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import boto3
import pytest

from backpack_migrate.services import Services
from tests.events import FakeContext, http_event
from tests.handlers.conftest import load_handler

pytestmark = pytest.mark.handlers


def test_concurrent_invocations_of_two_functions_keep_their_own_records(aws: Services) -> None:
    started, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def slow(job: dict[str, Any]) -> dict[str, Any]:
        calls.append("slow")
        started.set()
        assert release.wait(10)
        return {"done": job["n"]}

    def quick(job: dict[str, Any]) -> dict[str, Any]:
        calls.append("quick")
        return {"done": job["n"]}

    results: list[Any] = []
    first = threading.Thread(target=lambda: results.append(aws.once("intake", slow)(job={"n": 1})))
    first.start()
    assert started.wait(10)
    # Another function, on another thread, while the first one's record is in progress.
    second = threading.Thread(target=lambda: results.append(aws.once("invite", quick)(job={"n": 2})))
    second.start()
    second.join(10)
    release.set()
    first.join(10)
    assert sorted(r["done"] for r in results) == [1, 2]

    # Each result is saved under its own function's key: a replay of either is answered from it.
    assert aws.once("intake", slow)(job={"n": 1}) == {"done": 1}
    assert aws.once("invite", quick)(job={"n": 2}) == {"done": 2}
    assert calls == ["slow", "quick"]
    items = boto3.resource("dynamodb").Table("idempotency").scan()["Items"]
    assert sorted(str(item["id"]).split("#")[0] for item in items) == ["intake", "invite"]
    assert {item["status"] for item in items} == {"COMPLETED"}


def _in_progress_expiry(aws: Services) -> int:
    """The in-progress expiry (epoch ms) that ``once`` wrote for a call, read during the call."""
    table = boto3.resource("dynamodb", region_name="us-east-1").Table("idempotency")
    seen: dict[str, Any] = {}

    def work(job: dict[str, Any]) -> dict[str, Any]:
        seen.update(table.scan()["Items"][0])
        return {"done": job["n"]}

    aws.once("legacy-issue", work)(job={"n": 1})
    assert "in_progress_expiration" in seen, "the in-progress record would block for days"
    return int(seen["in_progress_expiration"])


def test_a_context_registered_before_the_first_idempotent_call_bounds_its_in_progress_record(
    aws: Services,
) -> None:
    # The HTTP functions register each invocation before anything has built the persistence
    # layer (most pages never need it); a record a crashed call leaves must still expire with it.
    aws.register_context(FakeContext(remaining_ms=60_000))
    started_ms = time.time() * 1000
    expiry = _in_progress_expiry(aws)
    assert started_ms + 50_000 <= expiry <= time.time() * 1000 + 61_000


@pytest.mark.parametrize("name", ["web", "legacy"])
def test_the_http_functions_register_each_invocation_for_idempotency(aws: Services, name: str) -> None:
    context = FakeContext(remaining_ms=45_000)
    answer = load_handler(name).handler(http_event("GET", "/no-such-page", "$default"), context)
    assert answer["statusCode"] == 404
    started_ms = time.time() * 1000
    assert started_ms + 35_000 <= _in_progress_expiry(aws) <= time.time() * 1000 + 46_000
