"""Reading a full-fidelity export (written by ``export-db`` from the Backpack's own database).

The ZIP holds JSON Lines members (``users``, ``badges``, ``groups``, ``grants``) and every
badge's baked image under ``images/``; ``fullexport`` defines the format. Here a learner is a
Backpack user: one learner id (of the contact address), every address sealed on record, every
badge, group and Connect grant of the user, and the Backpack's ids kept beside ours.

``read_full_export`` streams the members by byte range (never the whole archive), joins them by
user through a scratch SQLite database in temporary storage (memory stays flat whatever the
size), and hands learners out in chunk jobs on the chunk queue. ``process_full_chunk`` records
them: each badge's image is read back by byte range and unbaked, as for the 2019 ZIP, so
everything after intake is the same for both formats.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import struct
import tempfile
import zlib
from collections.abc import Callable, Iterator
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field, ValidationError

from . import fullexport
from .crypto import badge_id_for
from .domain import (
    BadgeRecord,
    BadgeState,
    ExportRecord,
    ExportStatus,
    GrantRecord,
    GroupRecord,
    LearnerRecord,
    MemberLocation,
    Problem,
    normalize_email,
    now_iso,
)
from .export import BLOCK_SIZE, ExportError, MemberError, MemberIndex, open_export, read_member
from .models import Model
from .observability import logger, metrics
from .services import Services

FORMAT_MEMBER = fullexport.FORMAT_MEMBER
REPORT_MEMBER = fullexport.REPORT_MEMBER
MEMBERS = {
    "users": fullexport.USERS_MEMBER,
    "badges": fullexport.BADGES_MEMBER,
    "groups": fullexport.GROUPS_MEMBER,
    "grants": fullexport.GRANTS_MEMBER,
}
# A chunk message stays far below SQS's 256 KiB, bodies included; a user with many badges spans chunks.
MAX_CHUNK_BYTES = 180_000
MAX_LINE_BYTES = 1_000_000  # one JSON line; a longer one is refused on its own
RESERVE_MS = 60_000
FILES_PER_WRITE = 25

_LOCAL = struct.Struct("<4s5H3L2H")
M = TypeVar("M", bound=BaseModel)

MESSAGES = {
    "MEMBER_MISSING": "The full-fidelity export lacks one of its members.",
    "RECORD_INVALID": "A line of the export is not a valid record; it was left out.",
    "DUPLICATE_USER": "Two Backpack users share this contact address; the second was left out.",
    "FOREIGN_BADGE_IN_GROUP": "This group listed badges of another Backpack user; they were left out of it.",
    "STALE_BADGE_IN_GROUP": "This group lists badges the Backpack no longer held; they were left out of it.",
    "BODY_NOT_JSON": "The Backpack stored this badge's assertion as something that is not JSON.",
    "IMAGE_MISSING": "The Backpack held no image for this badge.",
    "ADDRESS_TAKEN": "An address of this learner belongs to another learner on record; it is not trusted.",
    "NO_CONTACT_ADDRESS": "This Backpack user has no address to write to.",
}


def problem(code: str, detail: str | None = None) -> Problem:
    text = MESSAGES.get(code, code)
    return Problem(code=code, message=f"{text} ({detail})" if detail else text)


# -- telling the formats apart -----------------------------------------------------------------
def format_of(reader: Any, index: MemberIndex) -> fullexport.ExportFormat | None:
    """The export's ``format.json`` when it names the full-fidelity format, else None (2019 ZIP)."""
    location = index.get(FORMAT_MEMBER)
    if location is None:
        return None
    try:
        raw = read_member(reader, location, max_size=1_000_000)
    except MemberError:
        return None
    try:
        return fullexport.parse_format(raw)
    except fullexport.FullExportError as error:
        raise ExportError(error.problem.code, error.problem.message) from None


