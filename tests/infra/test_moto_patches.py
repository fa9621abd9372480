"""The local stack's patches of moto answer as moto does, only without walking what they need not."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from boto3.dynamodb.conditions import Key
from moto import mock_aws

from infra.local.moto_dispatch import list_moto_modules_once
from infra.local.moto_locks import cheap_sqs_attributes, query_by_key, serialise_sqs_receives
from infra.local.moto_memory import forget_model_instances

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
        cheap_sqs_attributes()
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


def test_receives_and_reads_of_a_long_queue_count_its_messages_only_when_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from moto.sqs.models import Queue, sqs_backends

    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        cheap_sqs_attributes()
        url = sqs.create_queue(QueueName="jobs", Attributes={"MessageRetentionPeriod": "60"})["QueueUrl"]
        for start in range(0, 200, 10):
            sqs.send_message_batch(
                QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": f"m{start + i}"} for i in range(10)]
            )
        counted = Queue.__dict__["approximate_number_of_messages_delayed"]
        walks: list[int] = []

        def counting(queue: Any) -> int:
            walks.append(1)
            return int(counted.fget(queue))

        monkeypatch.setattr(Queue, "approximate_number_of_messages_delayed", property(counting))
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60)
        assert (len(got["Messages"]), len(walks)) == (10, 0)
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "VisibilityTimeout"]
        counts = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
        assert counts == {
            "ApproximateNumberOfMessages": "190",
            "ApproximateNumberOfMessagesNotVisible": "10",
            "VisibilityTimeout": "30",
        }
        assert len(walks) == 1
        # A message older than the queue's retention period is still never received.
        queue = sqs_backends["123456789012"]["us-east-1"].queues["jobs"]
        for message in queue._messages:
            message.sent_timestamp -= 61_000
        assert "Messages" not in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)


def test_concurrent_receives_move_each_exhausted_message_to_the_dead_letter_queue_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from moto.sqs.models import Queue

    listed = Queue.__dict__["messages"]

    class Slowly(list):  # type: ignore[type-arg]
        def __iter__(self) -> Any:
            for message in super().__iter__():
                yield message
                time.sleep(0.001)  # lets another receive walk the queue meanwhile, as on the stack

    def slowly(queue: Any) -> Any:
        return Slowly(listed.fget(queue))

    monkeypatch.setattr(Queue, "messages", property(slowly))
    with mock_aws():
        serialise_sqs_receives()
        sqs = boto3.client("sqs", region_name="us-east-1")
        dlq = sqs.create_queue(QueueName="jobs-dlq")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 1})
        url = sqs.create_queue(QueueName="jobs", Attributes={"RedrivePolicy": policy})["QueueUrl"]
        for start in range(0, 300, 10):
            sqs.send_message_batch(
                QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": f"m{start + i}"} for i in range(10)]
            )
        for _ in range(30):  # each received once, and back in sight a second later ...
            sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=1)
        time.sleep(1.2)  # ... when the next receive moves it to the dead-letter queue

        def receive(_: int) -> int:
            got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0)
            return len(got.get("Messages", []))

        with ThreadPoolExecutor(8) as pool:
            assert sum(pool.map(receive, range(16))) == 0  # and no 500 from a receive
        bodies = []
        while batch := sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, VisibilityTimeout=60).get(
            "Messages"
        ):
            bodies += [m["Body"] for m in batch]
        assert sorted(bodies) == sorted(f"m{i}" for i in range(300))


def test_moto_keeps_no_object_it_no_longer_stores() -> None:
    """moto listed every model object it made (each item written, each message sent, each copy
    of an S3 version a listing made) and never let go: memory grew with the work done."""
    import gc
    import weakref

    from moto.dynamodb.models.dynamo_type import Item
    from moto.s3.models import FakeKey

    forget_model_instances()
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="moto-memory")
        s3.put_bucket_versioning(Bucket="moto-memory", VersioningConfiguration={"Status": "Enabled"})
        s3.put_object(Bucket="moto-memory", Key="k", Body=b"x" * 1000)
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        dynamodb.create_table(
            TableName="t",
            KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "PK", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        copies = []
        for n in range(20):
            s3.list_object_versions(Bucket="moto-memory")  # deep-copies each version, body included
            dynamodb.put_item(TableName="t", Item={"PK": {"S": "one"}, "n": {"N": str(n)}})
        copies = [weakref.ref(o) for o in gc.get_objects() if isinstance(o, FakeKey | Item)]
        gc.collect()
        alive = [ref() for ref in copies if ref() is not None]
        # What the stores hold: the one object version and the one item.
        assert sum(isinstance(o, FakeKey) for o in alive) == 1
        assert sum(isinstance(o, Item) for o in alive) == 1
        assert FakeKey.instances_tracked == [] and Item.instances_tracked == []
