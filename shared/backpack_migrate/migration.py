"""The learner's side of the move: verdicts ahead of time, the Badgr connection, every import.

Each badge moves through the states of ``domain.BadgeState`` by conditional writes only, so a
replayed job can never move a badge backwards or import it twice.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

from .domain import (
    FINAL_STATES,
    BadgeRecord,
    BadgeState,
    BadgrAnswer,
    LearnerRecord,
    Problem,
    VerdictSummary,
)
from .export import read_member
from .intake import open_export
from .observability import logger, metrics
from .services import Services

RETRYABLE_STATES = (BadgeState.QUEUED, BadgeState.FAILED_RETRYABLE, BadgeState.DEAD_LETTERED)


class RetryLater(Exception):  # noqa: N818 - it is a request, not an error
    """The import could not finish now; SQS brings the job back after ``delay`` seconds."""

    def __init__(self, problem: Problem, delay: float | None = None) -> None:
        super().__init__(problem.message)
        self.problem = problem
        self.delay = delay


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def learner_email(svc: Services, learner: LearnerRecord) -> str:
    export = svc.store.get_export(learner.export_id)
    if export is None:
        raise LookupError(f"learner {learner.learner_id} belongs to an unknown export")
    return svc.emails.decrypt(
        learner.email_ciphertext,
        learner_id=learner.learner_id,
        export_id=learner.export_id,
        data_key_ciphertext=export.data_key_ciphertext,
    )


# -- verdicts, worked out ahead --------------------------------------------------------------
def verify_learner(svc: Services, learner_id: str) -> int:
    """Verify every extracted badge of a learner against the learner's email; returns how many."""
    learner = svc.store.get_learner(learner_id)
    if learner is None:
        raise LookupError(f"unknown learner {learner_id}")
    waiting = [b for b in svc.store.list_badges(learner_id) if b.state == BadgeState.EXTRACTED]
    if not waiting:
        return 0
    email = learner_email(svc, learner)
    export = svc.store.get_export(learner.export_id)
    assert export is not None
    reader = open_export(svc, export)
    images = [read_member(reader, badge.member) if badge.member else b"" for badge in waiting]
    verdicts = svc.verifier.verify_many(images, [email])
    done = 0
    for badge, verdict in zip(waiting, verdicts, strict=True):
        summary: VerdictSummary = _merge(badge.verdict, verdict.to_summary())
        if svc.store.transition(
            badge.model_copy(update={"state": BadgeState.VERIFIED, "verdict": summary}),
            [BadgeState.EXTRACTED],
        ):
            done += 1
            metrics.add_metric(
                name="BadgesVerifiedValid" if summary.valid else "BadgesVerifiedInvalid",
                unit="Count",
                value=1,
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
    """Queue an import job for every badge that can still move; returns how many were queued."""
    learner = svc.store.get_learner(learner_id)
    if learner is None:
        raise LookupError(f"unknown learner {learner_id}")
    svc.store.save_learner(
        learner.model_copy(update={"migration_requested_at": _now_iso(), "summary_sent": False})
    )
    queued: list[dict[str, Any]] = []
    for badge in svc.store.list_badges(learner_id):
        if badge.state in (BadgeState.EXTRACTED, BadgeState.VERIFIED, BadgeState.DEAD_LETTERED):
            moved = badge.model_copy(update={"state": BadgeState.QUEUED, "problem": None})
            if svc.store.transition(moved, [badge.state]):
                queued.append({"learner_id": learner_id, "badge_id": badge.badge_id})
    svc.queue.send(svc.settings.migrate_queue_url, queued)
    metrics.add_metric(name="MigrationsRequested", unit="Count", value=1)
    if not queued:
        maybe_send_summary(svc, learner_id)
    return len(queued)


# -- one import --------------------------------------------------------------------------------
def import_badge(svc: Services, learner_id: str, badge_id: str, receive_count: int) -> BadgeState | None:
    """Move one badge into Badgr and record its final state.

    Raises ``RetryLater`` when Badgr or the network failed for now; on the job's last delivery the
    badge is recorded as dead-lettered first, so the learner's page says so.
    """
    badge = svc.store.get_badge(learner_id, badge_id)
    if badge is None:
        logger.warning("import job for an unknown badge", extra={"badge_id": badge_id})
        return None
    if badge.state not in RETRYABLE_STATES:
        return badge.state  # a replayed job: the badge has already moved on
    verdict = badge.verdict
    if verdict is not None and verdict.certain_to_fail:
        blocking = (
            verdict.errors[0]
            if verdict.errors
            else Problem(code="INVALID", message="This badge is not valid.")
        )
        return _finish(svc, badge, BadgeState.REJECTED, problem=blocking)
    form, payload = _import_form(svc, badge)
    try:
        result = _import_with_token(svc, learner_id, badge_id, form, payload)
    except RetryLater as retry:
        last = receive_count >= svc.settings.migrate_max_receive_count
        state = BadgeState.DEAD_LETTERED if last else BadgeState.FAILED_RETRYABLE
        reason = retry.problem
        if last and reason.code != _ACCESS_LOST.code:
            # No retry is coming any more: the learner's page must not promise one.
            reason = Problem(code=reason.code, message=_GAVE_UP)
        _finish(svc, badge, state, problem=reason, attempts=receive_count, form=form, final=False)
        raise
    state = {
        "imported": BadgeState.IMPORTED,
        "already_in_badgr": BadgeState.ALREADY_IN_BADGR,
        "pending": BadgeState.PENDING,
        "rejected": BadgeState.REJECTED,
    }[result["outcome"]]
    answer = BadgrAnswer.model_validate(result["answer"])
    problem = None
    if state == BadgeState.REJECTED:
        problem = Problem(
            code=(answer.codes[0] if answer.codes else "BADGR_REJECTED"), message=result["reason"]
        )
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
    final: bool = True,
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
        if final or state in FINAL_STATES:
            maybe_send_summary(svc, badge.learner_id)
    return state


def _import_form(svc: Services, badge: BadgeRecord) -> tuple[str, Any]:
    """The hosted URL when it verifies, else the baked image, else the assertion itself."""
    verdict = badge.verdict
    if verdict is not None and verdict.valid and verdict.hosted_url:
        return "url", verdict.hosted_url
    if badge.member is not None:
        export = svc.store.get_export(badge.export_id)
        assert export is not None
        data = read_member(open_export(svc, export), badge.member)
        media_type = badge.media_type or "image/png"
        return "image", f"data:{media_type};base64,{base64.b64encode(data).decode()}"
    if verdict is not None and verdict.hosted_url:
        return "url", verdict.hosted_url
    raise RetryLater(Problem(code="NOTHING_TO_SEND", message="Nothing of this badge could be sent to Badgr."))


def _import_with_token(
    svc: Services, learner_id: str, badge_id: str, form: str, payload: Any
) -> dict[str, Any]:
    from .badgr import BadgrAuthError, BadgrThrottled, BadgrUnavailable

    def call(job: dict[str, Any]) -> dict[str, Any]:
        for _ in range(2):
            access_token, refresh_token, version = _tokens(svc, learner_id)
            result = svc.badgr.import_badge(access_token, **{form: payload})
            if result.outcome == "retry":
                raise RetryLater(
                    Problem(code="BADGR_UNAVAILABLE", message="Badgr did not answer; we will try again."),
                    delay=result.retry_after,
                )
            if result.outcome in ("unauthorized", "forbidden"):
                try:
                    tokens = svc.badgr.refresh(refresh_token)
                except BadgrThrottled as throttled:
                    raise RetryLater(_ACCESS_WAIT, delay=throttled.retry_after) from throttled
                except BadgrUnavailable as error:
                    raise RetryLater(_ACCESS_WAIT) from error
                except BadgrAuthError as error:
                    raise RetryLater(_ACCESS_LOST) from error
                sealed = svc.tokens.seal(tokens.model_dump_json(), learner_id=learner_id)
                svc.store.save_token(learner_id, sealed, version + 1)  # a lost race means a fresher token
                continue
            return {
                "outcome": result.outcome,
                "reason": result.reason,
                "answer": result.to_answer().model_dump(),
            }
        raise RetryLater(_ACCESS_LOST)

    once: Callable[..., dict[str, Any]] = svc.once("badgr-import", call)
    return once(job={"learner_id": learner_id, "badge_id": badge_id})


_ACCESS_LOST = Problem(
    code="BADGR_ACCESS_LOST",
    message="Badgr no longer lets us add badges to your account: open your link and connect Badgr again.",
)
_ACCESS_WAIT = Problem(code="BADGR_BUSY", message="Badgr asked us to wait; we will try again.")
_GAVE_UP = "Badgr did not take this badge after several tries; our team has been told."


def _tokens(svc: Services, learner_id: str) -> tuple[str, str, int]:
    stored = svc.store.get_token(learner_id)
    if stored is None:
        raise RetryLater(_ACCESS_LOST)
    ciphertext, version = stored
    tokens = json.loads(svc.tokens.open(ciphertext, learner_id=learner_id))
    return tokens["access_token"], tokens["refresh_token"], version


# -- the end of a learner's move -------------------------------------------------------------
def maybe_send_summary(svc: Services, learner_id: str) -> bool:
    """Queue the summary email once every badge of a learner that was asked to move is final."""
    learner = svc.store.get_learner(learner_id)
    if learner is None or learner.migration_requested_at is None or learner.summary_sent:
        return False
    badges = svc.store.list_badges(learner_id)
    if any(badge.state not in FINAL_STATES for badge in badges):
        return False
    svc.queue.send(
        svc.settings.notify_queue_url,
        [{"kind": "summary", "learner_id": learner_id, "requested_at": learner.migration_requested_at}],
    )
    svc.store.save_learner(learner.model_copy(update={"summary_sent": True}))
    return True
