"""A learner's Backpack groups become Badgr collections once their badges have moved.

Badgr's own rules shape this: a collection is created empty (a POST carrying ``assertions``
crashes), then filled by a PUT of the whole object, which replaces the list and needs ``name``.
Jobs arrive at least once and workers die at any point, so every step is recorded first:

1. the group is claimed (``creating``, with a lease and a marker) by a conditional write;
2. the create is sent and the collection's ``entityId`` recorded before anything else;
3. the collection is filled, and the group recorded ``filled`` with what it holds.

A job that finds ``creating`` with no ``entityId`` after the lease ran out (its worker died, or
Badgr's answer was lost) looks the collection up by the marker in its description before it ever
creates one, so no group gets a second collection. Filling again is harmless (PUT replaces).
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from .domain import (
    STATE_WORDS,
    BadgeRecord,
    BadgeState,
    CollectionRecord,
    GroupRecord,
    LeftOut,
    Problem,
    all_settled,
)
from .observability import logger, metrics
from .services import Services

T = TypeVar("T")

# How long a worker holds a group while it creates its collection. Far longer than one Badgr
# call may take (the client's timeout is 10 s), so only a dead worker's claim ever runs out.
LEASE_SECONDS = 120.0
MARKER_PREFIX = "backpack-group:"
DEFAULT_NAME = "Backpack group"

REACHED_BADGR = (BadgeState.IMPORTED, BadgeState.ALREADY_IN_BADGR)

_NOTHING_MOVED = Problem(
    code="NO_BADGE_IN_BADGR",
    message="None of this group's badges reached Badgr, so no collection was made.",
)
_GONE = Problem(
    code="COLLECTION_DELETED",
    message="This collection was deleted in Badgr, so we did not make it again.",
)


class CollectionBusy(Exception):  # noqa: N818 - it is a request, not an error
    """Another worker holds the group, or Badgr could not answer now: SQS brings the job back."""

    def __init__(self, message: str, delay: float | None = None, *, definite: bool = False) -> None:
        super().__init__(message)
        self.delay = delay
        # Badgr answered (429, 5xx): the call surely did nothing, unlike a timeout or a reset.
        self.definite = definite


class CollectionHeld(CollectionBusy):
    """Another worker's lease on the group has not run out: that worker settles it."""


def marker_for(learner_id: str, group_id: int) -> str:
    """A tag unique to the learner's group, written into the collection's description."""
    digest = hashlib.sha256(f"{learner_id}/group/{group_id}".encode()).hexdigest()[:16]
    return f"{MARKER_PREFIX}{digest}"


def description_for(group: GroupRecord, marker: str) -> str:
    parts = [
        text.strip() for text in (group.portfolio_title, group.portfolio_preamble) if text and text.strip()
    ]
    parts.append(f"(Moved from the Mozilla Backpack; {marker})")
    return "\n\n".join(parts)


def collection_name(group: GroupRecord) -> str:
    name = (group.name or "").strip()
    return name or f"{DEFAULT_NAME} {group.group_id}"


# -- what a group's collection should hold -----------------------------------------------------
def _why_left_out(badge: BadgeRecord) -> str:
    if badge.state == BadgeState.PENDING:
        return "Badgr holds it until you confirm the address it was issued to, so it could not join yet."
    if badge.problem is not None:
        return badge.problem.message
    return f"It did not reach Badgr ({STATE_WORDS[badge.state]})."


