"""Imports whose answer is unknown are settled by asking the learner's Badgr backpack."""

from __future__ import annotations

from typing import Any

import pytest
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyPersistenceLayerError,
)
from botocore.exceptions import ClientError

from backpack_migrate.connection import Deferred
from backpack_migrate.domain import BadgeState, Confirmation
from backpack_migrate.holdings import Backpacks
from backpack_migrate.migration import RetryLater, import_badge, run_import_job
from tests.fakes import ScriptedBadgr
from tests.unit.badges import hosted_assertion
from tests.unit.test_migration_flow import ANA, BEN, _connect, learner_of, run_world

pytestmark = pytest.mark.unit

B1 = hosted_assertion("b1", BEN.lower())["id"]


def _throttled(operation: str) -> ClientError:
    return ClientError(
        {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "Rate exceeded"}}, operation
    )


def _ben(badgr: ScriptedBadgr) -> tuple[Any, dict[str, Any]]:
    w = run_world(badgr)
    _connect(w.svc, w.store, BEN)
    (job,) = w.queue.take("migrate")
    return w, job


def _badge(w: Any, job: dict[str, Any]) -> Any:
    return w.store.get_badge(job["learner_id"], job["badge_id"])


def _deliver_raising(w: Any, job: dict[str, Any], receive_count: int) -> Any:
    try:
        return import_badge(w.svc, job["learner_id"], job["badge_id"], receive_count, Backpacks())
    except Exception as error:  # what SQS would see: the record failed, to be delivered again
        return error


def _deliver(w: Any, job: dict[str, Any], receive_count: int, backpacks: Backpacks | None = None) -> Any:
    try:
        return import_badge(w.svc, job["learner_id"], job["badge_id"], receive_count, backpacks)
    except RetryLater as retry:
        return retry


def test_an_answer_lost_after_badgr_imported_is_settled_by_the_backpack_as_ours() -> None:
    w, job = _ben(ScriptedBadgr({B1: ["lost"]}))
    assert isinstance(_deliver(w, job, 1), RetryLater)
    assert _badge(w, job).state == BadgeState.FAILED_RETRYABLE
    assert _deliver(w, job, 2) == BadgeState.IMPORTED
    badge = _badge(w, job)
    assert badge.confirmed_by == Confirmation.BACKPACK_LISTING
    assert badge.badgr.entity_id == w.badgr.backpack[B1]["entityId"]
    assert len(w.badgr.imports) == 1  # asked, not sent again


def test_duplicate_badge_after_our_own_lost_import_is_recorded_as_ours() -> None:
    # The listing after the lost answer does not show the badge yet; Badgr's import then says
    # DUPLICATE_BADGE. It was not there before our first try, so the import was ours.
    badgr = ScriptedBadgr({B1: ["lost", "imported"]}, listing=["ok", "stale"])
    w, job = _ben(badgr)
    _deliver(w, job, 1)
    assert _deliver(w, job, 2) == BadgeState.IMPORTED
    badge = _badge(w, job)
    assert badge.badgr.codes == ["DUPLICATE_BADGE"]
    assert badge.confirmed_by == Confirmation.IMPORT_ANSWER
    assert badge.in_badgr_before is False


def test_a_worker_that_read_the_badge_before_another_sent_it_records_it_as_ours() -> None:
    from backpack_migrate.migration import _import

    w, job = _ben(ScriptedBadgr({B1: ["lost"]}))
    stale = _badge(w, job)  # a duplicate job's worker reads the badge, then is slow
    assert isinstance(_deliver(w, job, 1), RetryLater)  # another worker sends it; the answer is lost
    assert _import(w.svc, stale, 1, Backpacks(), None) == BadgeState.IMPORTED
    badge = _badge(w, job)
    assert badge.state == BadgeState.IMPORTED and badge.confirmed_by == Confirmation.BACKPACK_LISTING
    assert len(w.badgr.imports) == 1


def test_the_listing_made_as_the_move_is_asked_for_spares_the_first_try_its_own() -> None:
    w, job = _ben(ScriptedBadgr())
    assert _badge(w, job).absent_when_queued is True
    assert w.badgr.listings == 1
    assert _deliver(w, job, 1, Backpacks()) == BadgeState.IMPORTED
    assert w.badgr.listings == 1 and len(w.badgr.imports) == 1
    badge = _badge(w, job)
    assert badge.in_badgr_before is False and badge.confirmed_by == Confirmation.IMPORT_ANSWER


