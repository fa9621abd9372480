"""Sending jobs to the service's queues, ten at a time, without losing any."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

SQS_BATCH = 10
MAX_DELAY_SECONDS = 900


class JobQueue(Protocol):
    def send(self, queue_url: str, jobs: Iterable[dict[str, Any]]) -> int: ...
    def delay(self, queue_url: str, receipt_handle: str, seconds: int) -> None: ...
    def send_later(self, queue_url: str, jobs: Iterable[dict[str, Any]], seconds: float) -> int: ...
    def receive(self, queue_url: str, most: int) -> list[tuple[dict[str, Any], str]]: ...
    def waiting(self, queue_url: str) -> int: ...


_HELD = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesDelayed",
    "ApproximateNumberOfMessagesNotVisible",
)


def jobs_held(sqs: Any, queue_url: str) -> int:
    """About how many jobs the queue holds: ready, delayed, or received and not yet deleted."""
    answer = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=list(_HELD))
    return sum(int(answer.get("Attributes", {}).get(name, 0)) for name in _HELD)


class SqsJobQueue:
    def __init__(self, sqs: Any) -> None:
        self._sqs = sqs

    def send(self, queue_url: str, jobs: Iterable[dict[str, Any]]) -> int:
        return self.send_later(queue_url, jobs, 0)

    def send_later(self, queue_url: str, jobs: Iterable[dict[str, Any]], seconds: float) -> int:
        """Send jobs that SQS delivers only after ``seconds`` (at most 15 minutes, as SQS allows)."""
        delay = min(MAX_DELAY_SECONDS, max(0, math.ceil(seconds)))
        batch: list[dict[str, Any]] = []
        sent = 0
        for job in jobs:
            batch.append(job)
            if len(batch) == SQS_BATCH:
                sent += self._send_batch(queue_url, batch, delay)
                batch = []
        if batch:
            sent += self._send_batch(queue_url, batch, delay)
        return sent

    def delay(self, queue_url: str, receipt_handle: str, seconds: int) -> None:
        """Hold a failed job back before SQS delivers it again (backoff)."""
        self._sqs.change_message_visibility(
            QueueUrl=queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=seconds
        )

    def receive(self, queue_url: str, most: int) -> list[tuple[dict[str, Any], str]]:
        """Up to ``most`` (at most 10) jobs with their receipt handles, held for a minute."""
        answer = self._sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=min(10, most), VisibilityTimeout=60, WaitTimeSeconds=0
        )
        jobs = []
        for message in answer.get("Messages", []):
            try:
                job = json.loads(message["Body"])
            except ValueError:
                job = {}
            jobs.append((job if isinstance(job, dict) else {}, str(message["ReceiptHandle"])))
        return jobs

    def waiting(self, queue_url: str) -> int:
        return jobs_held(self._sqs, queue_url)

    def _send_batch(self, queue_url: str, jobs: Sequence[dict[str, Any]], delay: int = 0) -> int:
        entries = {str(i): json.dumps(job, separators=(",", ":")) for i, job in enumerate(jobs)}
        for _ in range(5):
            answer = self._sqs.send_message_batch(
                QueueUrl=queue_url,
                Entries=[
                    {"Id": entry_id, "MessageBody": body, **({"DelaySeconds": delay} if delay else {})}
                    for entry_id, body in entries.items()
                ],
            )
            failed = {entry["Id"] for entry in answer.get("Failed", [])}
            entries = {entry_id: body for entry_id, body in entries.items() if entry_id in failed}
            if not entries:
                return len(jobs)
        raise RuntimeError(f"SQS refused {len(entries)} messages after retries")


# What AWS answers when it cannot serve a call now, though the same call may work a moment later.
_TRANSIENT_AWS_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "RequestLimitExceeded",
        "RequestThrottled",
        "TransactionConflictException",
        "InternalServerError",
        "InternalFailure",
        "ServiceUnavailable",
    }
)


def is_transient_aws_error(error: BaseException) -> bool:
    """A DynamoDB or SQS call refused for now (throttled, or a 5xx), after the SDK's own retries."""
    from botocore.exceptions import ClientError

    if not isinstance(error, ClientError):
        return False
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    return error.response.get("Error", {}).get("Code") in _TRANSIENT_AWS_CODES or status >= 500
