"""Groups become Badgr collections exactly once, whatever is replayed, lost or killed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from backpack_migrate.badgr import Tokens
from backpack_migrate.domain import (
    BadgeRecord,
    BadgeState,
    BadgrAnswer,
    ExportRecord,
    ExportStatus,
    GroupRecord,
    LearnerRecord,
    Problem,
)
from backpack_migrate.group_pages import collection_lines
from backpack_migrate.groups import LEASE_SECONDS, CollectionBusy, make_collections
from backpack_migrate.migration import maybe_send_summary, store_tokens
from tests.fakes import ScriptedBadgr, fake_services

pytestmark = pytest.mark.unit

LEARNER = "learner-1"
REQUEST = "2026-01-01T00:00:00.000000Z"


@dataclass
class Clock:
    now: float = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def world(
    states: dict[int, BadgeState], groups: list[GroupRecord], badgr: ScriptedBadgr | None = None
) -> Any:
    badgr = badgr or ScriptedBadgr()
    svc, store, queue, _s3, _sender = fake_services(badgr=badgr)
    store.save_export(
        ExportRecord(export_id="e1", bucket="b", key="k", etag="t", status=ExportStatus.CHUNKED)
    )
    store.put_learner_if_absent(
        LearnerRecord(
            learner_id=LEARNER,
            export_id="e1",
            email_ciphertext="x",
            backpack_user_id=42,
            migration_requested_at=REQUEST,
        )
    )
    store_tokens(svc, LEARNER, Tokens(access_token="a", refresh_token="r", expires_at=0, scope="rw:backpack"))
    badges = []
    for backpack_id, state in states.items():
        answer = None
        problem = None
        if state == BadgeState.IMPORTED:
            answer = BadgrAnswer(status=201, entity_id=badgr._new_assertion())
        elif state == BadgeState.REJECTED:
            problem = Problem(code="REVOKED", message="The issuer revoked this badge.")
        badges.append(
            BadgeRecord(
                learner_id=LEARNER,
                badge_id=f"b{backpack_id}",
                export_id="e1",
                file_name=f"images/{backpack_id}.png",
                state=state,
                badgr=answer,
                problem=problem,
                backpack_badge_id=backpack_id,
            )
        )
    store.put_badges_if_absent(badges)
    store.put_groups_if_absent(groups)
    return svc, store, queue, badgr


def group(group_id: int, badge_ids: list[int], public: bool = True) -> GroupRecord:
    return GroupRecord(
        learner_id=LEARNER,
        export_id="e1",
        group_id=group_id,
        name=f"Group {group_id}",
        public=public,
        badge_ids=badge_ids,
        portfolio_title="My work",
        portfolio_preamble="Badges from my course.",
    )


def test_a_group_becomes_one_filled_collection_and_the_summary_follows() -> None:
    svc, store, queue, badgr = world(
        {1: BadgeState.IMPORTED, 2: BadgeState.REJECTED, 3: BadgeState.IMPORTED},
        [group(7, [3, 1, 2, 99], public=True)],
    )
    assert make_collections(svc, LEARNER) == 1
    (made,) = badgr.collections.values()
    saved = store.list_groups(LEARNER)[0]
    by_backpack = {b.backpack_badge_id: b.badgr.entity_id for b in store.list_badges(LEARNER) if b.badgr}
    assert made["assertions"] == [by_backpack[3], by_backpack[1]]  # the group's order
    assert made["published"] is True and made["name"] == "Group 7"
    assert "My work" in made["description"] and "Badges from my course." in made["description"]
    assert saved.collection.state == "filled" and saved.collection.entity_id == made["entityId"]
    assert saved.collection.marker in made["description"]
    assert {left.badge_id for left in saved.collection.badges_left_out} == {2, 99}
    assert "revoked" in next(x.reason for x in saved.collection.badges_left_out if x.badge_id == 2)
    assert badgr.collection_calls.count("create_collection") == 1
    assert [job["kind"] for job in queue.take("notify")] == ["summary"]
    lines = collection_lines(store.list_groups(LEARNER), store.list_badges(LEARNER))
    assert lines[0].startswith("“Group 7”: made in Badgr as a public collection with 2 badges")


def test_replays_and_duplicate_jobs_never_make_a_second_collection() -> None:
    svc, _store, _queue, badgr = world({1: BadgeState.IMPORTED}, [group(7, [1])])
    for _ in range(3):
        make_collections(svc, LEARNER)
    assert len(badgr.collections) == 1
    assert badgr.collection_calls.count("create_collection") == 1


def test_a_group_whose_badges_all_failed_gets_no_empty_collection() -> None:
    svc, store, _queue, badgr = world(
        {1: BadgeState.REJECTED, 2: BadgeState.IMPORTED}, [group(7, [1]), group(8, [2], public=False)]
    )
    make_collections(svc, LEARNER)
    skipped, filled = store.list_groups(LEARNER)
    assert skipped.collection.state == "skipped" and skipped.collection.problem.code == "NO_BADGE_IN_BADGR"
    assert filled.collection.state == "filled"
    assert len(badgr.collections) == 1
    assert next(iter(badgr.collections.values()))["published"] is False


def test_a_lost_create_answer_is_found_by_its_marker_after_the_lease() -> None:
    badgr = ScriptedBadgr()
    badgr.faults["create_collection"] = ["lost"]
    svc, store, _queue, badgr = world({1: BadgeState.IMPORTED}, [group(7, [1])], badgr)
    clock = Clock()
    with pytest.raises(CollectionBusy):
        make_collections(svc, LEARNER, now=clock)
    held = store.list_groups(LEARNER)[0].collection
    assert held.state == "creating" and held.entity_id is None
    # A duplicate job while the first worker may still be alive keeps off.
    with pytest.raises(CollectionBusy):
        make_collections(svc, LEARNER, now=clock)
    clock.now += LEASE_SECONDS + 1
    make_collections(svc, LEARNER, now=clock)
    assert len(badgr.collections) == 1
    assert badgr.collection_calls.count("create_collection") == 1
    saved = store.list_groups(LEARNER)[0].collection
    assert (
        saved.state == "filled"
        and saved.assertion_ids == next(iter(badgr.collections.values()))["assertions"]
    )


def test_the_same_job_delivered_again_takes_its_own_lease_over_at_once() -> None:
    badgr = ScriptedBadgr()
    badgr.faults["create_collection"] = ["lost"]
    svc, store, _queue, badgr = world({1: BadgeState.IMPORTED}, [group(7, [1])], badgr)
    clock = Clock()
    with pytest.raises(CollectionBusy):
        make_collections(svc, LEARNER, now=clock, job_id="m1")
    with pytest.raises(CollectionBusy):  # another job keeps off while the lease runs
        make_collections(svc, LEARNER, now=clock, job_id="m2")
    make_collections(svc, LEARNER, now=clock, job_id="m1")  # its own redelivery: its try is over
    assert len(badgr.collections) == 1 and badgr.collection_calls.count("create_collection") == 1
    assert store.list_groups(LEARNER)[0].collection.state == "filled"


def test_a_worker_killed_between_create_and_fill_loses_no_badge() -> None:
    badgr = ScriptedBadgr()
    badgr.faults["put_collection"] = ["down", "lost"]
    svc, store, _queue, badgr = world(
        {1: BadgeState.IMPORTED, 2: BadgeState.IMPORTED}, [group(7, [1, 2])], badgr
    )
    for _ in range(2):
        with pytest.raises(CollectionBusy):
            make_collections(svc, LEARNER)
        assert store.list_groups(LEARNER)[0].collection.entity_id == "C1"  # recorded before the fill
    make_collections(svc, LEARNER)
    assert len(badgr.collections) == 1
    assert len(badgr.collections["C1"]["assertions"]) == 2
    assert store.list_groups(LEARNER)[0].collection.state == "filled"


def test_a_badge_deleted_in_badgr_is_left_out_with_the_reason() -> None:
    svc, store, _queue, badgr = world({1: BadgeState.IMPORTED, 2: BadgeState.IMPORTED}, [group(7, [1, 2])])
    gone = store.get_badge(LEARNER, "b2").badgr.entity_id
    badgr.forget(gone)
    make_collections(svc, LEARNER)
    saved = store.list_groups(LEARNER)[0].collection
    assert saved.state == "filled" and gone not in saved.assertion_ids and len(saved.assertion_ids) == 1
    assert [left.badge_id for left in saved.badges_left_out] == [2]


def test_the_last_delivery_records_the_group_skipped_and_the_summary_goes_out() -> None:
    badgr = ScriptedBadgr()
    badgr.faults["list_assertions"] = []
    badgr.faults["create_collection"] = ["down"] * 10
    svc, store, queue, badgr = world({1: BadgeState.IMPORTED}, [group(7, [1])], badgr)
    clock = Clock()
    with pytest.raises(CollectionBusy):
        make_collections(svc, LEARNER, now=clock)
    clock.now += LEASE_SECONDS + 1
    make_collections(svc, LEARNER, give_up=True, now=clock)
    saved = store.list_groups(LEARNER)[0]
    assert saved.collection.state == "skipped" and saved.collection.problem.code == "COLLECTION_NOT_MADE"
    assert not badgr.collections
    assert [job["kind"] for job in queue.take("notify")] == ["summary"]


def test_a_duplicate_job_on_its_last_delivery_leaves_a_held_group_to_its_holder() -> None:
    badgr = ScriptedBadgr()
    badgr.faults["create_collection"] = ["lost"]
    svc, store, queue, badgr = world({1: BadgeState.IMPORTED}, [group(7, [1])], badgr)
    clock = Clock()
    with pytest.raises(CollectionBusy):  # the holder lost Badgr's answer: the group stays held
        make_collections(svc, LEARNER, now=clock)
    queue.take("notify")
    # A duplicate job reaches its last delivery while the holder's lease runs: it records nothing.
    make_collections(svc, LEARNER, give_up=True, now=clock)
    held = store.list_groups(LEARNER)[0].collection
    assert held.state == "creating" and held.problem is None
    assert queue.take("notify") == [] and queue.take("collections") == []
    # The holder's own job comes back after its lease and finishes: made once, summary once.
    clock.now += LEASE_SECONDS + 1
    make_collections(svc, LEARNER, now=clock)
    assert len(badgr.collections) == 1 and store.list_groups(LEARNER)[0].collection.state == "filled"
    assert [job["kind"] for job in queue.take("notify")] == ["summary"]


def test_the_summary_waits_for_the_collections_of_a_backpack_user() -> None:
    svc, _store, queue, _badgr = world({1: BadgeState.IMPORTED}, [group(7, [1])])
    assert not maybe_send_summary(svc, LEARNER)
    assert queue.take("collections") == [{"learner_id": LEARNER, "requested_at": REQUEST}]
    assert queue.take("notify") == []
    make_collections(svc, LEARNER)
    assert [job["kind"] for job in queue.take("notify")] == ["summary"]


def test_nothing_is_made_before_every_badge_is_final() -> None:
    svc, store, _queue, badgr = world({1: BadgeState.IMPORTED, 2: BadgeState.QUEUED}, [group(7, [1, 2])])
    assert make_collections(svc, LEARNER) == 0
    assert not badgr.collections and store.list_groups(LEARNER)[0].collection is None


def test_a_create_badgr_refused_outright_is_retried_at_once_and_made_once() -> None:
    from backpack_migrate.badgr import BadgrUnavailable

    badgr = ScriptedBadgr()
    real_create = badgr.create_collection
    calls = {"n": 0}

    def create_503_first(access_token: str, **fields: Any) -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise BadgrUnavailable("Badgr answered 503", status=503)  # an answer: nothing was made
        return real_create(access_token, **fields)

    badgr.create_collection = create_503_first  # type: ignore[method-assign]
    svc, store, _queue, badgr = world({1: BadgeState.IMPORTED}, [group(7, [1])], badgr)
    clock = Clock()
    with pytest.raises(CollectionBusy):
        make_collections(svc, LEARNER, now=clock)
    assert store.list_groups(LEARNER)[0].collection.lease_until == 0.0  # no lease to wait out
    make_collections(svc, LEARNER, now=clock)
    assert len(badgr.collections) == 1 and store.list_groups(LEARNER)[0].collection.state == "filled"
