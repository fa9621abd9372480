"""Files an export lists under more than one learner: whose each one is, by the badge inside.

A badge names the one person it was issued to. When the manifest lists the same file under two
learners, the badge's baked recipient decides: the listing of the learner it names is kept, the
others are recorded as not theirs before any verdict or import. When the badge names none of
them, several of them, or cannot say offline (only its address at the issuer is baked in), every
listing is kept and each learner is told so; Badgr's own recipient check then decides, as it
only takes a badge into an account that holds its address.

Deciding needs every lister's address at the first listing, which a single stream of the
manifest cannot give. :func:`find_shared_files` reads the manifest once beforehand, keeping for
each file only a keyed digest of its first lister (in memory, then in a scratch database like
the member index) and, for the rare files a second learner lists, the later listers' addresses
in memory. The stream then decides each shared file once, at its first listing.
"""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING, Any, Literal

from .domain import MemberLocation, Problem, normalize_email
from .export import (
    _WITHOUT_ROWID,
    MANIFEST_NAME,
    ExportError,
    ListingReview,
    MemberIndex,
    RangeReader,
    _TempDatabase,
    iter_manifest,
    read_member,
)
from .export import scratch as _export_scratch
from .models import Model

# The badge reader (``openbadges``) is imported where a shared file is decided: few exports list
# a file twice, and reading a manifest needs none of it.
if TYPE_CHECKING:
    from .openbadges.model import RecipientInfo

# Past this many shared files the later listers' addresses are no longer kept, so further
# shared files are kept for every learner who lists them, each told it could not be decided.
MAX_SHARED_FILES = 10_000

MESSAGES: dict[str, str] = {
    "NOT_THEIRS": (
        "This file is also listed under another learner of this export, and the badge in it was "
        "issued to that learner, not to you, so it was not kept for you."
    ),
    "SHARED_FILE_NAMES_NONE": (
        "A file listed for you is also listed under another learner, and the badge in it names "
        "neither of you: it was kept for each of you, and Badgr will take it only into the "
        "account that holds the address it was issued to."
    ),
    "SHARED_FILE_NAMES_SEVERAL": (
        "A file listed for you is also listed under another learner, and the badge in it names "
        "both of you, so it was kept for each of you."
    ),
    "SHARED_FILE_UNDECIDED": (
        "A file listed for you is also listed under another learner, and the badge in it does not "
        "say by itself whom it was issued to: it was kept for each of you, and Badgr will take it "
        "only into the account that holds the address it was issued to."
    ),
}

Outcome = Literal["one", "none", "several", "undecided"]


def _problem(code: str, file_name: str | None = None) -> Problem:
    message = MESSAGES[code]
    return Problem(code=code, message=f"{message} ({file_name})" if file_name else message)


class Decision(Model):
    outcome: Outcome
    owners: frozenset[str] = frozenset()  # normalized addresses the badge names


_FIRST_SCHEMA = f"CREATE TABLE first (name BLOB PRIMARY KEY, who BLOB NOT NULL){_WITHOUT_ROWID};"
_BATCH = 1024  # listings per transaction


class _FirstListers:
    """Each file name's first lister, both as keyed digests (random key per run, so the scratch
    file holds nothing that can be matched to a name or an address): memory, then SQLite."""

    def __init__(self, memory_entries: int) -> None:
        self._limit = memory_entries
        self._key = os.urandom(16)
        self._memory: dict[bytes, bytes] = {}
        self._db: _TempDatabase | None = None
        self._uncommitted = 0

    def digest(self, text: str) -> bytes:
        return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16, key=self._key).digest()

    def first(self, key: bytes, who: bytes) -> bytes:
        """The first lister of the file whose name digest is ``key``: ``who`` when this is the first."""
        if self._db is None:
            found = self._memory.get(key)
            if found is not None:
                return found
            if len(self._memory) < self._limit:
                self._memory[key] = who
                return who
            self._db = _TempDatabase(_FIRST_SCHEMA)
            self._db.write("INSERT INTO first (name, who) VALUES (?, ?)", list(self._memory.items()))
            self._memory = {}
        conn = self._db.conn
        if not conn.in_transaction:
            conn.execute("BEGIN")
        self._uncommitted += 1
        if self._uncommitted >= _BATCH:
            conn.execute("COMMIT")
            conn.execute("BEGIN")
            self._uncommitted = 0
        if conn.execute("INSERT OR IGNORE INTO first (name, who) VALUES (?, ?)", (key, who)).rowcount:
            return who
        row = conn.execute("SELECT who FROM first WHERE name = ?", (key,)).fetchone()
        return bytes(row[0])

    def close(self) -> None:
        if self._db is not None:
            self._db.close()


