"""A full-fidelity export on fakes: a learner is a Backpack user, and their groups become collections."""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from typing import Any

import pytest
from botocore.exceptions import ClientError

from backpack_migrate import fullexport
from backpack_migrate.badgr import Tokens
from backpack_migrate.domain import BadgeState, ExportStatus, Problem
from backpack_migrate.fullintake import FullChunkJob, full_badge_id, process_full_chunk
from backpack_migrate.groups import make_collections
from backpack_migrate.intake import ChunkJob, process_chunk, read_export
from backpack_migrate.migration import import_badge, request_migration, store_tokens, verify_learner
from backpack_migrate.notices import send_notice
from backpack_migrate.openbadges import Verifier
from backpack_migrate.report import export_report, format_report
from tests.fakes import ScriptedBadgr, fake_services
from tests.unit.badges import baked, fetcher, hosted_assertion, issuer_documents, make_export

pytestmark = pytest.mark.unit

ANA, ANA_WORK, ANA_OLD = "Ana@example.org", "ana.work@example.org", "ana.old@example.org"
BEN, BEN_VERIFIED = "ben@example.org", "ben2@example.org"


def email(address: str, verified: bool, primary: bool = False) -> fullexport.ExportedEmail:
    return fullexport.ExportedEmail(address=address, verified=verified, primary=primary)


def full_export(
    users: list[fullexport.ExportedUser],
    badges: list[tuple[fullexport.ExportedBadge, bytes | None]],
    groups: list[fullexport.ExportedGroup],
    grants: list[fullexport.ExportedGrant] = (),  # type: ignore[assignment]
    *,
    report: fullexport.ExportReport | None = None,
    extra_lines: dict[str, list[bytes]] | None = None,
) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(
            fullexport.FORMAT_MEMBER,
            fullexport.ExportFormat(created_at="2026-01-01T00:00:00Z").model_dump_json(),
        )
        members: dict[str, list[Any]] = {
            fullexport.USERS_MEMBER: users,
            fullexport.BADGES_MEMBER: [b for b, _ in badges],
            fullexport.GROUPS_MEMBER: groups,
            fullexport.GRANTS_MEMBER: list(grants),
        }
        for name, records in members.items():
            lines = [fullexport.to_line(r) for r in records] + (extra_lines or {}).get(name, [])
            archive.writestr(name, b"".join(lines))
        for badge, image in badges:
            if image is not None and badge.image:
                archive.writestr(badge.image, image)
        archive.writestr(fullexport.REPORT_MEMBER, (report or fullexport.ExportReport()).model_dump_json())
    return buffer.getvalue()


def badge(
    badge_id: int, user_id: int, assertion: dict[str, Any] | None, media: bool = True
) -> fullexport.ExportedBadge:
    body_hash = f"hash{badge_id}"
    return fullexport.ExportedBadge(
        id=badge_id,
        user_id=user_id,
        endpoint=assertion["id"] if assertion else None,
        body=assertion,
        body_hash=body_hash,
        image=f"images/{body_hash}.png" if media else None,
        media_type="image/png" if media else None,
        validated_on="2019-01-01T00:00:00Z",
        problems=[] if assertion else [Problem(code="BODY_NOT_JSON", message="not JSON")],
    )


@dataclass
class World:
    svc: Any
    store: Any
    queue: Any
    sender: Any
    export: Any
    badgr: ScriptedBadgr


