"""The reconciler: every few minutes, whatever should have moved on by itself and did not is
sent back to work or settled against Badgr, so no badge or learner stays half-way for ever.

It reads two places, never the whole table:
- the old end of the store's sparse ``Open`` index: badges still extracted, queued or retrying
  (their job was lost: a send that failed after the state was written, a dead-lettered verify
  job), badges dead-lettered without Badgr's word or awaiting their second look (an import of
  ours was sent, and its answer may have been lost), learners never invited, and learners whose
  move was asked for but never summed up (a request that died before it queued every badge);
- the migrate dead-letter queue: each job there settles its badge against Badgr, so a badge
  whose last delivery never ran (a batch-mate's hangs outlasted the function) stops saying
  "trying again". The jobs stay there for an operator's redrive.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from pydantic import Field

from .domain import BadgeRecord, BadgeState, Confirmation, LearnerRecord, Problem, now_iso
from .holdings import Backpacks
from .migration import RETRYABLE_STATES, look_again, maybe_send_summary, queue_badges, settle
from .models import Model
from .observability import logger, metrics
from .queues import is_transient_aws_error
from .services import Services

MAX_REPAIRS = 3  # sent back to work this often, then settled (badges) or left to an operator
DEAD_LETTERS_PER_RUN = 100
DEAD_LETTER_HOLD_SECONDS = 6 * 3600  # read again after this (SQS allows 12 h from receipt in all)
RESERVE_MS = 10_000

_NOT_MOVING = Problem(
    code="JOB_LOST",
    message="Badgr did not take this badge after several tries; our team has been told.",
)


class ReconcileRun(Model):
    """What one run did, for the metrics and ``backpack-migrate report``."""

    started_at: str
    finished_at: str | None = None
    looked_at: int = 0
    badges_requeued: int = 0
    verify_jobs_resent: int = 0
    invitations_resent: int = 0
    requests_repaired: int = 0
    summaries_sent: int = 0
    dead_letters_read: int = 0
    settled: dict[str, int] = Field(default_factory=dict)  # badges settled, by the state recorded
    left_for_operator: int = 0
    # Past their repairs, yet not given up: the migrate queue still held jobs, theirs among them
    # perhaps (a backlog behind Badgr's import rate outlasts any deadline).
    kept_waiting: int = 0
    backlog_unread: bool = False  # the migrate queue's depth could not be read: none given up
    cut_short: bool = False


def _migrate_backlog(svc: Services, run: ReconcileRun) -> bool:
    """Whether the migrate queue holds jobs, read once before the run sends any. A badge waiting
    its turn behind a long backlog looks just like one whose job was lost; only an empty queue
    tells them apart."""
    try:
        return svc.queue.waiting(svc.settings.migrate_queue_url) > 0
    except Exception as error:
        # Cannot tell: never give a badge up on a guess, and say so where an operator looks.
        run.backlog_unread = True
        logger.warning(
            "could not read the migrate queue's depth",
            extra={"error": type(error).__name__, "transient": is_transient_aws_error(error)},
        )
        return True


def reconcile(
    svc: Services, remaining_ms: Callable[[], int], now: Callable[[], float] = time.time
) -> ReconcileRun:
    run = ReconcileRun(started_at=now_iso())
    settled: Counter[str] = Counter()
    backpacks = Backpacks()
    try:
        _settle_dead_letters(svc, backpacks, run, settled, remaining_ms)
    except Exception as error:
        _cut_short_by(error, run, "the dead-letter queue")
    cutoff = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now() - svc.settings.stale_after_seconds))
    verify_sent: set[str] = set()
    backlog = _migrate_backlog(svc, run)
    try:
        for item in svc.store.iter_open(cutoff):
            if remaining_ms() < RESERVE_MS:
                run.cut_short = True  # the next run goes on from the oldest left
                break
            run.looked_at += 1
            try:
                if isinstance(item, LearnerRecord):
                    _repair_learner(svc, item, run)
                else:
                    _repair_badge(svc, item, backpacks, run, settled, verify_sent, backlog)
            except Exception:
                # One item's trouble (a throttled write, say) must not stop the rest; next run retries.
                logger.exception("could not repair an item", extra={"kind": type(item).__name__})
    except Exception as error:
        _cut_short_by(error, run, "the open index")
    run.settled = dict(settled)
    run.finished_at = now_iso()
    svc.store.save_reconcile_run(run.model_dump())
    for name, value in (
        ("ReconcileBadgesRequeued", run.badges_requeued),
        ("ReconcileVerifyJobsResent", run.verify_jobs_resent),
        ("ReconcileInvitationsResent", run.invitations_resent),
        ("ReconcileRequestsRepaired", run.requests_repaired),
        ("ReconcileDeadLettersRead", run.dead_letters_read),
        ("ReconcileBadgesSettled", sum(settled.values())),
        ("ReconcileLeftForOperator", run.left_for_operator),
        ("ReconcileBadgesKeptWaiting", run.kept_waiting),
        ("ReconcileBacklogUnread", int(run.backlog_unread)),
    ):
        metrics.add_metric(name=name, unit="Count", value=value)
    logger.info("reconciled", extra=run.model_dump())
    return run


def _cut_short_by(error: Exception, run: ReconcileRun, where: str) -> None:
    """A read refused for now (a throttled Query or ReceiveMessage) ends that part of the run,
    not the run: what was done is counted and on record, and the next run goes on."""
    if not is_transient_aws_error(error):
        raise error
    run.cut_short = True
    logger.warning("reconciler run cut short: AWS refused a call for now", extra={"reading": where})


def _settle_dead_letters(
    svc: Services,
    backpacks: Backpacks,
    run: ReconcileRun,
    settled: Counter[str],
    remaining_ms: Callable[[], int],
) -> None:
    url = svc.settings.migrate_dead_letter_queue_url
    if not url:
        return
    while run.dead_letters_read < DEAD_LETTERS_PER_RUN and remaining_ms() >= RESERVE_MS:
        messages = svc.queue.receive(url, 10)
        if not messages:
            return
        for job, receipt in messages:
            run.dead_letters_read += 1
            badge = svc.store.get_badge(str(job.get("learner_id")), str(job.get("badge_id")))
            if badge is not None and _unsettled(badge):
                state = settle(svc, badge, backpacks, _NOT_MOVING, max(badge.attempts, 1))
                settled[state.value] += 1
            # Kept for an operator's redrive; not read again by every run.
            svc.queue.delay(url, receipt, DEAD_LETTER_HOLD_SECONDS)


def _unsettled(badge: BadgeRecord) -> bool:
    """In a state that promises another try, or given up on without Badgr's word."""
    if badge.state == BadgeState.DEAD_LETTERED:
        return badge.confirmed_by in (None, Confirmation.NOT_CONFIRMED)
    return badge.state in RETRYABLE_STATES


