"""The local stack on its own: resources from the template, Lambda's event shapes and semantics.

Runs with tiny stand-in functions in a temporary project root, so it does not depend on the
real handlers.
"""

from __future__ import annotations

import base64
import json
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from infra.local.stack import LocalStack, load_template

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
# A second of SQS time lasts a millisecond: ChunkQueue's 5400 s visibility is 5.4 s here.
TIME_SCALE = 0.001

# Each stand-in records what it got in the module's EVENTS list.
FAKES = {
    "intake": """
        EVENTS = []
        FAIL_KEYS = set()

        def handler(event, context):
            EVENTS.append(event)
            key = event["Records"][0]["s3"]["object"]["key"]
            if key in FAIL_KEYS:
                raise RuntimeError("intake failed on purpose")
    """,
    "chunk": """
        EVENTS = []

        def handler(event, context):
            EVENTS.append(event)
            if any(r["body"] == "boom" for r in event["Records"]):
                raise RuntimeError("whole batch fails")
            return {"batchItemFailures": []}
    """,
    "verify": """
        EVENTS = []

        def handler(event, context):
            EVENTS.append(event)
            failures = []
            for record in event["Records"]:
                body = record["body"]
                first = record["attributes"]["ApproximateReceiveCount"] == "1"
                if body == "poison" or (body.startswith("flaky") and first):
                    failures.append({"itemIdentifier": record["messageId"]})
            return {"batchItemFailures": failures}
    """,
    "notify": """
        import os
        import threading
        import time

        import boto3

        EVENTS = []
        RUNNING = [0]
        PEAK = [0]
        LOCK = threading.Lock()

        def handler(event, context):
            with LOCK:
                EVENTS.append(event)
                RUNNING[0] += 1
                PEAK[0] = max(PEAK[0], RUNNING[0])
            try:
                ses = boto3.client("ses")
                for record in event["Records"]:
                    ses.send_email(
                        Source=os.environ["SES_SENDER"],
                        Destination={"ToAddresses": [record["body"]]},
                        Message={
                            "Subject": {"Data": "Your badges"},
                            "Body": {"Text": {"Data": os.environ["PUBLIC_BASE_URL"] + "/l/x"}},
                        },
                    )
                time.sleep(0.3)
            finally:
                with LOCK:
                    RUNNING[0] -= 1
            return {"batchItemFailures": []}
    """,
    "migrate": """
        import time

        import boto3

        EVENTS = []
        DELIVERIES = []  # (monotonic time, body, receive count)

        def handler(event, context):
            EVENTS.append(event)
            failures = []
            for record in event["Records"]:
                body, count = record["body"], int(record["attributes"]["ApproximateReceiveCount"])
                DELIVERIES.append((time.monotonic(), body, count))
                if count > 1:
                    continue
                if body.startswith("hold-"):  # back off as the migrate worker does
                    boto3.client("sqs").change_message_visibility(
                        QueueUrl=QUEUE_URL[0],
                        ReceiptHandle=record["receiptHandle"],
                        VisibilityTimeout=int(body.split("-")[1]),
                    )
                if body.startswith(("hold-", "drop")):
                    failures.append({"itemIdentifier": record["messageId"]})
            return {"batchItemFailures": failures}

        QUEUE_URL = [""]
    """,
    "tick": """
        EVENTS = []

        def handler(event, context):
            EVENTS.append(event)
    """,
    "reconcile": """
        EVENTS = []

        def handler(event, context):
            EVENTS.append(event)
            return {}
    """,
    "collections": """
        EVENTS = []

        def handler(event, context):
            EVENTS.append(event)
            return {"batchItemFailures": []}
    """,
    "web": """
        import base64
        import json

        EVENTS = []

        def handler(event, context):
            EVENTS.append(event)
            if event["routeKey"].endswith("/image"):
                return {
                    "statusCode": 200,
                    "headers": {"Content-Type": "image/png"},
                    "body": base64.b64encode(b"\\x89PNG-bytes").decode(),
                    "isBase64Encoded": True,
                }
            if event["routeKey"] == "GET /oauth/callback":
                raise RuntimeError("callback broke")
            return {
                "statusCode": 201,
                "headers": {"Content-Type": "application/json", "X-Seen": event["rawPath"]},
                "cookies": ["session=abc; HttpOnly; Path=/", "csrf=def; Path=/"],
                "body": json.dumps({"remaining": context.get_remaining_time_in_millis()}),
            }
    """,
    "legacy": """
        EVENTS = []

        def handler(event, context):
            EVENTS.append(event)
            return {"statusCode": 200, "headers": {"Content-Type": "text/plain"}, "body": event["rawPath"]}
    """,
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    root = tmp_path_factory.mktemp("project")
    # The template plus a function on a schedule (JSON is YAML too).
    template = load_template(ROOT / "template.yaml")
    template["Resources"]["TickFunction"] = {
        "Type": "AWS::Serverless::Function",
        "Properties": {
            "CodeUri": "functions/tick/",
            "Events": {"Tick": {"Type": "Schedule", "Properties": {"Schedule": "rate(1 minute)"}}},
        },
    }
    (root / "template.yaml").write_text(json.dumps(template), encoding="utf-8")
    for name, source in FAKES.items():
        (root / "functions" / name).mkdir(parents=True)
        (root / "functions" / name / "app.py").write_text(textwrap.dedent(source), encoding="utf-8")
    with LocalStack(
        root,
        badgr_api_url="http://127.0.0.1:9/api",
        badgr_authorize_url="http://127.0.0.1:9/authorize",
        badgr_client_secret="client-secret-value",
        env_overrides={"LEARNERS_PER_CHUNK": "7"},
        time_scale=TIME_SCALE,
    ) as running:
        yield running


def fake(name: str) -> Any:
    return sys.modules[f"fn_{name}_app"]


def test_resources_come_from_the_template(stack: LocalStack) -> None:
    dynamodb = boto3.client("dynamodb")
    table = dynamodb.describe_table(TableName=stack.resource("Table"))["Table"]
    assert {k["AttributeName"] for k in table["KeySchema"]} == {"PK", "SK"}
    assert [i["IndexName"] for i in table["GlobalSecondaryIndexes"]] == ["GSI1", "Open"]
    ttl = dynamodb.describe_time_to_live(TableName=stack.resource("Table"))["TimeToLiveDescription"]
    assert ttl["AttributeName"] == "expires_at"
    dynamodb.describe_table(TableName=stack.resource("IdempotencyTable"))

    s3 = boto3.client("s3")
    bucket = stack.resource("ExportsBucket")
    rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"

    secrets = boto3.client("secretsmanager")
    value = secrets.get_secret_value(SecretId=stack.resource("BadgrClientSecretSecret"))["SecretString"]
    assert value == "client-secret-value"
    assert len(secrets.get_secret_value(SecretId=stack.resource("LinkSigningSecret"))["SecretString"]) >= 32

    env = stack.env
    assert env["TABLE_NAME"] == stack.resource("Table")
    assert env["EXPORTS_BUCKET"] == bucket
    assert env["MIGRATE_QUEUE_URL"] == stack.resource("MigrateQueue")
    assert env["LINK_SECRET_ARN"] == stack.resource("LinkSigningSecret")
    assert env["KMS_KEY_ID"].startswith("arn:aws:kms:")
    # Durations run at the stack's pace, as SQS's and the schedules' do: 7200 s in the template.
    assert int(env["STALE_AFTER_SECONDS"]) == max(1, round(7200 * stack.time_scale))
    assert env["PUBLIC_BASE_URL"] == stack.url
    assert env["BADGR_API_URL"] == "http://127.0.0.1:9/api"
    assert env["ALLOW_LOOPBACK_FETCH"] == "true"
    assert env["LEARNERS_PER_CHUNK"] == "7"
    boto3.client("kms").encrypt(KeyId=env["KMS_KEY_ID"], Plaintext=b"x")

    from backpack_migrate.config import Settings, get_settings

    settings = get_settings()
    assert settings.table_name == stack.resource("Table")
    assert settings.learners_per_chunk == 7
    assert settings.allow_loopback_fetch is True
    aliases = {f.alias for f in Settings.model_fields.values()}
    assert aliases <= set(env), aliases - set(env)


def test_s3_upload_reaches_intake_with_a_real_event(stack: LocalStack) -> None:
    from aws_lambda_powertools.utilities.parser.models import S3Model

    bucket = stack.resource("ExportsBucket")
    s3 = boto3.client("s3")
    stack.wait_idle(20)
    before = len(fake("intake").EVENTS)  # the stack is shared by this module's tests
    s3.put_object(Bucket=bucket, Key="exports/spring term.zip", Body=b"PK-zip")
    s3.put_object(Bucket=bucket, Key="exports/notes.txt", Body=b"ignored")
    s3.put_object(Bucket=bucket, Key="elsewhere/x.zip", Body=b"ignored")
    stack.wait_idle(20)
    new_events = fake("intake").EVENTS[before:]
    events = [e for e in new_events if "spring" in e["Records"][0]["s3"]["object"]["key"]]
    assert len(events) == 1
    record = events[0]["Records"][0]
    S3Model.model_validate(events[0])
    assert record["eventSource"] == "aws:s3"
    assert record["eventName"] == "ObjectCreated:Put"
    assert record["s3"]["bucket"]["name"] == bucket
    assert record["s3"]["object"]["key"] == "exports/spring+term.zip"
    assert record["s3"]["object"]["size"] == 6
    assert record["s3"]["object"]["versionId"]  # the bucket is versioned, as the template says
    assert {"userIdentity", "requestParameters", "responseElements"} <= set(record)
    keys = {e["Records"][0]["s3"]["object"]["key"] for e in new_events}
    assert keys == {"exports/spring+term.zip"}

    # The same event again, on demand (duplicate delivery).
    stack.invoke_s3_event(bucket, "exports/spring term.zip")
    stack.invoke_s3_event(bucket, "exports/spring term.zip")
    assert len(fake("intake").EVENTS) == before + 3


def test_every_upload_is_one_event_and_the_buckets_are_never_listed(stack: LocalStack) -> None:
    """S3 notifies once per stored object, a second upload of a key and a multipart upload
    included, and the stack learns of uploads without listing the buckets (a listing made moto
    copy every version's body, and keep the copies)."""
    from infra.local import aws_calls

    bucket = stack.resource("ExportsBucket")
    s3 = boto3.client("s3")
    stack.wait_idle(20)
    before = len(fake("intake").EVENTS)
    operations: list[str] = []

    def seen(service: str, operation: str, params: dict[str, Any]) -> None:
        operations.append(f"{service}:{operation}")

    aws_calls.add_hook(seen, everywhere=True)
    try:
        s3.put_object(Bucket=bucket, Key="exports/again.zip", Body=b"first")
        stack.wait_idle(20)
        s3.put_object(Bucket=bucket, Key="exports/again.zip", Body=b"second")
        upload = s3.create_multipart_upload(Bucket=bucket, Key="exports/parts.zip")
        part = s3.upload_part(
            Bucket=bucket, Key="exports/parts.zip", UploadId=upload["UploadId"], PartNumber=1, Body=b"p" * 100
        )
        s3.complete_multipart_upload(
            Bucket=bucket,
            Key="exports/parts.zip",
            UploadId=upload["UploadId"],
            MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]},
        )
        stack.wait_idle(20)
    finally:
        aws_calls.remove_hook(seen)
    objects = [
        (e["Records"][0]["s3"]["object"]["key"], e["Records"][0]["s3"]["object"]["size"])
        for e in fake("intake").EVENTS[before:]
    ]
    assert sorted(objects) == [("exports/again.zip", 5), ("exports/again.zip", 6), ("exports/parts.zip", 100)]
    assert not [op for op in operations if op.startswith("s3:List")], operations