# -- streaming JSON Lines out of a member --------------------------------------------------------
def iter_member_lines(reader: Any, loc: MemberLocation, block_size: int = BLOCK_SIZE) -> Iterator[bytes]:
    """Each line of a member, inflated as it is read by range, CRC-checked at the end."""
    if loc.method not in (0, 8):
        raise ExportError("UNSUPPORTED_COMPRESSION", f"{loc.name} is compressed in a way we cannot read.")
    header = reader.read(loc.header_offset, _LOCAL.size)
    if len(header) != _LOCAL.size or header[:4] != b"PK\x03\x04":
        raise ExportError("CORRUPT_FILE", f"{loc.name} has no local header.")
    name_length, extra_length = _LOCAL.unpack(header)[9:11]
    pos = loc.header_offset + _LOCAL.size + name_length + extra_length
    end = pos + loc.compressed_size
    inflater = zlib.decompressobj(-15) if loc.method == 8 else None
    crc, produced, buffer = 0, 0, b""
    while pos < end:
        feed = reader.read(pos, min(block_size, end - pos))
        if not feed:
            raise ExportError("TRUNCATED_ZIP")
        pos += len(feed)
        try:
            data = inflater.decompress(feed) if inflater is not None else feed
        except zlib.error:
            raise ExportError("CORRUPT_FILE", f"{loc.name} is damaged inside the ZIP archive.") from None
        produced += len(data)
        crc = zlib.crc32(data, crc)
        buffer += data
        *lines, buffer = buffer.split(b"\n")
        yield from (line for line in lines if line.strip())
        if len(buffer) > MAX_LINE_BYTES:
            raise ExportError("CORRUPT_FILE", f"{loc.name} holds a line longer than {MAX_LINE_BYTES} bytes.")
    if inflater is not None:
        tail = inflater.flush()
        produced += len(tail)
        crc = zlib.crc32(tail, crc)
        buffer += tail
    if produced != loc.size or crc != loc.crc:
        raise ExportError("CORRUPT_FILE", f"{loc.name} is damaged inside the ZIP archive.")
    if buffer.strip():
        yield buffer


# -- chunk jobs --------------------------------------------------------------------------------
class FullChunkBadge(Model):
    backpack_badge_id: int
    file_name: str
    member: MemberLocation | None = None
    media_type: str | None = None
    body_hash: str | None = None
    endpoint: str | None = None
    validated_on: str | None = None
    body: dict[str, Any] | None = None
    problem: Problem | None = None


class FullChunkLearner(Model):
    learner_id: str
    email_ciphertext: str
    addresses_ciphertext: str | None = None
    address_ids: list[str] = Field(default_factory=list)  # trusted for look-ups (convert/email)
    backpack_user_id: int
    problems: list[Problem] = Field(default_factory=list)
    badges: list[FullChunkBadge] = Field(default_factory=list)
    groups: list[GroupRecord] = Field(default_factory=list)
    grants: list[GrantRecord] = Field(default_factory=list)
    last: bool = True  # the last part of this user (follow-up jobs go out with it)


class FullChunkJob(Model):
    kind: Literal["full"] = "full"
    export_id: str
    chunk: int
    learners: list[FullChunkLearner]
    stalls: int = 0  # as a ZIP chunk's: jobs in a row AWS refused before their first learner


class FullStats(Model):
    users: int = 0
    learners: int = 0
    badges: int = 0
    groups: int = 0
    grants: int = 0
    problems: dict[str, int] = Field(default_factory=dict)
    examples: dict[str, list[str]] = Field(default_factory=dict)

    def add(self, code: str, example: str | None = None) -> None:
        self.problems[code] = self.problems.get(code, 0) + 1
        if example is not None and len(self.examples.setdefault(code, [])) < 10:
            self.examples[code].append(example)


class _Spill:
    """Badges, groups and grants by user, in a private scratch database (flat memory)."""

    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="fullintake-")
        os.chmod(self.directory, 0o700)
        self.db = sqlite3.connect(os.path.join(self.directory, "spill.db"))
        self.db.executescript(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;"
            "CREATE TABLE rows (kind TEXT, user_id INTEGER, row_id INTEGER, line BLOB);"
        )
        self._pending: list[tuple[str, int, int, bytes]] = []

    def add(self, kind: str, user_id: int, row_id: int, line: bytes) -> None:
        self._pending.append((kind, user_id, row_id, line))
        if len(self._pending) >= 5000:
            self.flush()

    def flush(self) -> None:
        self.db.executemany("INSERT INTO rows VALUES (?, ?, ?, ?)", self._pending)
        self._pending.clear()

    def index(self) -> None:
        self.flush()
        self.db.execute("CREATE INDEX by_user ON rows (user_id, kind, row_id)")
        self.db.execute("CREATE INDEX by_badge ON rows (kind, row_id)")

    def rows(self, kind: str, user_id: int) -> Iterator[bytes]:
        cursor = self.db.execute(
            "SELECT line FROM rows WHERE user_id = ? AND kind = ? ORDER BY row_id", (user_id, kind)
        )
        for (line,) in cursor:
            yield line

    def owner_of_badge(self, badge_id: int) -> int | None:
        found = self.db.execute(
            "SELECT user_id FROM rows WHERE kind = 'badge' AND row_id = ?", (badge_id,)
        ).fetchone()
        return int(found[0]) if found else None

    def close(self) -> None:
        self.db.close()
        shutil.rmtree(self.directory, ignore_errors=True)