def plan_collection(
    group: GroupRecord,
    badges: Sequence[BadgeRecord],
    find_existing: Callable[[BadgeRecord], str | None],
) -> tuple[dict[str, int], list[LeftOut]]:
    """Badgr assertion ids the collection should hold (in the group's order, each with the
    Backpack badge it came from), and the rest with why.

    ``find_existing`` names the Badgr assertion of a badge Badgr already had (no id came back).
    """
    by_backpack_id = {b.backpack_badge_id: b for b in badges if b.backpack_badge_id is not None}
    assertion_ids: dict[str, int] = {}
    left_out: list[LeftOut] = []
    seen: set[int] = set()
    for backpack_id in group.badge_ids:
        if backpack_id in seen:
            continue
        seen.add(backpack_id)
        badge = by_backpack_id.get(backpack_id)
        if badge is None:
            left_out.append(
                LeftOut(
                    badge_id=backpack_id, reason="The Backpack listed a badge here that it no longer held."
                )
            )
            continue
        entity_id: str | None = None
        if badge.state == BadgeState.IMPORTED and badge.badgr is not None:
            entity_id = badge.badgr.entity_id
        elif badge.state == BadgeState.ALREADY_IN_BADGR:
            entity_id = (badge.badgr.entity_id if badge.badgr else None) or find_existing(badge)
            if entity_id is None:
                left_out.append(
                    LeftOut(
                        badge_id=backpack_id,
                        reason="Badgr already had this badge, but we could not tell which of yours it is.",
                    )
                )
                continue
        if entity_id is None:
            left_out.append(LeftOut(badge_id=backpack_id, reason=_why_left_out(badge)))
        else:
            assertion_ids.setdefault(entity_id, backpack_id)
    return assertion_ids, left_out


# -- the job -----------------------------------------------------------------------------------
class _Badgr:
    """The learner's Badgr calls, with one token refresh on 401 and the assertions read once."""

    def __init__(self, svc: Services, learner_id: str) -> None:
        self._svc = svc
        self._learner_id = learner_id
        self._assertions: list[dict[str, Any]] | None = None

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        from .badgr import BadgrAuthError, BadgrThrottled, BadgrUnavailable
        from .connection import refresh_tokens, tokens_of
        from .migration import RetryLater

        refreshed = False
        while True:
            try:
                access_token, refresh_token, version = tokens_of(self._svc, self._learner_id)
                return fn(access_token, *args, **kwargs)
            except BadgrThrottled as error:
                raise CollectionBusy(
                    "Badgr asked us to wait", delay=error.retry_after, definite=True
                ) from error
            except BadgrUnavailable as error:
                raise CollectionBusy(str(error), definite=error.status is not None) from error
            except RetryLater as error:
                raise CollectionBusy(error.problem.message, delay=error.delay) from error
            except BadgrAuthError as error:
                if refreshed or error.status != 401:
                    raise CollectionBusy("Badgr no longer lets us into this account") from error
                try:
                    refresh_tokens(self._svc, self._learner_id, refresh_token, version)
                except RetryLater as retry:
                    raise CollectionBusy(retry.problem.message, delay=retry.delay) from retry
                refreshed = True

    @property
    def client(self) -> Any:
        return self._svc.badgr

    def assertions(self) -> list[dict[str, Any]]:
        if self._assertions is None:
            self._assertions = self.call(self.client.list_assertions)
        return self._assertions

    def existing(self, badge: BadgeRecord) -> str | None:
        """The Badgr assertion of a badge Badgr already had, matched by its original id."""
        wanted = {badge.verdict.hosted_url if badge.verdict else None}
        body = badge.backpack_body or {}
        for key in ("id", "uid", "verify_url"):
            if isinstance(body.get(key), str):
                wanted.add(body[key])
        wanted.discard(None)
        for item in self.assertions():
            if item.get("openBadgeId") in wanted and item.get("entityId"):
                return str(item["entityId"])
        return None