def test_failed_intake_is_retried_twice_then_dead_lettered(stack: LocalStack) -> None:
    bucket = stack.resource("ExportsBucket")
    fake("intake").FAIL_KEYS.add("exports/bad.zip")
    before = len(fake("intake").EVENTS)
    boto3.client("s3").put_object(Bucket=bucket, Key="exports/bad.zip", Body=b"bad")
    stack.wait_idle(20)
    attempts = [
        e
        for e in fake("intake").EVENTS[before:]
        if e["Records"][0]["s3"]["object"]["key"] == "exports/bad.zip"
    ]
    assert len(attempts) == 3
    dead = stack.dlq_messages("IntakeDeadLetterQueue")
    assert [json.loads(m["Body"])["Records"][0]["s3"]["object"]["key"] for m in dead] == ["exports/bad.zip"]


def test_sqs_batches_partial_failures_and_dead_letters(stack: LocalStack) -> None:
    from aws_lambda_powertools.utilities.parser.models import SqsModel

    sqs = boto3.client("sqs")
    url = stack.resource("VerifyQueue")
    bodies = [f"ok-{i}" for i in range(20)] + ["flaky-1", "flaky-2", "poison"]
    for start in range(0, len(bodies), 10):
        sqs.send_message_batch(
            QueueUrl=url,
            Entries=[
                {
                    "Id": str(i),
                    "MessageBody": body,
                    "MessageAttributes": {"kind": {"DataType": "String", "StringValue": "test"}},
                }
                for i, body in enumerate(bodies[start : start + 10])
            ],
        )
    stack.wait_idle(30)
    events = fake("verify").EVENTS
    assert events and all(1 <= len(e["Records"]) <= 10 for e in events)
    SqsModel.model_validate(events[0])
    record = events[0]["Records"][0]
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"].endswith(url.rsplit("/", 1)[1])
    assert record["messageAttributes"]["kind"]["stringValue"] == "test"
    assert {
        "ApproximateReceiveCount",
        "SentTimestamp",
        "SenderId",
        "ApproximateFirstReceiveTimestamp",
    } <= set(record["attributes"])

    seen: dict[str, int] = {}
    for event in events:
        for rec in event["Records"]:
            seen[rec["body"]] = seen.get(rec["body"], 0) + 1
    assert all(seen[f"ok-{i}"] == 1 for i in range(20)), seen  # succeeded ones were deleted
    assert seen["flaky-1"] == seen["flaky-2"] == 2  # failed once, redelivered, then done
    assert seen["poison"] == 3  # maxReceiveCount of VerifyQueue
    assert [m["Body"] for m in stack.dlq_messages("VerifyQueue")] == ["poison"]


