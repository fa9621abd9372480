"""Each function on moto with real event shapes: at-least-once delivery must change nothing."""

from __future__ import annotations

import json
import re
from typing import Any

import boto3
import pytest

from backpack_migrate.domain import BadgeState
from backpack_migrate.links import sign_link
from backpack_migrate.openbadges import Verifier
from backpack_migrate.services import Services, build_services, get_services, use_services
from tests.events import FakeContext, http_event, s3_put_event, sqs_event
from tests.fakes import ScriptedBadgr
from tests.handlers.conftest import drain, load_handler, sent_emails
from tests.unit.badges import baked, fetcher, hosted_assertion, issuer_documents, make_export

pytestmark = pytest.mark.handlers

EMAIL = "dana@example.org"


def _upload(aws: Services, data: bytes, key: str = "exports/backpack.zip") -> dict[str, Any]:
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.put_object(Bucket="exports-bucket", Key=key, Body=data)
    head = s3.head_object(Bucket="exports-bucket", Key=key)
    return s3_put_event("exports-bucket", key, head["ETag"], len(data), head.get("VersionId"))


def _world(aws: Services) -> dict[str, Any]:
    assertions = [hosted_assertion("h1", EMAIL), hosted_assertion("h2", EMAIL)]
    served = issuer_documents(["h1", "h2"])
    for assertion in assertions:
        served[assertion["id"]] = (200, json.dumps(assertion).encode(), "application/json")
    aws._verifier = Verifier(fetcher(served))
    aws._badgr = ScriptedBadgr()
    data = make_export({EMAIL: {"h1.png": baked(assertions[0]), "h2.svg.png": baked(assertions[1])}})
    return _upload(aws, data)


def _run_intake(aws: Services, event: dict[str, Any]) -> None:
    intake, chunk, verify = load_handler("intake"), load_handler("chunk"), load_handler("verify")
    intake.handler(event, FakeContext())
    chunk_jobs = drain(aws, aws.settings.chunk_queue_url)
    assert chunk.handler(sqs_event(chunk_jobs), FakeContext()) == {"batchItemFailures": []}
    verify.handler(sqs_event(drain(aws, aws.settings.verify_queue_url)), FakeContext())


def test_the_same_s3_event_twice_reads_the_export_once(aws: Services) -> None:
    event = _world(aws)
    intake = load_handler("intake")
    first = intake.handler(event, FakeContext())
    second = intake.handler(event, FakeContext())
    assert first == second
    assert len(drain(aws, aws.settings.chunk_queue_url)) == 1


def test_an_export_replaced_under_its_key_is_still_read_from_the_version_its_event_named(
    aws: Services,
) -> None:
    first = _world(aws)
    intake, chunk = load_handler("intake"), load_handler("chunk")
    intake.handler(first, FakeContext())
    # A corrected export lands under the same key before the first one's chunks ran.
    other = "erin@example.org"
    second = _upload(aws, make_export({other: {"e.png": baked(hosted_assertion("h1", other))}}))
    versions = [event["Records"][0]["s3"]["object"]["versionId"] for event in (first, second)]
    assert versions[0] != versions[1]
    assert chunk.handler(sqs_event(drain(aws, aws.settings.chunk_queue_url)), FakeContext()) == {
        "batchItemFailures": []
    }
    (export,) = aws.store.list_exports()
    learner = next(iter(aws.store.iter_export_learners(export.export_id)))
    badges = aws.store.list_badges(learner.learner_id)
    assert len(badges) == 2
    assert [b.problem for b in badges] == [None, None]
    assert {b.state for b in badges} == {BadgeState.EXTRACTED}
    # The new version is an export of its own.
    _run_intake(aws, second)
    assert len(aws.store.list_exports()) == 2


def test_the_same_notify_message_twice_sends_one_email(aws: Services) -> None:
    _run_intake(aws, _world(aws))
    notices = drain(aws, aws.settings.notify_queue_url)
    assert len(notices) == 1
    notify = load_handler("notify")
    notify.handler(sqs_event(notices), FakeContext())
    notify.handler(sqs_event(notices), FakeContext())
    emails = sent_emails()
    assert len(emails) == 1
    assert emails[0].destinations["ToAddresses"] == [EMAIL]
    assert "https://badges.example.org/l/" in emails[0].body


def _read_learner(aws: Services) -> str:
    """Upload the one-learner export, run intake, chunk and verify; that learner's id."""
    _run_intake(aws, _world(aws))
    export_id = next(iter(aws.store.list_exports())).export_id
    return next(iter(aws.store.iter_export_learners(export_id))).learner_id


