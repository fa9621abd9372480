"""What a learner's Badgr backpack holds, asked whenever an import's answer is not known.

Badgr's ``GET /v2/backpack/assertions?include_pending=true`` lists every badge of the account,
pending ones included, each with its ``openBadgeId`` (the assertion's own id) and Badgr's
``entityId``. One listing per learner serves a whole batch of jobs.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from .connection import KnownTokens, RetryLater, read_with_token, tokens_of
from .domain import BadgeRecord

if TYPE_CHECKING:
    from .services import Services


@dataclass(frozen=True)
class Held:
    """A badge found in the backpack: Badgr's id for it, and whether it waits for an email."""

    entity_id: str | None
    pending: bool


def badge_keys(badge: BadgeRecord) -> set[str]:
    """Every id Badgr may list this badge under."""
    keys: set[str] = set()
    verdict = badge.verdict
    if verdict is not None:
        keys |= {value for value in (verdict.assertion_id, verdict.hosted_url) if value}
    if badge.badgr is not None and badge.badgr.entity_id:
        keys.add(f"entity:{badge.badgr.entity_id}")
    return keys


def _listed(item: dict[str, Any]) -> tuple[set[str], Held]:
    keys = {str(item["openBadgeId"])} if item.get("openBadgeId") else set()
    entity = str(item["entityId"]) if item.get("entityId") else None
    if entity:
        keys.add(f"entity:{entity}")
    pending = bool(item.get("pending")) or item.get("acceptance") == "Pending"
    return keys, Held(entity_id=entity, pending=pending)


@dataclass
class Backpacks:
    """Learners' Badgr accounts as one batch of jobs sees them: each backpack listing fetched at
    most once while this object lives (and again for a badge sent since), and each learner's
    tokens read and opened once (and again after a refresh)."""

    _listings: dict[str, dict[str, Held]] = field(default_factory=dict)
    _sent: set[tuple[str, str]] = field(default_factory=set)
    fetched: int = 0
    tokens: KnownTokens = field(default_factory=dict)
    # The learners of the batch's jobs: their listings are asked for together (see held).
    learners: list[str] = field(default_factory=list)

    MAX_ALONGSIDE: ClassVar[int] = 9  # a batch of 10 jobs has at most 10 learners

    def held(self, svc: Services, badge: BadgeRecord) -> Held | None:
        """The badge as the learner's backpack lists it, or None when it is not there.

        Raises ``RetryLater`` when Badgr cannot be asked: then nothing is known.
        """
        keys = badge_keys(badge)
        if not keys:
            return None
        listing = self._listings.get(badge.learner_id)
        if listing is None or (badge.learner_id, badge.badge_id) in self._sent:
            # Not listed yet, or listed before this very badge was sent: only a new listing knows.
            self._sent = {sent for sent in self._sent if sent[0] != badge.learner_id}
            alongside = self._list_alongside(svc, badge.learner_id)
            try:
                items = read_with_token(
                    svc,
                    badge.learner_id,
                    lambda token: svc.badgr.list_assertions(token, include_pending=True),
                    self.tokens,
                )
            finally:
                for learner_id, listed in alongside():
                    self._keep(learner_id, listed)
            listing = self._keep(badge.learner_id, items)
        return next((listing[key] for key in sorted(keys) if key in listing), None)

    def _keep(self, learner_id: str, items: list[dict[str, Any]]) -> dict[str, Held]:
        self.fetched += 1
        listing: dict[str, Held] = {}
        for item in items:
            item_keys, held = _listed(item)
            listing.update(dict.fromkeys(item_keys, held))
        self._listings[learner_id] = listing
        return listing

    def _list_alongside(self, svc: Services, learner_id: str) -> Callable[[], list[tuple[str, Any]]]:
        """Start listing the batch's other learners not listed yet, while this one is listed.

        Each of them needs its listing before its first badge is sent: asked together, a batch
        of two learners waits for Badgr once, not twice. They go where this listing goes: after
        the gate's permit for an import (an open circuit stops the lot), or when a job is settled
        on its last delivery. Their tokens are read here, on the
        invocation's own thread; a learner whose tokens or listing fail is simply left to be
        listed when its own badge comes, where a refresh or a retry is handled as it should be.
        """
        others = [other for other in self.learners if other != learner_id and other not in self._listings]
        tokens: dict[str, str] = {}
        for other in others[: self.MAX_ALONGSIDE]:
            try:
                tokens[other] = tokens_of(svc, other, self.tokens)[0]
            except RetryLater:
                continue
        if not tokens:
            return list

        def listing(other: str) -> tuple[str, Any]:
            try:
                return other, svc.badgr.list_assertions(tokens[other], include_pending=True)
            except Exception:  # any failure only means: list it later, on its own
                return other, None

        pool = ThreadPoolExecutor(len(tokens))
        futures = [pool.submit(listing, other) for other in tokens]

        def collect() -> list[tuple[str, Any]]:
            pool.shutdown(wait=True)
            answers = [future.result() for future in futures]
            return [(other, items) for other, items in answers if items is not None]

        return collect

    def sent(self, badge: BadgeRecord) -> None:
        """This badge was just sent to Badgr: the learner's listing no longer speaks for it."""
        self._sent.add((badge.learner_id, badge.badge_id))