def test_a_raising_handler_fails_the_whole_batch(stack: LocalStack) -> None:
    sqs = boto3.client("sqs")
    sqs.send_message(QueueUrl=stack.resource("ChunkQueue"), MessageBody="boom")
    sqs.send_message(QueueUrl=stack.resource("ChunkQueue"), MessageBody="fine")
    stack.wait_idle(30)
    bodies = [r["body"] for e in fake("chunk").EVENTS for r in e["Records"]]
    assert bodies.count("boom") == 3
    assert bodies.count("fine") == 1
    assert all(len(e["Records"]) == 1 for e in fake("chunk").EVENTS)  # BatchSize 1
    assert [m["Body"] for m in stack.dlq_messages("ChunkQueue")] == ["boom"]


def test_notify_sends_emails_with_at_most_two_at_once(stack: LocalStack) -> None:
    sqs = boto3.client("sqs")
    url = stack.resource("NotifyQueue")
    for i in range(30):
        sqs.send_message(QueueUrl=url, MessageBody=f"learner{i}@example.com")
    stack.wait_idle(30)
    assert fake("notify").PEAK[0] <= 2
    emails = stack.sent_emails()
    assert sorted(e["to"][0] for e in emails) == sorted(f"learner{i}@example.com" for i in range(30))
    assert emails[0]["source"] == stack.env["SES_SENDER"]
    assert emails[0]["subject"] == "Your badges"
    assert stack.url in emails[0]["body"]


