"""The reconciler repairs what a lost message or a crash left half-way, and settles dead letters."""

from __future__ import annotations

import time
from typing import Any

import pytest
from botocore.exceptions import ClientError

from backpack_migrate.domain import BadgeRecord, BadgeState, Confirmation, movable_counts
from backpack_migrate.holdings import Backpacks
from backpack_migrate.migration import MAX_LOOKS, import_badge, look_again, request_migration
from backpack_migrate.notices import send_notice
from backpack_migrate.pages import PageContext, landing_page, status_page
from backpack_migrate.reconcile import MAX_REPAIRS, reconcile
from backpack_migrate.report import export_report, format_reconcile_run
from tests.fakes import ScriptedBadgr
from tests.unit.badges import hosted_assertion
from tests.unit.test_migration_flow import ANA, BEN, _connect, run_world

pytestmark = pytest.mark.unit

B1 = hosted_assertion("b1", BEN.lower())["id"]
LATER = time.time() + 3 * 86400  # well past every deadline

PAGE = PageContext(token="t", support_email="help@example.org", badgr_web_url="https://badgr.example")


def _reconcile(w: Any, now: float = LATER) -> Any:
    return reconcile(w.svc, lambda: 600_000, now=lambda: now)


def _throttled(operation: str) -> ClientError:
    return ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}, operation)


def _drain(w: Any) -> None:
    for job in w.queue.take("migrate"):
        import_badge(w.svc, job["learner_id"], job["badge_id"], 1 + int(job.get("attempts", 0)))


def _failing_sends(w: Any, url: str) -> None:
    real = w.queue.send

    def send(queue_url: str, jobs: Any) -> int:
        if queue_url == url:
            raise _throttled("SendMessageBatch")
        return int(real(queue_url, jobs))

    w.queue.send = send
    w.restore_send = lambda: setattr(w.queue, "send", real)


def test_a_badge_queued_whose_job_was_never_sent_is_sent_again_and_moves() -> None:
    w = run_world()
    _failing_sends(w, "migrate")
    with pytest.raises(ClientError):
        _connect(w.svc, w.store, BEN)
    w.restore_send()
    (badge,) = [b for b in w.store.badges.values() if b.file_name == "b1.png"]
    assert badge.state == BadgeState.QUEUED and w.queue.take("migrate") == []
    assert _reconcile(w, now=time.time()).badges_requeued == 0  # not stale yet: a job may be on its way
    run = _reconcile(w)
    assert run.badges_requeued == 1
    _drain(w)
    assert w.store.get_badge(badge.learner_id, badge.badge_id).state == BadgeState.IMPORTED
    assert _reconcile(w).badges_requeued == 0  # nothing open any more


def test_a_badge_waiting_behind_a_backlog_longer_than_every_deadline_is_never_called_lost() -> None:
    # At Badgr's import rate a big migration queues days of work: a badge's job can wait longer
    # than the reconciler's repairs last, and then it looks just like a lost one.
    w = run_world()
    _connect(w.svc, w.store, BEN)
    (badge,) = [b for b in w.store.badges.values() if b.file_name == "b1.png"]
    assert badge.state == BadgeState.QUEUED and len(w.queue.sent["migrate"]) == 1  # its job waits
    runs = [_reconcile(w, now=LATER + i * 86400) for i in range(MAX_REPAIRS)]
    listings = w.badgr.listings
    runs += [_reconcile(w, now=LATER + i * 86400) for i in range(MAX_REPAIRS, MAX_REPAIRS + 2)]
    # Sent again as often as any item, then kept open while the queue holds jobs: no more copies
    # of its job, and no look in Badgr, which would only add to the backlog.
    assert [r.badges_requeued for r in runs] == [1] * MAX_REPAIRS + [0, 0]
    assert [r.kept_waiting for r in runs] == [0] * MAX_REPAIRS + [1, 1]
    assert w.badgr.listings == listings
    assert w.store.get_badge(badge.learner_id, badge.badge_id).state == BadgeState.QUEUED
    assert len(w.queue.sent["migrate"]) == 1 + MAX_REPAIRS
    _drain(w)  # its turn comes: the first job moves it, the copies find it moved
    assert w.store.get_badge(badge.learner_id, badge.badge_id).state == BadgeState.IMPORTED
    assert len(w.badgr.backpack) == 1