def run_world(badgr: ScriptedBadgr | None = None, throttled: bool = False) -> World:
    a_home = hosted_assertion("home", ANA.lower())
    a_work = hosted_assertion("work", ANA_WORK)
    a_old = hosted_assertion("old", ANA_OLD)
    b_one = hosted_assertion("ben", BEN_VERIFIED)
    served = issuer_documents(["home", "work", "old", "ben"])
    for assertion in (a_home, a_work, a_old, b_one):
        served[assertion["id"]] = (200, json.dumps(assertion).encode(), "application/json")
    users = [
        fullexport.ExportedUser(
            id=1, emails=[email(ANA, True, True), email(ANA_WORK, True), email(ANA_OLD, False)]
        ),
        fullexport.ExportedUser(id=2, emails=[email(BEN, False, True), email(BEN_VERIFIED, True)]),
        fullexport.ExportedUser(
            id=3, emails=[email(ANA.upper(), True, True)]
        ),  # a duplicate the export let by
    ]
    badges = [
        (badge(10, 1, a_home), baked(a_home)),
        (badge(11, 1, a_work), baked(a_work)),
        (badge(12, 1, a_old), baked(a_old)),
        (badge(13, 1, None), baked(a_home)),  # body not JSON
        (badge(14, 1, a_home, media=False), None),  # no image
        (badge(15, 1, a_home), b"not an image at all"),
        (badge(20, 2, b_one), baked(b_one)),
    ]
    portfolio = fullexport.ExportedPortfolio(
        id=1, title="My work", preamble="What I did in 2018.", stories={"10": "x"}
    )
    groups = [
        fullexport.ExportedGroup(
            id=100, user_id=1, name="Work", public=True, badges=[11, 10, 12, 99, 20], portfolio=portfolio
        ),
        fullexport.ExportedGroup(id=101, user_id=1, name="Broken", public=False, badges=[13, 14]),
        fullexport.ExportedGroup(id=200, user_id=2, name=None, public=False, badges=[20]),
    ]
    grants = [
        fullexport.ExportedGrant(
            id=5,
            user_id=1,
            origin="https://moodle.example",
            permissions=["issue"],
            access_time=1,
            access_token_sha256="a" * 64,
            refresh_token_sha256="r" * 64,
        )
    ]
    report = fullexport.ExportReport(inactive_users=4)
    data = full_export(
        users, badges, groups, grants, report=report, extra_lines={fullexport.BADGES_MEMBER: [b"{oops\n"]}
    )
    badgr = badgr or ScriptedBadgr()
    svc, store, queue, s3, sender = fake_services(verifier=Verifier(fetcher(served)), badgr=badgr)
    etag = s3.put("exports-bucket", "exports/full.zip", data)
    export = read_export(svc, "exports-bucket", "exports/full.zip", etag, len(data))
    if throttled:  # every other badge write refused for now, after the SDK's own retries
        write, calls = store.put_badges_if_absent, iter(range(10_000))

        def throttled_write(records: Any) -> int:
            if next(calls) % 2 == 0:
                error = {"Code": "ProvisionedThroughputExceededException", "Message": "Rate exceeded"}
                raise ClientError({"Error": error}, "BatchWriteItem")
            return write(records)

        store.put_badges_if_absent = throttled_write
    jobs = queue.take("chunk")
    while jobs:  # a chunk AWS refused goes on in a new job
        for job in jobs:
            assert job["kind"] == "full"
            process_full_chunk(svc, FullChunkJob.model_validate(job), lambda: 600_000)
        jobs = queue.take("chunk")
    if throttled:
        store.put_badges_if_absent = write
    for job in queue.take("verify"):
        verify_learner(svc, job["learner_id"])
    for job in queue.take("notify"):
        send_notice(svc, job)
    return World(svc, store, queue, sender, export, badgr)


def _learner(w: World, user_id: int) -> str:
    learner_id = w.store.learner_for_backpack_user(user_id)
    assert learner_id is not None
    return str(learner_id)


def test_a_backpack_user_is_one_learner_with_one_email_to_the_contact_address() -> None:
    w = run_world()
    assert w.export.status == ExportStatus.CHUNKED and w.export.learner_count == 2
    assert sorted(sent.to for sent in w.sender.sent) == [
        ANA.lower(),
        BEN_VERIFIED,
    ]  # ben's primary is unverified
    codes = {p.code for p in w.export.problems}
    assert {"DUPLICATE_USER", "INACTIVE_USERS", "RECORD_INVALID", "FOREIGN_BADGE_IN_GROUP"} <= codes
    ana = _learner(w, 1)
    assert w.store.learner_for_address(w.svc.learner_id(ANA_WORK)) == ana
    assert w.store.learner_for_address(w.svc.learner_id(ANA_OLD)) is None  # unverified: not matched
    record = w.store.get_learner(ana)
    assert record.backpack_user_id == 1 and "@" not in (record.addresses_ciphertext or "@")


def test_verdicts_trust_every_verified_address_and_never_an_unverified_one() -> None:
    w = run_world()
    ana = _learner(w, 1)
    by_id = {b.backpack_badge_id: b for b in w.store.list_badges(ana)}
    assert by_id[10].state == BadgeState.VERIFIED and by_id[10].verdict.valid
    assert by_id[11].verdict.valid  # issued to the second, verified address
    assert not by_id[12].verdict.valid  # issued to an unverified address
    assert by_id[13].state == BadgeState.UNREADABLE and by_id[13].problem.code == "BODY_NOT_JSON"
    assert by_id[14].state == BadgeState.UNREADABLE and by_id[14].problem.code == "IMAGE_MISSING"
    assert by_id[15].state == BadgeState.UNREADABLE and by_id[15].problem.code == "NOT_AN_IMAGE"
    kept = by_id[10]
    assert kept.body_hash == "hash10" and kept.endpoint and kept.validated_on and kept.backpack_body["id"]
    assert w.store.badge_for_body_hash("hash11").backpack_badge_id == 11


