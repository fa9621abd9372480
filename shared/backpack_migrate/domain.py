"""The records every part of the migration speaks about: exports, learners, badges, states."""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal, NamedTuple

from pydantic import ConfigDict, Field

from .models import Model


def normalize_email(email: str) -> str:
    """The form used to compare emails and derive learner ids: stripped and lowercased."""
    return email.strip().lower()


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def request_stamp() -> str:
    """When a learner asked to move, to the microsecond: it also names that request, so two
    requests in the same second still get a summary each."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class BadgeState(StrEnum):
    EXTRACTED = "extracted"  # an assertion was found in the baked image
    UNREADABLE = "unreadable"  # final: nothing could be extracted, and why
    VERIFIED = "verified"  # our verdict is stored (valid or not); waits for the learner
    QUEUED = "queued"  # the learner connected Badgr; an import job is on the queue
    FAILED_RETRYABLE = "failed_retryable"  # Badgr or the network failed for now; SQS retries
    IMPORTED = "imported"
    ALREADY_IN_BADGR = "already_in_badgr"
    PENDING = "pending"  # Badgr holds it until the learner verifies the recipient email
    REJECTED = "rejected"  # by Badgr, or not sent because it was certain to fail
    DEAD_LETTERED = "dead_lettered"  # retries ran out; the job waits in the dead-letter queue


FINAL_STATES = frozenset(
    {
        BadgeState.UNREADABLE,
        BadgeState.IMPORTED,
        BadgeState.ALREADY_IN_BADGR,
        BadgeState.PENDING,
        BadgeState.REJECTED,
        BadgeState.DEAD_LETTERED,
    }
)

# Every state change is a conditional write from one of these sources.
TRANSITIONS: dict[BadgeState, frozenset[BadgeState]] = {
    BadgeState.EXTRACTED: frozenset(
        {
            BadgeState.EXTRACTED,  # the reconciler sent its lost verify job again
            BadgeState.VERIFIED,
            BadgeState.QUEUED,
        }
    ),
    BadgeState.VERIFIED: frozenset({BadgeState.QUEUED}),
    BadgeState.QUEUED: frozenset(
        {
            BadgeState.QUEUED,  # connecting again re-sends a job that may have been lost
            BadgeState.IMPORTED,
            BadgeState.ALREADY_IN_BADGR,
            BadgeState.PENDING,
            BadgeState.REJECTED,
            BadgeState.FAILED_RETRYABLE,
            BadgeState.DEAD_LETTERED,
        }
    ),
    BadgeState.FAILED_RETRYABLE: frozenset(
        {
            BadgeState.QUEUED,
            BadgeState.IMPORTED,
            BadgeState.ALREADY_IN_BADGR,
            BadgeState.PENDING,
            BadgeState.REJECTED,
            BadgeState.FAILED_RETRYABLE,
            BadgeState.DEAD_LETTERED,
        }
    ),
    # An operator's redrive from the dead-letter queue puts the job back to work.
    BadgeState.DEAD_LETTERED: frozenset(
        {
            BadgeState.QUEUED,  # the learner connected Badgr again
            BadgeState.IMPORTED,
            BadgeState.ALREADY_IN_BADGR,
            BadgeState.PENDING,
            BadgeState.REJECTED,
            BadgeState.FAILED_RETRYABLE,
            BadgeState.DEAD_LETTERED,  # a redriven job that failed to the end again
        }
    ),
    BadgeState.UNREADABLE: frozenset(),
    BadgeState.IMPORTED: frozenset(),
    BadgeState.ALREADY_IN_BADGR: frozenset(),
    BadgeState.PENDING: frozenset(),
    # The learner fixed what Badgr refused (see FIXABLE_REFUSALS) and moves again.
    BadgeState.REJECTED: frozenset({BadgeState.QUEUED}),
}

# Badgr refusals a learner can fix in their own Badgr account, by adding the address the badge
# was issued to; after that, moving the badge again can succeed.
FIXABLE_REFUSALS = frozenset({"VERIFY_RECIPIENT_IDENTIFIER"})


class TransitionError(ValueError):
    """A state change the badge state machine does not allow: a bug, never a data problem."""


def check_transition(expected: frozenset[BadgeState] | set[BadgeState], new: BadgeState) -> None:
    wrong = sorted(state.value for state in expected if new not in TRANSITIONS[state])
    if wrong or not expected:
        raise TransitionError(f"a badge cannot move from {wrong or 'nothing'} to {new.value}")


STATE_WORDS: dict[BadgeState, str] = {
    BadgeState.EXTRACTED: "Being checked",
    BadgeState.UNREADABLE: "Could not be read",
    BadgeState.VERIFIED: "Ready to move",
    BadgeState.QUEUED: "Moving to Badgr",
    BadgeState.FAILED_RETRYABLE: "Badgr did not answer yet; trying again",
    BadgeState.IMPORTED: "In your Badgr backpack",
    BadgeState.ALREADY_IN_BADGR: "Already in your Badgr backpack",
    BadgeState.PENDING: "Waiting for you to confirm your email address in Badgr",
    BadgeState.REJECTED: "Could not be moved",
    BadgeState.DEAD_LETTERED: "Could not be moved after several tries; our team has been told",
}


class MemberLocation(Model):
    """Where a badge image sits inside the export ZIP, so it can be read back by byte range."""

    model_config = ConfigDict(frozen=True)

    name: str
    header_offset: int = Field(ge=0)
    compressed_size: int = Field(ge=0)
    size: int = Field(ge=0)
    method: int  # 0 stored, 8 deflated
    crc: int = 0


class Problem(Model):
    """A stable code and one sentence a learner (or operator) understands."""

    model_config = ConfigDict(frozen=True)

    code: str
    message: str


class VerdictSummary(Model):
    """What the badge page and the worker need from a full verification."""

    valid: bool
    version: str | None = None
    name: str | None = None
    issuer_name: str | None = None
    issuer_url: str | None = None
    issued_on: str | None = None
    image_url: str | None = None
    hosted_url: str | None = None
    payload_kind: str | None = None  # url | json | jws
    revoked: bool = False
    certain_to_fail: bool = False
    # The assertion's own id (Badgr's ``openBadgeId``): how the badge is found in a backpack.
    assertion_id: str | None = None
    errors: list[Problem] = Field(default_factory=list)
    warnings: list[Problem] = Field(default_factory=list)


class Confirmation(StrEnum):
    """How a badge's state after an import was learnt: never guessed from a missing answer."""

    IMPORT_ANSWER = "import_answer"  # Badgr's answer to our import
    BACKPACK_LISTING = "backpack_listing"  # the learner's backpack, listed after an answer was lost
    NOT_CONFIRMED = "not_confirmed"  # Badgr could not be asked; the reconciler asks again
    # Listed once more, hours after the last try: an import of ours whose answer was lost may
    # land after the listing that followed it, so that listing is not the last word.
    BACKPACK_RELISTED = "backpack_relisted"