def test_a_badge_whose_jobs_keep_getting_lost_is_given_up_once_the_queue_is_empty() -> None:
    w = run_world()
    _connect(w.svc, w.store, BEN)
    (badge,) = [b for b in w.store.badges.values() if b.file_name == "b1.png"]
    for i in range(MAX_REPAIRS + 1):
        w.queue.take("migrate")  # every job lost
        _reconcile(w, now=LATER + i * 86400)
    after = w.store.get_badge(badge.learner_id, badge.badge_id)
    assert after.state == BadgeState.DEAD_LETTERED and after.problem is not None
    assert after.problem.code == "JOB_LOST"


def test_the_queue_is_read_before_the_run_sends_its_own_copies() -> None:
    # Its own sends must not make a lost badge look like one waiting behind a backlog.
    w = run_world()
    first, second = sorted(w.store.badges.values(), key=lambda b: b.badge_id)[:2]
    for badge, repairs, at in (
        (first, 0, "2000-01-01T00:00:00Z"),
        (second, MAX_REPAIRS, "2000-01-02T00:00:00Z"),
    ):
        w.store.badges[(badge.learner_id, badge.badge_id)] = badge.model_copy(
            update={"state": BadgeState.QUEUED, "repairs": repairs, "updated_at": at}
        )
    keys = [(b.learner_id, b.badge_id) for b in (first, second)]
    w.store.badges = {k: w.store.badges[k] for k in keys} | w.store.badges  # looked at in this order
    run = _reconcile(w)
    assert (run.badges_requeued, run.kept_waiting) == (1, 0)
    assert w.store.get_badge(second.learner_id, second.badge_id).state == BadgeState.DEAD_LETTERED


def test_a_queue_whose_depth_cannot_be_read_gives_no_badge_up() -> None:
    w = run_world()
    _connect(w.svc, w.store, BEN)
    (badge,) = [b for b in w.store.badges.values() if b.file_name == "b1.png"]

    def unreadable(queue_url: str) -> int:
        raise _throttled("GetQueueAttributes")

    w.queue.waiting = unreadable
    for i in range(MAX_REPAIRS + 1):
        w.queue.take("migrate")
        run = _reconcile(w, now=LATER + i * 86400)
    assert (run.kept_waiting, run.backlog_unread) == (1, True)
    assert w.store.get_badge(badge.learner_id, badge.badge_id).state == BadgeState.QUEUED
    assert "could not be read" in format_reconcile_run(run.model_dump())


def test_a_request_that_died_before_queueing_is_finished_by_the_reconciler() -> None:
    # The callback answered 500 after recording the request and before queueing any badge.
    w = run_world()
    _failing_sends(w, "migrate")
    real = w.store.transition

    def dies(badge: Any, expected: Any, **kwargs: Any) -> bool:
        raise _throttled("UpdateItem")

    w.store.transition = dies  # type: ignore[method-assign]
    with pytest.raises(ClientError):
        _connect(w.svc, w.store, ANA)
    w.store.transition = real  # type: ignore[method-assign]
    w.restore_send()
    ana = next(lid for lid, rec in w.store.learners.items() if rec.migration_requested_at)
    badges = w.store.list_badges(ana)
    assert {b.state for b in badges} >= {BadgeState.VERIFIED}
    run = _reconcile(w)
    assert run.requests_repaired == 1 and run.badges_requeued == 3  # gone.png is refused on import
    _drain(w)
    assert {b.file_name: b.state for b in w.store.list_badges(ana)}["a1.png"] == BadgeState.IMPORTED
    assert w.queue.take("notify")[-1]["kind"] == "summary"


def test_a_learner_whose_jobs_were_lost_can_always_move_again() -> None:
    w = run_world()
    _failing_sends(w, "migrate")
    with pytest.raises(ClientError):
        _connect(w.svc, w.store, BEN)
    w.restore_send()
    (badge,) = [b for b in w.store.badges.values() if b.file_name == "b1.png"]
    assert badge.state == BadgeState.QUEUED
    assert movable_counts([badge]) == (0, 1, 0)  # on its way, and it can be asked again
    assert "Move my badges to Badgr" in landing_page(PAGE, "c", [badge], requested=True)
    assert request_migration(w.svc, badge.learner_id) == 1


def test_a_learner_never_invited_after_a_throttled_write_in_notify_is_invited_once() -> None:
    w = run_world()
    ben = next(lid for lid, b in w.store.badges if w.store.badges[(lid, b)].file_name == "b1.png")
    # Notify's writes were throttled for every delivery, so the job went to the dead-letter queue.
    w.store.learners[ben] = w.store.learners[ben].model_copy(update={"invited_at": None})
    w.store.open_learners[ben] = "2000-01-01T00:00:00Z"
    sent_before = len(w.sender.sent)
    run = _reconcile(w)
    assert run.invitations_resent == 1
    (job,) = [j for j in w.queue.take("notify") if j["learner_id"] == ben]
    send_notice(w.svc, job)
    send_notice(w.svc, job)  # a replay sends nothing more
    assert len(w.sender.sent) == sent_before + 1
    assert w.store.learners[ben].invited_at is not None
    assert _reconcile(w).invitations_resent == 0


