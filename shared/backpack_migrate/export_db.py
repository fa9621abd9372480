"""``export-db``: the Backpack's database written out as one full-fidelity export ZIP.

Each table is streamed once, each row turned into its record of :mod:`.fullexport` (by
:mod:`.backpack_rows`) and written at once, so memory stays flat whatever the database's size.
Every row ends in exactly one place: in the export (perhaps with problems of its own), or
counted on the export's report with the reason it was left out. Addresses shared by several
users are settled before the users are read: one user keeps each address, the others are
reported.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

from pydantic import BaseModel

from . import fullexport as fx
from .backpack_db import BackpackDatabase, DatabaseError, DatabaseTarget
from .backpack_rows import (
    Decision,
    decode_image,
    group_badge_ids,
    iso_time,
    parse_body,
    parse_stories,
    settle_shared_addresses,
    text,
    token_digest,
    user_record,
)
from .domain import Problem, now_iso
from .models import Model
from .zipwriter import StreamingZipWriter

GROUP_BATCH = 500

Progress = Callable[[str, int], None]  # (table, rows just done)


class ExportSummary(Model):
    """What ``export-db`` tells the operator at the end (no personal data)."""

    out: str
    counts: dict[str, int]
    inactive_users: int
    left_out: dict[str, int]
    email_conflicts: int
    problems: dict[str, int]


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

    def _users(self, writer: _Writer, decisions: dict[tuple[int, str], Decision]) -> None:
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
        body_hash = text(row["body_hash"]) or ""
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
            awarded_to=text(row["awarded_to_email_address"]),
            endpoint=text(row["endpoint"]),
            signature=text(row["signature"]),
            body=body,
            body_hash=body_hash,
            image=member,
            media_type=cast(Any, media_type),
            validated_on=iso_time(row["validated_on"]),
            public_path=text(row["public_path"]),
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
                ids, problems = group_badge_ids(row["badges"])
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
                stories, problem = parse_stories(row["stories"])
                if problem:
                    problems.append(problem)
                portfolio = fx.ExportedPortfolio(
                    id=int(row["portfolio_id"]),
                    url=text(row["portfolio_url"]),
                    title=text(row["title"]),
                    subtitle=text(row["subtitle"]),
                    preamble=text(row["preamble"]),
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
                name=text(row["name"]),
                url=text(row["url"]),
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
                permissions = [p.strip() for p in (text(row["permissions"]) or "").split(",") if p.strip()]
                record = fx.ExportedGrant(
                    id=int(row["id"]),
                    user_id=int(row["user_id"]),
                    origin=text(row["origin"]) or "",
                    permissions=permissions,
                    access_time=int(row["access_time"]),
                    access_token_sha256=token_digest(row["access_token"]),
                    refresh_token_sha256=token_digest(row["refresh_token"]),
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


__all__ = ["DatabaseError", "ExportSummary", "export_database"]