def test_the_callback_lists_the_backpack_with_the_tokens_it_just_stored_without_opening_them() -> None:
    from backpack_migrate.badgr import Tokens
    from backpack_migrate.portal import callback

    w = run_world(ScriptedBadgr())
    learner = learner_of(w.svc, w.store, BEN)
    w.store.put_session("visit", {"learner_id": learner, "state": "st", "pkce": "v", "link": "L"}, 600)
    w.badgr.exchange_code = lambda code, verifier, redirect_uri: Tokens(  # type: ignore[attr-defined]
        access_token="a2", refresh_token="r2", expires_at=0, scope="rw:backpack"
    )
    opened: list[str] = []
    real_open = w.svc.tokens.open

    def counting_open(ciphertext: Any, **context: Any) -> Any:
        opened.append(context["learner_id"])
        return real_open(ciphertext, **context)

    listed_with: list[str] = []
    real_list = w.badgr.list_assertions

    def recording_list(access_token: str, include_pending: bool = True) -> Any:
        listed_with.append(access_token)
        return real_list(access_token, include_pending)

    w.svc.tokens.open = counting_open
    w.badgr.list_assertions = recording_list  # type: ignore[method-assign]
    page = callback(w.svc, "visit", {"code": "c", "state": "st"}, "https://migrate.example/oauth/callback")
    assert page.status == 303
    (job,) = w.queue.take("migrate")
    assert _badge(w, job).absent_when_queued is True
    assert listed_with == ["a2"] and opened == []  # the stored tokens, not read back and opened


def test_a_badge_added_by_hand_after_the_move_was_asked_for_is_already_in_badgr() -> None:
    # Not in the backpack at the callback's listing; there by the first, unlisted, send.
    w, job = _ben(ScriptedBadgr())
    w.badgr.hold(B1)
    assert _deliver(w, job, 1, Backpacks()) == BadgeState.ALREADY_IN_BADGR
    badge = _badge(w, job)
    assert badge.badgr.codes == ["DUPLICATE_BADGE"] and badge.in_badgr_before is True


def test_a_listing_that_breaks_at_the_request_leaves_the_request_standing() -> None:
    badgr = ScriptedBadgr()

    def broken(access_token: str, include_pending: bool = True) -> list[dict[str, Any]]:
        raise ValueError("a garbled answer")

    badgr.list_assertions = broken  # type: ignore[method-assign]
    w, job = _ben(badgr)
    assert _badge(w, job).state == BadgeState.QUEUED
    assert _badge(w, job).absent_when_queued is False


def test_no_listing_is_made_at_the_request_while_the_circuit_is_open() -> None:
    w = run_world(ScriptedBadgr())
    w.svc.gate = ClosedGate(40)
    _connect(w.svc, w.store, BEN)
    (job,) = w.queue.take("migrate")
    assert w.badgr.listings == 0
    assert _badge(w, job).absent_when_queued is False


def test_a_badge_marked_sent_while_the_request_listed_keeps_its_mark() -> None:
    from backpack_migrate.migration import queue_badges

    w, job = _ben(ScriptedBadgr())
    stale = _badge(w, job)  # as the request read it, before its listing
    sent = stale.model_copy(update={"in_badgr_before": False})
    assert w.store.transition(sent, [BadgeState.QUEUED])  # a worker marks it sent meanwhile
    assert queue_badges(w.svc, job["learner_id"], [stale], {job["badge_id"]}) == 1
    badge = _badge(w, job)
    assert badge.state == BadgeState.QUEUED
    assert badge.in_badgr_before is False and badge.absent_when_queued is False  # its next try lists


def test_a_throttled_sent_mark_leaves_the_badge_as_it_was_and_the_next_try_sends_it_once() -> None:
    w, job = _ben(ScriptedBadgr())
    transition = w.store.transition

    def throttled_once(badge: Any, expected: Any, *, unchanged: bool = False) -> bool:
        w.store.transition = transition
        raise _throttled("UpdateItem")

    w.store.transition = throttled_once
    assert isinstance(_deliver_raising(w, job, 1), ClientError)
    badge = _badge(w, job)
    assert badge.in_badgr_before is None and badge.absent_when_queued is True  # nothing marked
    assert w.badgr.imports == []
    assert _deliver(w, job, 2, Backpacks()) == BadgeState.IMPORTED
    assert len(w.badgr.imports) == 1 and w.badgr.listings == 1  # the request's listing alone