def test_an_invitation_sent_but_not_recorded_is_not_sent_twice() -> None:
    w = run_world()
    ben = next(lid for lid, b in w.store.badges if w.store.badges[(lid, b)].file_name == "b1.png")
    assert w.store.learners[ben].invited_at is not None
    sent = len(w.sender.sent)
    send_notice(w.svc, {"kind": "invite", "learner_id": ben, "export_id": w.export.export_id})
    assert len(w.sender.sent) == sent


def test_invitations_are_sent_again_only_so_often() -> None:
    w = run_world()
    ben = next(lid for lid, b in w.store.badges if w.store.badges[(lid, b)].file_name == "b1.png")
    w.store.learners[ben] = w.store.learners[ben].model_copy(update={"invited_at": None})
    w.store.open_learners[ben] = "2000-01-01T00:00:00Z"
    resent = sum(_reconcile(w, now=LATER + i * 86400).invitations_resent for i in range(MAX_REPAIRS + 2))
    assert resent == MAX_REPAIRS


def _dead_letter(w: Any, badgr_has_it: bool) -> tuple[Any, dict[str, Any]]:
    """A job in the migrate dead-letter queue whose last delivery never ran (a batch-mate's
    hangs outlasted the function): its badge still says failed_retryable."""
    _connect(w.svc, w.store, BEN)
    (job,) = w.queue.take("migrate")
    w.badgr.script[B1] = ["lost" if badgr_has_it else "retry"]
    with pytest.raises(Exception):  # noqa: B017 - RetryLater
        import_badge(w.svc, job["learner_id"], job["badge_id"], 4)
    w.svc.settings = w.svc.settings.model_copy(update={"migrate_dead_letter_queue_url": "migrate-dlq"})
    w.queue.send("migrate-dlq", [job])
    badge = w.store.get_badge(job["learner_id"], job["badge_id"])
    assert badge.state == BadgeState.FAILED_RETRYABLE
    return badge, job


@pytest.mark.parametrize(("badgr_has_it", "state"), [(True, "imported"), (False, "dead_lettered")])
def test_a_dead_lettered_job_settles_its_badge_against_badgr(badgr_has_it: bool, state: str) -> None:
    w = run_world()
    badge, job = _dead_letter(w, badgr_has_it)
    run = _reconcile(w, now=time.time())
    assert run.dead_letters_read == 1 and run.settled == {state: 1}
    settled = w.store.get_badge(badge.learner_id, badge.badge_id)
    assert settled.state == state
    assert settled.confirmed_by == Confirmation.BACKPACK_LISTING
    assert "trying again" not in status_page(PAGE, [settled])
    assert w.queue.sent["migrate-dlq"] == [job]  # kept for a redrive
    assert _reconcile(w, now=time.time()).dead_letters_read == 0  # held back, not read every run


def _summaries(w: Any) -> list[dict[str, Any]]:
    return [job for job in w.queue.take("notify") if job.get("kind") == "summary"]


def test_a_dead_lettered_badge_whose_late_import_landed_is_found_on_the_second_look() -> None:
    w = run_world()
    badge, _job = _dead_letter(w, badgr_has_it=False)
    first = _reconcile(w, now=time.time())
    assert first.settled == {"dead_lettered": 1}  # Badgr says it does not hold it
    given_up = w.store.get_badge(badge.learner_id, badge.badge_id)
    assert given_up.awaiting_second_look
    assert "once more within a few hours" in status_page(PAGE, [given_up])
    assert _summaries(w) == []  # the summary waits for the second look
    assert export_report(w.store, w.export)["badges_awaiting_second_look"] == 1
    w.badgr.hold(B1)  # the import that outlived our client's timeout lands
    assert _reconcile(w, now=time.time() + 60).settled == {}  # too soon to look again
    stale = w.svc.settings.stale_after_seconds
    assert _reconcile(w, now=time.time() + stale + 60).settled == {"imported": 1}
    settled = w.store.get_badge(badge.learner_id, badge.badge_id)
    assert settled.state == BadgeState.IMPORTED and settled.confirmed_by == Confirmation.BACKPACK_LISTING
    assert [job["learner_id"] for job in _summaries(w)] == [badge.learner_id]
    assert export_report(w.store, w.export)["badges_awaiting_second_look"] == 0
    assert _reconcile(w, now=time.time() + 2 * stale + 60).settled == {}  # looked at once, not forever


