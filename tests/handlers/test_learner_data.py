"""The learner's own data through the web function on moto: the download and the erasure."""

from __future__ import annotations

import base64
import io
import json
import re
import zipfile
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest

from backpack_migrate.badgr import Tokens
from backpack_migrate.links import sign_link
from backpack_migrate.migration import request_migration, store_tokens
from backpack_migrate.openbadges import Verifier
from backpack_migrate.services import Services
from tests.events import FakeContext, http_event, s3_put_event, sqs_event
from tests.fakes import ScriptedBadgr
from tests.handlers.conftest import drain, load_handler, sent_emails
from tests.unit.badges import baked, fetcher, hosted_assertion, issuer_documents, make_export

pytestmark = pytest.mark.handlers

EMAIL = "erin@example.org"
OTHER = "olga@example.org"


def _files(email: str) -> dict[str, bytes]:
    assertions = [hosted_assertion(f"{email[:4]}{n}", email) for n in (1, 2)]
    return {
        f"{email[:4]}/one.png": baked(assertions[0]),
        f"{email[:4]}/two.png": baked(assertions[1], hosted=False),
        f"{email[:4]}/broken.png": b"not an image at all",
    }


def _serve(aws: Services) -> None:
    served = issuer_documents([f"{e[:4]}{n}" for e in (EMAIL, OTHER) for n in (1, 2)])
    for email in (EMAIL, OTHER):
        for n in (1, 2):
            assertion = hosted_assertion(f"{email[:4]}{n}", email)
            served[assertion["id"]] = (200, json.dumps(assertion).encode(), "application/json")
    aws._verifier = Verifier(fetcher(served))
    aws._badgr = ScriptedBadgr()


def _upload(data: bytes, key: str) -> dict[str, Any]:
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.put_object(Bucket="exports-bucket", Key=key, Body=data)
    head = s3.head_object(Bucket="exports-bucket", Key=key)
    return s3_put_event("exports-bucket", key, head["ETag"], len(data), head.get("VersionId"))


def _run(aws: Services, function: str, queue_url: str) -> None:
    """Hand every job on a queue to its function (an empty queue makes no event)."""
    jobs = drain(aws, queue_url)
    if jobs:
        assert load_handler(function).handler(sqs_event(jobs), FakeContext()) == {"batchItemFailures": []}


def _read(aws: Services, event: dict[str, Any]) -> list[dict[str, Any]]:
    """Run intake, chunk, verify and notify for an upload; returns the chunk jobs it made."""
    load_handler("intake").handler(event, FakeContext())
    chunk_jobs = drain(aws, aws.settings.chunk_queue_url)
    assert load_handler("chunk").handler(sqs_event(chunk_jobs), FakeContext()) == {"batchItemFailures": []}
    _run(aws, "verify", aws.settings.verify_queue_url)
    _run(aws, "notify", aws.settings.notify_queue_url)
    return chunk_jobs


def _export() -> bytes:
    return make_export({EMAIL: _files(EMAIL), OTHER: _files(OTHER)})


def _token(aws: Services, email: str) -> str:
    learner = aws.store.get_learner(aws.learner_id(email))
    assert learner is not None
    return sign_link(aws.link_secret(), learner.learner_id, learner.export_id, 3600)


def _web(method: str, path: str, route: str, token: str, **kwargs: Any) -> dict[str, Any]:
    event = http_event(method, path, route, {"token": token}, **kwargs)
    return load_handler("web").handler(event, FakeContext())


def _zip_of(answer: dict[str, Any]) -> zipfile.ZipFile:
    assert answer["statusCode"] == 200, answer
    assert answer["headers"]["Content-Type"] == "application/zip"
    assert answer["isBase64Encoded"] is True
    return zipfile.ZipFile(io.BytesIO(base64.b64decode(answer["body"])))


def _check_download(archive: zipfile.ZipFile, email: str) -> None:
    files = _files(email)
    names = set(archive.namelist())
    # Every image exactly as it was in the export, byte for byte, and nothing of anyone else.
    images = {n for n in names if n.startswith("badges/")}
    assert {f"badges/{name.rsplit('/', 1)[-1]}": data for name, data in files.items()} == {
        n: archive.read(n) for n in images
    }
    assert names == images | {"badges.json", "index.html"}
    listed = json.loads(archive.read("badges.json"))["badges"]
    assert sorted(b["file"] for b in listed) == sorted(files)
    by_file = {b["file"]: b for b in listed}
    one, two, broken = (by_file[f"{email[:4]}/{n}"] for n in ("one.png", "two.png", "broken.png"))
    assert one["assertion"] == hosted_assertion(f"{email[:4]}1", email)["id"]  # baked as a URL
    assert two["assertion"]["id"] == hosted_assertion(f"{email[:4]}2", email)["id"]  # baked JSON
    assert one["verdict"]["valid"] is True and one["outcome"]["state"] == "verified"
    assert broken["assertion"] is None and broken["outcome"]["state"] == "unreadable"
    index = archive.read("index.html").decode()
    assert "<script" not in index and "http" not in index.replace("https://w3id", "")
    assert index.count("<li>") == 3 and "src='badges/one.png'" in index


def test_the_download_holds_exactly_the_learners_badges_byte_for_byte(aws: Services) -> None:
    _serve(aws)
    _read(aws, _upload(_export(), "exports/one.zip"))
    token = _token(aws, EMAIL)
    answer = _web("GET", f"/l/{token}/download", "/l/{token}/download", token)
    assert answer["headers"]["Content-Disposition"].startswith("attachment;")
    _check_download(_zip_of(answer), EMAIL)
    # A forged link gets the error page, no ZIP.
    forged = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    refused = _web("GET", f"/l/{forged}/download", "/l/{token}/download", forged)
    assert refused["statusCode"] == 403 and refused["headers"]["Content-Type"].startswith("text/html")


