"""The export ``export-db`` wrote from a real MariaDB, read by intake: every row of it on record."""

from __future__ import annotations

from pathlib import Path

import pytest

from backpack_migrate.domain import BadgeState, ExportStatus, normalize_email
from backpack_migrate.export_db import ExportSummary
from backpack_migrate.fullintake import FullChunkJob, process_full_chunk
from backpack_migrate.intake import read_export
from backpack_migrate.migration import learner_email, learner_recipients
from infra.local.backpack_data import SampleDatabase
from tests.fakes import fake_services

pytestmark = pytest.mark.db

Export = tuple[Path, ExportSummary]


def test_intake_records_every_active_user_badge_group_and_grant(
    sample: SampleDatabase, sample_export: Export
) -> None:
    data = sample_export[0].read_bytes()
    svc, store, queue, s3, _sender = fake_services()
    etag = s3.put("exports", "exports/full.zip", data)
    export = read_export(svc, "exports", "exports/full.zip", etag, len(data))
    assert export.status == ExportStatus.CHUNKED, export.problems
    for job in queue.take("chunk"):
        process_full_chunk(svc, FullChunkJob.model_validate(job), lambda: 600_000)

    active = {uid for uid in sample.users if uid not in sample.inactive_users}
    learners = {uid: store.learner_for_backpack_user(uid) for uid in active}
    assert all(learners.values()), learners
    assert len(store.learners) == len(active) == export.learner_count
    # One learner per user, written to the contact address (grace's primary is unverified).
    grace = store.get_learner(learners[2])
    assert learner_email(svc, grace) == "grace.hopper@navy.example"
    assert "grace@example.org" not in learner_recipients(svc, grace)  # unverified: not trusted
    ada = store.get_learner(learners[1])
    assert set(learner_recipients(svc, ada)) == {"ada@example.org", "ada.lovelace@work.example"}

    # Every badge of an active user, with the Backpack's ids; the bad ones unreadable, with why.
    recorded = {b.backpack_badge_id: b for b in store.badges.values()}
    expected = {bid for bid, uid in sample.badges.items() if uid in active}
    assert set(recorded) == expected
    # A repaired row (two images of one badge, one kept) is no reason to refuse the badge.
    refused = {b: codes for b, codes in sample.badge_problems.items() if codes != ["IMAGE_REPEATED"]}
    for badge_id, codes in refused.items():
        badge = recorded[badge_id]
        assert badge.state == BadgeState.UNREADABLE and badge.problem is not None, badge_id
        assert badge.problem.code in {*codes, "IMAGE_MISSING", "NOT_AN_IMAGE"}, (badge_id, badge.problem)
    readable = [b for bid, b in recorded.items() if bid not in refused]
    assert readable and all(b.state == BadgeState.EXTRACTED and b.body_hash for b in readable)
    assert all(store.badge_for_body_hash(b.body_hash) == b for b in readable if b.body_hash)

    # Groups with their badges as the export listed them; grants by digest.
    groups = {g.group_id: g for g in store.groups.values()}
    assert set(groups) == {gid for gid, uid in sample.groups.items() if uid in active}
    for group_id, badge_ids in sample.group_badges.items():
        if group_id in groups:
            assert groups[group_id].badge_ids == badge_ids, group_id
    assert groups[1].public and groups[1].portfolio_title == "What I learnt at work"
    assert {g.grant_id for g in store.grants.values()} == {
        str(gid) for gid, uid in sample.grants.items() if uid in active
    }

    # No address in plain text in any key.
    keys = " ".join([*store.index, *store.learners, *(k for pair in store.badges for k in pair)])
    assert not any(normalize_email(address) in keys.lower() for address in sample.emails)
    assert export.problems and any(p.code == "INACTIVE_USERS" for p in export.problems)