def _request(
    url: str, *, data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, Any, bytes]:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def test_http_api_v2_events_and_responses(stack: LocalStack) -> None:
    from aws_lambda_powertools.utilities.parser.models import APIGatewayProxyEventV2Model

    status, headers, body = _request(
        f"{stack.url}/l/tok123/status.json?a=1&a=2&b=x%20y",
        headers={"Cookie": "session=s1; lang=en", "X-Custom": "Yes", "User-Agent": "pytest"},
    )
    assert status == 201
    assert headers["X-Seen"] == "/l/tok123/status.json"
    assert headers.get_all("Set-Cookie") == ["session=abc; HttpOnly; Path=/", "csrf=def; Path=/"]
    assert 0 < json.loads(body)["remaining"] <= 29_000

    event = fake("web").EVENTS[-1]
    APIGatewayProxyEventV2Model.model_validate(event)
    assert event["version"] == "2.0"
    assert event["routeKey"] == "GET /l/{token}/status.json"
    assert event["rawPath"] == "/l/tok123/status.json"
    assert event["rawQueryString"] == "a=1&a=2&b=x%20y"
    assert event["queryStringParameters"] == {"a": "1,2", "b": "x y"}
    assert event["pathParameters"] == {"token": "tok123"}
    assert event["cookies"] == ["session=s1", "lang=en"]
    assert event["headers"]["x-custom"] == "Yes"
    assert "cookie" not in event["headers"]
    context = event["requestContext"]
    assert context["http"] == {
        "method": "GET",
        "path": "/l/tok123/status.json",
        "protocol": "HTTP/1.1",
        "sourceIp": "127.0.0.1",
        "userAgent": "pytest",
    }
    assert context["stage"] == "$default"
    assert context["routeKey"] == event["routeKey"]
    assert isinstance(context["timeEpoch"], int)

    # Two path parameters, a binary response.
    status, headers, body = _request(f"{stack.url}/l/tok123/badges/b%201/image")
    assert (status, headers["Content-Type"], body) == (200, "image/png", b"\x89PNG-bytes")
    assert fake("web").EVENTS[-1]["pathParameters"] == {"token": "tok123", "badge_id": "b 1"}

    # A form post arrives base64-encoded, as HTTP APIs deliver it.
    status, _, _ = _request(
        f"{stack.url}/l/tok123/connect",
        data=b"csrf=abc&go=1",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    event = fake("web").EVENTS[-1]
    assert event["routeKey"] == "POST /l/{token}/connect"
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == b"csrf=abc&go=1"

    _request(f"{stack.url}/l/tok123/connect", data=b'{"a": 1}', headers={"Content-Type": "application/json"})
    assert fake("web").EVENTS[-1]["body"] == '{"a": 1}'
    assert fake("web").EVENTS[-1]["isBase64Encoded"] is False

    # A path or method no other route takes goes to the catch-all route (the web function's
    # 404 page), greedy path parameter included; a failing function: 500.
    status, _, body = _request(f"{stack.url}/nowhere/at/all")
    assert status == 201
    assert fake("web").EVENTS[-1]["routeKey"] == "ANY /{proxy+}"
    assert fake("web").EVENTS[-1]["pathParameters"] == {"proxy": "nowhere/at/all"}
    status, _, body = _request(
        f"{stack.url}/oauth/callback", data=b"x", headers={"Content-Type": "text/plain"}
    )
    assert fake("web").EVENTS[-1]["routeKey"] == "ANY /{proxy+}"  # POST is not a route of its own
    status, _, body = _request(f"{stack.url}/oauth/callback?code=1")
    assert (status, json.loads(body)) == (500, {"message": "Internal Server Error"})


def test_an_idle_stack_is_seen_idle(stack: LocalStack) -> None:
    stack.wait_idle(5)  # raises TimeoutError while anything is still queued or running


def test_visibility_is_sqs_own_and_a_backoff_the_function_sets_is_honoured(stack: LocalStack) -> None:
    """A failed message comes back when its visibility ends, not sooner; one the function held
    back with ChangeMessageVisibility comes back after that time (both scaled)."""
    url = stack.resource("MigrateQueue")
    fake("migrate").QUEUE_URL[0] = url
    visibility = int(
        boto3.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])[
            "Attributes"
        ]["VisibilityTimeout"]
    )
    held_for = 4 * visibility  # longer than the queue's own visibility: only the function's call explains it
    sqs = boto3.client("sqs")
    sqs.send_message(QueueUrl=url, MessageBody="drop")
    sqs.send_message(QueueUrl=url, MessageBody=f"hold-{held_for}")
    stack.wait_idle(60)
    deliveries = fake("migrate").DELIVERIES

    def gap(body: str) -> float:
        times = [t for t, b, _ in deliveries if b == body]
        assert len(times) == 2, deliveries
        return times[1] - times[0]

    assert gap("drop") >= visibility * TIME_SCALE * 0.95
    assert gap(f"hold-{held_for}") >= held_for * TIME_SCALE * 0.95
    assert [c for _, b, c in deliveries if b == "drop"] == [1, 2]