def make_collections(
    svc: Services,
    learner_id: str,
    *,
    give_up: bool = False,
    now: Callable[[], float] = time.time,
    job_id: str | None = None,
) -> int:
    """Settle every group of a learner whose badges are all final; returns how many were settled.

    Raises :class:`CollectionBusy` when a group must wait (another worker holds it, Badgr is
    down); the groups settled before it stay settled, and the job comes back for the rest. On
    the job's last delivery (``give_up``) a group Badgr kept us from making is recorded
    ``skipped`` with the reason, so every group ends in one recorded state and the summary
    still goes out; a group another worker still holds is left to that worker.
    """
    from .migration import maybe_send_summary

    learner = svc.store.get_learner(learner_id)
    if learner is None:
        logger.warning("collections job for an unknown learner")
        return 0
    badges = svc.store.list_badges(learner_id)
    if not all_settled(badges):
        return 0  # a later final badge sends this job again
    request = learner.migration_requested_at
    badgr = _Badgr(svc, learner_id)
    settled = 0
    left_to_holder = False
    for group in svc.store.list_groups(learner_id):
        if group.settled_for == request and group.collection and group.collection.state != "creating":
            continue
        try:
            _settle(svc, badgr, group, badges, request, now, job_id)
        except CollectionHeld:
            if not give_up:
                raise
            # Its holder is alive and will record what it made; skipping it here could contradict
            # Badgr. Should the holder die, its own job (or the reconciler) takes the group over.
            logger.info("collection left to the worker holding it", extra={"group_id": group.group_id})
            left_to_holder = True
            continue
        except CollectionBusy as busy:
            if not give_up:
                raise
            _give_up(svc, group, request, busy)
        settled += 1
    if not left_to_holder:  # else the holder sends the summary once it has settled the group
        maybe_send_summary(svc, learner_id)
    return settled


def _give_up(svc: Services, group: GroupRecord, request: str | None, busy: CollectionBusy) -> None:
    logger.warning("collection given up", extra={"group_id": group.group_id, "reason": str(busy)})
    current = next(
        (g for g in svc.store.list_groups(group.learner_id) if g.group_id == group.group_id), group
    )
    collection = current.collection or CollectionRecord(state="skipped")
    reason = Problem(
        code="COLLECTION_NOT_MADE",
        message="Badgr did not let us make this collection after several tries; our team has been told.",
    )
    update = {"state": "skipped", "problem": reason, "lease_until": None}
    svc.store.save_group(
        current.model_copy(
            update={"settled_for": request, "collection": collection.model_copy(update=update)}
        ),
        expected_version=current.version,
    )
    metrics.add_metric(name="CollectionsGivenUp", unit="Count", value=1)


def _save(svc: Services, group: GroupRecord, **update: Any) -> GroupRecord:
    changed = group.model_copy(update=update)
    if not svc.store.save_group(changed, expected_version=group.version):
        raise CollectionBusy("another worker changed this group meanwhile")
    return changed.model_copy(update={"version": group.version + 1})


