"""From an uploaded export to learners and badges on record.

``read_export`` streams the ZIP's central directory and manifest and hands learners out in chunk
jobs; short of time, it hands the rest to an intake job (``resume_intake``) that goes on from
the manifest entry where it stopped. ``process_chunk`` extracts each learner's badges
(resumable: badges already on record are skipped) and queues verification and the learner's
email. Nothing here knows about Lambda.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar, cast

from pydantic import Field

from .crypto import badge_id_for, erasure_mark
from .domain import (
    BadgeRecord,
    BadgeState,
    ExportRecord,
    ExportStatus,
    LearnerRecord,
    MemberLocation,
    Problem,
    VerdictSummary,
    now_iso,
)
from .export import (
    FULL_FORMAT_MEMBER,
    MESSAGES,
    ExportError,
    PlanStats,
    find_manifest,
    iter_learners,
    open_export,
    read_member,
    sniff_media_type,
    starts_with_member,
)
from .models import Model
from .observability import logger, metrics
from .queues import is_transient_aws_error
from .services import Services
from .shared_files import find_shared_files

if TYPE_CHECKING:  # the full-fidelity reader loads only for such an export
    from .fullintake import FullChunkJob

# A chunk message stays far below SQS's 256 KiB; a learner with thousands of badges spans chunks.
MAX_FILES_PER_CHUNK = 400
# Stop taking learners when less than this is left of the invocation; the rest goes back on the queue.
RESERVE_MS = 60_000
# Handed-over chunk jobs in a row that made no progress before one fails as usual (SQS retries it).
MAX_STALLS = 10
# Badges are written (and the clock read) this many at a time.
FILES_PER_WRITE = 25


class ChunkFile(Model):
    name: str
    member: MemberLocation | None = None
    problem: Problem | None = None


class ChunkLearner(Model):
    learner_id: str
    email_ciphertext: str
    problems: list[Problem] = Field(default_factory=list)
    files: list[ChunkFile] = Field(default_factory=list)
    manifest_entry: int | None = None


class ChunkJob(Model):
    export_id: str
    chunk: int
    learners: list[ChunkLearner]
    # Jobs in a row that AWS refused before their first learner was done (see process_chunk).
    stalls: int = 0


class IntakeJob(Model):
    """The rest of an export's intake: the manifest entries before ``entries_done`` are in chunk
    jobs already (numbered below ``chunks_done``)."""

    export_id: str
    entries_done: int = Field(ge=0)
    chunks_done: int = Field(ge=0)


def _no_deadline() -> int:
    return 2**31


def export_id_for(bucket: str, key: str, etag: str) -> str:
    return hashlib.sha256(f"{bucket}/{key}@{etag.strip(chr(34))}".encode()).hexdigest()[:24]


def read_export(
    svc: Services,
    bucket: str,
    key: str,
    etag: str,
    size: int,
    version_id: str | None = None,
    remaining_ms: Callable[[], int] = _no_deadline,
) -> ExportRecord:
    """Record the export, read its manifest and queue its learners in chunks.

    When less than ``RESERVE_MS`` is left, the learners not yet queued go on in an intake job
    and the export stays ``reading`` until that job (or one after it) finishes.
    """
    export_id = export_id_for(bucket, key, etag)
    export = svc.store.get_export(export_id)
    if export is not None and export.status != ExportStatus.READING:
        logger.info("export already read", extra={"export_id": export_id})
        return export
    if export is None:
        export = ExportRecord(
            export_id=export_id,
            bucket=bucket,
            key=key,
            etag=etag,
            version_id=version_id,
            size=size,
            status=ExportStatus.READING,
            data_key_ciphertext=svc.emails.new_data_key(export_id),
            created_at=now_iso(),
        )
        if not svc.store.put_export_if_absent(export):
            # Another delivery of the same event got here first; share its data key.
            export = svc.store.get_export(export_id) or export
    return _intake(svc, export, IntakeJob(export_id=export_id, entries_done=0, chunks_done=0), remaining_ms)


def resume_intake(svc: Services, job: IntakeJob, remaining_ms: Callable[[], int]) -> ExportRecord:
    """Go on with an export's intake from where an earlier invocation handed over."""
    export = svc.store.get_export(job.export_id)
    if export is None:
        raise LookupError(f"intake job for unknown export {job.export_id}")
    if export.status != ExportStatus.READING:
        logger.info("export already read", extra={"export_id": job.export_id})
        return export
    return _intake(svc, export, job, remaining_ms)