def test_a_killed_invocation_leaves_its_batch_for_redelivery(stack: LocalStack) -> None:
    url = stack.resource("MigrateQueue")
    before = len(fake("migrate").DELIVERIES)
    stack.invoker.kill_policy = lambda function: 1 if function.logical_id == "MigrateFunction" else None
    try:
        fake("migrate").QUEUE_URL[0] = url
        boto3.client("sqs").send_message(QueueUrl=url, MessageBody="hold-1")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and stack.invoker.killed == 0:
            time.sleep(0.05)
    finally:
        stack.invoker.kill_policy = None
    stack.wait_idle(60)
    counts = [c for _, b, c in fake("migrate").DELIVERIES[before:] if b == "hold-1"]
    # Killed at its first AWS call (the visibility change): delivered again, and then done.
    assert counts == [1, 2] and stack.invoker.killed >= 1


def test_functions_on_a_schedule_run_at_their_scaled_rate(stack: LocalStack) -> None:
    events = fake("tick").EVENTS
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(events) < 3:
        time.sleep(0.05)
    assert len(events) >= 3  # rate(1 minute) at a thousandth: every 60 ms
    event = events[0]
    assert event["detail-type"] == "Scheduled Event" and event["source"] == "aws.events"
    assert event["resources"][0].startswith("arn:aws:events:")


