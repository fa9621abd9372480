"""The DynamoDB store on in-process moto: conditional writes are what keep badges in one state."""

from __future__ import annotations

import json
from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from backpack_migrate.domain import BadgeRecord, BadgeState, ExportRecord, ExportStatus, LearnerRecord
from backpack_migrate.store import DynamoStore

pytestmark = pytest.mark.handlers


@pytest.fixture
def store() -> Iterator[DynamoStore]:
    with mock_aws():
        dynamodb = boto3.resource("dynamodb", region_name="us-east-1")
        table = dynamodb.create_table(
            TableName="t",
            KeySchema=[
                {"AttributeName": "PK", "KeyType": "HASH"},
                {"AttributeName": "SK", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": name, "AttributeType": "S"}
                for name in ("PK", "SK", "GSI1PK", "GSI1SK", "OPEN_PK", "OPEN_SK")
            ],
            GlobalSecondaryIndexes=[
                {
                    "IndexName": "GSI1",
                    "KeySchema": [
                        {"AttributeName": "GSI1PK", "KeyType": "HASH"},
                        {"AttributeName": "GSI1SK", "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "ALL"},
                },
                {
                    "IndexName": "Open",
                    "KeySchema": [
                        {"AttributeName": "OPEN_PK", "KeyType": "HASH"},
                        {"AttributeName": "OPEN_SK", "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "ALL"},
                },
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        yield DynamoStore(table)


def _badge(state: BadgeState = BadgeState.VERIFIED, badge_id: str = "b1") -> BadgeRecord:
    return BadgeRecord(
        learner_id="l1", badge_id=badge_id, export_id="e1", file_name=f"{badge_id}.png", state=state
    )


def test_badges_are_written_once_and_move_only_from_expected_states(store: DynamoStore) -> None:
    assert store.put_badges_if_absent([_badge(), _badge(badge_id="b2")]) == 2
    assert store.put_badges_if_absent([_badge(BadgeState.EXTRACTED)]) == 0
    assert store.get_badge("l1", "b1").state == BadgeState.VERIFIED  # type: ignore[union-attr]
    assert store.transition(_badge(BadgeState.QUEUED), [BadgeState.VERIFIED])
    assert not store.transition(_badge(BadgeState.QUEUED), [BadgeState.VERIFIED])
    assert store.transition(_badge(BadgeState.IMPORTED), [BadgeState.QUEUED])
    assert [b.state for b in store.list_badges("l1")] == [BadgeState.IMPORTED, BadgeState.VERIFIED]
    assert {b.badge_id for b in store.iter_export_badges("e1")} == {"b1", "b2"}


def test_a_write_from_a_copy_read_before_another_write_can_be_refused(store: DynamoStore) -> None:
    store.put_badges_if_absent([_badge(BadgeState.DEAD_LETTERED)])
    fresh = store.get_badge("l1", "b1")
    assert fresh is not None and fresh.rev is None
    assert store.transition(fresh.model_copy(update={"looks": 1}), [BadgeState.DEAD_LETTERED], unchanged=True)
    newer = store.get_badge("l1", "b1")
    assert newer is not None and newer.rev and newer.looks == 1
    # The first copy is older than what is stored now: refused when it must be unchanged, and
    # written when only the state matters.
    older = fresh.model_copy(update={"looks": 2})
    assert not store.transition(older, [BadgeState.DEAD_LETTERED], unchanged=True)
    assert store.transition(newer.model_copy(update={"looks": 2}), [BadgeState.DEAD_LETTERED], unchanged=True)
    assert store.transition(older, [BadgeState.DEAD_LETTERED])
    stored = store.get_badge("l1", "b1")
    assert stored is not None and stored.looks == 2 and stored.rev not in (None, newer.rev)
    # The revision is the item's alone: a copy's data never carries one that could go stale.
    item = store._table.get_item(Key={"PK": "LEARNER#l1", "SK": "BADGE#b1"})["Item"]
    assert item["rev"] == stored.rev and "rev" not in json.loads(item["data"])


def test_exports_learners_tokens_and_sessions(store: DynamoStore) -> None:
    export = ExportRecord(
        export_id="e1", bucket="b", key="exports/a.zip", etag="x", status=ExportStatus.READING
    )
    assert store.put_export_if_absent(export)
    assert not store.put_export_if_absent(export)
    store.save_export(export.model_copy(update={"status": ExportStatus.CHUNKED}))
    assert [e.status for e in store.list_exports()] == [ExportStatus.CHUNKED]
    learner = LearnerRecord(learner_id="l1", export_id="e1", email_ciphertext="c")
    assert store.put_learner_if_absent(learner)
    assert not store.put_learner_if_absent(learner)
    assert [item.learner_id for item in store.iter_export_learners("e1")] == ["l1"]
    assert store.save_token("l1", "ct1", 1)
    assert not store.save_token("l1", "ct-lost-race", 1)
    assert store.save_token("l1", "ct2", 2)
    assert store.get_token("l1") == ("ct2", 2)
    store.put_session("s1", {"learner_id": "l1"}, 60)
    assert store.get_session("s1") == {"learner_id": "l1"}
    store.put_session("s2", {"learner_id": "l1"}, -1)
    assert store.get_session("s2") is None
    item = store._table.get_item(Key={"PK": "LEARNER#l1", "SK": "META"})["Item"]
    assert "@" not in str(item)


def test_a_replayed_group_of_badges_keeps_what_is_on_record(store: DynamoStore) -> None:
    fresh = [_badge(BadgeState.EXTRACTED, f"b{i:02d}") for i in range(30)]
    assert store.put_badges_if_absent(fresh[:20]) == 20
    assert store.transition(_badge(BadgeState.VERIFIED, "b03"), [BadgeState.EXTRACTED])
    # A replayed chunk: twenty on record (one moved on), ten new.
    assert store.put_badges_if_absent(fresh) == 10
    assert store.get_badge("l1", "b03").state == BadgeState.VERIFIED  # type: ignore[union-attr]
    assert len(store.list_badges("l1")) == 30


def test_the_open_index_holds_only_what_should_still_move_on(store: DynamoStore) -> None:
    from backpack_migrate.domain import Confirmation

    future = "9999-01-01T00:00:00Z"
    store.put_badges_if_absent([_badge(BadgeState.EXTRACTED, "b1"), _badge(BadgeState.VERIFIED, "b2")])
    store.put_learner_if_absent(LearnerRecord(learner_id="l1", export_id="e1", email_ciphertext="x"))
    open_now = {getattr(item, "badge_id", "learner") for item in store.iter_open(future)}
    assert open_now == {"b1", "learner"}  # verified waits for its learner: not open
    assert list(store.iter_open("2000-01-01T00:00:00Z")) == []  # nothing is old yet
    assert store.transition(_badge(BadgeState.VERIFIED, "b1"), [BadgeState.EXTRACTED])
    assert store.transition(_badge(BadgeState.QUEUED, "b1"), [BadgeState.VERIFIED])
    store.mark_invited("l1", "2026-01-01T00:00:00Z")
    assert {getattr(item, "badge_id", "learner") for item in store.iter_open(future)} == {"b1"}
    assert store.transition(_badge(BadgeState.IMPORTED, "b1"), [BadgeState.QUEUED])
    assert list(store.iter_open(future)) == []
    # A move asked for is open until its summary is claimed.
    store.mark_migration_requested("l1", "2026-01-02T00:00:00.000001Z")
    (learner,) = store.iter_open(future)
    assert isinstance(learner, LearnerRecord) and learner.invited_at == "2026-01-01T00:00:00Z"
    store.touch_learner("l1", "2026-01-03T00:00:00Z")
    (learner,) = store.iter_open(future)
    assert learner.repairs == 1
    assert store.claim_summary("l1", "2026-01-02T00:00:00.000001Z")
    assert list(store.iter_open(future)) == []
    store.touch_learner("l1", "2026-01-04T00:00:00Z")  # closed meanwhile: nothing to do
    # Given up on without Badgr's word stays open, so Badgr is asked again later.
    unconfirmed = _badge(BadgeState.DEAD_LETTERED, "b2").model_copy(
        update={"confirmed_by": Confirmation.NOT_CONFIRMED}
    )
    assert store.transition(_badge(BadgeState.QUEUED, "b2"), [BadgeState.VERIFIED])
    assert store.transition(unconfirmed, [BadgeState.QUEUED])
    assert [getattr(item, "badge_id", None) for item in store.iter_open(future)] == ["b2"]