class BadgrAnswer(Model):
    """Badgr's own word on an import, kept beside ours."""

    status: int
    entity_id: str | None = None
    description: str | None = None
    codes: list[str] = Field(default_factory=list)


class BadgeRecord(Model):
    learner_id: str
    badge_id: str
    export_id: str
    file_name: str
    media_type: str | None = None  # image/png | image/svg+xml
    member: MemberLocation | None = None
    state: BadgeState
    problem: Problem | None = None  # why it is unreadable, rejected, dead-lettered
    verdict: VerdictSummary | None = None
    verified_at: str | None = None  # when ``verdict`` became a full verification, not only extraction
    import_form: str | None = None  # url | image | assertion
    badgr: BadgrAnswer | None = None
    attempts: int = 0
    # How many times the learner moved it again after Badgr refused it: each of those is a
    # question Badgr must answer anew, where a replayed job reuses the answer it had.
    moved_again: int = 0
    # Whether the learner's Badgr backpack held this badge before our first import was sent
    # (None until it was looked at): a DUPLICATE_BADGE after a lost answer of ours is our import.
    in_badgr_before: bool | None = None
    # The learner's backpack was listed as the move was asked for and did not hold this badge:
    # while no send is marked (``in_badgr_before`` None), a try may send without listing again.
    # A new request or the reconciler's requeue of a learner's waiting badges sets it anew.
    absent_when_queued: bool = False
    confirmed_by: Confirmation | None = None
    repairs: int = 0  # how often the reconciler sent it back to work
    looks: int = 0  # how often the reconciler looked in Badgr again after it was given up on
    updated_at: str | None = None
    # The record's revision when this copy was read, from the item (never kept in its data):
    # a write made from this copy can require that no other write came since
    # (``Store.transition(..., unchanged=True)``).
    rev: str | None = Field(default=None, exclude=True)
    # From a full-fidelity export: the Backpack's own ids and data, which third-party sites address.
    backpack_badge_id: int | None = None
    body_hash: str | None = None
    endpoint: str | None = None
    validated_on: str | None = None
    backpack_body: dict[str, Any] | None = None  # the stored assertion, as the Displayer API answered it
    # Handed over by a third-party site (issuer.js or Backpack Connect) rather than an export:
    # the hosted URL or compact JWS as given, and the site's origin.
    issued_assertion: str | None = None
    issued_by: str | None = None

    @property
    def awaiting_second_look(self) -> bool:
        """Given up on after a listing without it, though an import of ours was sent: that
        import may still land, so the backpack is listed once more before the move is summed up."""
        return (
            self.state == BadgeState.DEAD_LETTERED
            and self.confirmed_by == Confirmation.BACKPACK_LISTING
            and self.in_badgr_before is False
        )

    @property
    def settled(self) -> bool:
        """Final, and not awaiting the second look that may still import it: what a learner's
        summary and collections are made from."""
        return self.state in FINAL_STATES and not self.awaiting_second_look

    @property
    def can_move_again(self) -> bool:
        """Refused by Badgr for a reason the learner can fix: moving it again may succeed."""
        return (
            self.state == BadgeState.REJECTED
            and self.problem is not None
            and self.problem.code in FIXABLE_REFUSALS
        )


