"""The learner's side of the move: verdicts ahead of time, the Badgr connection, every import.

Each badge moves through the states of ``domain.BadgeState`` by conditional writes only, so a
replayed job can never move a badge backwards or import it twice.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Literal

from .addresses import learner_email, learner_recipients
from .connection import (
    ACCESS_LOST,
    UNAVAILABLE,
    Deferred,
    KnownTokens,
    RetryLater,
    refresh_tokens,
    store_tokens,
    tokens_of,
)
from .domain import (
    FINAL_STATES,
    BadgeRecord,
    BadgeState,
    BadgrAnswer,
    Confirmation,
    LearnerRecord,
    Problem,
    VerdictSummary,
    all_settled,
    now_iso,
    request_stamp,
)
from .export import ExportError, RangeReader, open_export, read_member
from .holdings import Backpacks, Held
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

_GAVE_UP = "Badgr did not take this badge after several tries; our team has been told."
# Later looks at a badge awaiting its second look that Badgr could not answer, before the
# learner's summary goes out without Badgr's word (one each STALE_AFTER_SECONDS: 12 hours).
MAX_LOOKS = 6
_GAVE_UP_LOOKING_AGAIN = (
    "Badgr did not take this badge after several tries. In case one of them reached Badgr late,"
    " we will look in your Badgr backpack once more within a few hours."
)
_INTERNAL = Problem(
    code="INTERNAL_ERROR",
    message="Something went wrong on our side while moving this badge; our team has been told.",
)
_IN_FLIGHT = Problem(
    code="IMPORT_IN_FLIGHT",
    message="Badgr has not told us yet whether it took this badge; we will ask again.",
)
_RECORDS_BUSY = Problem(code="RECORDS_BUSY", message="We could not save our progress; we will try again.")
_FOUND = "Found in the learner's Badgr backpack."


# -- verdicts, worked out ahead --------------------------------------------------------------
def _verdicts(
    svc: Services,
    learner: LearnerRecord,
    badges: Sequence[BadgeRecord],
    readers: dict[str, RangeReader] | None = None,
) -> list[BadgeRecord]:
    """The badges with their full verdicts (against the learner's email), not yet stored.

    Each badge is read from the export (and S3 version) it came from: a learner listed in two
    exports has badges in both, at offsets that mean something only in their own. ``readers``:
    the exports already opened by a batch of jobs.
    """
    readers = {} if readers is None else readers

    def image_of(badge: BadgeRecord) -> bytes:
        if badge.member is None:
            return b""
        reader = export_reader(svc, badge.export_id, readers)
        if reader is None:
            raise LookupError(f"badge {badge.badge_id} belongs to an unknown export")
        return read_member(reader, badge.member)

    images = [image_of(badge) for badge in badges]
    verdicts = svc.verifier.verify_many(images, learner_recipients(svc, learner))
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
        from .crypto import erasure_mark

        if svc.store.is_erased(erasure_mark(learner_id)):
            return 0  # erased while this job waited: nothing is left to verify
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


def export_reader(svc: Services, export_id: str, readers: dict[str, RangeReader]) -> RangeReader | None:
    """The export's reader, opened once for the ``readers`` of one learner's verdicts or one
    batch of jobs (an export's object and version never change once it is recorded); None when
    no such export is on record."""
    if export_id not in readers:
        export = svc.store.get_export(export_id)
        if export is None:
            return None
        readers[export_id] = open_export(svc, export)
    return readers[export_id]


def _merge(offline: VerdictSummary | None, full: VerdictSummary) -> VerdictSummary:
    """Keep what extraction knew offline where the full verification could not learn it."""
    if offline is None:
        return full
    known = {k: v for k, v in offline.model_dump().items() if v not in (None, [], False)}
    filled = {k: v for k, v in full.model_dump().items() if v not in (None, [])}
    return VerdictSummary.model_validate({**known, **filled})


# -- connecting Badgr --------------------------------------------------------------------------
def request_migration(svc: Services, learner_id: str, tokens: KnownTokens | None = None) -> int:
    """Queue an import job for every badge that can still move; returns how many were queued.

    Badges already queued are sent again: a job lost with a crashed request must not leave its
    badge waiting for ever, and a duplicate job changes nothing (imports are idempotent). The
    request is on record first, so the reconciler finishes one that died half-way. ``tokens``:
    the learner's tokens as just stored, so the backpack's listing need not open them again.
    """
    if svc.store.get_learner(learner_id) is None:
        raise LookupError(f"unknown learner {learner_id}")
    svc.store.mark_migration_requested(learner_id, request_stamp())
    movable = [
        badge
        for badge in svc.store.list_badges(learner_id)
        if badge.state in REQUEUED_STATES or badge.can_move_again
    ]
    queued = queue_badges(svc, learner_id, movable, _absent_now(svc, learner_id, movable, tokens))
    metrics.add_metric(name="MigrationsRequested", unit="Count", value=1)
    if not queued:
        maybe_send_summary(svc, learner_id)
    return queued


def _absent_now(
    svc: Services, learner_id: str, badges: Sequence[BadgeRecord], tokens: KnownTokens | None = None
) -> set[str]:
    """The badges the learner's backpack does not hold now, by one listing as the move is asked
    for: a worker then sends each of them without listing first, so the listing's 300 ms are
    spent once per learner instead of on the path of the learner's first import.

    Empty when Badgr cannot say now: each first try lists, as it would have anyway. Nothing
    about this listing may fail the request, which stands without it.

    A badge the learner adds to Badgr by hand after this listing meets DUPLICATE_BADGE on its
    first send and is recorded as already there, unless that answer is not what gets recorded
    (it was lost, its write failed, or a copy of the job listed the backpack meanwhile): then the
    badge reads as moved. Either way it is in their Badgr.
    """
    unsent = [badge for badge in badges if badge.in_badgr_before is None]
    if not unsent:
        return set()
    backpacks = Backpacks(tokens=dict(tokens or {}))
    try:
        if svc.gate.circuit_open():
            return set()  # Badgr is failing: the request does not wait on it, the workers will
        return {badge.badge_id for badge in unsent if backpacks.held(svc, badge) is None}
    except RetryLater:
        return set()
    except Exception as error:  # a listing that only spares later ones
        logger.warning("backpack not listed at the request", extra={"error": type(error).__name__})
        return set()


def queue_badges(
    svc: Services, learner_id: str, badges: Sequence[BadgeRecord], absent: Collection[str] = ()
) -> int:
    """Record each badge as queued, then send its job; returns how many jobs were sent.

    ``absent`` are the badges a listing made just now did not find in the learner's backpack.

    A job lost between the two (a failed send, a crash) leaves its badge queued with no job:
    the reconciler finds it by its age in the store's open index and sends it again.
    """
    batch: list[dict[str, Any]] = []
    queued = 0
    for badge in badges:
        written = svc.store.transition(_queued(badge, absent), [badge.state], unchanged=True)
        if not written:
            # Written since it was read (a worker marking it sent while the backpack was being
            # listed): queued from what is on record, never over the "sent" mark.
            current = svc.store.get_badge(learner_id, badge.badge_id)
            if current is not None and (current.state in REQUEUED_STATES or current.can_move_again):
                written = svc.store.transition(_queued(current, absent), [current.state], unchanged=True)
        if written:
            batch.append({"learner_id": learner_id, "badge_id": badge.badge_id})
        if len(batch) == 10:  # sent as we go, so a timeout loses at most one batch of jobs
            queued += svc.queue.send(svc.settings.migrate_queue_url, batch)
            batch = []
    if batch:
        queued += svc.queue.send(svc.settings.migrate_queue_url, batch)
    return queued


def _queued(badge: BadgeRecord, absent: Collection[str]) -> BadgeRecord:
    # A new try: what an earlier one confirmed no longer speaks for it. The listing that found
    # the badge absent speaks for its first send only while no send has been marked.
    update: dict[str, Any] = {
        "state": BadgeState.QUEUED,
        "problem": None,
        "confirmed_by": None,
        "absent_when_queued": badge.badge_id in absent and badge.in_badgr_before is None,
    }
    if badge.can_move_again:
        update["moved_again"] = badge.moved_again + 1
    return badge.model_copy(update=update)


# -- one import --------------------------------------------------------------------------------
def run_import_job(svc: Services, job: dict[str, Any], deliveries: int, backpacks: Backpacks) -> None:
    """One delivery of a migrate job; raises ``RetryLater`` when SQS should bring it back.

    ``deliveries`` is SQS's receive count of this message; ``job["attempts"]`` counts the tries
    of earlier messages of the same job, so waiting out an open circuit costs no try.
    """
    tries = int(job.get("attempts", 0)) + deliveries
    try:
        import_badge(svc, job["learner_id"], job["badge_id"], tries, backpacks, job.get("reserved_ms"))
    except Deferred as wait:
        later = {**job, "attempts": tries - 1, "reserved_ms": wait.reserved_ms}
        svc.queue.send_later(svc.settings.migrate_queue_url, [later], wait.delay)
        metrics.add_metric(name="ImportsDeferred", unit="Count", value=1)
    except RetryLater:
        last = tries >= svc.settings.migrate_max_receive_count
        if not last or deliveries >= svc.settings.migrate_max_receive_count:
            raise
        # The job has no tries left but its own message has: SQS would not dead-letter it.
        svc.queue.send(svc.settings.migrate_dead_letter_queue_url, [{**job, "attempts": tries}])


def import_badge(
    svc: Services,
    learner_id: str,
    badge_id: str,
    receive_count: int,
    backpacks: Backpacks | None = None,
    reserved_ms: int | None = None,
) -> BadgeState | None:
    """Move one badge into Badgr and record its final state.

    Raises ``RetryLater`` when Badgr or the network failed for now, ``Deferred`` when Badgr is
    not to be called now. On the job's last try the learner's backpack is asked first, and the
    badge is recorded as imported when Badgr has it, dead-lettered only when it has not.
    """
    badge = svc.store.get_badge(learner_id, badge_id)
    if badge is None:
        logger.warning("import job for an unknown badge", extra={"badge_id": badge_id})
        return None
    if badge.state not in RETRYABLE_STATES:
        if badge.state in FINAL_STATES:
            # A replay after a crash between the final write and the summary: finish the job.
            _summary_due(svc, learner_id)
        return badge.state
    backpacks = backpacks if backpacks is not None else Backpacks()
    last = receive_count >= svc.settings.migrate_max_receive_count
    try:
        return _import(svc, badge, receive_count, backpacks, reserved_ms)
    except Deferred:
        raise
    except RetryLater as retry:
        current = svc.store.get_badge(learner_id, badge_id) or badge
        if last:
            settled = settle(svc, current, backpacks, retry.problem, receive_count)
            if settled != BadgeState.DEAD_LETTERED:
                return settled  # Badgr has it: the job is done
        elif current.state in RETRYABLE_STATES:
            _finish(
                svc,
                current,
                BadgeState.FAILED_RETRYABLE,
                problem=retry.problem,
                attempts=receive_count,
                unchanged=True,  # a copy of the job may have moved it on since it was read
            )
        raise
    except Exception:
        if last:
            logger.exception("import failed on its last delivery", extra={"badge_id": badge_id})
            current = svc.store.get_badge(learner_id, badge_id) or badge
            settle(svc, current, backpacks, _INTERNAL, receive_count)
        raise


def settle(
    svc: Services, badge: BadgeRecord, backpacks: Backpacks, reason: Problem, attempts: int
) -> BadgeState:
    """Record where a badge stands once no try is coming any more: as the learner's backpack
    has it, else dead-lettered (saying whether Badgr could be asked at all)."""
    if badge.state not in RETRYABLE_STATES:
        return badge.state
    try:
        held = backpacks.held(svc, badge)
        confirmed = Confirmation.BACKPACK_LISTING
    except RetryLater:
        held, confirmed = None, Confirmation.NOT_CONFIRMED
    if held is not None:
        return _record_held(svc, badge, held, attempts)
    if reason.code != ACCESS_LOST.code:
        # No retry is coming any more: the learner's page must not promise one, only the one
        # look that is coming when an import of ours was sent (see ``look_again``).
        sent = confirmed == Confirmation.BACKPACK_LISTING and badge.in_badgr_before is False
        reason = Problem(code=reason.code, message=_GAVE_UP_LOOKING_AGAIN if sent else _GAVE_UP)
    return _finish(
        svc, badge, BadgeState.DEAD_LETTERED, problem=reason, attempts=attempts, confirmed_by=confirmed
    )


def look_again(svc: Services, badge: BadgeRecord, backpacks: Backpacks) -> BadgeState:
    """A later look in the learner's backpack at a badge given up on, a stale-deadline after its
    last try: by then an import of ours whose answer was lost (a timeout, a killed worker) has
    landed or never will, so what this look finds is the last word.

    Its "not there" and "cannot say" words are written only if nothing was written since
    ``badge`` was read: of two looks at one badge (overlapping runs, a stale index copy), the
    older must not put its word over the newer.
    """
    if badge.state != BadgeState.DEAD_LETTERED:
        return badge.state
    looked = badge.model_copy(update={"looks": badge.looks + 1})
    access_lost = badge.problem is not None and badge.problem.code == ACCESS_LOST.code
    gave_up = (
        badge.problem
        if access_lost
        else Problem(code=badge.problem.code if badge.problem else "JOB_LOST", message=_GAVE_UP)
    )
    try:
        held = backpacks.held(svc, badge)
    except RetryLater as retry:
        if retry.problem.code != ACCESS_LOST.code and badge.awaiting_second_look and looked.looks < MAX_LOOKS:
            # Badgr cannot say now: the learner's summary waits for its word a while longer.
            return _finish(svc, looked, BadgeState.DEAD_LETTERED, problem=badge.problem, unchanged=True)
        # Badgr has not said for hours, or only the learner can let us ask: the move is summed
        # up without its word, and the reconciler goes on asking.
        return _finish(
            svc,
            looked,
            BadgeState.DEAD_LETTERED,
            problem=gave_up,
            confirmed_by=Confirmation.NOT_CONFIRMED,
            unchanged=True,
        )
    if held is not None:
        # What Badgr holds now is newer than any word written since this copy was read.
        return _record_held(svc, looked, held)
    sent = badge.in_badgr_before is False
    confirmed = Confirmation.BACKPACK_RELISTED if sent else Confirmation.BACKPACK_LISTING
    return _finish(
        svc, looked, BadgeState.DEAD_LETTERED, problem=gave_up, confirmed_by=confirmed, unchanged=True
    )


def _record_held(svc: Services, badge: BadgeRecord, held: Held, attempts: int | None = None) -> BadgeState:
    """The backpack has the badge: ours when it was not there before our first import.

    A worker writes "not there before" before it sends, and Badgr holds the badge only after
    that send, so a record read after the listing shows that mark if any worker sent it: the
    copy this job read before the listing may predate another worker's send.
    """
    if badge.in_badgr_before is not False:
        current = svc.store.get_badge(badge.learner_id, badge.badge_id)
        held_states = (BadgeState.IMPORTED, BadgeState.ALREADY_IN_BADGR, BadgeState.PENDING)
        if current is not None and current.state in held_states:
            return current.state  # another worker has recorded it as Badgr holds it
        badge = current or badge
    if held.pending:
        state = BadgeState.PENDING
    elif badge.in_badgr_before is False:
        state = BadgeState.IMPORTED
    else:
        # Never sent by us (a send is marked first): it was there before us.
        state = BadgeState.ALREADY_IN_BADGR
    answer = BadgrAnswer(status=200, entity_id=held.entity_id, description=_FOUND)
    return _finish(
        svc,
        badge,
        state,
        badgr=answer,
        attempts=attempts,
        confirmed_by=Confirmation.BACKPACK_LISTING,
        in_badgr_before=badge.in_badgr_before is not False,
    )


def _import(
    svc: Services, badge: BadgeRecord, receive_count: int, backpacks: Backpacks, reserved_ms: int | None
) -> BadgeState:
    if badge.verified_at is None:
        # Queued before its verify job ran: check it now rather than send Badgr a doomed badge.
        learner = svc.store.get_learner(badge.learner_id)
        if learner is not None:
            badge = _verdicts(svc, learner, [badge], backpacks.exports)[0]
    verdict = badge.verdict
    if verdict is not None and verdict.certain_to_fail:
        blocking = (
            verdict.errors[0]
            if verdict.errors
            else Problem(code="INVALID", message="This badge is not valid.")
        )
        return _finish(svc, badge, BadgeState.REJECTED, problem=blocking)
    form, payload = _import_form(svc, badge, backpacks.exports)
    svc.gate.acquire(reserved_ms)
    if badge.absent_when_queued and badge.in_badgr_before is None:
        # Never sent, and not in the backpack when the move was asked for: send without
        # listing, unless a copy of this job has written since this one read the badge.
        sending = _sending(badge)
        if svc.store.transition(sending, [badge.state], unchanged=True):
            return _send(svc, sending, form, payload, backpacks, receive_count, listed=False)
        current = svc.store.get_badge(badge.learner_id, badge.badge_id)
        if current is None or current.state not in RETRYABLE_STATES:
            return current.state if current is not None else badge.state
        # What is on record, with the verdict worked out above (the form sent comes from it).
        badge = current.model_copy(update={"verdict": badge.verdict, "verified_at": badge.verified_at})
    # Before the first import: was it there before us? After an earlier try whose answer may be
    # lost (a timeout, a crash, an unsaved result): did that try import it?
    try:
        held = backpacks.held(svc, badge)
    except RetryLater as retry:
        if retry.problem.code != ACCESS_LOST.code:
            svc.gate.record("failure")
        raise
    if held is not None:
        return _record_held(svc, badge, held, receive_count)
    sending = _sending(badge)
    if sending is not badge:
        # A reopened badge (tried again after it was given up on: a redrive, a late copy of its
        # job) must be the copy read, so two reopenings cannot both send.
        reopening = badge.state == BadgeState.DEAD_LETTERED
        if not svc.store.transition(sending, [badge.state], unchanged=reopening):
            return _state_on_record(svc, badge, badge.state)
    return _send(svc, sending, form, payload, backpacks, receive_count, listed=True)


def _sending(badge: BadgeRecord) -> BadgeRecord:
    """The badge as recorded before it is sent: "not there before us" marked before the first
    send, and a badge given up on reopened, so a try that dies after Badgr took it is looked at
    again, never left under the old "did not move". ``badge`` itself when nothing changes."""
    update: dict[str, Any] = {}
    if badge.state == BadgeState.DEAD_LETTERED:
        update.update(state=BadgeState.QUEUED, problem=None, confirmed_by=None)
    if badge.in_badgr_before is None:
        update["in_badgr_before"] = False
    return badge.model_copy(update=update) if update else badge


def _send(
    svc: Services,
    badge: BadgeRecord,
    form: str,
    payload: Any,
    backpacks: Backpacks,
    receive_count: int,
    *,
    listed: bool,
) -> BadgeState:
    """Send the badge to Badgr and record its answer. ``listed``: the backpack was listed
    without it just before; otherwise the listing as the move was asked for was the last."""
    result = _import_with_token(svc, badge, form, payload, backpacks)
    state = {
        "imported": BadgeState.IMPORTED,
        "already_in_badgr": BadgeState.ALREADY_IN_BADGR,
        "pending": BadgeState.PENDING,
        "rejected": BadgeState.REJECTED,
    }[result["outcome"]]
    in_badgr_before = None
    if state == BadgeState.ALREADY_IN_BADGR:
        if listed and badge.in_badgr_before is False:
            # Not there before our first try, there now: an earlier try of ours imported it.
            state = BadgeState.IMPORTED
        elif not listed:
            # The first send, unlisted: the learner added it since the move was asked for.
            in_badgr_before = True
    answer = BadgrAnswer.model_validate(result["answer"])
    problem = None
    if state == BadgeState.REJECTED:
        from .badgr import reason_code

        # The code recorded is the one the sentence explains: "move again" is decided by it.
        problem = Problem(code=reason_code(answer.codes) or "BADGR_REJECTED", message=result["reason"])
    return _finish(
        svc,
        badge,
        state,
        problem=problem,
        badgr=answer,
        attempts=receive_count,
        form=form,
        confirmed_by=Confirmation.IMPORT_ANSWER,
        in_badgr_before=in_badgr_before,
    )


def _finish(
    svc: Services,
    badge: BadgeRecord,
    state: BadgeState,
    *,
    problem: Problem | None = None,
    badgr: BadgrAnswer | None = None,
    attempts: int | None = None,
    form: str | None = None,
    confirmed_by: Confirmation | None = None,
    in_badgr_before: bool | None = None,
    unchanged: bool = False,
) -> BadgeState:
    updated = badge.model_copy(
        update={
            "state": state,
            "problem": problem,
            "badgr": badgr or badge.badgr,
            "attempts": attempts if attempts is not None else badge.attempts,
            "import_form": form or badge.import_form,
            "confirmed_by": confirmed_by or badge.confirmed_by,
            "in_badgr_before": badge.in_badgr_before if in_badgr_before is None else in_badgr_before,
        }
    )
    if svc.store.transition(updated, [badge.state], unchanged=unchanged):
        metrics.add_metric(name=f"Badges_{state.value}", unit="Count", value=1)
        if state in FINAL_STATES:
            _summary_due(svc, badge.learner_id)
        return state
    return _state_on_record(svc, badge, state)


def _state_on_record(svc: Services, badge: BadgeRecord, otherwise: BadgeState) -> BadgeState:
    """After a write of ours was refused, another came first: what is on record now is the
    answer, not what ours meant (``otherwise`` when the badge is gone, erased with its learner)."""
    current = svc.store.get_badge(badge.learner_id, badge.badge_id)
    return current.state if current is not None else otherwise


def _import_form(svc: Services, badge: BadgeRecord, readers: dict[str, RangeReader]) -> tuple[str, Any]:
    """The hosted URL when it verifies, else the baked image, else the hosted URL anyway."""
    from .badgr import image_data_uri

    verdict = badge.verdict
    if verdict is not None and verdict.valid and verdict.hosted_url:
        return "url", verdict.hosted_url
    signed = verdict is not None and verdict.payload_kind == "jws"
    if badge.member is None and badge.issued_assertion and signed:
        # Handed over by a third-party site as a signed assertion: sent as it came.
        return "assertion", badge.issued_assertion
    if badge.member is not None:
        try:
            reader = export_reader(svc, badge.export_id, readers)
            if reader is None:
                raise ExportError("EXPORT_GONE")
            data = read_member(reader, badge.member)
        except ExportError as error:
            if verdict is not None and verdict.hosted_url:
                return "url", verdict.hosted_url
            raise RetryLater(Problem(code=error.code, message=error.message)) from error
        return "image", image_data_uri(data, badge.media_type or "image/png")
    if verdict is not None and verdict.hosted_url:
        return "url", verdict.hosted_url
    raise RetryLater(Problem(code="NOTHING_TO_SEND", message="Nothing of this badge could be sent to Badgr."))


def _gate_outcome(status: int, outcome: str) -> Literal["ok", "failure", "throttled"]:
    if status == 429:
        return "throttled"
    return "failure" if outcome == "retry" else "ok"


def _import_with_token(
    svc: Services, badge: BadgeRecord, form: str, payload: Any, backpacks: Backpacks
) -> dict[str, Any]:
    from aws_lambda_powertools.utilities.idempotency.exceptions import (
        IdempotencyAlreadyInProgressError,
        IdempotencyPersistenceLayerError,
    )

    learner_id = badge.learner_id

    def call(job: dict[str, Any]) -> dict[str, Any]:
        refreshed = False
        while True:
            access_token, refresh_token, version = tokens_of(svc, learner_id, backpacks.tokens)
            backpacks.sent(badge)
            result = svc.badgr.import_badge(access_token, **{form: payload})
            svc.gate.record(_gate_outcome(result.status, result.outcome))
            if result.outcome == "retry":
                raise RetryLater(UNAVAILABLE, delay=result.retry_after)
            if result.outcome in ("forbidden", "unauthorized"):
                backpacks.tokens.pop(learner_id, None)  # refused: read them afresh next time
            if result.outcome == "forbidden" or (result.outcome == "unauthorized" and refreshed):
                # 404 means the token lacks rw:backpack: only the learner can grant it again.
                raise RetryLater(ACCESS_LOST)
            if result.outcome == "unauthorized":
                refresh_tokens(svc, learner_id, refresh_token, version)
                refreshed = True
                continue
            return {
                "outcome": result.outcome,
                "reason": result.reason,
                "answer": result.to_answer().model_dump(),
            }

    try:
        # Every delivery of a job asks Badgr once; only the learner moving a refused badge again
        # (moved_again) is a new question. Badgr's answer survives a throttled save of it.
        job = {"learner_id": learner_id, "badge_id": badge.badge_id, "moved_again": badge.moved_again}
        return svc.once_keeping_result("badgr-import", call, job)
    except IdempotencyAlreadyInProgressError as error:
        # Another delivery is asking Badgr right now, or one died (or could not save Badgr's
        # answer) and its record has not expired yet; the backpack had no trace of it.
        raise RetryLater(_IN_FLIGHT, delay=30) from error
    except IdempotencyPersistenceLayerError as error:
        raise RetryLater(_RECORDS_BUSY) from error


# -- the end of a learner's move -------------------------------------------------------------
# Learners whose summary is looked at once a batch of jobs is done, rather than after each badge:
# that look reads all of a learner's badges, so after every badge it cost a batch a read per
# badge and a learner's move reads in proportion to the square of its badges.
_due: ContextVar[set[str] | None] = ContextVar("summaries_due", default=None)


@contextmanager
def summaries_after_batch(svc: Services) -> Iterator[None]:
    """Look at each summary the block's final writes made due once, when the block ends.

    A block that fails looks too: a job that failed on its last delivery (its badge just
    recorded dead-lettered) never comes back to look. Only an invocation killed outright skips
    the look; its jobs come back, find their badges final and look then.
    """
    due: set[str] = set()
    token = _due.set(due)
    try:
        yield
    except Exception:
        _due.reset(token)
        _look_at_summaries(svc, due)
        raise
    except BaseException:
        _due.reset(token)
        raise
    _due.reset(token)
    _look_at_summaries(svc, due)


def _look_at_summaries(svc: Services, due: set[str]) -> None:
    for learner_id in sorted(due):
        maybe_send_summary(svc, learner_id)


def _summary_due(svc: Services, learner_id: str) -> None:
    due = _due.get()
    if due is None:
        maybe_send_summary(svc, learner_id)
    else:
        due.add(learner_id)


def maybe_send_summary(svc: Services, learner_id: str) -> bool:
    """Queue the summary email once every badge of a learner that was asked to move is final,
    and had its second look where one is due: what the summary says stays true.

    The notice goes out before the claim: a crash in between sends it again, and the notice's
    idempotency key (learner + request) keeps that to one email.
    """
    learner = svc.store.get_learner(learner_id)
    requested_at = learner.migration_requested_at if learner else None
    if learner is None or requested_at is None or learner.summary_for == requested_at:
        return False
    badges = svc.store.list_badges(learner_id)
    if not all_settled(badges):
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


__all__ = [
    "RetryLater",
    "import_badge",
    "learner_email",
    "look_again",
    "maybe_send_summary",
    "queue_badges",
    "request_migration",
    "run_import_job",
    "settle",
    "store_tokens",
    "summaries_after_batch",
    "verify_learner",
]
