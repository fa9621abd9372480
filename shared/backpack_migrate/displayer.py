"""The Backpack's Displayer API, answered from what intake stored: the same ids, fields and order.

Moodle and WordPress plugins keep the Backpack's user and group ids in their own tables, so the
ids here are the Backpack's. A learner who has moved shows their groups as they are now in
Badgr (the collection each group became, its badges, whether it is published) once that
collection exists, and the Backpack's group until then.
"""

from __future__ import annotations

import re
from typing import Any

from .domain import BadgeRecord, normalize_email
from .export import ExportError, open_export, read_member
from .legacy_http import IMAGE_CSP, FormatError, Reply, json_reply, wants_json
from .pages import message_page
from .services import Services

MISSING = {"httpStatus": 404, "status": "missing"}
_ID = re.compile(r"[0-9]{1,12}")
_IMAGE_FILE = re.compile(r"([0-9a-f]{64})\.(png|svg)")
_EXTENSIONS = {"image/png": "png", "image/svg+xml": "svg"}
_FORMAT_SUFFIXES = (".jsonp", ".json")


def format_error() -> Reply:
    return Reply(400, "error: could not find formatter", content_type="text/plain; charset=utf-8")


def check_format(path: str, accept: str | None) -> None:
    if not wants_json(path, accept):
        raise FormatError(path)


def _strip_format(raw: str) -> str:
    for suffix in _FORMAT_SUFFIXES:
        if raw.endswith(suffix):
            return raw[: -len(suffix)]
    return raw


def _int_id(raw: str) -> int | None:
    raw = _strip_format(raw)
    return int(raw) if _ID.fullmatch(raw) else None


def convert_email(svc: Services, email: str | None) -> Reply:
    """The Backpack user id of an address: the primary (verified or not) or a verified additional
    one, whatever its case."""
    if not email or not email.strip():
        return json_reply(400, {"status": "invalid", "error": "missing `email` parameter"})
    learner_id = svc.store.learner_for_address(svc.learner_id(normalize_email(email)))
    learner = svc.store.get_learner(learner_id) if learner_id else None
    if learner is None or learner.backpack_user_id is None:
        reply = json_reply(
            404, {"status": "missing", "error": f"Could not find a user by the email address `{email}`"}
        )
        reply.outcome = "missing"
        return reply
    reply = json_reply(200, {"status": "okay", "email": email, "userId": learner.backpack_user_id})
    reply.outcome = "okay"
    return reply


def _learner_of(svc: Services, raw_user_id: str) -> tuple[int, str] | None:
    user_id = _int_id(raw_user_id)
    if user_id is None:
        return None
    learner_id = svc.store.learner_for_backpack_user(user_id)
    # An erased learner's records are gone; the index alone is not enough to answer.
    if learner_id is None or svc.store.get_learner(learner_id) is None:
        return None
    return user_id, learner_id


def _missing() -> Reply:
    reply = json_reply(404, MISSING)
    reply.outcome = "missing"
    return reply


def _badges_now(group: Any, badges: list[BadgeRecord]) -> tuple[bool, list[BadgeRecord | None]]:
    """(public, badges in the group's order) as the group is now: the Badgr collection once it
    exists, else the Backpack's group. ``None`` stands for a stale id the Backpack still counted."""
    by_backpack_id = {b.backpack_badge_id: b for b in badges if b.backpack_badge_id is not None}
    collection = group.collection
    if collection is not None and collection.entity_id and collection.state == "filled":
        by_entity = {b.badgr.entity_id: b for b in badges if b.badgr and b.badgr.entity_id}
        held = [by_entity[a] for a in collection.assertion_ids if a in by_entity]
        return bool(collection.published), list(held)
    return bool(group.public), [by_backpack_id.get(badge_id) for badge_id in group.badge_ids]


def groups(svc: Services, raw_user_id: str) -> Reply:
    found = _learner_of(svc, raw_user_id)
    if found is None:
        return _missing()
    user_id, learner_id = found
    badges = svc.store.list_badges(learner_id)
    listed = []
    for group in sorted(svc.store.list_groups(learner_id), key=lambda g: g.group_id):
        public, members = _badges_now(group, badges)
        if public:
            listed.append({"groupId": group.group_id, "name": group.name, "badges": len(members)})
    reply = json_reply(200, {"userId": user_id, "groups": listed})
    reply.outcome = "okay"
    return reply


def image_url(base_url: str, badge: BadgeRecord) -> str | None:
    extension = _EXTENSIONS.get(badge.media_type or "")
    if not badge.body_hash or extension is None:
        return None
    return f"{base_url.rstrip('/')}/images/badge/{badge.body_hash}.{extension}"


def group(svc: Services, raw_user_id: str, raw_group_id: str, base_url: str) -> Reply:
    found = _learner_of(svc, raw_user_id)
    group_id = _int_id(raw_group_id)
    if found is None or group_id is None:
        return _missing()
    user_id, learner_id = found
    chosen = next((g for g in svc.store.list_groups(learner_id) if g.group_id == group_id), None)
    if chosen is None:
        return _missing()
    public, members = _badges_now(chosen, svc.store.list_badges(learner_id))
    if not public:
        return _missing()
    held = sorted((b for b in members if b is not None), key=lambda b: b.backpack_badge_id or 0)
    reply = json_reply(
        200,
        {
            "userId": user_id,
            "groupId": group_id,
            "badges": [
                {
                    "lastValidated": badge.validated_on,
                    "hostedUrl": badge.endpoint,
                    "assertion": badge.backpack_body,
                    "imageUrl": image_url(base_url, badge),
                }
                for badge in held
            ],
        },
    )
    reply.outcome = "okay"
    return reply


def _image_not_found(svc: Services) -> Reply:
    return Reply(
        404,
        message_page("Not found", "There is no badge image at this address.", svc.settings.support_email),
        content_type="text/html; charset=utf-8",
        outcome="missing",
    )


def badge_image(svc: Services, file_name: str) -> Reply:
    """The baked image the Backpack kept for a body hash, byte for byte."""
    match = _IMAGE_FILE.fullmatch(file_name)
    if match is None:
        return _image_not_found(svc)
    body_hash, extension = match.groups()
    badge = svc.store.badge_for_body_hash(body_hash)
    if (
        badge is None
        or badge.member is None
        or _EXTENSIONS.get(badge.media_type or "") != extension
        or svc.store.get_learner(badge.learner_id) is None
    ):
        return _image_not_found(svc)
    export = svc.store.get_export(badge.export_id)
    if export is None:
        return _image_not_found(svc)
    try:
        data = read_member(open_export(svc, export), badge.member)
    except ExportError:
        return _image_not_found(svc)
    # An SVG is a document: served on its own it must not run script or show a working form.
    return Reply(
        200,
        data,
        content_type=badge.media_type or "application/octet-stream",
        headers={"Content-Security-Policy": IMAGE_CSP, "Cache-Control": "public, max-age=86400"},
        outcome="okay",
    )
