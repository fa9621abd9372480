"""A badge a third-party site hands a learner (issuer.js or Backpack Connect), into Badgr once.

Each badge is verified with this project's verifier (its safe fetcher fetches the issuer's
documents), recorded as a badge of the learner keyed by learner + assertion, and imported with
the learner's stored Badgr token through the same import the migration uses. The record makes a
repeated call a no-op and the import's idempotency asks Badgr once, so a site that retries never
causes a second import. A learner who has not connected Badgr yet keeps the badge on record; it
moves with the rest when they connect.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Literal

from .crypto import badge_id_for
from .domain import BadgeRecord, BadgeState, LearnerRecord, now_iso
from .migration import RetryLater, import_badge, learner_email
from .observability import logger
from .services import Services

Outcome = Literal["imported", "recorded", "exists", "invalid", "inaccessible", "not_theirs"]

# Failures that say the badge could not be fetched, rather than that it is wrong.
_INACCESSIBLE = {
    "ASSERTION_NOT_FOUND",
    "ASSERTION_UNREACHABLE",
    "ASSERTION_NOT_ANSWERING",
    "ADDRESS_REFUSED",
}
_HELD = (BadgeState.IMPORTED, BadgeState.ALREADY_IN_BADGR, BadgeState.PENDING)
MAX_ASSERTION = 16_384  # a hosted URL or a compact JWS; anything longer is no badge


@dataclass
class Issued:
    outcome: Outcome
    message: str
    assertion: dict[str, object] | None = None  # the assertion as verified, for the 201 body


def learner_addresses(svc: Services, learner: LearnerRecord) -> list[str]:
    """The contact address and every verified address of the learner, for the recipient check."""
    export = svc.store.get_export(learner.export_id)
    if export is None:
        return []
    found = [learner_email(svc, learner, export)]
    if learner.addresses_ciphertext:
        try:
            listed = json.loads(
                svc.emails.decrypt(
                    learner.addresses_ciphertext,
                    learner_id=learner.learner_id,
                    export_id=learner.export_id,
                    data_key_ciphertext=export.data_key_ciphertext,
                )
            )
            found += [a["address"] for a in listed if a.get("verified") and a["address"] not in found]
        except (ValueError, KeyError, TypeError):
            logger.warning(
                "a learner's addresses could not be read", extra={"learner_id": learner.learner_id}
            )
    return found


def primary_address(svc: Services, learner: LearnerRecord) -> str:
    """The Backpack's primary address (verified or not): what ``/api/identity`` hashed."""
    export = svc.store.get_export(learner.export_id)
    if export is not None and learner.addresses_ciphertext:
        try:
            listed = json.loads(
                svc.emails.decrypt(
                    learner.addresses_ciphertext,
                    learner_id=learner.learner_id,
                    export_id=learner.export_id,
                    data_key_ciphertext=export.data_key_ciphertext,
                )
            )
            primary = next((a["address"] for a in listed if a.get("primary")), None)
            if primary:
                return str(primary)
        except (ValueError, KeyError, TypeError):
            pass
    return learner_email(svc, learner, export)


def connected(svc: Services, learner_id: str) -> bool:
    return svc.store.get_token(learner_id) is not None


def issue(svc: Services, learner_id: str, assertion: str, client_origin: str | None) -> Issued:
    """Verify ``assertion`` (a hosted URL or a compact JWS) for the learner, record it, import it."""
    text = assertion.strip()
    if not text or len(text) > MAX_ASSERTION:
        return Issued("invalid", "The badge is missing or too long to be an assertion.")
    learner = svc.store.get_learner(learner_id)
    if learner is None:
        return Issued("invalid", "There is no learner to give this badge to.")
    verdict = svc.verifier.verify(text, learner_addresses(svc, learner))
    codes = {e.code for e in verdict.errors}
    if codes & _INACCESSIBLE:
        return Issued("inaccessible", "The badge could not be fetched from its issuer.")
    if "RECIPIENT_MISMATCH" in codes:
        return Issued("not_theirs", "This badge was issued to someone else.")
    if not verdict.valid:
        first = verdict.errors[0].message if verdict.errors else "This badge is not valid."
        return Issued("invalid", first)
    key = (verdict.badge.assertion_id if verdict.badge else None) or verdict.hosted_url or text
    digest = hashlib.sha256(key.encode()).hexdigest()
    badge_id = badge_id_for(learner_id, "issued", f"issued/{digest}")
    body = verdict.assertion
    existing = svc.store.get_badge(learner_id, badge_id)
    if existing is not None and existing.state in _HELD:
        return Issued("exists", "The learner already holds this badge.", body)
    now_connected = connected(svc, learner_id)
    if existing is None:
        record = BadgeRecord(
            learner_id=learner_id,
            badge_id=badge_id,
            export_id=learner.export_id,
            file_name=f"issued/{digest[:16]}",
            state=BadgeState.QUEUED if now_connected else BadgeState.VERIFIED,
            verdict=verdict.to_summary(),
            verified_at=now_iso(),
            issued_assertion=text,
            issued_by=client_origin,
        )
        if not svc.store.put_badges_if_absent([record]):
            # Another request recorded it first: that one imports it.
            return Issued("exists", "The learner already holds this badge.", body)
    elif not now_connected or existing.state not in (
        BadgeState.QUEUED,
        BadgeState.FAILED_RETRYABLE,
        BadgeState.VERIFIED,
    ):
        return Issued("exists", "The learner already holds this badge.", body)
    if not now_connected:
        return Issued("recorded", "Recorded; it moves to Badgr when the learner connects Badgr.", body)
    if existing is not None and existing.state == BadgeState.VERIFIED:
        queued = existing.model_copy(update={"state": BadgeState.QUEUED})
        svc.store.transition(queued, [BadgeState.VERIFIED])
    return _import_now(svc, learner_id, badge_id, body)


def _import_now(svc: Services, learner_id: str, badge_id: str, body: dict[str, object] | None) -> Issued:
    try:
        state = import_badge(svc, learner_id, badge_id, receive_count=1)
    except RetryLater:
        # Badgr is not answering now: the badge waits on the migrate queue, which retries.
        svc.queue.send(svc.settings.migrate_queue_url, [{"learner_id": learner_id, "badge_id": badge_id}])
        return Issued("recorded", "Recorded; Badgr did not answer yet and it will be sent again.", body)
    if state in (BadgeState.IMPORTED, BadgeState.PENDING):
        return Issued("imported", "Added to the learner's Badgr backpack.", body)
    if state == BadgeState.ALREADY_IN_BADGR:
        return Issued("exists", "The learner already holds this badge.", body)
    badge = svc.store.get_badge(learner_id, badge_id)
    reason = badge.problem.message if badge and badge.problem else "Badgr did not accept this badge."
    return Issued("invalid", reason, body)
