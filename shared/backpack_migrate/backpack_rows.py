"""Rows of the Backpack's tables turned into full-fidelity records, one at a time.

Each function takes what the database gave and returns the record with the problems it found;
nothing here reads the database or writes the ZIP.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, cast

from . import fullexport as fx
from .domain import Problem, normalize_email
from .export import sniff_media_type

EmailField = Literal["email", "additional_email_1", "additional_email_2"]
EMAIL_FIELDS: tuple[tuple[EmailField, str], ...] = (
    ("email", "email_is_verified"),
    ("additional_email_1", "additional_email_1_is_verified"),
    ("additional_email_2", "additional_email_2_is_verified"),
)
FIELD_WORDS = {
    "email": "primary address",
    "additional_email_1": "first additional address",
    "additional_email_2": "second additional address",
}
KEEPER_RULE = (
    "the user for whom it is the primary and verified address, then a verified one, "
    "then the primary, then the lowest user id"
)
_DATA_URL = re.compile(rb"^data:[^,]{0,100};base64,", re.IGNORECASE)
_WHITESPACE = re.compile(rb"\s+")


@dataclass
class Decision:
    """A shared address this user does not keep."""

    kept_by: int
    kept_as: EmailField


# --------------------------------------------------------------------------------------------
# Shared addresses


def settle_shared_addresses(
    rows: list[tuple[str, int, str, bool]],
) -> tuple[dict[tuple[int, str], Decision], list[fx.EmailConflict]]:
    """Which user keeps each address several users have, and which users lose it."""
    by_address: dict[str, list[tuple[int, str, bool]]] = {}
    for address, user_id, column, verified in rows:
        by_address.setdefault(normalize_email(address), []).append((user_id, column, verified))
    decisions: dict[tuple[int, str], Decision] = {}
    conflicts: list[fx.EmailConflict] = []
    for holders in by_address.values():
        if len({user_id for user_id, _, _ in holders}) < 2:
            continue  # only case or accent alike under the database's collation

        def rank(holder: tuple[int, str, bool]) -> tuple[bool, bool, bool, int, str]:
            user_id, column, verified = holder
            primary = column == "email"
            return (not (primary and verified), not verified, not primary, user_id, column)

        ordered = sorted(holders, key=rank)
        keeper_id, keeper_field, keeper_verified = ordered[0]
        reported = [h for h in ordered[1:] if h[0] != keeper_id]
        for user_id, column, _ in reported:
            decisions[(user_id, column)] = Decision(kept_by=keeper_id, kept_as=cast(EmailField, keeper_field))
        conflicts.append(
            fx.EmailConflict(
                kept_by=fx.EmailHolder(
                    user_id=keeper_id, field=cast(EmailField, keeper_field), verified=keeper_verified
                ),
                reported=[
                    fx.EmailHolder(user_id=u, field=cast(EmailField, c), verified=v) for u, c, v in reported
                ],
                rule=KEEPER_RULE,
            )
        )
    return decisions, conflicts


# --------------------------------------------------------------------------------------------
# Rows to records


def text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def user_record(row: dict[str, Any], decisions: dict[tuple[int, str], Decision]) -> fx.ExportedUser:
    user_id = int(row["id"])
    emails: list[fx.ExportedEmail] = []
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for column, flag in EMAIL_FIELDS:
        address = (text(row[column]) or "").strip()
        if not address:
            continue
        verified = bool(row[flag])
        decision = decisions.get((user_id, column))
        if decision is not None:
            problems.append(
                Problem(
                    code="EMAIL_KEPT_BY_OTHER_USER",
                    message=f"Its {FIELD_WORDS[column]} is also the {FIELD_WORDS[decision.kept_as]} of "
                    f"Backpack user {decision.kept_by}, who keeps it; it was left off this user.",
                )
            )
            continue
        key = normalize_email(address)
        if key in seen:
            earlier = emails[seen[key]]
            # The Backpack trusted the address if any of its copies was verified.
            earlier.verified = earlier.verified or verified
            problems.append(
                Problem(
                    code="EMAIL_REPEATED",
                    message=f"Its {FIELD_WORDS[column]} repeats an earlier address of the same user; "
                    "it was kept once.",
                )
            )
            continue
        seen[key] = len(emails)
        emails.append(fx.ExportedEmail(address=address, verified=verified, primary=column == "email"))
    if not emails:
        problems.append(
            Problem(code="USER_WITHOUT_ADDRESS", message="This user has no address left to write to.")
        )
    return fx.ExportedUser(
        id=user_id,
        first_name=text(row["first_name"]),
        last_name=text(row["last_name"]),
        emails=emails,
        created_at=None if row["created_at"] is None else int(row["created_at"]),
        updated_at=None if row["updated_at"] is None else int(row["updated_at"]),
        problems=problems,
    )


def iso_time(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")
    return str(value)


def parse_body(raw: Any) -> tuple[dict[str, Any] | None, Problem | None]:
    """The stored assertion as a JSON object, or why it is not one."""
    data = bytes(raw) if isinstance(raw, bytes | bytearray) else str(raw or "").encode()
    try:
        body = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None, Problem(
            code="BODY_NOT_JSON", message="The stored assertion is not JSON; it was left out of this badge."
        )
    if not isinstance(body, dict):
        return None, Problem(
            code="BODY_NOT_JSON",
            message=f"The stored assertion is JSON but not an object (a {type(body).__name__}); "
            "it was left out of this badge.",
        )
    return body, None


def decode_image(raw: Any) -> tuple[bytes, str] | Problem:
    """A badge's baked image from its base64 text, with its media type, or why not."""
    if raw is None or not bytes(raw).strip():
        return Problem(code="IMAGE_MISSING", message="The Backpack holds no image for this badge.")
    text = _WHITESPACE.sub(b"", bytes(raw))
    text = _DATA_URL.sub(b"", text, count=1)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return Problem(
            code="IMAGE_UNDECODABLE", message="The Backpack's image for this badge is not valid base64 text."
        )
    media_type = sniff_media_type(data)
    if media_type is None:
        return Problem(
            code="IMAGE_NOT_AN_IMAGE",
            message="The Backpack's image for this badge is neither a PNG nor an SVG.",
        )
    return data, media_type


