"""Redriving dead-lettered jobs on in-process moto SQS: every job back once, none lost."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from backpack_migrate.redrive import RedriveError, dead_letter_queue_of, redrive

pytestmark = pytest.mark.handlers


@pytest.fixture
def sqs() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("sqs", region_name="us-east-1")


def _queues(sqs: Any) -> tuple[str, str]:
    dlq = sqs.create_queue(QueueName="migrate-dlq")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue = sqs.create_queue(
        QueueName="migrate",
        Attributes={"RedrivePolicy": json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": 5})},
    )["QueueUrl"]
    return queue, dlq


def _bodies(sqs: Any, url: str) -> list[str]:
    bodies = []
    while True:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            return sorted(bodies)
        for message in messages:
            bodies.append(message["Body"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def test_every_dead_lettered_job_goes_back_once_with_its_attributes(sqs: Any) -> None:
    queue, dlq = _queues(sqs)
    jobs = [json.dumps({"learner_id": f"l{i}", "badge_id": "b"}) for i in range(23)]
    for body in jobs:
        sqs.send_message(
            QueueUrl=dlq,
            MessageBody=body,
            MessageAttributes={"kind": {"DataType": "String", "StringValue": "import"}},
        )
    moved: list[int] = []
    result = redrive(sqs, queue, on_moved=moved.append)
    assert result.moved == sum(moved) == 23 and result.left == 0
    assert result.dead_letter_url == dlq == dead_letter_queue_of(sqs, queue)
    message = sqs.receive_message(QueueUrl=queue, MessageAttributeNames=["All"])["Messages"][0]
    assert message["MessageAttributes"]["kind"]["StringValue"] == "import"
    sqs.change_message_visibility(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
    assert _bodies(sqs, queue) == sorted(jobs)
    assert _bodies(sqs, dlq) == []


def test_a_limit_moves_only_that_many(sqs: Any) -> None:
    queue, dlq = _queues(sqs)
    for i in range(15):
        sqs.send_message(QueueUrl=dlq, MessageBody=str(i))
    result = redrive(sqs, queue, limit=12)
    assert result.moved == 12
    assert len(_bodies(sqs, queue)) == 12


def test_a_queue_without_dead_letter_queue_is_refused(sqs: Any) -> None:
    plain = sqs.create_queue(QueueName="plain")["QueueUrl"]
    with pytest.raises(RedriveError, match="no dead-letter queue"):
        redrive(sqs, plain)


class RefusingSqs:
    """SQS that refuses every other send of a batch: refused jobs must stay in the DLQ."""

    def __init__(self, sqs: Any) -> None:
        self._sqs = sqs

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sqs, name)

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        kept = [e for i, e in enumerate(Entries) if i % 2 == 0]
        answer = self._sqs.send_message_batch(QueueUrl=QueueUrl, Entries=kept)
        refused = [{"Id": e["Id"], "Code": "InternalError", "SenderFault": False} for e in Entries[1::2]]
        return {**answer, "Failed": refused}


def test_jobs_sqs_refuses_stay_in_the_dead_letter_queue(sqs: Any) -> None:
    queue, dlq = _queues(sqs)
    for i in range(4):
        sqs.send_message(QueueUrl=dlq, MessageBody=str(i))
    result = redrive(RefusingSqs(sqs), queue)
    assert result.moved == 2 and result.left == 2
    assert len(_bodies(sqs, queue)) == 2
