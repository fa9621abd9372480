"""What one batch of a learner's migrate jobs costs: Badgr calls, token reads, summary looks."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import pytest

from backpack_migrate.badgr import BadgrUnavailable
from backpack_migrate.domain import FINAL_STATES, BadgeState
from backpack_migrate.holdings import Backpacks
from backpack_migrate.migration import RetryLater, import_badge, summaries_after_batch
from tests.fakes import ScriptedBadgr
from tests.unit.badges import hosted_assertion
from tests.unit.test_migration_flow import ANA, BEN, _connect, run_world

pytestmark = pytest.mark.unit

A1 = hosted_assertion("a1", ANA)["id"]


class Counting:
    """Counts the calls made to some of an object's methods, passing them on."""

    def __init__(self, target: Any, names: tuple[str, ...]) -> None:
        self.calls: dict[str, int] = dict.fromkeys(names, 0)
        for name in names:
            real = getattr(target, name)

            def counted(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
                self.calls[_name] += 1
                return _real(*args, **kwargs)

            setattr(target, name, counted)


def _batch(w: Any, jobs: list[dict[str, Any]]) -> None:
    backpacks = Backpacks()
    with summaries_after_batch(w.svc):
        for job in jobs:
            with contextlib.suppress(RetryLater):
                import_badge(w.svc, job["learner_id"], job["badge_id"], 1, backpacks)


def test_a_learners_batch_lists_once_opens_the_tokens_once_and_looks_at_the_summary_once() -> None:
    w = run_world(ScriptedBadgr())
    learner = _connect(w.svc, w.store, ANA)
    jobs = w.queue.take("migrate")
    assert len(jobs) == 3  # a1 and a2 move; "gone" is certain to fail and is rejected unsent
    store = Counting(w.store, ("get_token", "list_badges", "get_learner"))
    vault = Counting(w.svc.tokens, ("open",))
    _batch(w, jobs)
    # One Badgr call a badge sent, and the one listing of the learner's backpack before the first.
    assert len(w.badgr.imports) == 2
    assert w.badgr.listings == 1
    assert store.calls["get_token"] == 1 and vault.calls["open"] == 1
    # The summary: one look (the learner, its badges) for the batch, not one after each badge.
    assert store.calls["list_badges"] == 1 and store.calls["get_learner"] == 1
    summaries = [n for n in w.queue.take("notify") if n["kind"] == "summary"]
    assert len(summaries) == 1
    assert {b.state for b in w.store.list_badges(learner)} <= FINAL_STATES


def test_a_token_badgr_refused_is_read_again_after_the_refresh_not_reused() -> None:
    w = run_world(ScriptedBadgr({A1: ["unauthorized", "imported"]}))
    _connect(w.svc, w.store, ANA)
    _batch(w, w.queue.take("migrate"))
    assert [i["token"] for i in w.badgr.imports] == ["access1", "access2", "access2"]
    assert w.badgr.refreshes == 1


def test_a_batch_that_fails_still_looks_at_its_summaries() -> None:
    # A job failing on its last delivery (its badge just recorded dead-lettered) never comes back.
    w = run_world(ScriptedBadgr())
    learner = _connect(w.svc, w.store, ANA)
    jobs = w.queue.take("migrate")
    with pytest.raises(RuntimeError), summaries_after_batch(w.svc):
        for job in jobs:
            import_badge(w.svc, job["learner_id"], job["badge_id"], 1, Backpacks())
        raise RuntimeError("a record failed")
    assert len([n for n in w.queue.take("notify") if n["kind"] == "summary"]) == 1
    assert w.store.get_learner(learner).summary_for is not None


class Killed(BaseException):
    """An invocation ended from outside: nothing after it runs."""


def test_a_killed_batch_leaves_its_summaries_to_the_jobs_coming_back() -> None:
    w = run_world(ScriptedBadgr())
    learner = _connect(w.svc, w.store, ANA)
    jobs = w.queue.take("migrate")
    with pytest.raises(Killed), summaries_after_batch(w.svc):
        for job in jobs:
            import_badge(w.svc, job["learner_id"], job["badge_id"], 1, Backpacks())
        raise Killed
    assert [n for n in w.queue.take("notify") if n["kind"] == "summary"] == []
    # Redelivered, the jobs find their badges final and send the summary.
    with summaries_after_batch(w.svc):
        for job in jobs:
            assert import_badge(w.svc, job["learner_id"], job["badge_id"], 2, Backpacks()) in FINAL_STATES
    assert len([n for n in w.queue.take("notify") if n["kind"] == "summary"]) == 1
    assert w.store.get_learner(learner).summary_for is not None
    assert BadgeState.QUEUED not in {b.state for b in w.store.list_badges(learner)}


class MeetingBadgr(ScriptedBadgr):
    """Each listing waits for another one to be asked at the same time (a two-party barrier)."""

    def __init__(self, fail_first_alongside: bool = False) -> None:
        super().__init__()
        self.barrier = threading.Barrier(2, timeout=10)
        self.fail_first_alongside = fail_first_alongside
        self.threads: list[str] = []

    def list_assertions(self, access_token: str, include_pending: bool = True) -> list[dict[str, Any]]:
        self.threads.append(threading.current_thread().name)
        if len(self.threads) <= 2:
            self.barrier.wait()
            if self.fail_first_alongside and threading.current_thread() is not threading.main_thread():
                raise BadgrUnavailable("down")
        return super().list_assertions(access_token, include_pending)


def _two_learners(badgr: ScriptedBadgr) -> tuple[Any, list[dict[str, Any]], Backpacks]:
    w = run_world(badgr)
    _connect(w.svc, w.store, ANA)
    _connect(w.svc, w.store, BEN)
    jobs = w.queue.take("migrate")
    return w, jobs, Backpacks(learners=list(dict.fromkeys(job["learner_id"] for job in jobs)))


def test_the_learners_of_a_batch_are_listed_together_before_the_first_badge_is_sent() -> None:
    badgr = MeetingBadgr()
    w, jobs, backpacks = _two_learners(badgr)
    with summaries_after_batch(w.svc):
        for job in jobs:
            import_badge(w.svc, job["learner_id"], job["badge_id"], 1, backpacks)
    # Both listings met at the barrier: asked at the same time, not one after the other.
    assert badgr.listings == 2 and len(set(badgr.threads)) == 2
    assert len(badgr.imports) == 3
    assert {b.state for b in w.store.badges.values()} <= FINAL_STATES


def test_a_learner_whose_listing_failed_alongside_is_listed_on_its_own_before_its_first_send() -> None:
    badgr = MeetingBadgr(fail_first_alongside=True)
    w, jobs, backpacks = _two_learners(badgr)
    for job in jobs:
        import_badge(w.svc, job["learner_id"], job["badge_id"], 1, backpacks)
    assert len(badgr.threads) == 3  # the failed one asked again, on the invocation's thread
    assert len(badgr.imports) == 3
    assert {b.state for b in w.store.badges.values()} <= FINAL_STATES