def _records(reader: Any, location: MemberLocation, model: type[M], stats: FullStats) -> Iterator[M]:
    """A member's records one at a time; a line that is not a valid record is counted and skipped."""

    def refused(number: int, found: Problem) -> None:
        stats.add(found.code, f"{location.name} line {number}")

    yield from fullexport.iter_jsonl(
        iter_member_lines(reader, location), model, member=location.name, on_error=refused
    )


def contact_address(user: fullexport.ExportedUser) -> str | None:
    """The primary address, or the first verified one when the primary is not verified."""
    emails = list(user.emails)
    primary = next((e for e in emails if e.primary), emails[0] if emails else None)
    if primary is not None and primary.verified:
        return primary.address
    chosen = next((e for e in emails if e.verified), None) or primary
    return chosen.address if chosen is not None else None


def read_if_full(svc: Services, export: ExportRecord, reader: Any) -> ExportRecord | None:
    """Read the export if it is a full-fidelity one; None when it is not (the caller goes on)."""
    from .export import member_index

    with member_index(reader) as index:
        if format_of(reader, index) is None:
            return None
        return read_full_export(svc, export, reader, index)


def read_full_export(svc: Services, export: ExportRecord, reader: Any, index: MemberIndex) -> ExportRecord:
    """Record a full-fidelity export's learners in chunk jobs; returns the export as read."""
    locations = {}
    for kind, name in MEMBERS.items():
        location = index.get(name)
        if location is None and kind != "grants":
            raise ExportError("MEMBER_MISSING", f"{MESSAGES['MEMBER_MISSING']} ({name})")
        locations[kind] = location
    stats = FullStats()
    spill = _Spill()
    try:
        spilled: tuple[
            tuple[str, type[fullexport.ExportedBadge | fullexport.ExportedGroup | fullexport.ExportedGrant]],
            ...,
        ] = (
            ("badge", fullexport.ExportedBadge),
            ("group", fullexport.ExportedGroup),
            ("grant", fullexport.ExportedGrant),
        )
        for kind, model in spilled:
            location = locations[kind + "s"]
            if location is None:
                continue
            for row in _records(reader, location, model, stats):
                spill.add(kind, row.user_id, row.id, row.model_dump_json().encode())
        spill.index()
        users = locations["users"]
        assert users is not None  # checked above
        chunks = _queue_learners(svc, export, reader, index, spill, users, stats)
    finally:
        spill.close()
    problems = [*_report_problems(reader, index), *_stats_problems(stats)]
    export = export.model_copy(
        update={
            "status": ExportStatus.CHUNKED,
            "learner_count": stats.learners,
            "badge_count": stats.badges,
            "chunk_count": chunks,
            "problems": problems,
        }
    )
    svc.store.save_export(export)
    metrics.add_metric(name="ExportsRead", unit="Count", value=1)
    metrics.add_metric(name="LearnersFound", unit="Count", value=stats.learners)
    metrics.add_metric(name="BadgesFound", unit="Count", value=stats.badges)
    logger.info(
        "full-fidelity export read",
        extra={"learners": stats.learners, "badges": stats.badges, "groups": stats.groups, "chunks": chunks},
    )
    return export


def _stats_problems(stats: FullStats) -> list[Problem]:
    found = []
    for code, count in sorted(stats.problems.items()):
        examples = stats.examples.get(code)
        detail = f"{count}x" + (f", for example {', '.join(examples[:5])}" if examples else "")
        found.append(problem(code, detail))
    return found