def _settle(
    svc: Services,
    badgr: _Badgr,
    group: GroupRecord,
    badges: Sequence[BadgeRecord],
    request: str | None,
    now: Callable[[], float],
    job_id: str | None = None,
) -> None:
    from .badgr import BadgrNotFound, BadgrRefused

    current = group.collection
    sources, left_out = plan_collection(group, badges, badgr.existing)
    assertion_ids = list(sources)
    # Never asked to create before (no marker handed out): no collection of it can exist yet.
    fresh = current is None or current.marker is None
    if current is None or (current.entity_id is None and current.state != "creating"):
        if not assertion_ids:
            # Nothing reached Badgr: no empty collection, and the reason on record.
            _save(
                svc,
                group,
                settled_for=request,
                collection=CollectionRecord(
                    state="skipped", published=group.public, problem=_NOTHING_MOVED, badges_left_out=left_out
                ),
            )
            metrics.add_metric(name="CollectionsSkipped", unit="Count", value=1)
            return
        current = CollectionRecord(
            state="creating",
            published=group.public,
            marker=marker_for(group.learner_id, group.group_id),
            lease_until=now() + LEASE_SECONDS,
            holder=job_id,
        )
        group = _save(svc, group, collection=current)
    elif current.state == "creating" and current.entity_id is None:
        # The same job delivered again: SQS redelivers it only once its last try has ended, so
        # that try's lease guards nothing any more.
        ours = job_id is not None and current.holder == job_id
        if current.lease_until is not None and current.lease_until > now() and not ours:
            raise CollectionHeld(
                "another worker is creating this collection", delay=current.lease_until - now()
            )
        # Its creator died or lost Badgr's answer: take the group over, then look before creating.
        current = current.model_copy(update={"lease_until": now() + LEASE_SECONDS, "holder": job_id})
        group = _save(svc, group, collection=current)
    marker = current.marker or marker_for(group.learner_id, group.group_id)
    name, description = collection_name(group), description_for(group, marker)
    entity_id = current.entity_id
    if entity_id is None:
        entity_id = None if fresh else _find_by_marker(badgr, marker)
        if entity_id is None:
            try:
                created = badgr.call(
                    badgr.client.create_collection, name=name, description=description, published=group.public
                )
            except CollectionBusy as busy:
                if busy.definite:
                    # Badgr made nothing: the next delivery need not wait out the lease.
                    with contextlib.suppress(CollectionBusy):
                        _save(svc, group, collection=current.model_copy(update={"lease_until": 0.0}))
                raise
            entity_id = str(created.get("entityId") or "")
            if not entity_id:
                raise CollectionBusy("Badgr created a collection without naming it")
            metrics.add_metric(name="CollectionsCreated", unit="Count", value=1)
        current = current.model_copy(update={"entity_id": entity_id})
        group = _save(svc, group, collection=current)
    try:
        answer = _fill(badgr, entity_id, name, description, group.public, assertion_ids, left_out, sources)
    except BadgrNotFound:
        _save(
            svc,
            group,
            settled_for=request,
            collection=current.model_copy(
                update={"state": "skipped", "problem": _GONE, "lease_until": None, "assertion_ids": []}
            ),
        )
        return
    except BadgrRefused as error:
        raise CollectionBusy(f"Badgr refused the collection: {error}") from error
    _save(
        svc,
        group,
        settled_for=request,
        collection=current.model_copy(
            update={
                "state": "filled",
                "assertion_ids": assertion_ids,
                "badges_left_out": left_out,
                "problem": None,
                "lease_until": None,
                "published": group.public,
                "share_url": answer.get("share_url") or current.share_url,
            }
        ),
    )
    metrics.add_metric(name="CollectionsFilled", unit="Count", value=1)
    logger.info("collection filled", extra={"group_id": group.group_id, "badges": len(assertion_ids)})


def _find_by_marker(badgr: _Badgr, marker: str) -> str | None:
    for item in badgr.call(badgr.client.list_collections):
        if marker in str(item.get("description") or "") and item.get("entityId"):
            return str(item["entityId"])
    return None


def _fill(
    badgr: _Badgr,
    entity_id: str,
    name: str,
    description: str,
    published: bool,
    assertion_ids: list[str],
    left_out: list[LeftOut],
    sources: dict[str, int],
) -> dict[str, Any]:
    """PUT the whole collection. An assertion Badgr no longer has (the learner deleted it) is left
    out with the reason, and the rest goes in."""
    from .badgr import BadgrRefused

    try:
        answer: dict[str, Any] = badgr.call(
            badgr.client.put_collection,
            entity_id,
            name=name,
            description=description,
            published=published,
            assertions=assertion_ids,
        )
        return answer
    except BadgrRefused as error:
        if "assertions" not in error.field_errors:
            raise
    held = {str(item.get("entityId")) for item in badgr.assertions()}
    for assertion_id in [a for a in assertion_ids if a not in held]:
        assertion_ids.remove(assertion_id)
        left_out.append(
            LeftOut(
                badge_id=sources.get(assertion_id, 0),
                reason="This badge is no longer in your Badgr backpack (it was deleted there).",
            )
        )
    answer = badgr.call(
        badgr.client.put_collection,
        entity_id,
        name=name,
        description=description,
        published=published,
        assertions=assertion_ids,
    )
    return answer


__all__ = [
    "LEASE_SECONDS",
    "CollectionBusy",
    "CollectionHeld",
    "make_collections",
    "marker_for",
    "plan_collection",
]
