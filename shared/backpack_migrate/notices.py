"""Notification jobs: which email a learner gets, with which link, exactly once."""

from __future__ import annotations

import time
from typing import Any

from .addresses import learner_email
from .domain import now_iso
from .group_pages import collection_lines
from .links import sign_link
from .notify import Email, invitation, summary
from .observability import logger, metrics
from .services import Services


def learner_link(svc: Services, learner_id: str, export_id: str) -> tuple[str, int]:
    ttl = svc.settings.link_ttl_days * 86400
    token = sign_link(svc.link_secret(), learner_id, export_id, ttl)
    return f"{svc.settings.public_base_url.rstrip('/')}/l/{token}", int(time.time()) + ttl


def send_notice(svc: Services, job: dict[str, Any]) -> bool:
    """Send the email a notify job asks for; False when the learner is unknown."""
    learner = svc.store.get_learner(job["learner_id"])
    if learner is None:
        logger.warning("notice for an unknown learner", extra={"learner_id": job["learner_id"]})
        return False
    if (
        job["kind"] == "invite"
        and learner.invited_at is not None
        and job.get("export_id")
        in (
            None,
            learner.export_id,
        )
    ):
        # Invited already: this is a job sent again by the reconciler, or a replay whose
        # idempotency record was lost. One invitation per learner and export (a later export
        # that lists the learner again brings an invitation of its own, once).
        return True

    def deliver(job: dict[str, Any]) -> str:
        to = learner_email(svc, learner)
        link, expires_at = learner_link(svc, learner.learner_id, learner.export_id)
        badges = svc.store.list_badges(learner.learner_id)
        email: Email
        if job["kind"] == "invite":
            expires_on = time.strftime("%d %B %Y", time.gmtime(expires_at))
            email = invitation(to, link, len(badges), expires_on, svc.settings.support_email)
        else:
            groups = svc.store.list_groups(learner.learner_id) if learner.backpack_user_id is not None else []
            email = summary(to, link, badges, svc.settings.support_email, collection_lines(groups, badges))
        svc.rate.wait()
        return svc.sender.send(email)

    # The key is the job itself: export + learner for the invitation, learner + request for the
    # summary. An email sent whose record could not be saved is not failed, or it would go again.
    svc.once_keeping_result("notice", deliver, job)
    if job["kind"] == "invite":
        # Until this is on record the learner stays in the open index, and the reconciler
        # sends the invitation job again (a throttled write here must not lose the learner).
        svc.store.mark_invited(learner.learner_id, now_iso())
    metrics.add_metric(
        name="LearnersNotified" if job["kind"] == "invite" else "SummariesSent", unit="Count", value=1
    )
    return True
