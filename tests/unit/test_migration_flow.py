"""The whole migration on fakes: export -> chunks -> verdicts -> emails -> imports -> summary."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from backpack_migrate.badgr import Tokens
from backpack_migrate.domain import FINAL_STATES, BadgeState, ExportStatus
from backpack_migrate.intake import ChunkJob, export_id_for, process_chunk, read_export
from backpack_migrate.migration import (
    RetryLater,
    import_badge,
    request_migration,
    store_tokens,
    verify_learner,
)
from backpack_migrate.notices import send_notice
from backpack_migrate.openbadges import Verifier
from backpack_migrate.report import export_report
from tests.fakes import ScriptedBadgr, fake_services
from tests.unit.badges import baked, fetcher, hosted_assertion, issuer_documents, make_export

pytestmark = pytest.mark.unit

ANA, BEN = "ana@example.org", "Ben@Example.org"


@dataclass
class World:
    svc: Any
    store: Any
    queue: Any
    s3: Any
    sender: Any
    export: Any
    badgr: ScriptedBadgr
    chunks: list[ChunkJob]


def run_world(badgr: ScriptedBadgr | None = None, missing: bool = False) -> World:
    ana = [hosted_assertion("a1", ANA), hosted_assertion("a2", ANA), hosted_assertion("gone", ANA)]
    ben = [hosted_assertion("b1", BEN.lower())]
    served = issuer_documents(["a1", "a2", "b1"])
    for assertion in ana[:2] + ben:
        served[assertion["id"]] = (200, json.dumps(assertion).encode(), "application/json")
    files = {
        ANA: {
            "a1.png": baked(ana[0]),
            "a2.png": baked(ana[1], hosted=False),
            "gone.png": baked(ana[2]),
            "notes.txt": b"not a badge",
        },
        BEN: {"b1.png": baked(ben[0])},
    }
    extra = {"carl@example.org": ["nowhere.png"]} if missing else None
    data = make_export(files, extra)
    badgr = badgr or ScriptedBadgr()
    svc, store, queue, s3, sender = fake_services(verifier=Verifier(fetcher(served)), badgr=badgr)
    etag = s3.put("exports-bucket", "exports/backpack.zip", data)
    export = read_export(svc, "exports-bucket", "exports/backpack.zip", etag, len(data))
    chunks = [ChunkJob.model_validate(job) for job in queue.take("chunk")]
    for chunk in chunks:
        process_chunk(svc, chunk, lambda: 600_000)
    for job in queue.take("verify"):
        verify_learner(svc, job["learner_id"])
    for job in queue.take("notify"):
        send_notice(svc, job)
    return World(svc, store, queue, s3, sender, export, badgr, chunks)


def test_an_export_becomes_learners_badges_verdicts_and_one_email_each() -> None:
    w = run_world(missing=True)
    assert w.export.status == ExportStatus.CHUNKED
    assert w.export.learner_count == 3
    assert sorted(email.to for email in w.sender.sent) == [
        "ana@example.org",
        "ben@example.org",
        "carl@example.org",
    ]
    assert all("/l/" in email.text for email in w.sender.sent)
    states = {b.file_name: b for b in w.store.badges.values()}
    assert states["a1.png"].state == BadgeState.VERIFIED and states["a1.png"].verdict.valid  # type: ignore[union-attr]
    assert states["a1.png"].verdict.name == "Badge a1"  # type: ignore[union-attr]
    assert states["gone.png"].verdict.certain_to_fail  # type: ignore[union-attr]
    assert states["notes.txt"].state == BadgeState.UNREADABLE
    assert states["nowhere.png"].state == BadgeState.UNREADABLE
    assert states["nowhere.png"].problem.code == "FILE_MISSING"  # type: ignore[union-attr]
    assert all("@" not in learner.email_ciphertext for learner in w.store.learners.values())


def test_the_same_export_read_twice_changes_nothing_and_sends_no_second_email() -> None:
    w = run_world()
    before = {k: b.state for k, b in w.store.badges.items()}
    again = read_export(w.svc, w.export.bucket, w.export.key, w.export.etag, w.export.size)
    assert again.export_id == w.export.export_id
    assert w.queue.take("chunk") == []
    assert {k: b.state for k, b in w.store.badges.items()} == before


def test_a_chunk_replayed_after_a_crash_skips_what_is_on_record() -> None:
    w = run_world()
    before = {key: badge.model_dump() for key, badge in w.store.badges.items()}
    for chunk in w.chunks:
        process_chunk(w.svc, chunk, lambda: 600_000)
    assert {key: badge.model_dump() for key, badge in w.store.badges.items()} == before
    # The replay queues the follow-ups again; their idempotency keys make them no-ops.
    assert len(w.queue.take("notify")) == 2


def test_a_chunk_short_of_time_hands_the_rest_to_a_new_job() -> None:
    w = run_world()
    learner = next(iter(w.store.learners.values()))
    job = ChunkJob.model_validate(
        {
            "export_id": w.export.export_id,
            "chunk": 9,
            "learners": [
                {"learner_id": learner.learner_id, "email_ciphertext": learner.email_ciphertext, "files": []}
            ]
            * 2,
        }
    )
    times = iter([600_000, 1_000])
    left = process_chunk(w.svc, job, lambda: next(times))
    assert left is not None and len(left.learners) == 1
    assert w.queue.take("chunk") == [left.model_dump()]


def learner_of(svc: Any, store: Any, email: str) -> str:
    return next(
        lid
        for lid, rec in store.learners.items()
        if svc.emails.decrypt(
            rec.email_ciphertext,
            learner_id=lid,
            export_id=rec.export_id,
            data_key_ciphertext=store.exports[rec.export_id].data_key_ciphertext,
        )
        == email.lower()
    )


def _connect(svc: Any, store: Any, email: str) -> str:
    learner = learner_of(svc, store, email)
    store_tokens(
        svc, learner, Tokens(access_token="access1", refresh_token="refresh1", expires_at=0, scope="x")
    )
    request_migration(svc, learner)
    return learner


def _drain(svc: Any, queue: Any, receive_count: int = 1) -> list[RetryLater]:
    retries = []
    for job in queue.take("migrate"):
        try:
            import_badge(svc, job["learner_id"], job["badge_id"], receive_count)
        except RetryLater as retry:
            retries.append(retry)
    return retries


def test_every_badge_ends_in_exactly_one_final_state_and_a_summary_follows() -> None:
    w = run_world()
    ana = _connect(w.svc, w.store, ANA)
    assert _drain(w.svc, w.queue) == []
    states = {b.file_name: b.state for b in w.store.list_badges(ana)}
    assert states == {
        "a1.png": BadgeState.IMPORTED,
        "a2.png": BadgeState.IMPORTED,
        "gone.png": BadgeState.REJECTED,  # never sent: its issuer site is gone
        "notes.txt": BadgeState.UNREADABLE,
    }
    sent_forms = [sorted(k for k in imp if k != "token") for imp in w.badgr.imports]
    assert sent_forms == [["url"], ["url"]]
    gone = next(b for b in w.store.list_badges(ana) if b.file_name == "gone.png")
    assert gone.problem is not None and gone.problem.code == "ASSERTION_NOT_FOUND"
    assert gone.badgr is None
    summary = w.queue.take("notify")
    assert summary == [
        {"kind": "summary", "learner_id": ana, "requested_at": w.store.learners[ana].migration_requested_at}
    ]
    send_notice(w.svc, summary[0])
    assert "2 of 4" in w.sender.sent[-1].text
    report = export_report(w.store, w.export)
    assert report["badges_by_state"]["imported"] == 2


def test_a_replayed_import_job_does_not_import_twice() -> None:
    w = run_world()
    _connect(w.svc, w.store, BEN)
    jobs = w.queue.take("migrate")
    for job in jobs + jobs:
        import_badge(w.svc, job["learner_id"], job["badge_id"], 1)
    assert len(w.badgr.imports) == 1


def test_badgr_failures_retry_then_dead_letter_and_the_record_says_so() -> None:
    url = hosted_assertion("b1", BEN.lower())["id"]
    badgr = ScriptedBadgr({url: ["retry"] * 5})
    w = run_world(badgr)
    ben = _connect(w.svc, w.store, BEN)
    jobs = w.queue.take("migrate")
    for attempt in range(1, 6):
        with pytest.raises(RetryLater):
            import_badge(w.svc, jobs[0]["learner_id"], jobs[0]["badge_id"], attempt)
        state = w.store.list_badges(ben)[0].state
        assert state == (BadgeState.DEAD_LETTERED if attempt == 5 else BadgeState.FAILED_RETRYABLE)
    assert w.store.list_badges(ben)[0].state in FINAL_STATES


def test_an_expired_access_token_is_refreshed_and_the_new_one_stored() -> None:
    url = hosted_assertion("b1", BEN.lower())["id"]
    badgr = ScriptedBadgr({url: ["unauthorized", "imported"]})
    w = run_world(badgr)
    ben = _connect(w.svc, w.store, BEN)
    assert _drain(w.svc, w.queue) == []
    assert [imp["token"] for imp in w.badgr.imports] == ["access1", "access2"]
    assert w.store.tokens[ben][1] == 2
    assert w.store.list_badges(ben)[0].state == BadgeState.IMPORTED


@pytest.mark.parametrize(
    ("outcome", "state"),
    [
        ("pending", BadgeState.PENDING),
        ("already_in_badgr", BadgeState.ALREADY_IN_BADGR),
        ("rejected", BadgeState.REJECTED),
    ],
)
def test_badgr_answers_become_states_with_badgr_words_kept(outcome: str, state: BadgeState) -> None:
    url = hosted_assertion("b1", BEN.lower())["id"]
    badgr = ScriptedBadgr({url: [outcome]})
    if outcome == "already_in_badgr":
        badgr.hold(url)  # the learner had it in Badgr before this service existed
    w = run_world(badgr)
    ben = _connect(w.svc, w.store, BEN)
    _drain(w.svc, w.queue)
    badge = w.store.list_badges(ben)[0]
    assert badge.state == state
    assert badge.badgr is not None
    expected = "backpack_listing" if outcome == "already_in_badgr" else "import_answer"
    assert badge.confirmed_by == expected
    if state == BadgeState.REJECTED:
        assert badge.problem is not None and badge.problem.message == "reason for rejected"


def test_an_export_that_is_not_a_zip_is_recorded_as_failed_with_a_clear_error() -> None:
    w = run_world()
    etag = w.s3.put("exports-bucket", "exports/bad.zip", b"this is not a zip file at all")
    failed = read_export(w.svc, "exports-bucket", "exports/bad.zip", etag, 29)
    assert failed.status == ExportStatus.FAILED
    assert failed.problems[0].code == "NOT_A_ZIP"
    assert failed.export_id == export_id_for("exports-bucket", "exports/bad.zip", etag)


def test_a_learner_with_many_badges_is_resumed_inside_its_files() -> None:
    assertions = [hosted_assertion(f"m{i}", ANA) for i in range(60)]
    files = {ANA: {f"m{i:02d}.png": baked(a) for i, a in enumerate(assertions)}}
    svc, store, queue, s3, _sender = fake_services(verifier=Verifier(fetcher({})), badgr=ScriptedBadgr())
    data = make_export(files)
    etag = s3.put("exports-bucket", "exports/many.zip", data)
    read_export(svc, "exports-bucket", "exports/many.zip", etag, len(data))
    (job,) = [ChunkJob.model_validate(j) for j in queue.take("chunk")]
    # Time runs short after the first group of badges: the rest of this learner goes on in a new job.
    clock = iter([600_000, 1_000])
    left = process_chunk(svc, job, lambda: next(clock, 1_000))
    assert left is not None
    assert len(store.badges) == 25
    assert len(left.learners) == 1 and len(left.learners[0].files) == 35
    assert queue.take("notify") == []  # the invitation waits until every badge is on record
    assert process_chunk(svc, ChunkJob.model_validate(queue.take("chunk")[0]), lambda: 600_000) is None
    assert len(store.badges) == 60
    assert len(queue.take("notify")) == 1


def test_an_invitation_sent_whose_idempotency_record_could_not_be_saved_goes_once() -> None:
    from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyPersistenceLayerError

    w = run_world()
    ben = w.svc.learner_id(BEN)
    w.store.learners[ben] = w.store.learners[ben].model_copy(update={"invited_at": None})
    job = {"kind": "invite", "learner_id": ben, "export_id": w.store.learners[ben].export_id}
    emails = len(w.sender.sent)
    real_once = w.svc.once

    def once(name: str, fn: Any) -> Any:
        def unsaved(job: dict[str, Any]) -> Any:
            fn(job=job)  # the email goes ...
            raise IdempotencyPersistenceLayerError(  # ... and saving that is throttled
                "Failed to update record state to success in idempotency store", RuntimeError("throttled")
            )

        return unsaved

    w.svc.once = once
    assert send_notice(w.svc, job)  # not failed: failing it would send the email again later
    w.svc.once = real_once
    assert w.store.get_learner(ben).invited_at is not None
    assert send_notice(w.svc, job)  # the job again, from SQS or the reconciler
    assert len(w.sender.sent) == emails + 1


def test_a_batch_reads_an_exports_record_once_for_all_of_its_images() -> None:
    from backpack_migrate.holdings import Backpacks
    from backpack_migrate.migration import _import_form

    w = run_world()
    learner = learner_of(w.svc, w.store, ANA)
    badge = next(b for b in w.store.list_badges(learner) if b.file_name == "a2.png")
    # Its hosted copy gone: the baked image is what is sent.
    gone = badge.verdict.model_copy(update={"valid": False, "hosted_url": None})
    baked_only = badge.model_copy(update={"verdict": gone})
    looked_up: list[str] = []
    real_get_export = w.store.get_export

    def counting_get_export(export_id: str) -> Any:
        looked_up.append(export_id)
        return real_get_export(export_id)

    w.store.get_export = counting_get_export
    w.store.badges[(learner, baked_only.badge_id)] = baked_only
    _connect(w.svc, w.store, ANA)
    w.queue.take("migrate")
    batch = Backpacks()  # what one batch of jobs shares
    assert import_badge(w.svc, learner, baked_only.badge_id, 1, batch) == BadgeState.IMPORTED
    assert "image" in w.badgr.imports[-1]
    assert list(batch.exports) == [baked_only.export_id]
    # A second baked image of the same export in the batch: its record is not read again.
    form, _payload = _import_form(w.svc, baked_only, batch.exports)
    assert form == "image"
    assert looked_up == [baked_only.export_id]
