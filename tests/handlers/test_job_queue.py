"""The job queue over SQS (moto): what the reconciler reads of a queue's depth."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from backpack_migrate.queues import SqsJobQueue

pytestmark = pytest.mark.handlers


def test_waiting_counts_ready_delayed_and_received_jobs() -> None:
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        url = sqs.create_queue(QueueName="migrate")["QueueUrl"]
        queue = SqsJobQueue(sqs)
        assert queue.waiting(url) == 0
        queue.send(url, [{"badge_id": str(i)} for i in range(3)])
        queue.send_later(url, [{"badge_id": "later"}], 600)
        assert len(queue.receive(url, 1)) == 1  # in flight: still the queue's until deleted
        assert queue.waiting(url) == 4