class SharedFiles:
    """The files listed under more than one learner, and what the badge in each says."""

    def __init__(self) -> None:
        # name -> normalized addresses of its listers after the first, in manifest order
        self._later: dict[str, list[str]] = {}
        self._undecidable: set[str] = set()  # shared, but past MAX_SHARED_FILES
        self._decided: dict[str, Decision] = {}

    def __len__(self) -> int:
        return len(self._later) + len(self._undecidable)

    def __contains__(self, name: object) -> bool:
        return name in self._later or name in self._undecidable

    def _note(self, name: str, normalized: str) -> None:
        if name in self._undecidable:
            return
        later = self._later.get(name)
        if later is None:
            if len(self._later) >= MAX_SHARED_FILES:
                self._undecidable.add(name)
                return
            later = self._later[name] = []
        if normalized not in later:
            later.append(normalized)

    def decide(self, reader: RangeReader, name: str, location: MemberLocation, email: str) -> Decision:
        """What the badge in ``name`` says, decided once, at its first listing (by ``email``)."""
        decided = self._decided.get(name)
        if decided is not None:
            return decided
        listers = [normalize_email(email), *self._later.get(name, [])]
        recipient = None if name in self._undecidable else _baked_recipient(reader, location)
        if recipient is None:
            decided = Decision(outcome="undecided")
        else:
            from .openbadges.recipient import recipient_matches

            owners = frozenset(who for who in listers if recipient_matches(recipient, who))
            outcome: Outcome = "one" if len(owners) == 1 else "none" if not owners else "several"
            decided = Decision(outcome=outcome, owners=owners)
        self._decided[name] = decided
        return decided

    def review(
        self, reader: RangeReader, name: str, location: MemberLocation, email: str
    ) -> tuple[Problem | None, Problem | None]:
        """(a refusal for this listing, a note for the learner), for a file that is shared."""
        decision = self.decide(reader, name, location, email)
        if decision.outcome == "one":
            if normalize_email(email) in decision.owners:
                return None, None
            return _problem("NOT_THEIRS"), None
        code = {
            "none": "SHARED_FILE_NAMES_NONE",
            "several": "SHARED_FILE_NAMES_SEVERAL",
            "undecided": "SHARED_FILE_UNDECIDED",
        }[decision.outcome]
        return None, _problem(code, name)

    def reviewer(self, reader: RangeReader) -> ListingReview:
        """The check :func:`~backpack_migrate.export.iter_learners` applies to every listing."""

        def review(name: str, location: MemberLocation, email: str) -> tuple[Problem | None, Problem | None]:
            if name not in self:
                return None, None
            return self.review(reader, name, location, email)

        return review


def _baked_recipient(reader: RangeReader, location: MemberLocation) -> RecipientInfo | None:
    """Whom the badge in this file names, from its own bytes; None when it does not say."""
    from .openbadges.errors import UnbakeError
    from .openbadges.parse import extract

    try:
        extracted = extract(read_member(reader, location))
    except (UnbakeError, ExportError):
        return None
    return recipient_of(extracted.assertion) if extracted.assertion is not None else None


def recipient_of(assertion: dict[str, Any]) -> RecipientInfo | None:
    """The recipient an assertion of any version names (0.5: a string with a top-level salt)."""
    from .openbadges.model import RecipientInfo

    raw = assertion.get("recipient")
    if isinstance(raw, str) and raw:
        hashed = "$" in raw
        salt = assertion.get("salt")
        return RecipientInfo(
            type="email", identity=raw, hashed=hashed, salt=salt if isinstance(salt, str) else None
        )
    if isinstance(raw, dict) and isinstance(raw.get("identity"), str) and raw["identity"]:
        identity = raw["identity"]
        hashed_raw = raw.get("hashed")
        if isinstance(hashed_raw, str):
            hashed_raw = hashed_raw.strip().lower() == "true"
        hashed = bool(hashed_raw) if hashed_raw is not None else identity.count("$") == 1
        salt = raw.get("salt")
        return RecipientInfo(
            type=str(raw.get("type") or "email"),
            identity=identity,
            hashed=hashed,
            salt=salt if isinstance(salt, str) else None,
        )
    return None


def find_shared_files(reader: RangeReader, index: MemberIndex) -> SharedFiles:
    """One read of the manifest: the files that learners with different addresses list.

    ``index`` gives where the manifest is; the files' own presence is checked by the stream."""
    shared = SharedFiles()
    manifest = index.get(MANIFEST_NAME)
    if manifest is None:
        return shared
    firsts = _FirstListers(_export_scratch.IN_MEMORY_ENTRIES)
    try:
        for email, names, _refused in iter_manifest(reader, manifest):
            normalized = normalize_email(email)
            who = firsts.digest(normalized)
            for name in dict.fromkeys(names):
                # Names the ZIP lacks are tracked too: looking each one up would cost more, and
                # a missing file is never reviewed.
                if name != MANIFEST_NAME and firsts.first(firsts.digest(name), who) != who:
                    shared._note(name, normalized)
    finally:
        firsts.close()
    return shared