def _intake(
    svc: Services, export: ExportRecord, start: IntakeJob, remaining_ms: Callable[[], int]
) -> ExportRecord:
    logger.append_keys(export_id=export.export_id)
    try:
        queued = _queue_by_format(svc, export, start, remaining_ms)
        if isinstance(queued, ExportRecord):
            return queued  # a full-fidelity export, read and recorded by fullintake
        stats, chunks, rest = queued
    except ExportError as error:
        export = export.model_copy(
            update={
                "status": ExportStatus.FAILED,
                "problems": [Problem(code=error.code, message=error.message)],
            }
        )
        svc.store.save_export(export)
        logger.warning("export unreadable", extra={"code": error.code})
        metrics.add_metric(name="ExportsFailed", unit="Count", value=1)
        return export
    if rest is not None:
        svc.queue.send(svc.settings.intake_queue_url, [rest.model_dump()])
        logger.info("intake continues in a new job", extra={"entries_done": rest.entries_done})
        return export.model_copy(update={"chunk_count": chunks})
    learners, badges = stats.distinct_learners, stats.listed_files
    export = export.model_copy(
        update={
            "status": ExportStatus.CHUNKED,
            "learner_count": learners,
            "badge_count": badges,
            "chunk_count": chunks,
            "problems": _plan_problems(stats),
        }
    )
    svc.store.save_export(export)
    metrics.add_metric(name="ExportsRead", unit="Count", value=1)
    metrics.add_metric(name="LearnersFound", unit="Count", value=learners)
    metrics.add_metric(name="BadgesFound", unit="Count", value=badges)
    logger.info("export read", extra={"learners": learners, "badges": badges, "chunks": chunks})
    return export


def _queue_by_format(
    svc: Services, export: ExportRecord, start: IntakeJob, remaining_ms: Callable[[], int]
) -> ExportRecord | tuple[PlanStats, int, IntakeJob | None]:
    """Tell the formats apart by content: a ``format.json`` naming the full-fidelity format, else
    the 2019 ZIP (its ``manifest.txt``)."""
    # Only a full-fidelity export (or a ZIP with no manifest) loads that format's reader and
    # record models; a 2019 export never does.
    if start.entries_done == 0 and start.chunks_done == 0:
        reader = open_export(svc, export)
        if starts_with_member(reader, FULL_FORMAT_MEMBER):
            from . import fullintake

            read = fullintake.read_if_full(svc, export, reader)
            if read is not None:
                return read
    try:
        return _queue_chunks(svc, export, start, remaining_ms)
    except ExportError as error:
        if error.code != "NO_MANIFEST":
            raise
        from . import fullintake

        read = fullintake.read_if_full(svc, export, open_export(svc, export))
        if read is None:
            raise
        return read


def _plan_problems(stats: PlanStats) -> list[Problem]:
    """What the operator should know about the export as a whole (per-badge detail is on each badge)."""
    found = []
    if stats.cut_short:
        found.append(Problem(code="ZIP_CUT_SHORT", message=MESSAGES["ZIP_CUT_SHORT"]))
    if stats.unlisted_members:
        examples = ", ".join(stats.unlisted_examples[:5])
        found.append(
            Problem(
                code="UNLISTED_FILES",
                message=f"{stats.unlisted_members} files in the ZIP belong to no learner in the manifest "
                f"(for example {examples}).",
            )
        )
    if stats.refused_entries:
        examples = "; ".join(stats.refused_examples[:5])
        found.append(
            Problem(
                code="MANIFEST_ENTRIES_REFUSED",
                message=f"{MESSAGES['MANIFEST_ENTRIES_REFUSED']} ({stats.refused_entries} entries, "
                f"for example {examples})",
            )
        )
    for code, count in sorted(stats.file_problems.items()):
        files = "1 listed file" if count == 1 else f"{count} listed files"
        found.append(Problem(code=code, message=f"{files}: {MESSAGES.get(code, code)}"))
    return found


def _chunk_learners(
    svc: Services, export: ExportRecord, stats: PlanStats, skip: int
) -> Iterator[tuple[int, ChunkLearner]]:
    """(manifest entry number, learner) for each entry from ``skip`` on; the entries before it are
    only read (the stream and ``stats`` cover the whole manifest), never sealed or queued again."""
    reader = open_export(svc, export)
    _manifest, index = find_manifest(reader)
    with index:
        # A file listed under two learners is decided by the badge inside before any is queued.
        shared = find_shared_files(reader, index)
        yield from _learners(svc, export, stats, reader, index, shared.reviewer(reader), skip)


