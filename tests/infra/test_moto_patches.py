"""The local stack's patches of moto answer as moto does, only without walking what they need not."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from boto3.dynamodb.conditions import Key
from moto import mock_aws

from infra.local.moto_dispatch import list_moto_modules_once
from infra.local.moto_locks import cheap_sqs_sends, query_by_key

pytestmark = pytest.mark.unit


@pytest.fixture
def table() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(
            TableName="t",
            KeySchema=[
                {"AttributeName": "PK", "KeyType": "HASH"},
                {"AttributeName": "SK", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": name, "AttributeType": "S"} for name in ("PK", "SK", "G", "GS")
            ],
            GlobalSecondaryIndexes=[
                {
                    "IndexName": "ByG",
                    "KeySchema": [
                        {"AttributeName": "G", "KeyType": "HASH"},
                        {"AttributeName": "GS", "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "ALL"},
                }
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        table = boto3.resource("dynamodb", region_name="us-east-1").Table("t")
        for p in range(5):
            for s in (3, 1, 2):
                table.put_item(Item={"PK": f"P{p}", "SK": f"S{s}", "G": f"G{s % 2}", "GS": f"{p}-{s}"})
        yield table


def _answers(table: Any) -> list[Any]:
    return [
        table.query(KeyConditionExpression=Key("PK").eq("P3"))["Items"],
        table.query(KeyConditionExpression=Key("PK").eq("P3") & Key("SK").gt("S1"), ScanIndexForward=False)[
            "Items"
        ],
        table.query(KeyConditionExpression=Key("PK").eq("nobody"))["Items"],
        table.query(IndexName="ByG", KeyConditionExpression=Key("G").eq("G1"))["Items"],
        table.query(KeyConditionExpression=Key("PK").eq("P1"), Limit=2)["LastEvaluatedKey"],
        table.scan()["Items"],
    ]


def test_queries_answer_as_before_the_patch(table: Any) -> None:
    before = _answers(table)
    query_by_key()
    list_moto_modules_once()
    assert _answers(table) == before
    assert [item["SK"] for item in before[0]] == ["S1", "S2", "S3"]


def test_sends_keep_queue_counts_and_fifo_deduplication() -> None:
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        cheap_sqs_sends()
        url = sqs.create_queue(QueueName="jobs")["QueueUrl"]
        sqs.send_message_batch(
            QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": f"m{i}"} for i in range(7)]
        )
        sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=2, VisibilityTimeout=60)
        counts = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        assert (counts["ApproximateNumberOfMessages"], counts["ApproximateNumberOfMessagesNotVisible"]) == (
            "5",
            "2",
        )
        fifo = sqs.create_queue(
            QueueName="jobs.fifo", Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"}
        )["QueueUrl"]
        for _ in range(2):
            sqs.send_message(QueueUrl=fifo, MessageBody="same", MessageGroupId="g")
        fifo_counts = sqs.get_queue_attributes(QueueUrl=fifo, AttributeNames=["ApproximateNumberOfMessages"])
        assert fifo_counts["Attributes"]["ApproximateNumberOfMessages"] == "1"