def all_settled(badges: Iterable[BadgeRecord]) -> bool:
    return all(badge.settled for badge in badges)


class BadgeGroup(StrEnum):
    """What will happen to a badge, as the learner's pages group them: every badge is in one."""

    MOVED = "moved"  # in the learner's Badgr backpack
    NEEDS_YOU = "needs_you"  # waits for the learner to confirm or add an address in Badgr
    MOVING = "moving"  # an import job is on its way
    READY = "ready"  # would move now
    MAYBE = "maybe"  # may move: a note says why it might not
    CHECKING = "checking"  # our check has not finished yet
    CANNOT = "cannot"  # will not move, and why


GROUP_WORDS: dict[BadgeGroup, str] = {
    BadgeGroup.MOVED: "In your Badgr backpack",
    BadgeGroup.NEEDS_YOU: "Waiting for you in Badgr",
    BadgeGroup.MOVING: "Moving to Badgr now",
    BadgeGroup.READY: "Ready to move",
    BadgeGroup.MAYBE: "May move",
    BadgeGroup.CHECKING: "Still being checked",
    BadgeGroup.CANNOT: "Cannot be moved",
}


def badge_group(badge: BadgeRecord) -> BadgeGroup:
    """The one group a badge belongs to, from its state and our verdict."""
    state, verdict = badge.state, badge.verdict
    if state in (BadgeState.IMPORTED, BadgeState.ALREADY_IN_BADGR):
        return BadgeGroup.MOVED
    if state == BadgeState.PENDING or badge.can_move_again:
        return BadgeGroup.NEEDS_YOU
    if state in (BadgeState.UNREADABLE, BadgeState.REJECTED):
        return BadgeGroup.CANNOT
    # Not final: a badge our verifier found certain to fail is never sent, whatever its state.
    if verdict is not None and verdict.certain_to_fail:
        return BadgeGroup.CANNOT
    if state in (BadgeState.QUEUED, BadgeState.FAILED_RETRYABLE):
        return BadgeGroup.MOVING
    if state == BadgeState.DEAD_LETTERED:
        return BadgeGroup.MAYBE
    if state == BadgeState.EXTRACTED or verdict is None:
        return BadgeGroup.CHECKING
    if not verdict.valid and verdict.errors:
        return BadgeGroup.MAYBE
    return BadgeGroup.READY


def is_settled(badge: BadgeRecord) -> bool:
    """Its outcome is known: a final state, or certain to fail before anything is sent."""
    return badge.state in FINAL_STATES or badge_group(badge) == BadgeGroup.CANNOT


class Movable(NamedTuple):
    """How many badges a move would send to Badgr now, told apart by how sure we are."""

    ready: int  # the READY group
    moving: int  # already on their way; a move whose jobs were lost can always be asked again
    uncertain: int  # may move (MAYBE), still being checked, or refused for an address Badgr can add


def movable_counts(badges: Iterable[BadgeRecord]) -> Movable:
    ready = moving = uncertain = 0
    for b in badges:
        group = badge_group(b)
        if group == BadgeGroup.READY:
            ready += 1
        elif group == BadgeGroup.MOVING:
            moving += 1
        elif group in (BadgeGroup.MAYBE, BadgeGroup.CHECKING) or b.can_move_again:
            uncertain += 1
    return Movable(ready, moving, uncertain)