def _learners(
    svc: Services, export: ExportRecord, stats: PlanStats, reader: Any, index: Any, review: Any, skip: int
) -> Iterator[tuple[int, ChunkLearner]]:
    # Streamed: the manifest and the central directory are never held whole, whatever their size.
    for number, entry in enumerate(iter_learners(reader, index=index, stats=stats, review=review)):
        if number < skip:
            continue
        learner_id = svc.learner_id(entry.email)
        ciphertext = svc.emails.encrypt(
            entry.email,
            learner_id=learner_id,
            export_id=export.export_id,
            data_key_ciphertext=export.data_key_ciphertext,
        )
        files = [ChunkFile(name=f.name, member=f.location, problem=f.problem) for f in entry.files]
        problems = list(entry.problems)
        place = entry.position or None
        if not files:
            yield (
                number,
                ChunkLearner(
                    learner_id=learner_id,
                    email_ciphertext=ciphertext,
                    problems=problems,
                    manifest_entry=place,
                ),
            )
        for start in range(0, len(files), MAX_FILES_PER_CHUNK):
            yield (
                number,
                ChunkLearner(
                    learner_id=learner_id,
                    email_ciphertext=ciphertext,
                    problems=problems,
                    files=files[start : start + MAX_FILES_PER_CHUNK],
                    manifest_entry=place,
                ),
            )


def _queue_chunks(
    svc: Services, export: ExportRecord, start: IntakeJob, remaining_ms: Callable[[], int]
) -> tuple[PlanStats, int, IntakeJob | None]:
    """Queue the chunks from ``start`` on; returns the stats, the chunks queued in all, and the
    intake job that goes on when time ran short (None when the manifest is done)."""
    stats = PlanStats()
    chunk_no = start.chunks_done
    pending: list[ChunkLearner] = []
    pending_files = 0
    jobs: list[dict[str, Any]] = []
    current = -1  # the manifest entry the pending learners have come from, so far

    def flush() -> None:
        nonlocal chunk_no, pending, pending_files
        if pending:
            jobs.append(ChunkJob(export_id=export.export_id, chunk=chunk_no, learners=pending).model_dump())
            chunk_no += 1
            pending, pending_files = [], 0
        if len(jobs) >= 10:
            svc.queue.send(svc.settings.chunk_queue_url, jobs)
            jobs.clear()

    for index, learner in _chunk_learners(svc, export, stats, start.entries_done):
        if index != current and remaining_ms() < RESERVE_MS:
            # Only between entries: every entry before this one is in a chunk once flushed.
            flush()
            if jobs:
                svc.queue.send(svc.settings.chunk_queue_url, jobs)
            return (
                stats,
                chunk_no,
                IntakeJob(export_id=export.export_id, entries_done=index, chunks_done=chunk_no),
            )
        current = index
        if pending and (
            len(pending) >= svc.settings.learners_per_chunk
            or pending_files + len(learner.files) > MAX_FILES_PER_CHUNK
        ):
            flush()
        pending.append(learner)
        pending_files += len(learner.files)
    flush()
    if jobs:
        svc.queue.send(svc.settings.chunk_queue_url, jobs)
    return stats, chunk_no, None


Job = TypeVar("Job", bound="ChunkJob | FullChunkJob")


def continue_after_refusal(job: Job, position: int, error: Exception) -> Job:
    """The chunk job for the learners from ``position`` on, after AWS refused a call for now.

    What is written stays written; the rest goes on in a new job with tries of its own, rather
    than this job's few tries ending in the dead-letter queue with its learners never recorded.
    Any other error, or too many refusals in a row before a first learner is done, is raised.
    """
    stalls = job.stalls + 1 if position == 0 else 0
    if not is_transient_aws_error(error) or stalls > MAX_STALLS:
        raise error
    logger.warning("AWS refused a call; the chunk continues in a new job", extra={"stalls": stalls})
    return cast(Job, job.model_copy(update={"learners": job.learners[position:], "stalls": stalls}))


