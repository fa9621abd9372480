"""The manifest joined with the members: each learner of an export and the files listed for them."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterator, Mapping

from pydantic import Field

from backpack_migrate.domain import MemberLocation, Problem, normalize_email

from ..models import Model
from . import scratch
from .errors import ExportError, MemberError, problem
from .index import MemberIndex
from .manifest import MANIFEST_NAME, find_manifest, iter_manifest
from .members import DEFAULT_MAX_SIZE, read_member_head, sniff_media_type
from .ranges import RangeReader
from .scratch import _BATCH, _WITHOUT_ROWID, _TempDatabase

_EMAIL = re.compile(r"\A[^@\s<>\"(),;:\[\]\\]+@[^@\s<>\"(),;:\[\]\\]+\.[^@\s<>\"(),;:\[\]\\.]+\Z")


def is_valid_email(email: str) -> bool:
    return len(email) <= 254 and bool(_EMAIL.match(email))


class FileEntry(Model):
    name: str
    location: MemberLocation | None = None
    problem: Problem | None = None


class LearnerEntry(Model):
    email: str  # as written in the manifest (stripped)
    normalized_email: str
    files: list[FileEntry] = Field(default_factory=list)
    problems: list[Problem] = Field(default_factory=list)
    duplicate: bool = False  # an earlier entry had the same normalized email (streaming mode)
    position: int = 0  # 1-based place in the manifest, so an operator can find the entry


class PlanStats(Model):
    """Counts filled while :func:`iter_learners` runs; complete once it is exhausted."""

    members: int = 0  # files in the ZIP, manifest excluded
    learners: int = 0  # manifest entries
    distinct_learners: int = 0
    listed_files: int = 0
    usable_files: int = 0  # listed, present, and no problem found
    file_problems: dict[str, int] = Field(default_factory=dict)
    learner_problems: dict[str, int] = Field(default_factory=dict)
    unlisted_members: int = 0  # files in the ZIP no learner lists
    cut_short: bool = False  # the archive's end was missing: files past the cut are FILE_CUT_OFF
    unlisted_examples: list[str] = Field(default_factory=list)
    # Manifest entries whose email is not valid and whose value was not (only) file names: said
    # on the export's report, since there is no learner to say it to.
    refused_entries: int = 0
    refused_examples: list[str] = Field(default_factory=list)


# (file name, its member, the learner's email as listed) -> (a refusal of this listing, a note
# for the learner): a check one listing cannot make alone, such as whose a shared file is.
ListingReview = Callable[[str, MemberLocation, str], tuple[Problem | None, Problem | None]]


class ExportPlan(Model):
    manifest: MemberLocation
    learners: list[LearnerEntry]
    stats: PlanStats


def _file_entry(
    reader: RangeReader,
    name: str,
    loc: MemberLocation | None,
    *,
    sniff: bool,
    max_size: int,
    cut_short: bool = False,
) -> FileEntry:
    if loc is None:
        return FileEntry(name=name, problem=problem("FILE_CUT_OFF" if cut_short else "FILE_MISSING"))
    if loc.size == 0:
        return FileEntry(name=name, location=loc, problem=problem("EMPTY_FILE"))
    if loc.size > max_size:
        return FileEntry(name=name, location=loc, problem=problem("FILE_TOO_LARGE"))
    if loc.method not in (0, 8):
        return FileEntry(name=name, location=loc, problem=problem("UNSUPPORTED_COMPRESSION"))
    if sniff:
        try:
            head = read_member_head(reader, loc)
        except MemberError as exc:
            return FileEntry(name=name, location=loc, problem=exc.problem)
        if sniff_media_type(head) is None:
            return FileEntry(name=name, location=loc, problem=problem("NOT_AN_IMAGE"))
    return FileEntry(name=name, location=loc)


_UNLISTED_EXAMPLES = 20


class _Listing:
    """Which members the manifest lists, to count the unlisted ones at the end.

    For an index in SQLite the mark is a column of the members table, set in batches; otherwise
    (a small index in memory, or any other mapping) it is a set of names.
    """

    def __init__(self, index: Mapping[str, MemberLocation]) -> None:
        self._index = index
        self._members = index if isinstance(index, MemberIndex) else None
        self._db = index._db if isinstance(index, MemberIndex) else None
        self._names: set[str] = set()
        self._marks: list[tuple[int]] = []
        if self._db is not None:  # an index may be joined more than once
            self._database().conn.execute("UPDATE members SET listed = 0 WHERE listed <> 0")

    def _database(self) -> _TempDatabase:
        assert self._members is not None
        return self._members._database()

    def find(self, name: str) -> tuple[MemberLocation | None, int, bool]:
        """The member called ``name`` (None if there is none), its row (-1 if not in SQLite), and
        whether two different members carry that name."""
        if name == MANIFEST_NAME:
            return None, -1, False
        if self._members is None:
            return self._index.get(name), -1, False
        return self._members._find_member(name) or (None, -1, False)

    def mark(self, name: str, row: int) -> None:
        if row < 0:
            self._names.add(name)
            return
        self._marks.append((row,))
        if len(self._marks) >= _BATCH:
            self._flush()

    def _flush(self) -> None:
        if self._marks:
            marks, self._marks = self._marks, []
            self._database().write("UPDATE members SET listed = 1 WHERE seq = ?", marks)

    def unlisted(self) -> tuple[int, list[str]]:
        """How many members (the manifest excepted) no learner lists, and the first few of them."""
        if self._db is None:
            count = 0
            examples: list[str] = []
            for name in self._index:
                if name != MANIFEST_NAME and name not in self._names:
                    count += 1
                    if len(examples) < _UNLISTED_EXAMPLES:
                        examples.append(name)
            return count, examples
        self._flush()
        conn = self._database().conn
        (count,) = conn.execute(
            "SELECT count(*) FROM members WHERE listed = 0 AND name <> ?", (MANIFEST_NAME,)
        ).fetchone()
        rows = conn.execute(
            "SELECT name FROM members WHERE listed = 0 AND name <> ? ORDER BY seq LIMIT ?",
            (MANIFEST_NAME, _UNLISTED_EXAMPLES),
        )
        return int(count), [name for (name,) in rows]


_SEEN_SCHEMA = f"CREATE TABLE seen (digest BLOB PRIMARY KEY){_WITHOUT_ROWID};"


class _SeenEmails:
    """The normalized emails met so far, as keyed digests: in memory, then in SQLite.

    Past ``memory_entries`` emails the digests move to a temporary database keyed by digest. The
    digest key is random per run, so the scratch file holds nothing that can be matched to an email.
    """

    def __init__(self, memory_entries: int) -> None:
        self._limit = memory_entries
        self._key = os.urandom(16)
        self._memory: set[bytes] = set()
        self._db: _TempDatabase | None = None
        self._uncommitted = 0

    def add(self, normalized: str) -> bool:
        """Remember an email; False if it was met before."""
        digest = hashlib.blake2b(
            normalized.encode("utf-8", "surrogatepass"), digest_size=16, key=self._key
        ).digest()
        if self._db is None:
            if digest in self._memory:
                return False
            if len(self._memory) < self._limit:
                self._memory.add(digest)
                return True
            self._db = _TempDatabase(_SEEN_SCHEMA)
            self._db.write("INSERT INTO seen (digest) VALUES (?)", [(d,) for d in self._memory])
            self._memory = set()
        conn = self._db.conn
        if not conn.in_transaction:
            conn.execute("BEGIN")
        new = conn.execute("INSERT OR IGNORE INTO seen (digest) VALUES (?)", (digest,)).rowcount == 1
        self._uncommitted += 1
        if self._uncommitted >= _BATCH:
            conn.execute("COMMIT")
            self._uncommitted = 0
        return new

    def close(self) -> None:
        if self._db is not None:
            self._db.close()


def iter_learners(
    reader: RangeReader,
    *,
    index: MemberIndex | None = None,
    sniff: bool = False,
    max_size: int = DEFAULT_MAX_SIZE,
    stats: PlanStats | None = None,
    review: ListingReview | None = None,
) -> Iterator[LearnerEntry]:
    """Stream the manifest joined with the members, one :class:`LearnerEntry` per manifest key.

    A key whose normalized email was seen before is yielded again with ``duplicate=True`` and a
    ``DUPLICATE_EMAIL`` problem: the caller merges it into the learner with the same id. With
    ``sniff`` each listed file's first bytes are read to check it is a PNG or SVG (one ranged
    read per file). ``stats`` is filled as the stream goes and is complete at its end. ``review``
    is asked about every listing of a present file that has no problem of its own.

    Memory does not grow with the export: the member index, the listed marks and the emails met
    so far go to temporary SQLite databases past :data:`.scratch.IN_MEMORY_ENTRIES` entries. Those are
    removed when the stream ends, fails or is closed; an ``index`` passed in stays open (its
    owner closes it). One thread consumes a stream.
    """
    own_index = index is None
    if index is None:
        manifest, index = find_manifest(reader)
    elif MANIFEST_NAME in index:
        manifest = index[MANIFEST_NAME]
    else:
        raise ExportError("NO_MANIFEST")
    seen: _SeenEmails | None = None
    try:
        stats = stats if stats is not None else PlanStats()
        stats.members = len(index) - 1
        stats.cut_short = index.cut_short
        listing = _Listing(index)
        seen = _SeenEmails(scratch.IN_MEMORY_ENTRIES)
        for position, (email, names, refused) in enumerate(iter_manifest(reader, manifest), start=1):
            normalized = normalize_email(email)
            entry = LearnerEntry(email=email, normalized_email=normalized, position=position)
            valid_email = is_valid_email(email)
            if not valid_email:
                entry.problems.append(problem("INVALID_EMAIL"))
            if refused:
                detail = "; ".join(dict.fromkeys(refused))
                entry.problems.append(problem("MANIFEST_ENTRY_REFUSED", detail))
                if not valid_email:
                    stats.refused_entries += 1
                    if len(stats.refused_examples) < _UNLISTED_EXAMPLES:
                        stats.refused_examples.append(f"entry #{position}: {detail}")
            if seen.add(normalized):
                stats.distinct_learners += 1
            else:
                entry.duplicate = True
                entry.problems.append(problem("DUPLICATE_EMAIL"))
            local: set[str] = set()
            for name in names:
                if name in local:
                    continue
                local.add(name)
                loc, row, ambiguous = listing.find(name)
                if ambiguous:
                    # Two different files under one name: reading either could be the wrong one.
                    file_entry = FileEntry(name=name, problem=problem("AMBIGUOUS_FILE"))
                else:
                    file_entry = _file_entry(
                        reader, name, loc, sniff=sniff, max_size=max_size, cut_short=index.cut_short
                    )
                if review is not None and loc is not None and file_entry.problem is None:
                    refusal, note = review(name, loc, email)
                    if refusal is not None:  # someone else's badge: never read for this learner
                        file_entry = FileEntry(name=name, problem=refusal)
                    if note is not None and note not in entry.problems:
                        entry.problems.append(note)
                entry.files.append(file_entry)
                stats.listed_files += 1
                if loc is not None:
                    listing.mark(name, row)
                if file_entry.problem is None:
                    stats.usable_files += 1
                else:
                    code = file_entry.problem.code
                    stats.file_problems[code] = stats.file_problems.get(code, 0) + 1
            for learner_problem in entry.problems:
                code = learner_problem.code
                stats.learner_problems[code] = stats.learner_problems.get(code, 0) + 1
            stats.learners += 1
            yield entry
        stats.unlisted_members, stats.unlisted_examples = listing.unlisted()
    finally:
        if seen is not None:
            seen.close()
        if own_index:
            index.close()


def plan_export(reader: RangeReader, *, sniff: bool = True, max_size: int = DEFAULT_MAX_SIZE) -> ExportPlan:
    """The whole plan in memory, duplicate emails merged into their first entry (small exports, CLI)."""
    stats = PlanStats()
    learners: list[LearnerEntry] = []
    by_email: dict[str, LearnerEntry] = {}
    manifest, index = find_manifest(reader)
    with index:
        for entry in iter_learners(reader, index=index, sniff=sniff, max_size=max_size, stats=stats):
            first = by_email.get(entry.normalized_email)
            if first is None:
                by_email[entry.normalized_email] = entry
                learners.append(entry)
                continue
            names = {f.name for f in first.files}
            first.files.extend(f for f in entry.files if f.name not in names)
            for p in entry.problems:
                if p not in first.problems:
                    first.problems.append(p)
    return ExportPlan(manifest=manifest, learners=learners, stats=stats)