class LearnerRecord(Model):
    learner_id: str
    export_id: str
    email_ciphertext: str  # base64 of the export's data-key AES-GCM ciphertext; never plaintext
    problems: list[Problem] = Field(default_factory=list)  # manifest-level problems for this learner
    manifest_entry: int | None = None  # 1-based place of its (first) entry in the manifest
    # Kept as attributes of their own in the store, each changed by one conditional update.
    migration_requested_at: str | None = None
    summary_for: str | None = None  # the request whose summary email is claimed
    invited_at: str | None = None  # when the invitation email went out
    repairs: int = 0  # how often the reconciler repaired this learner's invitation or move

    @property
    def expects_invitation(self) -> bool:
        """Every learner with a usable address gets one invitation."""
        return not any(problem.code == "INVALID_EMAIL" for problem in self.problems)

    # From a full-fidelity export a learner is a Backpack user with up to three addresses. The
    # contact address stays in ``email_ciphertext``; all of them, each flagged, are sealed here
    # as JSON ``[{"address", "verified", "primary"}]`` under the same key and binding.
    backpack_user_id: int | None = None
    addresses_ciphertext: str | None = None


class ExportStatus(StrEnum):
    READING = "reading"
    CHUNKED = "chunked"
    FAILED = "failed"  # the export as a whole could not be read (not a ZIP, no manifest, ...)


class ExportRecord(Model):
    export_id: str
    bucket: str
    key: str
    etag: str
    version_id: str | None = None  # read by version, so a later upload under the key changes nothing
    size: int = 0
    status: ExportStatus
    learner_count: int = 0
    badge_count: int = 0
    chunk_count: int = 0
    data_key_ciphertext: str = ""  # KMS-encrypted AES key for the learners' emails of this export
    problems: list[Problem] = Field(default_factory=list)
    created_at: str | None = None


class LeftOut(Model):
    """A badge of a group that could not join the group's Badgr collection, and why."""

    model_config = ConfigDict(frozen=True)

    badge_id: int  # the Backpack's badge id, as the group lists it
    reason: str


CollectionState = Literal["creating", "filled", "skipped"]


class CollectionRecord(Model):
    """What a group became in Badgr: one collection, recorded before it is filled.

    ``creating``: the create was sent (``entity_id`` is set once Badgr's answer is on record);
    ``filled``: the collection holds ``assertion_ids``; ``skipped``: no collection, ``problem``
    says why (no badge of the group reached Badgr, for one).
    """

    entity_id: str | None = None
    state: CollectionState
    published: bool = False
    assertion_ids: list[str] = Field(default_factory=list)
    problem: Problem | None = None
    badges_left_out: list[LeftOut] = Field(default_factory=list)
    marker: str | None = None  # the tag written into the description, to find a create whose answer was lost
    share_url: str | None = None
    # While a worker creates the collection, others keep off until this time (epoch seconds):
    # after it, the creator is taken for dead and the collection is looked up by its marker.
    lease_until: float | None = None
    holder: str | None = None  # the job (SQS message) holding the lease: its redelivery takes over


class GroupRecord(Model):
    """A Backpack group (and its portfolio page), kept with the Backpack's ids."""

    learner_id: str
    export_id: str
    group_id: int
    name: str | None = None
    url: str | None = None
    public: bool = False
    badge_ids: list[int] = Field(default_factory=list)  # as stored: order kept, stale ids kept
    portfolio_title: str | None = None
    portfolio_subtitle: str | None = None
    portfolio_preamble: str | None = None
    stories: dict[str, str] = Field(default_factory=dict)
    problems: list[Problem] = Field(default_factory=list)
    collection: CollectionRecord | None = None
    # Bumped by every conditional save, so two workers of the same group never both win.
    version: int = 0
    # The learner's move request this group's collection was last settled for; the summary
    # waits until every group is settled for the current request.
    settled_for: str | None = None
    updated_at: str | None = None


class GrantRecord(Model):
    """A Backpack Connect grant: tokens only as SHA-256 digests, never the tokens themselves."""

    grant_id: str
    learner_id: str
    origin: str
    permissions: list[str] = Field(default_factory=list)
    access_token_sha256: str
    refresh_token_sha256: str
    access_time_ms: int
    export_id: str | None = None