def test_a_download_too_big_to_answer_goes_through_a_short_lived_encrypted_object(aws: Services) -> None:
    _serve(aws)
    _read(aws, _upload(_export(), "exports/one.zip"))
    aws.settings = aws.settings.model_copy(update={"download_inline_bytes": 0})
    token = _token(aws, EMAIL)
    answer = _web("GET", f"/l/{token}/download", "/l/{token}/download", token)
    assert answer["statusCode"] == 303
    url = urlsplit(answer["headers"]["Location"])
    assert "X-Amz-Expires=300" in url.query and "X-Amz-Signature=" in url.query
    key = url.path.split("/", 2)[2] if url.path.startswith("/exports-bucket/") else url.path.lstrip("/")
    assert key.startswith("downloads/")
    stored = boto3.client("s3", region_name="us-east-1").get_object(Bucket="exports-bucket", Key=key)
    assert stored["ServerSideEncryption"] == "aws:kms"
    _check_download(zipfile.ZipFile(io.BytesIO(stored["Body"].read())), EMAIL)


def _items_of(table: str) -> list[dict[str, Any]]:
    client = boto3.resource("dynamodb", region_name="us-east-1").Table(table)
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {}
    while True:
        page = client.scan(**kwargs)
        items += page["Items"]
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def test_erasure_leaves_nothing_of_the_learner_and_a_replay_brings_nothing_back(aws: Services) -> None:
    _serve(aws)
    chunk_jobs = _read(aws, _upload(_export(), "exports/one.zip"))
    learner_id = aws.learner_id(EMAIL)
    token = _token(aws, EMAIL)
    # The learner moved their badges: tokens, a request, imports and a summary are on record.
    store_tokens(
        aws, learner_id, Tokens(access_token="a", refresh_token="r", expires_at=0, scope="rw:backpack")
    )
    request_migration(aws, learner_id)
    _run(aws, "migrate", aws.settings.migrate_queue_url)
    _run(aws, "notify", aws.settings.notify_queue_url)
    emails_before = len(sent_emails())
    idempotency = [i for i in _items_of("idempotency") if "status" in i]
    assert len(idempotency) >= 4  # invitation, summary, two imports

    page = _web("GET", f"/l/{token}/erase", "/l/{token}/erase", token)
    assert page["statusCode"] == 200 and "Erase my data now" in page["body"]
    assert "expires, by" in page["body"]  # the export's own bytes, and when they go
    cookie = page["cookies"][0].split(";")[0]
    csrf = re.search(r"name='csrf' value='([^']+)'", page["body"]).group(1)  # type: ignore[union-attr]
    # A visit on another page made a second session; erasure must take that one too.
    _web("GET", f"/l/{token}", "/l/{token}", token)

    def post(body: str, cookies: list[str] | None) -> dict[str, Any]:
        return _web("POST", f"/l/{token}/erase", "/l/{token}/erase", token, cookies=cookies, body=body)

    assert post("csrf=wrong", [cookie])["statusCode"] == 403
    assert post(f"csrf={csrf}", None)["statusCode"] == 403
    assert aws.store.get_learner(learner_id) is not None  # nothing erased without the form
    done = post(f"csrf={csrf}", [cookie])
    assert done["statusCode"] == 200 and "Your data has been erased" in done["body"]

    other_id = aws.learner_id(OTHER)
    for table in ("migration", "idempotency"):
        items = _items_of(table)
        leaked = [i for i in items if learner_id in json.dumps(i, default=str)]
        assert leaked == [], f"{table} still holds {leaked}"
    left = _items_of("migration")
    assert any(other_id in json.dumps(i, default=str) for i in left), "the other learner was erased too"
    (audit,) = [i for i in left if str(i["PK"]).startswith("AUDIT#")]
    assert (
        EMAIL not in json.dumps(audit, default=str)
        and json.loads(audit["data"])["action"] == "learner_erased"
    )
    assert [i for i in left if str(i["PK"]).startswith("ERASED#")], "no erasure mark"
    assert len([i for i in _items_of("idempotency") if "status" in i]) < len(idempotency)

    # The link now says the data is gone; a second POST changes nothing.
    again = _web("GET", f"/l/{token}", "/l/{token}", token)
    assert again["statusCode"] == 410 and "erased" in again["body"]

    # A replay of the export's chunk jobs, and the same export uploaded again under another key:
    # the learner is not recorded again and gets no email.
    assert load_handler("chunk").handler(sqs_event(chunk_jobs), FakeContext()) == {"batchItemFailures": []}
    _run(aws, "notify", aws.settings.notify_queue_url)
    _read(aws, _upload(_export(), "exports/again.zip"))
    assert aws.store.get_learner(learner_id) is None and aws.store.list_badges(learner_id) == []
    sent = sent_emails()[emails_before:]
    assert [e.destinations["ToAddresses"] for e in sent] == [[OTHER]]  # the other learner's new export


def test_unknown_paths_get_an_html_page_for_browsers_and_json_for_others(aws: Services) -> None:
    web = load_handler("web")
    browser = http_event(
        "GET", "/nowhere", "/{proxy+}", {"proxy": "nowhere"}, headers={"accept": "text/html"}
    )
    answer = web.handler(browser, FakeContext())
    assert answer["statusCode"] == 404 and answer["headers"]["Content-Type"].startswith("text/html")
    assert "<h1>Page not found</h1>" in answer["body"] and "mailto:" in answer["body"]
    api = web.handler(http_event("GET", "/nowhere", "/{proxy+}", {"proxy": "nowhere"}), FakeContext())
    assert api["statusCode"] == 404 and json.loads(api["body"]) == {"message": "Not Found"}