def _given_up_after_second_look(w: Any) -> tuple[Any, dict[str, Any], Any]:
    """A badge dead-lettered, awaiting its second look, then settled by it as not in Badgr: the
    badge and its job as dead-lettered, and the copy read before the second look."""
    badge, job = _dead_letter(w, badgr_has_it=False)
    _reconcile(w, now=time.time())
    before_second_look = w.store.get_badge(badge.learner_id, badge.badge_id)
    assert before_second_look.awaiting_second_look
    stale = w.svc.settings.stale_after_seconds
    assert _reconcile(w, now=time.time() + stale + 60).settled == {"dead_lettered": 1}
    return badge, job, before_second_look


def test_a_second_look_that_finds_nothing_settles_the_badge_and_sums_up_the_move() -> None:
    w = run_world()
    badge, _job, _older = _given_up_after_second_look(w)
    settled = w.store.get_badge(badge.learner_id, badge.badge_id)
    assert settled.state == BadgeState.DEAD_LETTERED
    assert settled.confirmed_by == Confirmation.BACKPACK_RELISTED and not settled.awaiting_second_look
    assert settled.problem is not None and "once more" not in settled.problem.message
    assert [job["learner_id"] for job in _summaries(w)] == [badge.learner_id]


def test_a_second_look_badgr_cannot_answer_is_taken_again_then_the_move_is_summed_up() -> None:
    w = run_world()
    badge, _job = _dead_letter(w, badgr_has_it=False)
    _reconcile(w, now=time.time())
    w.badgr.listing = ["fail"] * MAX_LOOKS
    stale = w.svc.settings.stale_after_seconds
    for look in range(1, MAX_LOOKS):
        later = time.time() + look * (stale + 60)
        assert _reconcile(w, now=later).settled == {"dead_lettered": 1}
        assert w.store.get_badge(badge.learner_id, badge.badge_id).awaiting_second_look
        assert _summaries(w) == []  # still waiting for Badgr's word
    assert _reconcile(w, now=time.time() + MAX_LOOKS * (stale + 60)).settled == {"dead_lettered": 1}
    settled = w.store.get_badge(badge.learner_id, badge.badge_id)
    assert settled.confirmed_by == Confirmation.NOT_CONFIRMED and settled.looks == MAX_LOOKS
    assert [job["learner_id"] for job in _summaries(w)] == [badge.learner_id]
    w.badgr.hold(B1)  # Badgr answers again, and had it after all
    later = time.time() + (MAX_LOOKS + 1) * (stale + 60)
    assert _reconcile(w, now=later).settled == {"imported": 1}


def test_a_dead_lettered_badge_badgr_could_not_confirm_is_asked_again_later() -> None:
    w = run_world(ScriptedBadgr({B1: ["retry"] * 5}, listing=["ok"] * 4 + ["fail", "fail"]))
    _connect(w.svc, w.store, BEN)
    (job,) = w.queue.take("migrate")
    for attempt in range(1, 6):
        with pytest.raises(Exception):  # noqa: B017 - RetryLater
            import_badge(w.svc, job["learner_id"], job["badge_id"], attempt)
    badge = w.store.get_badge(job["learner_id"], job["badge_id"])
    assert badge.confirmed_by == Confirmation.NOT_CONFIRMED
    w.badgr.hold(B1)  # Badgr had taken it after all
    assert _reconcile(w).settled == {"imported": 1}


def test_a_stale_extracted_badge_gets_its_verify_job_again_a_few_times() -> None:
    w = run_world()
    (badge,) = [b for b in w.store.badges.values() if b.file_name == "b1.png"]
    w.store.badges[(badge.learner_id, badge.badge_id)] = badge.model_copy(
        update={"state": BadgeState.EXTRACTED, "updated_at": "2000-01-01T00:00:00Z"}
    )
    counts = [_reconcile(w, now=LATER + i * 86400).verify_jobs_resent for i in range(MAX_REPAIRS + 1)]
    assert counts == [1] * MAX_REPAIRS + [0]
    assert w.queue.take("verify") == [{"learner_id": badge.learner_id}] * MAX_REPAIRS


def test_the_last_run_is_on_record_for_the_report() -> None:
    w = run_world()
    _reconcile(w)
    run = w.store.last_reconcile_run()
    assert run is not None and run["finished_at"]
    assert "Reconciler" in format_reconcile_run(run)


