"""What one batch of a learner's migrate jobs costs: Badgr calls, token reads, summary looks."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

from backpack_migrate.domain import FINAL_STATES, BadgeState
from backpack_migrate.holdings import Backpacks
from backpack_migrate.migration import RetryLater, import_badge, summaries_after_batch
from tests.fakes import ScriptedBadgr
from tests.unit.badges import hosted_assertion
from tests.unit.test_migration_flow import ANA, _connect, run_world

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