def _report_problems(reader: Any, index: MemberIndex) -> list[Problem]:
    """What ``export-db`` left out or repaired, carried onto the export's report."""
    location = index.get(REPORT_MEMBER)
    if location is None:
        return []
    try:
        report = fullexport.ExportReport.model_validate_json(read_member(reader, location))
    except (MemberError, ValidationError):
        return [
            Problem(code="EXPORT_REPORT_UNREADABLE", message="The export's own report could not be read.")
        ]
    found = []
    if report.inactive_users:
        found.append(
            Problem(
                code="INACTIVE_USERS",
                message=f"{report.inactive_users} inactive Backpack users were left out of the export.",
            )
        )
    by_code: dict[str, list[str]] = {}
    for row in report.left_out:
        by_code.setdefault(row.problem.code, []).append(
            f"{row.table} {row.id}" if row.id is not None else row.table
        )
    for code, rows in sorted(by_code.items()):
        first = next(r.problem.message for r in report.left_out if r.problem.code == code)
        found.append(
            Problem(
                code=code, message=f"{len(rows)} rows left out by the export ({', '.join(rows[:5])}): {first}"
            )
        )
    if report.email_conflicts:
        examples = "; ".join(
            f"user {c.kept_by.user_id} kept it, reported: {', '.join(str(r.user_id) for r in c.reported)}"
            for c in report.email_conflicts[:5]
        )
        found.append(
            Problem(
                code="EMAIL_CONFLICT",
                message=f"{len(report.email_conflicts)} addresses were held by several Backpack users "
                f"({examples}).",
            )
        )
    for code, count in sorted(report.problems.items()):
        found.append(Problem(code=code, message=f"{count} records of the export carry the problem {code}."))
    return found


def _queue_learners(
    svc: Services,
    export: ExportRecord,
    reader: Any,
    index: MemberIndex,
    spill: _Spill,
    users: MemberLocation,
    stats: FullStats,
) -> int:
    chunk_no = 0
    pending: list[FullChunkLearner] = []
    pending_bytes = 0
    jobs: list[dict[str, Any]] = []
    seen: set[str] = set()

    def flush(final: bool = False) -> None:
        nonlocal chunk_no, pending, pending_bytes
        if pending:
            jobs.append(
                FullChunkJob(export_id=export.export_id, chunk=chunk_no, learners=pending).model_dump(
                    mode="json"
                )
            )
            chunk_no += 1
            pending, pending_bytes = [], 0
        if jobs and (final or len(jobs) >= 10):
            svc.queue.send(svc.settings.chunk_queue_url, jobs)
            jobs.clear()

    for user in _records(reader, users, fullexport.ExportedUser, stats):
        stats.users += 1
        for part, size in _learner_parts(svc, export, index, spill, user, stats, seen):
            if pending and (
                len(pending) >= svc.settings.learners_per_chunk or pending_bytes + size > MAX_CHUNK_BYTES
            ):
                flush()
            pending.append(part)
            pending_bytes += size
    flush(final=True)
    return chunk_no


def _learner_parts(
    svc: Services,
    export: ExportRecord,
    index: MemberIndex,
    spill: _Spill,
    user: fullexport.ExportedUser,
    stats: FullStats,
    seen: set[str],
) -> Iterator[tuple[FullChunkLearner, int]]:
    """The user as chunk-job parts, each with its approximate size in a message."""
    contact = contact_address(user)
    if contact is None:
        stats.add("NO_CONTACT_ADDRESS", f"user {user.id}")
        return
    learner_id = svc.learner_id(contact)
    if learner_id in seen:
        # export-db reports duplicates across users; a second one reaching us is still left out.
        stats.add("DUPLICATE_USER", f"user {user.id}")
        return
    seen.add(learner_id)
    stats.learners += 1
    addresses = [
        {"address": normalize_email(e.address), "verified": e.verified, "primary": e.primary}
        for e in user.emails
    ]
    seal = {
        "learner_id": learner_id,
        "export_id": export.export_id,
        "data_key_ciphertext": export.data_key_ciphertext,
    }
    trusted = {
        svc.learner_id(e.address)
        for e in user.emails
        if e.verified or e.primary or normalize_email(e.address) == normalize_email(contact)
    }
    base = FullChunkLearner(
        learner_id=learner_id,
        email_ciphertext=svc.emails.encrypt(contact, **seal),
        addresses_ciphertext=svc.emails.encrypt_text(json.dumps(addresses), **seal),
        address_ids=sorted(trusted),
        backpack_user_id=user.id,
        problems=list(user.problems),
    )
    own_ids: set[int] = set()
    badges: list[tuple[FullChunkBadge, int]] = []  # with the size of its line: a chunk's budget
    for line in spill.rows("badge", user.id):
        row = fullexport.ExportedBadge.model_validate_json(line)
        own_ids.add(row.id)
        badges.append((_chunk_badge(row, index, len(line)), len(line) + 200))
    stats.badges += len(badges)
    groups = [
        _group_record(
            learner_id,
            export.export_id,
            fullexport.ExportedGroup.model_validate_json(line),
            own_ids,
            spill,
            stats,
        )
        for line in spill.rows("group", user.id)
    ]
    stats.groups += len(groups)
    grants = [
        GrantRecord(
            grant_id=str(grant.id),
            learner_id=learner_id,
            export_id=export.export_id,
            origin=grant.origin,
            permissions=list(grant.permissions),
            access_token_sha256=grant.access_token_sha256,
            refresh_token_sha256=grant.refresh_token_sha256,
            # As the export has it (the Backpack kept seconds); Connect reads it either way.
            access_time_ms=grant.access_time,
        )
        for grant in (
            fullexport.ExportedGrant.model_validate_json(line) for line in spill.rows("grant", user.id)
        )
    ]
    stats.grants += len(grants)
    base_size = len(base.model_dump_json())
    size = base_size + sum(len(g.model_dump_json()) for g in groups) + 300 * len(grants)
    first = True
    part: list[FullChunkBadge] = []
    for badge, badge_size in badges:
        if part and size + badge_size > MAX_CHUNK_BYTES:
            yield _part(base, part, groups if first else [], grants if first else [], last=False), size
            first, part, size = False, [], base_size
        part.append(badge)
        size += badge_size
    yield _part(base, part, groups if first else [], grants if first else [], last=True), size