def _repair_badge(
    svc: Services,
    badge: BadgeRecord,
    backpacks: Backpacks,
    run: ReconcileRun,
    settled: Counter[str],
    verify_sent: set[str],
    backlog: bool,
) -> None:
    # Each repair below is written only if nothing changed since the open index was read: a
    # worker that moved the badge on, or an overlapping run, must not be met by another copy.
    again = badge.model_copy(update={"repairs": badge.repairs + 1})
    if badge.state == BadgeState.EXTRACTED:
        if badge.repairs >= MAX_REPAIRS:
            run.left_for_operator += 1  # verification keeps failing: the verify dead-letter queue says why
            return
        if svc.store.transition(again, [badge.state], unchanged=True) and badge.learner_id not in verify_sent:
            svc.queue.send(svc.settings.verify_queue_url, [{"learner_id": badge.learner_id}])
            verify_sent.add(badge.learner_id)
            run.verify_jobs_resent += 1
        return
    if badge.state == BadgeState.DEAD_LETTERED:
        # Given up on hours ago, awaiting its second look or without Badgr's word: whatever an
        # import of ours did has landed by now.
        state = look_again(svc, badge, backpacks)
        settled[state.value] += 1
        return
    if badge.repairs >= MAX_REPAIRS:
        if backlog:
            # Perhaps only waiting its turn: telling the learner Badgr refused it would be false,
            # and another copy of its job (or a look in Badgr) would only add to the backlog. It
            # stays open and is looked at again a deadline later.
            if svc.store.transition(again, [badge.state], unchanged=True):
                run.kept_waiting += 1
            return
        state = settle(svc, badge, backpacks, _NOT_MOVING, max(badge.attempts, 1))
        settled[state.value] += 1
        return
    # Queued or retrying, and no job moved it on for longer than any retry takes: its job was
    # lost. Badgr may have it already (a lost answer); else it goes back to work.
    try:
        held = backpacks.held(svc, badge)
    except Exception:
        held = None  # Badgr cannot say now: the job asks again if a try of ours was sent
    if held is not None:
        state = settle(svc, badge, backpacks, _NOT_MOVING, max(badge.attempts, 1))
        settled[state.value] += 1
        return
    if svc.store.transition(again, [badge.state], unchanged=True):
        svc.queue.send(
            svc.settings.migrate_queue_url,
            [{"learner_id": badge.learner_id, "badge_id": badge.badge_id, "attempts": badge.attempts}],
        )
        run.badges_requeued += 1


def _repair_learner(svc: Services, learner: LearnerRecord, run: ReconcileRun) -> None:
    at = now_iso()
    if learner.migration_requested_at is not None and learner.summary_for != learner.migration_requested_at:
        # A move was asked for and never summed up: queue what the request did not get to.
        badges = svc.store.list_badges(learner.learner_id)
        waiting = [b for b in badges if b.state in (BadgeState.EXTRACTED, BadgeState.VERIFIED)]
        if waiting:
            run.badges_requeued += queue_badges(svc, learner.learner_id, waiting)
            run.requests_repaired += 1
        elif maybe_send_summary(svc, learner.learner_id):
            run.summaries_sent += 1
            return
        svc.store.touch_learner(learner.learner_id, at)
        return
    if learner.invited_at is None and learner.expects_invitation:
        if learner.repairs >= MAX_REPAIRS:
            run.left_for_operator += 1  # the notify dead-letter queue says why
            svc.store.touch_learner(learner.learner_id, at, close=True)
            return
        job: dict[str, Any] = {
            "kind": "invite",
            "learner_id": learner.learner_id,
            "export_id": learner.export_id,
        }
        svc.queue.send(svc.settings.notify_queue_url, [job])
        svc.store.touch_learner(learner.learner_id, at)
        run.invitations_resent += 1
        return
    svc.store.touch_learner(learner.learner_id, at, close=True)
