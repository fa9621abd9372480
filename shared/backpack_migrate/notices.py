"""Notification jobs: which email a learner gets, with which link, exactly once."""

from __future__ import annotations

import time
from typing import Any

from .group_pages import collection_lines
from .links import sign_link
from .migration import learner_email
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

    def deliver(job: dict[str, Any]) -> str:
        to = learner_email(svc, learner)
        link, expires_at = learner_link(svc, learner.learner_id, learner.export_id)
        badges = svc.store.list_badges(learner.learner_id)
        email: Email
        if job["kind"] == "invite":
            expires_on = time.strftime("%d %B %Y", time.gmtime(expires_at))
            email = invitation(to, link, len(badges), expires_on)
        else:
            groups = svc.store.list_groups(learner.learner_id) if learner.backpack_user_id is not None else []
            email = summary(to, link, badges, collection_lines(groups, badges))
        svc.rate.wait()
        return svc.sender.send(email)

    # The key is the job itself: export + learner for the invitation, learner + request for the summary.
    svc.once("notice", deliver)(job=job)
    metrics.add_metric(
        name="LearnersNotified" if job["kind"] == "invite" else "SummariesSent", unit="Count", value=1
    )
    return True
