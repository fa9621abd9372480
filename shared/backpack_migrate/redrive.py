"""Moving dead-lettered jobs back to the queue they came from, once the cause is mended.

A job is sent to its queue before it is deleted from the dead-letter queue, so a crash between
the two leaves a copy in both places, never in neither; every job of this service is safe to run
twice (state changes are conditional and side effects idempotent).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .queues import jobs_held

# The queues an operator can name, by their short names and their CloudFormation ids.
QUEUES = {
    "chunk": "ChunkQueue",
    "verify": "VerifyQueue",
    "notify": "NotifyQueue",
    "migrate": "MigrateQueue",
}


class RedriveError(ValueError):
    """The queue named cannot be redriven (unknown, or it has no dead-letter queue)."""


@dataclass(frozen=True)
class RedriveResult:
    queue_url: str
    dead_letter_url: str
    moved: int
    left: int  # still in the dead-letter queue (a limit was reached, or sends kept failing)


def dead_letter_queue_of(sqs: Any, queue_url: str) -> str:
    """The URL of the dead-letter queue named in the queue's redrive policy."""
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["RedrivePolicy"])
    policy = attributes.get("Attributes", {}).get("RedrivePolicy")
    if not policy:
        raise RedriveError(f"{queue_url} has no dead-letter queue")
    arn = json.loads(policy)["deadLetterTargetArn"]
    _, _, _, _region, account, name = arn.split(":", 5)
    return str(sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"])


def redrive(
    sqs: Any,
    queue_url: str,
    *,
    limit: int | None = None,
    on_moved: Callable[[int], None] | None = None,
) -> RedriveResult:
    """Move up to ``limit`` jobs (all by default) from the queue's dead-letter queue back to it."""
    dead_letter_url = dead_letter_queue_of(sqs, queue_url)
    moved = 0
    while limit is None or moved < limit:
        wanted = 10 if limit is None else min(10, limit - moved)
        answer = sqs.receive_message(
            QueueUrl=dead_letter_url,
            MaxNumberOfMessages=wanted,
            WaitTimeSeconds=1,
            # Long enough to send and delete the batch; a crash lets them reappear in the DLQ.
            VisibilityTimeout=60,
            MessageAttributeNames=["All"],
        )
        messages = answer.get("Messages", [])
        if not messages:
            break
        entries = [
            {
                "Id": str(i),
                "MessageBody": message["Body"],
                **(
                    {"MessageAttributes": message["MessageAttributes"]}
                    if message.get("MessageAttributes")
                    else {}
                ),
            }
            for i, message in enumerate(messages)
        ]
        sent = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
        delivered = {entry["Id"] for entry in sent.get("Successful", [])}
        done = [
            {"Id": str(i), "ReceiptHandle": message["ReceiptHandle"]}
            for i, message in enumerate(messages)
            if str(i) in delivered
        ]
        if done:
            sqs.delete_message_batch(QueueUrl=dead_letter_url, Entries=done)
        moved += len(done)
        if on_moved is not None and done:
            on_moved(len(done))
        if len(done) < len(messages):
            break  # SQS refused some sends: stop here, they wait in the dead-letter queue
    return RedriveResult(queue_url, dead_letter_url, moved, jobs_held(sqs, dead_letter_url))