def _part(
    base: FullChunkLearner,
    badges: list[FullChunkBadge],
    groups: list[GroupRecord],
    grants: list[GrantRecord],
    *,
    last: bool,
) -> FullChunkLearner:
    return base.model_copy(update={"badges": badges, "groups": groups, "grants": grants, "last": last})


def _chunk_badge(row: fullexport.ExportedBadge, index: MemberIndex, line_size: int) -> FullChunkBadge:
    member = index.get(row.image) if row.image else None
    found = None
    if row.body is None:
        # The Backpack's own record of the badge is unusable: it is not moved on a guess.
        reasons = [p for p in row.problems if p.code.startswith("BODY")]
        found = reasons[0] if reasons else problem("BODY_NOT_JSON")
    elif row.image is None or member is None:
        reasons = [p for p in row.problems if p.code.startswith("IMAGE")]
        found = reasons[0] if reasons else problem("IMAGE_MISSING", row.image)
    return FullChunkBadge(
        backpack_badge_id=row.id,
        file_name=row.image or f"badge-{row.id}",
        member=member,
        media_type=row.media_type,
        body_hash=row.body_hash,
        endpoint=row.endpoint,
        validated_on=row.validated_on,
        # A body too large for a chunk message stays out of it: the image is what is verified and moved.
        body=row.body if line_size <= MAX_CHUNK_BYTES // 2 else None,
        problem=found,
    )


def _group_record(
    learner_id: str,
    export_id: str,
    group: fullexport.ExportedGroup,
    own_ids: set[int],
    spill: _Spill,
    stats: FullStats,
) -> GroupRecord:
    problems = list(group.problems)
    foreign = [i for i in group.badges if i not in own_ids and spill.owner_of_badge(i) is not None]
    stale = [i for i in group.badges if i not in own_ids and i not in foreign]
    if foreign:
        stats.add("FOREIGN_BADGE_IN_GROUP", f"group {group.id}")
        problems.append(problem("FOREIGN_BADGE_IN_GROUP", f"badge ids {', '.join(map(str, foreign))}"))
    if stale:
        problems.append(problem("STALE_BADGE_IN_GROUP", f"badge ids {', '.join(map(str, stale))}"))
    portfolio = group.portfolio
    return GroupRecord(
        learner_id=learner_id,
        export_id=export_id,
        group_id=group.id,
        name=group.name,
        url=group.url,
        public=group.public,
        badge_ids=[i for i in group.badges if i not in foreign],  # stale ids kept, as stored
        portfolio_title=portfolio.title if portfolio else None,
        portfolio_subtitle=portfolio.subtitle if portfolio else None,
        portfolio_preamble=portfolio.preamble if portfolio else None,
        stories=dict(portfolio.stories) if portfolio and portfolio.stories else {},
        problems=problems,
        updated_at=now_iso(),
    )


