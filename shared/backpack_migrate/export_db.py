"""``export-db``: the Backpack's database written out as one full-fidelity export ZIP.

Each table is streamed once, each row turned into its record of :mod:`.fullexport` and
written at once, so memory stays flat whatever the database's size. Every row ends in exactly
one place: in the export (perhaps with problems of its own), or counted on the export's report
with the reason it was left out. Addresses shared by several users are settled before the
users are read: one user keeps each address, the others are reported.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal, cast

from pydantic import BaseModel

from . import fullexport as fx
from .backpack_db import BackpackDatabase, DatabaseError, DatabaseTarget
from .domain import Problem, normalize_email, now_iso
from .export import sniff_media_type
from .zipwriter import StreamingZipWriter

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
GROUP_BATCH = 500
_DATA_URL = re.compile(rb"^data:[^,]{0,100};base64,", re.IGNORECASE)
_WHITESPACE = re.compile(rb"\s+")

Progress = Callable[[str, int], None]  # (table, rows just done)


class ExportSummary(BaseModel):
    """What ``export-db`` tells the operator at the end (no personal data)."""

    out: str
    counts: dict[str, int]
    inactive_users: int
    left_out: dict[str, int]
    email_conflicts: int
    problems: dict[str, int]


@dataclass
class _Decision:
    """A shared address this user does not keep."""

    kept_by: int
    kept_as: EmailField


@dataclass
class _Tally:
    report: fx.ExportReport = field(default_factory=fx.ExportReport)
    problems: Counter[str] = field(default_factory=Counter)

    def table(self, name: str) -> fx.TableCount:
        return self.report.tables.setdefault(name, fx.TableCount())

    def left_out(self, table: str, code: str, row_id: int | None = None, message: str | None = None) -> None:
        counts = self.table(table).left_out
        counts[code] = counts.get(code, 0) + 1
        if message is not None:
            self.report.left_out.append(
                fx.LeftOutRow(table=table, id=row_id, problem=Problem(code=code, message=message))
            )

    def note(self, problems: list[Problem]) -> None:
        self.problems.update(p.code for p in problems)


# --------------------------------------------------------------------------------------------
# Shared addresses


def settle_shared_addresses(
    rows: list[tuple[str, int, str, bool]],
) -> tuple[dict[tuple[int, str], _Decision], list[fx.EmailConflict]]:
    """Which user keeps each address several users have, and which users lose it."""
    by_address: dict[str, list[tuple[int, str, bool]]] = {}
    for address, user_id, column, verified in rows:
        by_address.setdefault(normalize_email(address), []).append((user_id, column, verified))
    decisions: dict[tuple[int, str], _Decision] = {}
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
            decisions[(user_id, column)] = _Decision(
                kept_by=keeper_id, kept_as=cast(EmailField, keeper_field)
            )
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


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def user_record(row: dict[str, Any], decisions: dict[tuple[int, str], _Decision]) -> fx.ExportedUser:
    user_id = int(row["id"])
    emails: list[fx.ExportedEmail] = []
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for column, flag in EMAIL_FIELDS:
        address = (_text(row[column]) or "").strip()
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
        first_name=_text(row["first_name"]),
        last_name=_text(row["last_name"]),
        emails=emails,
        created_at=None if row["created_at"] is None else int(row["created_at"]),
        updated_at=None if row["updated_at"] is None else int(row["updated_at"]),
        problems=problems,
    )


def _iso(value: Any) -> str | None:
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
    except (UnicodeDecodeError, ValueError):
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


def _group_badge_ids(raw: Any) -> tuple[list[int], list[Problem]]:
    try:
        value = json.loads(bytes(raw).decode("utf-8") if isinstance(raw, bytes | bytearray) else str(raw))
    except (UnicodeDecodeError, ValueError):
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


def _stories(raw: Any) -> tuple[dict[str, str], Problem | None]:
    if raw is None or not bytes(raw).strip():
        return {}, None
    try:
        value = json.loads(bytes(raw).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        value = None
    if not isinstance(value, dict):
        return {}, Problem(
            code="STORIES_NOT_JSON",
            message="The portfolio's stories are not a JSON object; they were left out.",
        )
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}, None


def _digest(token: Any) -> str:
    return hashlib.sha256((_text(token) or "").encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------------------------
# Writing


class _Writer:
    """The export ZIP, member after member, with memory that does not grow with the members."""

    def __init__(self, path: Path) -> None:
        self.archive = StreamingZipWriter(path)

    def open(self, name: str) -> IO[bytes]:
        return cast(IO[bytes], self.archive.open(name))

    def image(self, name: str, data: bytes, media_type: str) -> None:
        # PNGs are compressed already; SVG text is worth deflating.
        self.archive.write(name, data, compress=media_type != "image/png")

    def json(self, name: str, record: BaseModel) -> None:
        self.archive.write(name, record.model_dump_json(indent=2).encode())

    def close(self) -> None:
        self.archive.close()

    def abort(self) -> None:
        self.archive.abort()


class DatabaseExport:
    def __init__(self, db: BackpackDatabase, progress: Progress | None = None) -> None:
        self.db = db
        self.progress = progress or (lambda _table, _n: None)
        self.tally = _Tally()
        self.counts: Counter[str] = Counter()

    def run(self, out: Path) -> ExportSummary:
        self.db.check_schema()
        decisions, conflicts = settle_shared_addresses(self.db.shared_addresses())
        self.tally.report.email_conflicts = conflicts
        partial = out.with_name(out.name + ".partial")
        writer = _Writer(partial)
        try:
            self._users(writer, decisions)
            self._badges(writer)
            self._groups(writer)
            self._grants(writer)
            self.tally.report.problems = dict(sorted(self.tally.problems.items()))
            writer.json(fx.REPORT_MEMBER, self.tally.report)
            writer.json(fx.FORMAT_MEMBER, fx.ExportFormat(created_at=now_iso(), counts=dict(self.counts)))
            writer.close()
        except BaseException:
            writer.abort()
            partial.unlink(missing_ok=True)
            raise
        os.replace(partial, out)
        report = self.tally.report
        return ExportSummary(
            out=str(out),
            counts=dict(self.counts),
            inactive_users=report.inactive_users,
            left_out=dict(
                sorted(sum((Counter(t.left_out) for t in report.tables.values()), Counter()).items())
            ),
            email_conflicts=len(conflicts),
            problems=report.problems,
        )

    def _users(self, writer: _Writer, decisions: dict[tuple[int, str], _Decision]) -> None:
        table = self.tally.table("user")
        with writer.open(fx.USERS_MEMBER) as member:
            for row in self.db.users():
                table.read += 1
                self.progress("user", 1)
                if not row["is_active"]:
                    self.tally.report.inactive_users += 1
                    self.tally.left_out("user", "USER_INACTIVE")
                    continue
                record = user_record(row, decisions)
                self.tally.note(record.problems)
                member.write(fx.to_line(record))
                table.exported += 1
        self.counts["users"] = table.exported

    def _owner_left_out(self, table: str, row: dict[str, Any], what: str) -> bool:
        """Left out because of its user: inactive (counted) or none (listed)."""
        if row["user_id"] is None or not row["user_found"]:
            said = (
                f"This {what} names no user."
                if row["user_id"] is None
                else f"This {what} names user {row['user_id']}, who is not in the Backpack's user table."
            )
            self.tally.left_out(table, "NO_SUCH_USER", int(row["id"]), said)
            return True
        if not row["is_active"]:
            self.tally.left_out(table, "USER_INACTIVE")
            return True
        return False

    def _badges(self, writer: _Writer) -> None:
        table = self.tally.table("badge")
        images = self.tally.table("badge_image")
        # Image members are written as they come, so the badge lines wait in a temporary file.
        with tempfile.TemporaryFile() as lines:
            for row in self.db.badges():
                table.read += 1
                images.read += int(row["image_rows"])
                self.progress("badge", 1)
                if self._owner_left_out("badge", row, "badge"):
                    for _ in range(int(row["image_rows"])):
                        self.tally.left_out("badge_image", "BADGE_LEFT_OUT")
                    continue
                record, image = self._badge_record(row)
                if image is not None:
                    writer.image(record.image or "", image, record.media_type or "")
                    images.exported += 1
                    self.counts["images"] += 1
                elif int(row["image_rows"]):
                    self.tally.left_out("badge_image", record.problems[-1].code)
                extra = int(row["image_rows"]) - 1
                if extra > 0:
                    record.problems.append(
                        Problem(
                            code="IMAGE_REPEATED",
                            message=f"The Backpack holds {extra + 1} images for this badge; "
                            "the first was kept.",
                        )
                    )
                    for _ in range(extra):
                        self.tally.left_out("badge_image", "IMAGE_REPEATED")
                self.tally.note(record.problems)
                lines.write(fx.to_line(record))
                table.exported += 1
            orphans = self.db.orphan_images()
            images.read += orphans
            for _ in range(orphans):
                self.tally.left_out("badge_image", "NO_SUCH_BADGE")
            lines.seek(0)
            with writer.open(fx.BADGES_MEMBER) as member:
                shutil.copyfileobj(lines, member, 1 << 20)
        self.counts["badges"] = table.exported

    def _badge_record(self, row: dict[str, Any]) -> tuple[fx.ExportedBadge, bytes | None]:
        badge_id = int(row["id"])
        body_hash = _text(row["body_hash"]) or ""
        body, body_problem = parse_body(row["body"])
        problems = [body_problem] if body_problem else []
        decoded = decode_image(row["image_data"])
        image: bytes | None = None
        member: str | None = None
        media_type: str | None = None
        if isinstance(decoded, Problem):
            problems.append(decoded)
        else:
            image, media_type = decoded
            member = fx.image_member(body_hash, badge_id, media_type)
        record = fx.ExportedBadge(
            id=badge_id,
            user_id=int(row["user_id"]),
            awarded_to=_text(row["awarded_to_email_address"]),
            endpoint=_text(row["endpoint"]),
            signature=_text(row["signature"]),
            body=body,
            body_hash=body_hash,
            image=member,
            media_type=cast(Any, media_type),
            validated_on=_iso(row["validated_on"]),
            public_path=_text(row["public_path"]),
            public=bool(row["public"]),
            problems=problems,
        )
        return record, image

    def _groups(self, writer: _Writer) -> None:
        table = self.tally.table("group")
        portfolios = self.tally.table("portfolio")
        batch: list[tuple[dict[str, Any], list[int], list[Problem]]] = []
        with writer.open(fx.GROUPS_MEMBER) as member:
            for row in self.db.groups():
                table.read += 1
                portfolio_rows = int(row["portfolio_rows"])
                portfolios.read += portfolio_rows
                self.progress("group", 1)
                if self._owner_left_out("group", row, "group"):
                    for _ in range(portfolio_rows):
                        self.tally.left_out("portfolio", "GROUP_LEFT_OUT")
                    continue
                ids, problems = _group_badge_ids(row["badges"])
                batch.append((row, ids, problems))
                if len(batch) >= GROUP_BATCH:
                    self._write_groups(member, batch)
                    batch = []
            self._write_groups(member, batch)
        orphans = self.db.orphan_portfolios()
        portfolios.read += orphans
        for _ in range(orphans):
            self.tally.left_out("portfolio", "NO_SUCH_GROUP")
        self.counts["groups"] = table.exported

    def _write_groups(
        self, member: IO[bytes], batch: list[tuple[dict[str, Any], list[int], list[Problem]]]
    ) -> None:
        if not batch:
            return
        owners = self.db.badge_owners([i for _, ids, _ in batch for i in ids])
        table = self.tally.table("group")
        portfolios = self.tally.table("portfolio")
        for row, ids, problems in batch:
            user_id = int(row["user_id"])
            others = [i for i in ids if i in owners and owners[i] != user_id]
            if others:
                problems.append(
                    Problem(
                        code="GROUP_LISTS_OTHERS_BADGES",
                        message="The group listed badges of another user (ids "
                        + ", ".join(str(i) for i in others)
                        + "); they were removed from it.",
                    )
                )
            kept = [i for i in ids if not (i in owners and owners[i] != user_id)]
            portfolio = None
            portfolio_rows = int(row["portfolio_rows"])
            if row["portfolio_id"] is not None:
                stories, problem = _stories(row["stories"])
                if problem:
                    problems.append(problem)
                portfolio = fx.ExportedPortfolio(
                    id=int(row["portfolio_id"]),
                    url=_text(row["portfolio_url"]),
                    title=_text(row["title"]),
                    subtitle=_text(row["subtitle"]),
                    preamble=_text(row["preamble"]),
                    stories=stories,
                )
                portfolios.exported += 1
            if portfolio_rows > 1:
                problems.append(
                    Problem(
                        code="PORTFOLIO_REPEATED",
                        message=f"The group has {portfolio_rows} portfolio pages; the first was kept.",
                    )
                )
                for _ in range(portfolio_rows - 1):
                    self.tally.left_out("portfolio", "PORTFOLIO_REPEATED")
            record = fx.ExportedGroup(
                id=int(row["id"]),
                user_id=user_id,
                name=_text(row["name"]),
                url=_text(row["url"]),
                public=bool(row["public"]),
                badges=kept,
                portfolio=portfolio,
                problems=problems,
            )
            self.tally.note(problems)
            member.write(fx.to_line(record))
            table.exported += 1

    def _grants(self, writer: _Writer) -> None:
        table = self.tally.table("bpc_session")
        with writer.open(fx.GRANTS_MEMBER) as member:
            for row in self.db.grants():
                table.read += 1
                self.progress("bpc_session", 1)
                if self._owner_left_out("bpc_session", row, "Backpack Connect grant"):
                    continue
                permissions = [p.strip() for p in (_text(row["permissions"]) or "").split(",") if p.strip()]
                record = fx.ExportedGrant(
                    id=int(row["id"]),
                    user_id=int(row["user_id"]),
                    origin=_text(row["origin"]) or "",
                    permissions=permissions,
                    access_time=int(row["access_time"]),
                    access_token_sha256=_digest(row["access_token"]),
                    refresh_token_sha256=_digest(row["refresh_token"]),
                )
                member.write(fx.to_line(record))
                table.exported += 1
        self.counts["grants"] = table.exported


TABLES = ("user", "badge", "group", "bpc_session")


def export_database(
    url: str,
    out: Path,
    *,
    progress: Progress | None = None,
    on_totals: Callable[[dict[str, int]], None] | None = None,
) -> ExportSummary:
    """Write the full-fidelity export of the database at ``url`` to ``out``.

    Raises :class:`DatabaseError` (one line, no password) when the database cannot be used.
    """
    target = DatabaseTarget.from_url(url)
    with BackpackDatabase(target) as db:
        if on_totals is not None:
            db.check_schema()
            on_totals({t: db.count(t) for t in TABLES})
        return DatabaseExport(db, progress).run(out)


def iter_summary_lines(summary: ExportSummary) -> Iterator[str]:
    yield f"wrote {summary.out}"
    yield "  " + ", ".join(f"{n} {what}" for what, n in summary.counts.items())
    yield f"  inactive users left out: {summary.inactive_users}"
    for code, n in summary.left_out.items():
        yield f"  rows left out, {code}: {n}"
    yield f"  addresses held by several users: {summary.email_conflicts}"
    for code, n in summary.problems.items():
        yield f"  {code} x{n}"
    yield f"  details in {fx.REPORT_MEMBER} inside the export"


__all__ = ["DatabaseError", "ExportSummary", "export_database", "settle_shared_addresses"]