def test_groups_and_grants_are_on_record_with_the_backpack_ids() -> None:
    w = run_world()
    ana = _learner(w, 1)
    work, broken = w.store.list_groups(ana)
    assert (work.group_id, work.name, work.public, work.portfolio_title) == (100, "Work", True, "My work")
    assert work.badge_ids == [11, 10, 12, 99]  # another user's badge 20 removed, the stale 99 kept
    assert {p.code for p in work.problems} == {"FOREIGN_BADGE_IN_GROUP", "STALE_BADGE_IN_GROUP"}
    assert work.stories == {"10": "x"}
    assert broken.public is False
    grant = w.store.grant_for_access_digest("a" * 64)
    assert grant.learner_id == ana and grant.origin == "https://moodle.example"


def test_chunks_whose_writes_aws_refuses_now_and_then_record_the_same_as_without() -> None:
    calm, refused = run_world(), run_world(throttled=True)

    def recorded(w: World) -> list[tuple[int | None, str, str]]:
        return sorted((b.backpack_badge_id, b.state.value, b.file_name) for b in w.store.badges.values())

    assert recorded(refused) == recorded(calm) and len(recorded(calm)) == 7
    assert len(refused.store.learners) == len(calm.store.learners)


def test_replaying_intake_and_its_chunks_changes_nothing() -> None:
    w = run_world()
    before = {k: b.model_dump() for k, b in w.store.badges.items()}
    again = read_export(w.svc, w.export.bucket, w.export.key, w.export.etag, w.export.size)
    assert again.export_id == w.export.export_id and w.queue.take("chunk") == []
    assert {k: b.model_dump() for k, b in w.store.badges.items()} == before


def test_after_the_move_each_group_is_a_collection_or_skipped_with_the_reason() -> None:
    # Badgr refuses the badge issued to the unverified address, as the real server does.
    w = run_world(ScriptedBadgr({"image": ["rejected"]}))  # sent as image: its verdict is not valid
    ana = _learner(w, 1)
    store_tokens(w.svc, ana, Tokens(access_token="t", refresh_token="r", expires_at=0, scope="rw:backpack"))
    request_migration(w.svc, ana)
    for job in w.queue.take("migrate"):
        import_badge(w.svc, job["learner_id"], job["badge_id"], 1)
    assert w.queue.take("notify") == []  # the summary waits for the collections
    (job,) = w.queue.take("collections")
    make_collections(w.svc, job["learner_id"])
    work, broken = w.store.list_groups(ana)
    assert work.collection.state == "filled" and broken.collection.state == "skipped"
    (made,) = w.badgr.collections.values()
    by_id = {b.backpack_badge_id: b for b in w.store.list_badges(ana)}
    assert made["assertions"] == [by_id[11].badgr.entity_id, by_id[10].badgr.entity_id]
    assert made["published"] is True and "What I did in 2018." in made["description"]
    (summary,) = w.queue.take("notify")
    send_notice(w.svc, summary)
    text = w.sender.sent[-1].text
    assert "Work" in text and "collection" in text and "Broken" in text
    report = export_report(w.store, w.export)
    assert report["groups_by_collection_state"] == {"filled": 1, "skipped": 1, "waiting": 1}
    assert {"FOREIGN_BADGE_IN_GROUP", "STALE_BADGE_IN_GROUP", "NO_BADGE_IN_BADGR"} <= set(
        report["group_problems"]
    )
    assert any(p["code"] == "DUPLICATE_USER" for p in report["export_problems"])
    assert "as Badgr collections: filled 1, skipped 1, waiting 1" in format_report(report)


def test_the_2019_zip_is_still_read_as_before() -> None:
    a1 = hosted_assertion("a1", "zed@example.org")
    svc, store, queue, s3, _sender = fake_services()
    data = make_export({"zed@example.org": {"a1.png": baked(a1)}})
    etag = s3.put("b", "exports/old.zip", data)
    export = read_export(svc, "b", "exports/old.zip", etag, len(data))
    assert export.status == ExportStatus.CHUNKED and export.learner_count == 1
    (job,) = queue.take("chunk")
    assert "kind" not in job
    process_chunk(svc, ChunkJob.model_validate(job), lambda: 600_000)
    (only,) = store.badges.values()
    assert only.state == BadgeState.EXTRACTED and only.backpack_badge_id is None


def test_a_full_export_of_an_unknown_version_fails_with_a_clear_error() -> None:
    svc, _store, _queue, s3, _sender = fake_services()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(
            "format.json", json.dumps({"format": fullexport.FORMAT_NAME, "version": 9, "created_at": "x"})
        )
    data = buffer.getvalue()
    etag = s3.put("b", "exports/v9.zip", data)
    export = read_export(svc, "b", "exports/v9.zip", etag, len(data))
    assert export.status == ExportStatus.FAILED
    assert export.problems[0].code == "FORMAT_VERSION_UNKNOWN"


def test_badge_ids_are_stable_per_learner_and_backpack_badge() -> None:
    assert full_badge_id("l1", 10) == full_badge_id("l1", 10) != full_badge_id("l1", 11)