def _connected_learner(aws: Services) -> tuple[str, list[dict[str, Any]]]:
    """A learner whose export was read and checked, who connected Badgr: its import jobs."""
    from backpack_migrate.badgr import Tokens
    from backpack_migrate.migration import request_migration, store_tokens

    learner_id = _read_learner(aws)
    store_tokens(
        aws, learner_id, Tokens(access_token="a", refresh_token="r", expires_at=0, scope="rw:backpack")
    )
    request_migration(aws, learner_id)
    return learner_id, drain(aws, aws.settings.migrate_queue_url)


def _worker_dies_once_after_badgr(aws: Services, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The first time a badge is to be recorded as imported, the worker dies instead: Badgr has
    the badge, our record does not. Returns the ids of the badges it happened to (one)."""
    real_transition = aws.store.transition
    crashes: list[str] = []

    def dies_once(badge: Any, expected: Any, **kwargs: Any) -> bool:
        if badge.state == BadgeState.IMPORTED and not crashes:
            crashes.append(badge.badge_id)
            raise RuntimeError("the worker died after Badgr took the badge")
        return real_transition(badge, expected, **kwargs)

    monkeypatch.setattr(aws.store, "transition", dies_once)
    return crashes


def test_the_same_import_message_twice_imports_once(aws: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    learner_id, jobs = _connected_learner(aws)
    _worker_dies_once_after_badgr(aws, monkeypatch)
    migrate = load_handler("migrate")
    first = migrate.handler(sqs_event(jobs), FakeContext())
    assert len(first["batchItemFailures"]) == 1
    assert migrate.handler(sqs_event(jobs, receive_count=2), FakeContext()) == {"batchItemFailures": []}
    assert len(aws._badgr.imports) == 2  # two badges, each sent to Badgr once despite the crash and replay
    assert {b.state for b in aws.store.list_badges(learner_id)} == {BadgeState.IMPORTED}


def test_a_badge_refused_for_its_address_moves_when_the_learner_moves_again(
    aws: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

    from backpack_migrate.migration import request_migration

    learner_id, jobs = _connected_learner(aws)
    first_url = hosted_assertion("h1", EMAIL)["id"]
    aws._badgr = ScriptedBadgr({first_url: ["rejected", "imported", "rejected"]})
    migrate = load_handler("migrate")
    assert migrate.handler(sqs_event(jobs), FakeContext()) == {"batchItemFailures": []}
    (refused,) = [b for b in aws.store.list_badges(learner_id) if b.state == BadgeState.REJECTED]
    assert refused.can_move_again
    # Once the learner has added the address in Badgr, moving again asks Badgr anew...
    assert request_migration(aws, learner_id) == 1
    again = drain(aws, aws.settings.migrate_queue_url)
    crashes = _worker_dies_once_after_badgr(aws, monkeypatch)
    with pytest.raises(BatchProcessingError):  # the batch's only record failed
        migrate.handler(sqs_event(again), FakeContext())
    assert crashes
    # ...and that new question is answered once: the replay reuses Badgr's "imported".
    assert migrate.handler(sqs_event(again, receive_count=2), FakeContext()) == {"batchItemFailures": []}
    assert [imp["url"] for imp in aws._badgr.imports] == [
        first_url,
        hosted_assertion("h2", EMAIL)["id"],
        first_url,
    ]
    assert {b.state for b in aws.store.list_badges(learner_id)} == {BadgeState.IMPORTED}


def test_a_failing_import_is_reported_as_a_batch_item_failure_and_held_back(aws: Services) -> None:
    learner_id, jobs = _connected_learner(aws)
    aws._badgr = ScriptedBadgr({hosted_assertion("h1", EMAIL)["id"]: ["retry"]})
    sqs = boto3.client("sqs", region_name="us-east-1")
    sqs.send_message(QueueUrl=aws.settings.migrate_queue_url, MessageBody=json.dumps(jobs[0]))
    message = sqs.receive_message(QueueUrl=aws.settings.migrate_queue_url, AttributeNames=["All"])[
        "Messages"
    ][0]
    event = sqs_event([jobs[0], jobs[1]])
    event["Records"][0]["receiptHandle"] = message["ReceiptHandle"]
    answer = load_handler("migrate").handler(event, FakeContext())
    failed = [item["itemIdentifier"] for item in answer["batchItemFailures"]]
    assert failed == [event["Records"][0]["messageId"]]
    states = sorted(b.state.value for b in aws.store.list_badges(learner_id))
    assert states == ["failed_retryable", "imported"]


def test_bad_exports_are_recorded_not_retried(aws: Services) -> None:
    intake = load_handler("intake")
    for key, data in {
        "exports/not-a-zip.zip": b"hello",
        # Cut inside its first member, the manifest: nothing of it can be read.
        "exports/truncated.zip": make_export({EMAIL: {"a.png": b"\x89PNG\r\n\x1a\n"}})[:40],
        "exports/no-manifest.zip": make_export({})[:0] + _zip_without_manifest(),
    }.items():
        result = intake.handler(_upload(aws, data, key), FakeContext())
        assert result["exports"][0]["status"] == "failed"
    codes = sorted(p.code for e in aws.store.list_exports() for p in e.problems)
    assert codes == ["NOT_A_ZIP", "NO_MANIFEST", "TRUNCATED_ZIP"]


def test_an_export_cut_short_is_read_up_to_the_cut_and_the_rest_is_on_record(aws: Services) -> None:
    first, second = hosted_assertion("h1", EMAIL), hosted_assertion("h2", EMAIL)
    data = make_export({EMAIL: {"h1.png": baked(first), "h2.png": baked(second)}})
    cut = data.index(b"PK\x03\x04", data.index(b"h2.png") - 30) + 20  # inside h2.png's header
    served = issuer_documents(["h1", "h2"])
    served[first["id"]] = (200, json.dumps(first).encode(), "application/json")
    aws._verifier = Verifier(fetcher(served))
    _run_intake(aws, _upload(aws, data[:cut], "exports/cut.zip"))
    (export,) = aws.store.list_exports()
    assert export.status.value == "chunked"
    assert [p.code for p in export.problems] == ["ZIP_CUT_SHORT", "FILE_CUT_OFF"]
    learner = next(iter(aws.store.iter_export_learners(export.export_id)))
    badges = {b.file_name: b for b in aws.store.list_badges(learner.learner_id)}
    assert badges["h1.png"].state == BadgeState.VERIFIED  # read from before the cut, and checked
    assert badges["h2.png"].state == BadgeState.UNREADABLE
    assert badges["h2.png"].problem is not None and badges["h2.png"].problem.code == "FILE_CUT_OFF"


def _zip_without_manifest() -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.png", b"x")
    return buffer.getvalue()


# -- the web function --------------------------------------------------------------------------
def _link(aws: Services, learner_id: str, ttl: int = 3600) -> str:
    return sign_link(aws.link_secret(), learner_id, "export", ttl)


def _get(path: str, route: str, params: dict[str, str], cookies: list[str] | None = None) -> dict[str, Any]:
    return load_handler("web").handler(http_event("GET", path, route, params, cookies), FakeContext())


def test_forged_altered_and_expired_links_get_a_clear_page_not_a_trace(aws: Services) -> None:
    learner_id = _read_learner(aws)
    good = _link(aws, learner_id)
    forged = sign_link(b"not the key" * 4, learner_id, "export", 3600)
    altered = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    expired = _link(aws, learner_id, ttl=-10)
    for token, status in ((forged, 403), (altered, 403), (expired, 410), ("garbage", 403)):
        answer = _get(f"/l/{token}", "/l/{token}", {"token": token})
        assert answer["statusCode"] == status
        assert "Traceback" not in answer["body"] and "<h1>" in answer["body"]
    answer = _get(f"/l/{good}", "/l/{token}", {"token": good})
    assert answer["statusCode"] == 200
    assert "Badge h1" in answer["body"] and "ready to move" in answer["body"]


def test_links_emailed_before_the_link_key_was_rotated_still_open(aws: Services) -> None:
    learner_id = _read_learner(aws)
    before = _link(aws, learner_id)
    secrets = boto3.client("secretsmanager", region_name="us-east-1")
    secrets.put_secret_value(SecretId=aws.settings.link_secret_arn, SecretString="n" * 48)
    use_services(build_services(aws.settings))  # a fresh container: nothing cached from before
    after = _link(get_services(), learner_id)
    assert after != before
    for token in (before, after):
        assert _get(f"/l/{token}", "/l/{token}", {"token": token})["statusCode"] == 200
    # Past a second rotation the first key is gone, and so are links signed with it.
    secrets.put_secret_value(SecretId=aws.settings.link_secret_arn, SecretString="m" * 48)
    use_services(build_services(aws.settings))
    assert _get(f"/l/{before}", "/l/{token}", {"token": before})["statusCode"] == 403
    assert _get(f"/l/{after}", "/l/{token}", {"token": after})["statusCode"] == 200


def test_forged_links_cost_no_secrets_manager_calls_on_a_key_never_rotated(
    aws: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    learner_id = _read_learner(aws)
    stages: list[str] = []
    real_client = boto3.client

    def client(service: str, *args: Any, **kwargs: Any) -> Any:
        made = real_client(service, *args, **kwargs)
        if service == "secretsmanager":
            real_get = made.get_secret_value

            def counted(**request: Any) -> Any:
                stages.append(request.get("VersionStage", "AWSCURRENT"))
                return real_get(**request)

            made.get_secret_value = counted
        return made

    monkeypatch.setattr(boto3, "client", client)
    use_services(build_services(aws.settings))
    for n in range(5):
        forged = sign_link(f"forged key {n}".encode() * 3, learner_id, "export", 3600)
        assert _get(f"/l/{forged}", "/l/{token}", {"token": forged})["statusCode"] == 403
    # The current key, its previous version (there is none), the current key afresh: once each.
    assert stages == ["AWSCURRENT", "AWSPREVIOUS", "AWSCURRENT"]


def test_a_link_signed_with_a_key_rotated_after_this_instance_cached_it_opens(aws: Services) -> None:
    learner_id = _read_learner(aws)
    before = _link(aws, learner_id)
    assert _get(f"/l/{before}", "/l/{token}", {"token": before})["statusCode"] == 200
    secrets = boto3.client("secretsmanager", region_name="us-east-1")
    secrets.put_secret_value(SecretId=aws.settings.link_secret_arn, SecretString="z" * 48)
    # The notifier already signs with the new key; this web instance still holds the old one.
    fresh = sign_link(b"z" * 48, learner_id, "export", 3600)
    assert _get(f"/l/{fresh}", "/l/{token}", {"token": fresh})["statusCode"] == 200


def test_connect_needs_the_session_and_its_csrf_token_and_sends_to_badgr_with_pkce(aws: Services) -> None:
    learner_id = _read_learner(aws)
    token = _link(aws, learner_id)
    from backpack_migrate.badgr import BadgrClient

    aws._badgr = BadgrClient("https://api.badgr.example", "client", "secret")
    page = _get(f"/l/{token}", "/l/{token}", {"token": token})
    cookie = page["cookies"][0].split(";")[0]
    assert "HttpOnly" in page["cookies"][0]
    csrf = re.search(r"name='csrf' value='([^']+)'", page["body"]).group(1)  # type: ignore[union-attr]
    web = load_handler("web")

    def post(body: str, cookies: list[str] | None) -> dict[str, Any]:
        event = http_event(
            "POST", f"/l/{token}/connect", "/l/{token}/connect", {"token": token}, cookies, body
        )
        return web.handler(event, FakeContext())

    assert post("csrf=wrong", [cookie])["statusCode"] == 403
    assert post(f"csrf={csrf}", None)["statusCode"] == 403
    answer = post(f"csrf={csrf}", [cookie])
    assert answer["statusCode"] == 303
    location = answer["headers"]["Location"]
    assert location.startswith("https://badgr.example/auth/oauth2/authorize?")
    assert "code_challenge_method=S256" in location and "state=" in location
    callback = _get("/oauth/callback?code=abc&state=not-the-state", "/oauth/callback", {}, [cookie])
    assert callback["statusCode"] == 403


def _connect_post(token: str, body: str, cookie: str, headers: dict[str, str]) -> dict[str, Any]:
    event = http_event(
        "POST", f"/l/{token}/connect", "/l/{token}/connect", {"token": token}, [cookie], body, headers
    )
    return load_handler("web").handler(event, FakeContext())


def _landing_session(aws: Services) -> tuple[str, str, str]:
    """(link token, session cookie, CSRF token) of a learner who opened their link."""
    from backpack_migrate.badgr import BadgrClient

    token = _link(aws, _read_learner(aws))
    aws._badgr = BadgrClient("https://api.badgr.example", "client", "secret")
    page = _get(f"/l/{token}", "/l/{token}", {"token": token})
    cookie = page["cookies"][0].split(";")[0]
    csrf = re.search(r"name='csrf' value='([^']+)'", page["body"]).group(1)  # type: ignore[union-attr]
    return token, cookie, csrf


def test_a_connect_post_from_another_site_is_refused_with_a_clear_page(aws: Services) -> None:
    token, cookie, csrf = _landing_session(aws)
    for headers in (
        {"sec-fetch-site": "cross-site"},
        {"sec-fetch-site": "same-site"},
        {"origin": "https://evil.example"},
        {"origin": "https://badges.example.org.evil.example", "sec-fetch-site": "same-origin"},
    ):
        refused = _connect_post(token, f"csrf={csrf}", cookie, headers)
        assert refused["statusCode"] == 403, headers
        assert "<h1>This form came from another website</h1>" in refused["body"]
        assert "Location" not in refused["headers"]
    # Our own form: same origin, or Origin "null" (our pages send no referrer), or no headers.
    for headers in (
        {"sec-fetch-site": "same-origin", "origin": "null"},
        {"origin": "https://badges.example.org"},
        {},
    ):
        assert _connect_post(token, f"csrf={csrf}", cookie, headers)["statusCode"] == 303, headers


def test_over_long_or_odd_cookies_and_ids_get_a_4xx_before_any_lookup(
    aws: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    learner_id = _read_learner(aws)
    token = _link(aws, learner_id)
    store = get_services().store

    def no_lookup(*args: Any) -> Any:
        raise AssertionError("looked up in DynamoDB")

    monkeypatch.setattr(store, "get_session", no_lookup)
    monkeypatch.setattr(store, "get_badge", no_lookup)
    for value in ("a" * 2049, "a" * 129, "abc$def", "ab%20cd"):
        answer = _get(f"/l/{token}", "/l/{token}", {"token": token}, [f"bm_session={value}"])
        assert answer["statusCode"] == 400, value
        assert "Please start again" in answer["body"] and "Traceback" not in answer["body"]
        # The unusable cookie is dropped, so opening the link again works.
        assert any("bm_session=" in c and "Max-Age=0" in c for c in answer.get("cookies", []))
        callback = _get("/oauth/callback?code=c&state=s", "/oauth/callback", {}, [f"bm_session={value}"])
        assert callback["statusCode"] == 400
    for badge_id in ("a" * 1025, "f" * 65, "..%2F..%2Fx", "ABCDEF"):
        path = f"/l/{token}/badges/{badge_id}/image"
        answer = _get(path, "/l/{token}/badges/{badge_id}/image", {"token": token, "badge_id": badge_id})
        assert answer["statusCode"] == 404, badge_id
        assert "<h1>No image</h1>" in answer["body"]
    # A link that cannot be trusted is answered as such first, whatever id follows it.
    forged = sign_link(b"not the key" * 4, learner_id, "export", 3600)
    params = {"token": forged, "badge_id": "a" * 1025}
    answer = _get(f"/l/{forged}/badges/{'a' * 1025}/image", "/l/{token}/badges/{badge_id}/image", params)
    assert answer["statusCode"] == 403 and "This link cannot be used" in answer["body"]


def test_a_session_without_its_pkce_verifier_asks_to_start_again(aws: Services) -> None:
    learner_id = _read_learner(aws)
    aws.store.put_session("s" * 43, {"learner_id": learner_id, "state": "st", "link": "x"}, 600)
    answer = _get("/oauth/callback?code=c&state=st", "/oauth/callback", {}, ["bm_session=" + "s" * 43])
    assert answer["statusCode"] == 400
    assert "<h1>Please start again</h1>" in answer["body"] and "KeyError" not in answer["body"]


def test_a_badge_image_has_a_policy_of_its_own_with_sandbox_and_no_form_action(aws: Services) -> None:
    learner_id = _read_learner(aws)
    token = _link(aws, learner_id)
    badge = next(b for b in aws.store.list_badges(learner_id) if b.media_type == "image/png")
    path = f"/l/{token}/badges/{badge.badge_id}/image"
    image = _get(path, "/l/{token}/badges/{badge_id}/image", {"token": token, "badge_id": badge.badge_id})
    assert image["statusCode"] == 200 and image["headers"]["Content-Type"] == "image/png"
    policy = image["headers"]["Content-Security-Policy"]
    assert policy == "default-src 'none'; style-src 'unsafe-inline'; sandbox"
    assert "form-action" not in policy
    page = _get(f"/l/{token}", "/l/{token}", {"token": token})
    assert "form-action 'self'" in page["headers"]["Content-Security-Policy"]  # pages keep theirs
