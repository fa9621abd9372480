"""Groups, the Backpack's ids and Connect grants: the same answers from DynamoDB (moto) and the fake."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from backpack_migrate.domain import BadgeRecord, BadgeState, CollectionRecord, GrantRecord, GroupRecord
from backpack_migrate.store import DynamoStore
from tests.fakes import InMemoryStore

pytestmark = pytest.mark.handlers


def _table() -> Any:
    dynamodb = boto3.resource("dynamodb", region_name="us-east-1")
    return dynamodb.create_table(
        TableName="t",
        KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}, {"AttributeName": "SK", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": name, "AttributeType": "S"} for name in ("PK", "SK", "GSI1PK", "GSI1SK")
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "GSI1",
                "KeySchema": [
                    {"AttributeName": "GSI1PK", "KeyType": "HASH"},
                    {"AttributeName": "GSI1SK", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )


@pytest.fixture(params=["dynamodb", "fake"])
def store(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "fake":
        yield InMemoryStore()
        return
    with mock_aws():
        yield DynamoStore(_table())


def _group(group_id: int = 7, **update: Any) -> GroupRecord:
    return GroupRecord(
        learner_id="l1", export_id="e1", group_id=group_id, name="Work", public=True, badge_ids=[3, 99]
    ).model_copy(update=update)


def test_groups_are_written_once_and_saved_by_version(store: Any) -> None:
    assert store.put_groups_if_absent([_group(), _group(8)]) == 2
    assert store.put_groups_if_absent([_group(name="replayed")]) == 0
    assert [g.group_id for g in store.list_groups("l1")] == [7, 8]
    assert store.list_groups("l1")[0].name == "Work"
    assert {g.group_id for g in store.iter_export_groups("e1")} == {7, 8}
    creating = _group(collection=CollectionRecord(state="creating", marker="m"))
    assert store.save_group(creating, expected_version=0)
    assert not store.save_group(creating, expected_version=0)  # a second worker loses
    saved = store.list_groups("l1")[0]
    assert saved.version == 1 and saved.collection.state == "creating"
    filled = saved.model_copy(
        update={"collection": CollectionRecord(state="filled", entity_id="C1", assertion_ids=["A"])}
    )
    assert store.save_group(filled, expected_version=1)
    assert store.list_groups("l1")[0].collection.entity_id == "C1"


def test_learners_are_found_by_address_and_backpack_user(store: Any) -> None:
    assert store.put_learner_index("l1", 42, ["addr-a", "addr-b"]) == []
    assert store.put_learner_index("l1", 42, ["addr-a"]) == []  # a replay is no conflict
    assert store.put_learner_index("l2", 43, ["addr-b", "addr-c"]) == ["addr-b"]
    assert store.learner_for_address("addr-b") == "l1"
    assert store.learner_for_address("addr-c") == "l2"
    assert store.learner_for_address("nobody") is None
    assert store.learner_for_backpack_user(42) == "l1"
    assert store.learner_for_backpack_user(1) is None


def test_badges_are_found_by_body_hash(store: Any) -> None:
    badge = BadgeRecord(
        learner_id="l1",
        badge_id="b1",
        export_id="e1",
        file_name="images/h1.png",
        state=BadgeState.EXTRACTED,
        backpack_badge_id=3,
        body_hash="h1",
        backpack_body={"uid": "x"},
    )
    store.put_badges_if_absent([badge])
    assert store.put_body_hash_index([badge]) == []
    assert store.put_body_hash_index([badge.model_copy(update={"badge_id": "b2"})]) == ["h1"]
    found = store.badge_for_body_hash("h1")
    assert found.backpack_badge_id == 3 and found.backpack_body == {"uid": "x"}
    assert store.badge_for_body_hash("h2") is None


def test_grants_are_found_by_token_digest(store: Any) -> None:
    grant = GrantRecord(
        grant_id="5",
        learner_id="l1",
        origin="https://site.example",
        permissions=["issue"],
        access_token_sha256="a" * 64,
        refresh_token_sha256="r" * 64,
        access_time_ms=1000,
    )
    assert store.put_grants_if_absent([grant]) == 1
    assert store.put_grants_if_absent([grant]) == 0
    assert store.grant_for_access_digest("a" * 64) == grant
    assert store.grant_for_refresh_digest("r" * 64) == grant
    assert store.grant_for_access_digest("r" * 64) is None
    assert store.get_grant("5") == grant