def test_a_try_killed_after_its_sent_mark_makes_the_next_one_list_first() -> None:
    w, job = _ben(ScriptedBadgr())
    marked = _badge(w, job).model_copy(update={"in_badgr_before": False})
    assert w.store.transition(marked, [BadgeState.QUEUED])  # what the killed try left on record
    listed = w.badgr.listings
    assert _deliver(w, job, 2, Backpacks()) == BadgeState.IMPORTED
    assert w.badgr.listings == listed + 1 and len(w.badgr.imports) == 1


def test_a_requeue_without_a_listing_makes_the_next_first_try_list() -> None:
    from backpack_migrate.migration import queue_badges

    w, job = _ben(ScriptedBadgr())
    queue_badges(w.svc, job["learner_id"], [_badge(w, job)])  # as the reconciler does
    assert _badge(w, job).absent_when_queued is False
    listed = w.badgr.listings
    assert _deliver(w, job, 1, Backpacks()) == BadgeState.IMPORTED
    assert w.badgr.listings == listed + 1


def test_a_badge_there_before_us_is_already_in_badgr_and_never_sent() -> None:
    badgr = ScriptedBadgr()
    badgr.hold(B1)
    w, job = _ben(badgr)
    assert _deliver(w, job, 1) == BadgeState.ALREADY_IN_BADGR
    badge = _badge(w, job)
    assert badge.confirmed_by == Confirmation.BACKPACK_LISTING and badge.in_badgr_before is True
    assert w.badgr.imports == []


def test_a_pending_badge_found_in_the_backpack_is_pending() -> None:
    w, job = _ben(ScriptedBadgr({B1: ["pending"]}))
    w.badgr.script[B1] = ["lost"]
    w.badgr.backpack.clear()
    _deliver(w, job, 1)
    w.badgr.backpack[B1]["pending"] = True
    assert _deliver(w, job, 2) == BadgeState.PENDING


def test_the_backpack_cannot_be_listed_so_nothing_is_sent_and_it_retries() -> None:
    # Neither as the move is asked for nor before the first try.
    w, job = _ben(ScriptedBadgr(listing=["fail", "fail"]))
    assert _badge(w, job).absent_when_queued is False
    retry = _deliver(w, job, 1)
    assert isinstance(retry, RetryLater)
    assert w.badgr.imports == []
    assert _badge(w, job).state == BadgeState.FAILED_RETRYABLE
    assert _deliver(w, job, 2) == BadgeState.IMPORTED


def test_one_listing_per_learner_serves_a_whole_batch() -> None:
    w = run_world(ScriptedBadgr())
    _connect(w.svc, w.store, ANA)
    jobs = w.queue.take("migrate")
    backpacks = Backpacks()
    for job in jobs:
        import_badge(w.svc, job["learner_id"], job["badge_id"], 1, backpacks)
    assert len(w.badgr.imports) == 2
    assert w.badgr.listings == 1


def test_a_result_that_could_not_be_saved_after_badgr_answered_201_is_recorded_imported() -> None:
    w, job = _ben(ScriptedBadgr())

    def once(name: str, fn: Any) -> Any:
        def unsaved(job: dict[str, Any]) -> Any:
            fn(job=job)  # Badgr answers 201 ...
            raise IdempotencyPersistenceLayerError(  # ... and saving that answer is throttled
                "Failed to update record state to success in idempotency store", _throttled("UpdateItem")
            )

        return unsaved

    w.svc.once = once
    assert _deliver(w, job, 1) == BadgeState.IMPORTED
    assert _badge(w, job).confirmed_by == Confirmation.IMPORT_ANSWER


def test_an_idempotency_record_left_in_progress_is_settled_by_the_backpack_not_dead_lettered() -> None:
    # Badgr took the badge; the worker died before saving. Every later delivery finds the
    # record in progress. Before, the last one recorded dead_lettered.
    w, job = _ben(ScriptedBadgr())
    w.badgr.hold(B1)
    _badge_before = _badge(w, job).model_copy(update={"in_badgr_before": False})
    assert w.store.transition(_badge_before, [BadgeState.QUEUED])

    def once(name: str, fn: Any) -> Any:
        def in_progress(job: dict[str, Any]) -> Any:
            raise IdempotencyAlreadyInProgressError("Execution already in progress")

        return in_progress

    w.svc.once = once
    assert _deliver(w, job, 5) == BadgeState.IMPORTED
    badge = _badge(w, job)
    assert badge.confirmed_by == Confirmation.BACKPACK_LISTING
    assert w.badgr.imports == []


