"""Handler tests: the real functions on in-process moto, fed the event shapes AWS sends."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from moto import mock_aws

from backpack_migrate.config import Settings
from backpack_migrate.services import Services, build_services, use_services

ROOT = Path(__file__).resolve().parents[2]


def load_handler(name: str) -> ModuleType:
    """Import functions/<name>/app.py under a name of its own, as Lambda would load it alone."""
    module_name = f"handler_under_test_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, ROOT / "functions" / name / "app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def _table(dynamodb: Any, name: str, keys: list[str], gsi: bool) -> None:
    schema = [{"AttributeName": keys[0], "KeyType": "HASH"}]
    if len(keys) > 1:
        schema.append({"AttributeName": keys[1], "KeyType": "RANGE"})
    names = keys + (["GSI1PK", "GSI1SK", "OPEN_PK", "OPEN_SK"] if gsi else [])
    extra: dict[str, Any] = {}
    if gsi:
        extra["GlobalSecondaryIndexes"] = [
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
        ]
    dynamodb.create_table(
        TableName=name,
        KeySchema=schema,
        AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n in names],
        BillingMode="PAY_PER_REQUEST",
        **extra,
    )


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Services]:
    with mock_aws():
        region = "us-east-1"
        dynamodb = boto3.client("dynamodb", region_name=region)
        _table(dynamodb, "migration", ["PK", "SK"], gsi=True)
        _table(dynamodb, "idempotency", ["id"], gsi=False)
        s3 = boto3.client("s3", region_name=region)
        s3.create_bucket(Bucket="exports-bucket")
        s3.put_bucket_versioning(Bucket="exports-bucket", VersioningConfiguration={"Status": "Enabled"})
        sqs = boto3.client("sqs", region_name=region)
        urls = {
            name: sqs.create_queue(QueueName=name)["QueueUrl"]
            for name in ("chunk", "verify", "notify", "migrate", "migrate-dlq")
        }
        key_id = boto3.client("kms", region_name=region).create_key()["KeyMetadata"]["KeyId"]
        secrets = boto3.client("secretsmanager", region_name=region)
        link = secrets.create_secret(Name="link", SecretString="l" * 48)["ARN"]
        learner_ids = secrets.create_secret(Name="learner-ids", SecretString="i" * 48)["ARN"]
        badgr = secrets.create_secret(Name="badgr", SecretString="client-secret")["ARN"]
        boto3.client("ses", region_name=region).verify_email_identity(EmailAddress="badges@example.org")
        settings = Settings.model_validate(
            {
                "TABLE_NAME": "migration",
                "IDEMPOTENCY_TABLE": "idempotency",
                "EXPORTS_BUCKET": "exports-bucket",
                "CHUNK_QUEUE_URL": urls["chunk"],
                "VERIFY_QUEUE_URL": urls["verify"],
                "NOTIFY_QUEUE_URL": urls["notify"],
                "MIGRATE_QUEUE_URL": urls["migrate"],
                "MIGRATE_DEAD_LETTER_QUEUE_URL": urls["migrate-dlq"],
                "KMS_KEY_ID": key_id,
                "LINK_SECRET_ARN": link,
                "LEARNER_ID_SECRET_ARN": learner_ids,
                "BADGR_CLIENT_SECRET_ARN": badgr,
                "BADGR_API_URL": "https://api.badgr.example",
                "BADGR_AUTHORIZE_URL": "https://badgr.example/auth/oauth2/authorize",
                "PUBLIC_BASE_URL": "https://badges.example.org",
                "SES_SENDER": "badges@example.org",
                "EMAILS_PER_SECOND": 1000,
            }
        )
        services = build_services(settings)
        use_services(services)
        try:
            yield services
        finally:
            use_services(None)


def drain(services: Services, queue_url: str) -> list[dict[str, Any]]:
    """Take every message off a queue, as bodies, with their receipt data."""
    import json

    sqs = boto3.client("sqs", region_name="us-east-1")
    taken = []
    while True:
        answer = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, AttributeNames=["All"])
        messages = answer.get("Messages", [])
        if not messages:
            return taken
        for message in messages:
            taken.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


def sent_emails() -> list[Any]:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ses.models import ses_backends

    return list(ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages)
