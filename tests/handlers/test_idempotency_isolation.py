"""Idempotency records of concurrent invocations stay apart, as in separate Lambda environments.

The local stack runs every function in one process, an invocation per thread. Powertools keeps
the running call's key prefix on its persistence layer, so one layer shared by all threads let
a second function's call rename the first one's record while it was in progress.
"""

from __future__ import annotations

import threading
from typing import Any

import boto3
import pytest

from backpack_migrate.services import Services

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