def process_chunk(svc: Services, job: ChunkJob, remaining_ms: Callable[[], int]) -> ChunkJob | None:
    """Extract the badges of a chunk's learners. Returns what is left when time runs short.

    Badges are written in small groups and the clock is read between groups, so a learner with
    hundreds of badges is resumed where it stopped, not started again.
    """
    export = svc.store.get_export(job.export_id)
    if export is None:
        raise LookupError(f"chunk for unknown export {job.export_id}")
    reader = open_export(svc, export)
    follow_ups: list[dict[str, Any]] = []
    notices: list[dict[str, Any]] = []
    left: ChunkJob | None = None
    for index, learner in enumerate(job.learners):
        if remaining_ms() < RESERVE_MS:
            left = job.model_copy(update={"learners": job.learners[index:]})
            break
        try:
            if svc.store.is_erased(erasure_mark(learner.learner_id)):
                # They asked to be forgotten: a replayed or re-uploaded export records and emails nothing.
                logger.info("learner erased before; skipped")
                metrics.add_metric(name="ErasedLearnersSkipped", unit="Count", value=1)
                continue
            done = _extract_learner(svc, reader, job.export_id, learner, remaining_ms)
        except Exception as error:
            left = continue_after_refusal(job, index, error)
            break
        if done < len(learner.files):
            # Its follow-ups go out with the job that finishes it.
            rest = learner.model_copy(update={"files": learner.files[done:]})
            left = job.model_copy(update={"learners": [rest, *job.learners[index + 1 :]]})
            break
        follow_ups.append({"learner_id": learner.learner_id})
        if not any(p.code == "INVALID_EMAIL" for p in learner.problems):
            notices.append({"kind": "invite", "learner_id": learner.learner_id, "export_id": job.export_id})
    svc.queue.send(svc.settings.verify_queue_url, follow_ups)
    svc.queue.send(svc.settings.notify_queue_url, notices)
    if left is not None:
        svc.queue.send(svc.settings.chunk_queue_url, [left.model_dump()])
        logger.info("chunk continues in a new job", extra={"learners_left": len(left.learners)})
    return left


def _extract_learner(
    svc: Services, reader: Any, export_id: str, learner: ChunkLearner, remaining_ms: Callable[[], int]
) -> int:
    """Record a learner and as many of its badges as time allows; returns how many files are done."""
    new = svc.store.put_learner_if_absent(
        LearnerRecord(
            learner_id=learner.learner_id,
            export_id=export_id,
            email_ciphertext=learner.email_ciphertext,
            problems=learner.problems,
            manifest_entry=learner.manifest_entry,
        )
    )
    # A learner just recorded has no badges yet (they are written after it): nothing to read.
    known = set() if new else {badge.badge_id for badge in svc.store.list_badges(learner.learner_id)}
    for start in range(0, len(learner.files), FILES_PER_WRITE):
        if start and remaining_ms() < RESERVE_MS:
            return start
        group = learner.files[start : start + FILES_PER_WRITE]
        fresh = [
            _extract(reader, export_id, learner.learner_id, file)
            for file in group
            if badge_id_for(learner.learner_id, export_id, file.name) not in known
        ]
        svc.store.put_badges_if_absent(fresh)
        for badge in fresh:
            metrics.add_metric(name=f"Badges_{badge.state.value}", unit="Count", value=1)
    return len(learner.files)


def _extract(reader: Any, export_id: str, learner_id: str, file: ChunkFile) -> BadgeRecord:
    base = BadgeRecord(
        learner_id=learner_id,
        badge_id=badge_id_for(learner_id, export_id, file.name),
        export_id=export_id,
        file_name=file.name,
        member=file.member,
        state=BadgeState.UNREADABLE,
        updated_at=now_iso(),
    )
    if file.problem is not None or file.member is None:
        problem = file.problem or Problem(code="FILE_MISSING", message="This file is not in the export.")
        return base.model_copy(update={"problem": problem})
    return read_badge_image(reader, file.member, base)


def read_badge_image(reader: Any, member: MemberLocation, base: BadgeRecord) -> BadgeRecord:
    """``base`` with what its image in the export says, read offline: ``extracted``, with the
    verdict's facts the image carries, or ``unreadable`` with the reason."""
    from .openbadges import UnbakeError, extract

    try:
        data = read_member(reader, member)
    except ExportError as error:
        return base.model_copy(update={"problem": Problem(code=error.code, message=error.message)})
    media_type = sniff_media_type(data)
    try:
        extracted = extract(data)
    except UnbakeError as error:
        return base.model_copy(
            update={"media_type": media_type, "problem": Problem(code=error.code, message=error.message)}
        )
    offline = VerdictSummary(
        valid=False,  # not yet verified: the verify job decides
        version=extracted.version,
        name=extracted.badge_name,
        issuer_name=extracted.issuer_name,
        issued_on=extracted.issued_on.isoformat() if extracted.issued_on else None,
        hosted_url=extracted.hosted_url,
        assertion_id=str((extracted.assertion or {}).get("id") or extracted.hosted_url or "") or None,
        payload_kind=extracted.payload_kind,
    )
    return base.model_copy(
        update={"media_type": media_type, "state": BadgeState.EXTRACTED, "verdict": offline}
    )