# -- recording a chunk -------------------------------------------------------------------------
def process_full_chunk(
    svc: Services, job: FullChunkJob, remaining_ms: Callable[[], int]
) -> FullChunkJob | None:
    """Record a chunk's learners, badges, groups and grants; returns what is left when time runs short."""
    from .intake import continue_after_refusal

    export = svc.store.get_export(job.export_id)
    if export is None:
        raise LookupError(f"chunk for unknown export {job.export_id}")
    reader = open_export(svc, export)
    follow_ups: list[dict[str, Any]] = []
    notices: list[dict[str, Any]] = []
    left: FullChunkJob | None = None
    for position, learner in enumerate(job.learners):
        if remaining_ms() < RESERVE_MS:
            left = job.model_copy(update={"learners": job.learners[position:]})
            break
        try:
            done = _record_learner(svc, reader, job.export_id, learner, remaining_ms)
        except Exception as error:
            left = continue_after_refusal(job, position, error)
            break
        if done < len(learner.badges):
            rest = learner.model_copy(update={"badges": learner.badges[done:], "groups": [], "grants": []})
            left = job.model_copy(update={"learners": [rest, *job.learners[position + 1 :]]})
            break
        if learner.last:
            follow_ups.append({"learner_id": learner.learner_id})
            notices.append({"kind": "invite", "learner_id": learner.learner_id, "export_id": job.export_id})
    svc.queue.send(svc.settings.verify_queue_url, follow_ups)
    svc.queue.send(svc.settings.notify_queue_url, notices)
    if left is not None:
        svc.queue.send(svc.settings.chunk_queue_url, [left.model_dump(mode="json")])
    return left


def _record_learner(
    svc: Services, reader: Any, export_id: str, learner: FullChunkLearner, remaining_ms: Callable[[], int]
) -> int:
    problems = list(learner.problems)
    taken = svc.store.put_learner_index(learner.learner_id, learner.backpack_user_id, learner.address_ids)
    if taken:
        problems.append(problem("ADDRESS_TAKEN", f"{len(taken)} address(es)"))
    svc.store.put_learner_if_absent(
        LearnerRecord(
            learner_id=learner.learner_id,
            export_id=export_id,
            email_ciphertext=learner.email_ciphertext,
            addresses_ciphertext=learner.addresses_ciphertext,
            backpack_user_id=learner.backpack_user_id,
            problems=problems,
        )
    )
    if learner.groups:
        svc.store.put_groups_if_absent(learner.groups)
    if learner.grants:
        svc.store.put_grants_if_absent(learner.grants)
    known = (
        {badge.badge_id for badge in svc.store.list_badges(learner.learner_id)} if learner.badges else set()
    )
    for start in range(0, len(learner.badges), FILES_PER_WRITE):
        if start and remaining_ms() < RESERVE_MS:
            return start
        fresh = [
            _extract(reader, export_id, learner.learner_id, badge)
            for badge in learner.badges[start : start + FILES_PER_WRITE]
            if full_badge_id(learner.learner_id, badge.backpack_badge_id) not in known
        ]
        svc.store.put_badges_if_absent(fresh)
        svc.store.put_body_hash_index(fresh)
        for badge in fresh:
            metrics.add_metric(name=f"Badges_{badge.state.value}", unit="Count", value=1)
    return len(learner.badges)


def full_badge_id(learner_id: str, backpack_badge_id: int) -> str:
    return badge_id_for(learner_id, "backpack", f"backpack-badge/{backpack_badge_id}")


def _extract(reader: Any, export_id: str, learner_id: str, badge: FullChunkBadge) -> BadgeRecord:
    from .intake import read_badge_image

    base = BadgeRecord(
        learner_id=learner_id,
        badge_id=full_badge_id(learner_id, badge.backpack_badge_id),
        export_id=export_id,
        file_name=badge.file_name,
        media_type=badge.media_type,
        member=badge.member,
        state=BadgeState.UNREADABLE,
        updated_at=now_iso(),
        backpack_badge_id=badge.backpack_badge_id,
        body_hash=badge.body_hash,
        endpoint=badge.endpoint,
        validated_on=badge.validated_on,
        backpack_body=badge.body,
    )
    if badge.problem is not None or badge.member is None:
        return base.model_copy(update={"problem": badge.problem or problem("IMAGE_MISSING")})
    return read_badge_image(reader, badge.member, base)
