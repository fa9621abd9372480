"""What a learner's Badgr backpack holds, asked whenever an import's answer is not known.

Badgr's ``GET /v2/backpack/assertions?include_pending=true`` lists every badge of the account,
pending ones included, each with its ``openBadgeId`` (the assertion's own id) and Badgr's
``entityId``. One listing per learner serves a whole batch of jobs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .connection import KnownTokens, read_with_token
from .domain import BadgeRecord

if TYPE_CHECKING:
    from .export import RangeReader
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
    tokens read and opened once (and again after a refresh). ``exports`` keeps each export's
    reader for the batch, so its badges' images cost neither a read of the export's record
    each nor a ranged read of S3 for each neighbouring image."""

    _listings: dict[str, dict[str, Held]] = field(default_factory=dict)
    _sent: set[tuple[str, str]] = field(default_factory=set)
    fetched: int = 0
    tokens: KnownTokens = field(default_factory=dict)
    exports: dict[str, RangeReader] = field(default_factory=dict)

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
            items = read_with_token(
                svc,
                badge.learner_id,
                lambda token: svc.badgr.list_assertions(token, include_pending=True),
                self.tokens,
            )
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

    def sent(self, badge: BadgeRecord) -> None:
        """This badge was just sent to Badgr: the learner's listing no longer speaks for it."""
        self._sent.add((badge.learner_id, badge.badge_id))
