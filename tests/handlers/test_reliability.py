"""Faults AWS produces every day, on moto with the real handlers and Powertools idempotency."""

from __future__ import annotations

import json
import time
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from aws_lambda_powertools.utilities.idempotency.persistence.dynamodb import DynamoDBPersistenceLayer
from botocore.exceptions import ClientError

from backpack_migrate.domain import BadgeState, Confirmation
from backpack_migrate.services import Services
from tests.events import FakeContext, scheduled_event, sqs_event
from tests.handlers.conftest import drain, load_handler
from tests.handlers.test_handlers import _connected_learner

pytestmark = pytest.mark.handlers


def _throttled(operation: str) -> ClientError:
    return ClientError(
        {
            "Error": {
                "Code": "ProvisionedThroughputExceededException",
                "Message": "Rate of requests exceeds",
            },
            "ResponseMetadata": {"HTTPStatusCode": 400},
        },
        operation,
    )


def _idempotency_success_writes_throttled(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Saving an idempotency result (the update after the call) is throttled, every time."""
    failed: list[str] = []

    def throttled(self: Any, data_record: Any) -> None:
        failed.append(data_record.idempotency_key)
        raise _throttled("UpdateItem")

    monkeypatch.setattr(DynamoDBPersistenceLayer, "_update_record", throttled)
    return failed


def test_a_badge_badgr_took_whose_result_could_not_be_saved_is_recorded_imported(
    aws: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    learner_id, jobs = _connected_learner(aws)
    failed = _idempotency_success_writes_throttled(monkeypatch)
    migrate = load_handler("migrate")
    assert migrate.handler(sqs_event(jobs), FakeContext()) == {"batchItemFailures": []}
    assert len(failed) == 2
    badges = aws.store.list_badges(learner_id)
    assert {b.state for b in badges} == {BadgeState.IMPORTED}
    assert {b.confirmed_by for b in badges} == {Confirmation.IMPORT_ANSWER}
    assert len(aws._badgr.imports) == 2


def test_records_left_in_progress_are_settled_by_the_backpack_on_later_deliveries(
    aws: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Badgr answered 201; saving the idempotency result and writing `imported` were both
    # throttled. Every later delivery meets the record in progress. Before, the last delivery
    # recorded dead_lettered; the learner was told the badge did not move, and it had.
    learner_id, jobs = _connected_learner(aws)
    _idempotency_success_writes_throttled(monkeypatch)
    real = aws.store.transition

    def imported_write_throttled(badge: Any, expected: Any, **kwargs: Any) -> bool:
        if badge.state == BadgeState.IMPORTED:
            raise _throttled("UpdateItem")
        return bool(real(badge, expected, **kwargs))

    monkeypatch.setattr(aws.store, "transition", imported_write_throttled)
    migrate = load_handler("migrate")
    with pytest.raises(BatchProcessingError):  # both records failed
        migrate.handler(sqs_event(jobs), FakeContext())
    monkeypatch.setattr(aws.store, "transition", real)
    assert migrate.handler(sqs_event(jobs, receive_count=5), FakeContext()) == {"batchItemFailures": []}
    badges = aws.store.list_badges(learner_id)
    assert {b.state for b in badges} == {BadgeState.IMPORTED}
    assert {b.confirmed_by for b in badges} == {Confirmation.BACKPACK_LISTING}
    assert len(aws._badgr.imports) == 2  # never sent twice
    assert aws._badgr.listings == 2  # one before the first send, one for the whole last batch


def test_an_open_circuit_holds_jobs_back_without_spending_their_tries(aws: Services) -> None:
    from backpack_migrate.breaker import FAILURES_TO_OPEN

    learner_id, jobs = _connected_learner(aws)
    for _ in range(FAILURES_TO_OPEN):
        aws.gate.acquire()
        aws.gate.record("failure")
    migrate = load_handler("migrate")
    assert migrate.handler(sqs_event(jobs, receive_count=3), FakeContext()) == {"batchItemFailures": []}
    # Sent again, delayed by SQS until the circuit's cool-down is over (their bodies carry
    # the tries spent before: see the unit tests).
    attributes = boto3.client("sqs", region_name="us-east-1").get_queue_attributes(
        QueueUrl=aws.settings.migrate_queue_url, AttributeNames=["ApproximateNumberOfMessagesDelayed"]
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessagesDelayed"] == "2"
    assert {b.state for b in aws.store.list_badges(learner_id)} == {BadgeState.QUEUED}
    assert aws._badgr.imports == []


def _stale(aws: Services) -> None:
    aws.settings = aws.settings.model_copy(update={"stale_after_seconds": 1})
    time.sleep(2.1)  # stamps are to the second


def test_the_reconciler_sends_lost_import_jobs_again_from_its_schedule(aws: Services) -> None:
    learner_id, jobs = _connected_learner(aws)  # the jobs are taken and lost
    _stale(aws)
    run = load_handler("reconcile").handler(scheduled_event(), FakeContext())
    assert run["badges_requeued"] == 2
    again = drain(aws, aws.settings.migrate_queue_url)
    assert sorted(j["badge_id"] for j in again) == sorted(j["badge_id"] for j in jobs)
    assert load_handler("migrate").handler(sqs_event(again), FakeContext()) == {"batchItemFailures": []}
    assert {b.state for b in aws.store.list_badges(learner_id)} == {BadgeState.IMPORTED}
    assert aws.store.last_reconcile_run()["badges_requeued"] == 2


def test_the_reconciler_settles_dead_lettered_jobs_whose_badge_still_says_retrying(aws: Services) -> None:
    from tests.fakes import ScriptedBadgr
    from tests.handlers.test_handlers import EMAIL
    from tests.unit.badges import hosted_assertion

    learner_id, jobs = _connected_learner(aws)
    first = hosted_assertion("h1", EMAIL)["id"]
    aws._badgr = ScriptedBadgr({first: ["lost"], hosted_assertion("h2", EMAIL)["id"]: ["retry"]})
    migrate = load_handler("migrate")
    with pytest.raises(BatchProcessingError):  # both records failed
        migrate.handler(sqs_event(jobs, receive_count=4), FakeContext())
    # Their last delivery never ran; SQS moved them to the dead-letter queue.
    sqs = boto3.client("sqs", region_name="us-east-1")
    for job in jobs:
        sqs.send_message(QueueUrl=aws.settings.migrate_dead_letter_queue_url, MessageBody=json.dumps(job))
    assert {b.state for b in aws.store.list_badges(learner_id)} == {BadgeState.FAILED_RETRYABLE}
    run = load_handler("reconcile").handler(scheduled_event(), FakeContext())
    assert run["dead_letters_read"] == 2
    assert run["settled"] == {"imported": 1, "dead_lettered": 1}
    by_url = {b.verdict.hosted_url: b for b in aws.store.list_badges(learner_id) if b.verdict}
    assert by_url[first].state == BadgeState.IMPORTED
    assert {b.confirmed_by for b in by_url.values()} == {Confirmation.BACKPACK_LISTING}
    # Kept in the dead-letter queue for a redrive, held back from the next runs.
    attributes = sqs.get_queue_attributes(
        QueueUrl=aws.settings.migrate_dead_letter_queue_url,
        AttributeNames=["ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "2"


def test_a_learner_whose_invitation_failed_is_invited_by_the_reconciler(
    aws: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

    from tests.handlers.conftest import sent_emails
    from tests.handlers.test_handlers import _read_learner

    learner_id = _read_learner(aws)
    invites = drain(aws, aws.settings.notify_queue_url)
    assert [j["kind"] for j in invites] == ["invite"]
    notify = load_handler("notify")
    # Every delivery's idempotency write is throttled: the job ends in the dead-letter queue.
    real_put = DynamoDBPersistenceLayer._put_record

    def throttled(self: Any, data_record: Any) -> None:
        raise _throttled("PutItem")

    monkeypatch.setattr(DynamoDBPersistenceLayer, "_put_record", throttled)
    for delivery in (1, 2, 3):
        with pytest.raises(BatchProcessingError):
            notify.handler(sqs_event(invites, receive_count=delivery), FakeContext())
    monkeypatch.setattr(DynamoDBPersistenceLayer, "_put_record", real_put)
    assert sent_emails() == []
    _stale(aws)
    run = load_handler("reconcile").handler(scheduled_event(), FakeContext())
    assert run["invitations_resent"] == 1
    again = drain(aws, aws.settings.notify_queue_url)
    assert notify.handler(sqs_event(again), FakeContext()) == {"batchItemFailures": []}
    assert notify.handler(sqs_event(again, receive_count=2), FakeContext()) == {"batchItemFailures": []}
    assert len(sent_emails()) == 1
    assert aws.store.get_learner(learner_id).invited_at is not None
    _stale(aws)
    assert load_handler("reconcile").handler(scheduled_event(), FakeContext())["invitations_resent"] == 0
