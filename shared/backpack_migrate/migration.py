"""The learner's side of the move: verdicts ahead of time, the Badgr connection, every import.

Each badge moves through the states of ``domain.BadgeState`` by conditional writes only, so a
replayed job can never move a badge backwards or import it twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from .domain import (
    FINAL_STATES,
    BadgeRecord,
    BadgeState,
    BadgrAnswer,
    ExportRecord,
    LearnerRecord,
    Problem,
    VerdictSummary,
    now_iso,
    request_stamp,
)
from .export import ExportError, read_member
from .intake import open_export
from .observability import logger, metrics
from .services import Services

RETRYABLE_STATES = (BadgeState.QUEUED, BadgeState.FAILED_RETRYABLE, BadgeState.DEAD_LETTERED)
# States a new request (the learner connecting Badgr, again or for the first time) sends to work.
REQUEUED_STATES = (
    BadgeState.EXTRACTED,
    BadgeState.VERIFIED,
    BadgeState.QUEUED,
    BadgeState.FAILED_RETRYABLE,
    BadgeState.DEAD_LETTERED,
)


class RetryLater(Exception):  # noqa: N818 - it is a request, not an error
    """The import could not finish now; SQS brings the job back after ``delay`` seconds."""

    def __init__(self, problem: Problem, delay: float | None = None) -> None:
        super().__init__(problem.message)
        self.problem = problem
        self.delay = delay


_ACCESS_LOST = Problem(
    code="BADGR_ACCESS_LOST",
    message="Badgr no longer lets us add badges to your account: open your link and connect Badgr again.",
)
_ACCESS_WAIT = Problem(code="BADGR_BUSY", message="Badgr asked us to wait; we will try again.")
_UNAVAILABLE = Problem(code="BADGR_UNAVAILABLE", message="Badgr did not answer; we will try again.")
_GAVE_UP = "Badgr did not take this badge after several tries; our team has been told."
_INTERNAL = Problem(
    code="INTERNAL_ERROR",
    message="Something went wrong on our side while moving this badge; our team has been told.",
)


def learner_email(svc: Services, learner: LearnerRecord, export: ExportRecord | None = None) -> str:
    export = export or svc.store.get_export(learner.export_id)
    if export is None:
        raise LookupError(f"learner {learner.learner_id} belongs to an unknown export")
    return svc.emails.decrypt(
        learner.email_ciphertext,
        learner_id=learner.learner_id,
        export_id=learner.export_id,
        data_key_ciphertext=export.data_key_ciphertext,
    )


def learner_recipients(
    svc: Services, learner: LearnerRecord, export: ExportRecord | None = None
) -> list[str]:
    """The addresses a badge of this learner may be issued to: the contact address and, for a
    Backpack user, every verified address of theirs (an unverified one is never trusted)."""
    export = export or svc.store.get_export(learner.export_id)
    email = learner_email(svc, learner, export)
    if not learner.addresses_ciphertext or export is None:
        return [email]
    addresses = json.loads(
        svc.emails.decrypt(
            learner.addresses_ciphertext,
            learner_id=learner.learner_id,
            export_id=learner.export_id,
            data_key_ciphertext=export.data_key_ciphertext,
        )
    )
    verified = [a["address"] for a in addresses if a.get("verified") and a.get("address") != email]
    return [email, *verified]


# -- verdicts, worked out ahead --------------------------------------------------------------
def _verdicts(svc: Services, learner: LearnerRecord, badges: Sequence[BadgeRecord]) -> list[BadgeRecord]:
    """The badges with their full verdicts (against the learner's email), not yet stored."""
    export = svc.store.get_export(learner.export_id)
    if export is None:
        raise LookupError(f"learner {learner.learner_id} belongs to an unknown export")
    recipients = learner_recipients(svc, learner, export)
    reader = open_export(svc, export)
    images = [read_member(reader, badge.member) if badge.member else b"" for badge in badges]
    verdicts = svc.verifier.verify_many(images, recipients)
    checked = now_iso()
    return [
        badge.model_copy(
            update={"verdict": _merge(badge.verdict, verdict.to_summary()), "verified_at": checked}
        )
        for badge, verdict in zip(badges, verdicts, strict=True)
    ]


def verify_learner(svc: Services, learner_id: str) -> int:
    """Verify every extracted badge of a learner against the learner's email; returns how many."""
    learner = svc.store.get_learner(learner_id)
    if learner is None:
        raise LookupError(f"unknown learner {learner_id}")
    waiting = [b for b in svc.store.list_badges(learner_id) if b.state == BadgeState.EXTRACTED]
    if not waiting:
        return 0
    done = 0
    for badge in _verdicts(svc, learner, waiting):
        verified = badge.model_copy(update={"state": BadgeState.VERIFIED})
        if svc.store.transition(verified, [BadgeState.EXTRACTED]):
            done += 1
            valid = verified.verdict is not None and verified.verdict.valid
            metrics.add_metric(
                name="BadgesVerifiedValid" if valid else "BadgesVerifiedInvalid", unit="Count", value=1
            )
    return done


def _merge(offline: VerdictSummary | None, full: VerdictSummary) -> VerdictSummary:
    """Keep what extraction knew offline where the full verification could not learn it."""
    if offline is None:
        return full
    known = {k: v for k, v in offline.model_dump().items() if v not in (None, [], False)}
    filled = {k: v for k, v in full.model_dump().items() if v not in (None, [])}
    return VerdictSummary.model_validate({**known, **filled})


# -- connecting Badgr --------------------------------------------------------------------------
def store_tokens(svc: Services, learner_id: str, tokens: Any) -> None:
    current = svc.store.get_token(learner_id)
    version = current[1] + 1 if current else 1
    sealed = svc.tokens.seal(tokens.model_dump_json(), learner_id=learner_id)
    if not svc.store.save_token(learner_id, sealed, version):
        raise RuntimeError("the learner's Badgr connection changed meanwhile")


def request_migration(svc: Services, learner_id: str) -> int:
    """Queue an import job for every badge that can still move; returns how many were queued.

    Badges already queued are sent again: a job lost with a crashed request must not leave its
    badge waiting for ever, and a duplicate job changes nothing (imports are idempotent).
    """
    if svc.store.get_learner(learner_id) is None:
        raise LookupError(f"unknown learner {learner_id}")
    requested_at = request_stamp()
    svc.store.mark_migration_requested(learner_id, requested_at)
    batch: list[dict[str, Any]] = []
    queued = 0
    for badge in svc.store.list_badges(learner_id):
        if badge.state not in REQUEUED_STATES and not badge.can_move_again:
            continue
        update: dict[str, Any] = {"state": BadgeState.QUEUED, "problem": None}
        if badge.can_move_again:
            update["moved_again"] = badge.moved_again + 1
        if svc.store.transition(badge.model_copy(update=update), [badge.state]):
            batch.append({"learner_id": learner_id, "badge_id": badge.badge_id})
        if len(batch) == 10:  # sent as we go, so a timeout loses at most one batch of jobs
            queued += svc.queue.send(svc.settings.migrate_queue_url, batch)
            batch = []
    if batch:
        queued += svc.queue.send(svc.settings.migrate_queue_url, batch)
    metrics.add_metric(name="MigrationsRequested", unit="Count", value=1)
    if not queued:
        maybe_send_summary(svc, learner_id)
    return queued


# -- one import --------------------------------------------------------------------------------
def import_badge(svc: Services, learner_id: str, badge_id: str, receive_count: int) -> BadgeState | None:
    """Move one badge into Badgr and record its final state.

    Raises ``RetryLater`` when Badgr or the network failed for now. On the job's last delivery the
    badge is recorded as dead-lettered first, whatever failed, so the learner's page says so.
    """
    badge = svc.store.get_badge(learner_id, badge_id)
    if badge is None:
        logger.warning("import job for an unknown badge", extra={"badge_id": badge_id})
        return None
    if badge.state not in RETRYABLE_STATES:
        if badge.state in FINAL_STATES:
            # A replay after a crash between the final write and the summary: finish the job.
            maybe_send_summary(svc, learner_id)
        return badge.state
    last = receive_count >= svc.settings.migrate_max_receive_count
    try:
        return _import(svc, badge, receive_count)
    except RetryLater as retry:
        reason = retry.problem
        if last and reason.code != _ACCESS_LOST.code:
            # No retry is coming any more: the learner's page must not promise one.
            reason = Problem(code=reason.code, message=_GAVE_UP)
        state = BadgeState.DEAD_LETTERED if last else BadgeState.FAILED_RETRYABLE
        _finish(svc, badge, state, problem=reason, attempts=receive_count)
        raise
    except Exception:
        if last:
            logger.exception("import failed on its last delivery", extra={"badge_id": badge_id})
            _finish(svc, badge, BadgeState.DEAD_LETTERED, problem=_INTERNAL, attempts=receive_count)
        raise


def _import(svc: Services, badge: BadgeRecord, receive_count: int) -> BadgeState:
    if badge.verified_at is None:
        # Queued before its verify job ran: check it now rather than send Badgr a doomed badge.
        learner = svc.store.get_learner(badge.learner_id)
        if learner is not None:
            badge = _verdicts(svc, learner, [badge])[0]
    verdict = badge.verdict
    if verdict is not None and verdict.certain_to_fail:
        blocking = (
            verdict.errors[0]
            if verdict.errors
            else Problem(code="INVALID", message="This badge is not valid.")
        )
        return _finish(svc, badge, BadgeState.REJECTED, problem=blocking)
    form, payload = _import_form(svc, badge)
    result = _import_with_token(svc, badge, form, payload)
    state = {
        "imported": BadgeState.IMPORTED,
        "already_in_badgr": BadgeState.ALREADY_IN_BADGR,
        "pending": BadgeState.PENDING,
        "rejected": BadgeState.REJECTED,
    }[result["outcome"]]
    answer = BadgrAnswer.model_validate(result["answer"])
    problem = None
    if state == BadgeState.REJECTED:
        from .badgr import reason_code

        # The code recorded is the one the sentence explains: "move again" is decided by it.
        problem = Problem(code=reason_code(answer.codes) or "BADGR_REJECTED", message=result["reason"])
    return _finish(svc, badge, state, problem=problem, badgr=answer, attempts=receive_count, form=form)


def _finish(
    svc: Services,
    badge: BadgeRecord,
    state: BadgeState,
    *,
    problem: Problem | None = None,
    badgr: BadgrAnswer | None = None,
    attempts: int | None = None,
    form: str | None = None,
) -> BadgeState:
    updated = badge.model_copy(
        update={
            "state": state,
            "problem": problem,
            "badgr": badgr or badge.badgr,
            "attempts": attempts if attempts is not None else badge.attempts,
            "import_form": form or badge.import_form,
        }
    )
    if svc.store.transition(updated, [badge.state]):
        metrics.add_metric(name=f"Badges_{state.value}", unit="Count", value=1)
        if state in FINAL_STATES:
            maybe_send_summary(svc, badge.learner_id)
    return state


def _import_form(svc: Services, badge: BadgeRecord) -> tuple[str, Any]:
    """The hosted URL when it verifies, else the baked image, else the hosted URL anyway."""
    from .badgr import image_data_uri

    verdict = badge.verdict
    if verdict is not None and verdict.valid and verdict.hosted_url:
        return "url", verdict.hosted_url
    if badge.member is not None:
        export = svc.store.get_export(badge.export_id)
        try:
            if export is None:
                raise ExportError("EXPORT_GONE")
            data = read_member(open_export(svc, export), badge.member)
        except ExportError as error:
            if verdict is not None and verdict.hosted_url:
                return "url", verdict.hosted_url
            raise RetryLater(Problem(code=error.code, message=error.message)) from error
        return "image", image_data_uri(data, badge.media_type or "image/png")
    if verdict is not None and verdict.hosted_url:
        return "url", verdict.hosted_url
    raise RetryLater(Problem(code="NOTHING_TO_SEND", message="Nothing of this badge could be sent to Badgr."))


def _import_with_token(svc: Services, badge: BadgeRecord, form: str, payload: Any) -> dict[str, Any]:
    learner_id = badge.learner_id

    def call(job: dict[str, Any]) -> dict[str, Any]:
        refreshed = False
        while True:
            access_token, refresh_token, version = _tokens(svc, learner_id)
            result = svc.badgr.import_badge(access_token, **{form: payload})
            if result.outcome == "retry":
                raise RetryLater(_UNAVAILABLE, delay=result.retry_after)
            if result.outcome == "forbidden" or (result.outcome == "unauthorized" and refreshed):
                # 404 means the token lacks rw:backpack: only the learner can grant it again.
                raise RetryLater(_ACCESS_LOST)
            if result.outcome == "unauthorized":
                _refresh(svc, learner_id, refresh_token, version)
                refreshed = True
                continue
            return {
                "outcome": result.outcome,
                "reason": result.reason,
                "answer": result.to_answer().model_dump(),
            }

    once: Callable[..., dict[str, Any]] = svc.once("badgr-import", call)
    # Every delivery of a job asks Badgr once; only the learner moving a refused badge again
    # (moved_again) is a new question.
    return once(job={"learner_id": learner_id, "badge_id": badge.badge_id, "moved_again": badge.moved_again})


def _refresh(svc: Services, learner_id: str, refresh_token: str, version: int) -> None:
    """Refresh an expired access token. Badgr rotates refresh tokens, so workers of the same
    learner race: the loser's old refresh token is refused, and it takes the winner's tokens."""
    from .badgr import BadgrAuthError, BadgrThrottled, BadgrUnavailable

    try:
        tokens = svc.badgr.refresh(refresh_token)
    except BadgrThrottled as throttled:
        raise RetryLater(_ACCESS_WAIT, delay=throttled.retry_after) from throttled
    except BadgrUnavailable as error:
        raise RetryLater(_ACCESS_WAIT) from error
    except BadgrAuthError as error:
        stored = svc.store.get_token(learner_id)
        if stored is not None and stored[1] > version:
            return
        raise RetryLater(_ACCESS_LOST) from error
    sealed = svc.tokens.seal(tokens.model_dump_json(), learner_id=learner_id)
    svc.store.save_token(learner_id, sealed, version + 1)  # a lost race leaves the winner's tokens


def _tokens(svc: Services, learner_id: str) -> tuple[str, str, int]:
    stored = svc.store.get_token(learner_id)
    if stored is None:
        raise RetryLater(_ACCESS_LOST)
    ciphertext, version = stored
    tokens = json.loads(svc.tokens.open(ciphertext, learner_id=learner_id))
    return tokens["access_token"], tokens["refresh_token"], version


# -- the end of a learner's move -------------------------------------------------------------
def maybe_send_summary(svc: Services, learner_id: str) -> bool:
    """Queue the summary email once every badge of a learner that was asked to move is final.

    The notice goes out before the claim: a crash in between sends it again, and the notice's
    idempotency key (learner + request) keeps that to one email.
    """
    learner = svc.store.get_learner(learner_id)
    requested_at = learner.migration_requested_at if learner else None
    if learner is None or requested_at is None or learner.summary_for == requested_at:
        return False
    if any(badge.state not in FINAL_STATES for badge in svc.store.list_badges(learner_id)):
        return False
    if learner.backpack_user_id is not None and not groups_settled(svc, learner_id, requested_at):
        # A Backpack user's groups become Badgr collections first; that job sends the summary.
        svc.queue.send(
            svc.settings.collections_queue_url, [{"learner_id": learner_id, "requested_at": requested_at}]
        )
        return False
    svc.queue.send(
        svc.settings.notify_queue_url,
        [{"kind": "summary", "learner_id": learner_id, "requested_at": requested_at}],
    )
    return svc.store.claim_summary(learner_id, requested_at)


def groups_settled(svc: Services, learner_id: str, requested_at: str) -> bool:
    """Every group of the learner has its collection made (or skipped) for this request."""
    return all(
        group.settled_for == requested_at
        and group.collection is not None
        and group.collection.state != "creating"
        for group in svc.store.list_groups(learner_id)
    )