def test_in_progress_with_nothing_in_the_backpack_waits_and_says_so() -> None:
    w, job = _ben(ScriptedBadgr())

    def once(name: str, fn: Any) -> Any:
        def in_progress(job: dict[str, Any]) -> Any:
            raise IdempotencyAlreadyInProgressError("Execution already in progress")

        return in_progress

    w.svc.once = once
    retry = _deliver(w, job, 1)
    assert isinstance(retry, RetryLater) and retry.problem.code == "IMPORT_IN_FLIGHT"


def test_the_last_delivery_asks_badgr_before_recording_dead_lettered() -> None:
    w, job = _ben(ScriptedBadgr({B1: ["retry", "retry", "retry", "retry", "lost"]}))
    for attempt in range(1, 5):
        assert isinstance(_deliver(w, job, attempt), RetryLater)
    # The fifth and last: Badgr took it, the answer was lost.
    assert _deliver(w, job, 5) == BadgeState.IMPORTED
    assert _badge(w, job).confirmed_by == Confirmation.BACKPACK_LISTING


def test_the_last_delivery_dead_letters_when_badgr_confirms_it_does_not_have_it() -> None:
    w, job = _ben(ScriptedBadgr({B1: ["retry"] * 5}))
    for attempt in range(1, 6):
        _deliver(w, job, attempt)
    badge = _badge(w, job)
    assert badge.state == BadgeState.DEAD_LETTERED
    assert badge.confirmed_by == Confirmation.BACKPACK_LISTING


def test_the_last_delivery_dead_letters_as_not_confirmed_when_badgr_cannot_be_asked() -> None:
    w, job = _ben(ScriptedBadgr({B1: ["retry"] * 5}, listing=["ok"] * 4 + ["fail", "fail"]))
    for attempt in range(1, 6):
        _deliver(w, job, attempt)
    badge = _badge(w, job)
    assert badge.state == BadgeState.DEAD_LETTERED
    assert badge.confirmed_by == Confirmation.NOT_CONFIRMED


def test_the_last_delivery_with_a_throttled_imported_write_asks_badgr() -> None:
    # Badgr answered 201; writing `imported` was throttled, so the job came back for its last try.
    w, job = _ben(ScriptedBadgr())
    real = w.store.transition
    calls = {"n": 0}

    def throttled_once(badge: Any, expected: Any, **kwargs: Any) -> bool:
        if badge.state == BadgeState.IMPORTED and calls["n"] == 0:
            calls["n"] += 1
            raise _throttled("UpdateItem")
        return real(badge, expected, **kwargs)

    w.store.transition = throttled_once  # type: ignore[method-assign]
    with pytest.raises(ClientError):
        import_badge(w.svc, job["learner_id"], job["badge_id"], 4)
    w.svc.once = lambda name, fn: fn  # the idempotency record was never saved either
    assert _deliver(w, job, 5) == BadgeState.IMPORTED
    assert len(w.badgr.imports) == 1


class ClosedGate:
    def __init__(self, delay: float) -> None:
        self.delay = delay

    def acquire(self, reserved_ms: int | None = None) -> None:
        raise Deferred(self.delay, reserved_ms=123)

    def record(self, outcome: str) -> None:
        raise AssertionError("nothing was sent")

    def circuit_open(self) -> bool:
        return True


def test_an_open_circuit_defers_the_job_without_spending_a_try() -> None:
    w, job = _ben(ScriptedBadgr())
    w.svc.gate = ClosedGate(40)
    listed = w.badgr.listings
    run_import_job(w.svc, {**job, "attempts": 2}, 3, Backpacks())  # no RetryLater: acked
    (later,) = w.queue.later
    assert later[0] == "migrate" and later[2] == 40
    assert later[1] == {**job, "attempts": 4, "reserved_ms": 123}
    assert _badge(w, job).state == BadgeState.QUEUED
    assert w.badgr.imports == [] and w.badgr.listings == listed


def test_a_job_out_of_tries_whose_message_is_not_goes_to_the_dead_letter_queue() -> None:
    settings = {"MIGRATE_DEAD_LETTER_QUEUE_URL": "migrate-dlq"}
    w, job = _ben(ScriptedBadgr({B1: ["retry"]}))
    w.svc.settings = w.svc.settings.model_copy(
        update={"migrate_dead_letter_queue_url": settings["MIGRATE_DEAD_LETTER_QUEUE_URL"]}
    )
    run_import_job(w.svc, {**job, "attempts": 4}, 1, Backpacks())
    assert _badge(w, job).state == BadgeState.DEAD_LETTERED
    assert w.queue.take("migrate-dlq") == [{**job, "attempts": 5}]