def test_a_throttled_read_of_the_open_index_cuts_the_run_short_and_keeps_it_on_record() -> None:
    w = run_world()
    _dead_letter(w, badgr_has_it=True)

    def throttled(older_than: str) -> Any:
        raise _throttled("Query")

    w.store.iter_open = throttled
    run = _reconcile(w, now=time.time())
    assert run.cut_short and run.settled == {"imported": 1}  # the dead letters were still read
    assert w.store.last_reconcile_run()["cut_short"] is True


def test_a_second_look_whose_write_is_throttled_is_taken_again_by_the_next_run() -> None:
    w = run_world()
    badge, _job = _dead_letter(w, badgr_has_it=False)
    _reconcile(w, now=time.time())
    w.badgr.hold(B1)  # the late import has landed
    real = w.store.transition

    def throttled(*args: Any, **kwargs: Any) -> bool:
        raise _throttled("UpdateItem")

    w.store.transition = throttled
    stale = w.svc.settings.stale_after_seconds
    assert _reconcile(w, now=time.time() + stale + 60).settled == {}  # listed, then not written
    assert w.store.get_badge(badge.learner_id, badge.badge_id).awaiting_second_look
    assert _summaries(w) == []
    w.store.transition = real
    assert _reconcile(w, now=time.time() + stale + 120).settled == {"imported": 1}
    assert [job["learner_id"] for job in _summaries(w)] == [badge.learner_id]


def test_an_older_look_at_a_badge_never_puts_its_word_over_a_newer_one() -> None:
    # Two looks at one dead-lettered badge: the reconciler's runs may overlap, and its open
    # index may hand out a copy older than the table's.
    w = run_world()
    badge, _job, older = _given_up_after_second_look(w)
    w.badgr.listing = ["fail"]  # the older look cannot get Badgr's word
    look_again(w.svc, older, Backpacks())
    settled = w.store.get_badge(badge.learner_id, badge.badge_id)
    assert settled.confirmed_by == Confirmation.BACKPACK_RELISTED and not settled.awaiting_second_look
    assert settled.looks == 1


def test_an_older_look_that_finds_the_badge_in_badgr_records_it_whatever_came_since() -> None:
    w = run_world()
    badge, _job, older = _given_up_after_second_look(w)
    w.badgr.hold(B1)  # the import landed after the newer look
    assert look_again(w.svc, older, Backpacks()) == BadgeState.IMPORTED
    assert w.store.get_badge(badge.learner_id, badge.badge_id).state == BadgeState.IMPORTED


def test_overlapping_runs_send_a_lost_job_back_once() -> None:
    w = run_world()
    _connect(w.svc, w.store, BEN)
    w.queue.take("migrate")  # the job is lost
    (copy,) = [b for b in w.store.iter_open("9999") if isinstance(b, BadgeRecord)]
    first = _reconcile(w)
    assert first.badges_requeued == 1
    # A run that read the open index before the first run wrote its repair.
    w.store.iter_open = lambda older_than: iter([copy])  # type: ignore[method-assign]
    assert _reconcile(w).badges_requeued == 0
    assert len(w.queue.take("migrate")) == 1


def test_a_badge_given_up_on_whose_late_job_dies_after_badgr_took_it_is_found_again() -> None:
    # A copy of the job (a redrive, the reconciler's) runs after the badge was settled as not
    # moved; Badgr takes it and the worker dies before recording it, on the message's last try.
    w = run_world()
    badge, job, _older = _given_up_after_second_look(w)
    stale = w.svc.settings.stale_after_seconds
    assert w.store.get_badge(badge.learner_id, badge.badge_id).confirmed_by == Confirmation.BACKPACK_RELISTED
    w.badgr.script[B1] = ["imported"]
    real = w.store.transition

    def dies(record: Any, expected: Any, **kwargs: Any) -> bool:
        if record.state == BadgeState.IMPORTED:
            raise RuntimeError("the worker died after Badgr took the badge")
        return bool(real(record, expected, **kwargs))

    w.store.transition = dies  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        import_badge(w.svc, job["learner_id"], job["badge_id"], 1)
    w.store.transition = real  # type: ignore[method-assign]
    assert w.store.get_badge(badge.learner_id, badge.badge_id).state == BadgeState.QUEUED
    later = time.time() + 3 * (stale + 60)
    assert _reconcile(w, now=later).settled == {"imported": 1}
    settled = w.store.get_badge(badge.learner_id, badge.badge_id)
    assert settled.state == BadgeState.IMPORTED