def group_badge_ids(raw: Any) -> tuple[list[int], list[Problem]]:
    try:
        value = json.loads(bytes(raw).decode("utf-8") if isinstance(raw, bytes | bytearray) else str(raw))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return [], [
            Problem(
                code="GROUP_BADGES_NOT_JSON", message="The group's badge list is not JSON; it is empty here."
            )
        ]
    if not isinstance(value, list):
        return [], [
            Problem(
                code="GROUP_BADGES_NOT_JSON",
                message="The group's badge list is not a JSON list; it is empty here.",
            )
        ]
    ids: list[int] = []
    dropped = 0
    for item in value:
        if isinstance(item, int) and not isinstance(item, bool):
            ids.append(item)
        elif isinstance(item, str) and item.strip().isdigit():
            ids.append(int(item))
        else:
            dropped += 1
    problems = []
    if dropped:
        problems.append(
            Problem(
                code="GROUP_BADGE_ID_INVALID",
                message=f"{dropped} entries of the group's badge list are not badge ids; they were left out.",
            )
        )
    return ids, problems


def parse_stories(raw: Any) -> tuple[dict[str, str], Problem | None]:
    if raw is None or not bytes(raw).strip():
        return {}, None
    try:
        value = json.loads(bytes(raw).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        value = None
    if not isinstance(value, dict):
        return {}, Problem(
            code="STORIES_NOT_JSON",
            message="The portfolio's stories are not a JSON object; they were left out.",
        )
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}, None


def token_digest(token: Any) -> str:
    return hashlib.sha256((text(token) or "").encode("utf-8")).hexdigest()