def test_ranged_reads_answer_as_s3_does_by_version_and_etag(stack: LocalStack) -> None:
    from botocore.exceptions import ClientError

    s3 = boto3.client("s3")
    bucket = stack.resource("ExportsBucket")
    first = s3.put_object(Bucket=bucket, Key="exports/ranges.bin", Body=bytes(range(256)) * 4)
    second = s3.put_object(Bucket=bucket, Key="exports/ranges.bin", Body=b"x" * 1024)
    answer = s3.get_object(
        Bucket=bucket, Key="exports/ranges.bin", Range="bytes=10-19", VersionId=first["VersionId"]
    )
    assert answer["Body"].read() == bytes(range(10, 20))
    assert answer["ContentRange"] == "bytes 10-19/1024" and answer["ContentLength"] == 10
    latest = s3.get_object(
        Bucket=bucket, Key="exports/ranges.bin", Range="bytes=1000-2000", IfMatch=second["ETag"]
    )
    assert latest["Body"].read() == b"x" * 24
    with pytest.raises(ClientError) as refused:
        s3.get_object(Bucket=bucket, Key="exports/ranges.bin", Range="bytes=0-9", IfMatch=first["ETag"])
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    with pytest.raises(ClientError):
        s3.get_object(Bucket=bucket, Key="exports/none.bin", Range="bytes=0-9")
