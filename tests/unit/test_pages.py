from __future__ import annotations

import pytest

from backpack_migrate.domain import BadgeRecord, BadgeState, Problem, VerdictSummary
from backpack_migrate.notify import summary
from backpack_migrate.pages import movable_summary, status_page, verdict_line

pytestmark = pytest.mark.unit

MISMATCH = Problem(code="RECIPIENT_MISMATCH", message="This badge was issued to another email address.")


def badge(
    state: BadgeState, verdict: VerdictSummary | None = None, problem: Problem | None = None
) -> BadgeRecord:
    return BadgeRecord(
        learner_id="l",
        badge_id="b",
        export_id="e",
        file_name="x.png",
        state=state,
        verdict=verdict,
        problem=problem,
    )


READY = badge(BadgeState.VERIFIED, VerdictSummary(valid=True))
MAYBE = badge(BadgeState.VERIFIED, VerdictSummary(valid=False, errors=[MISMATCH]))
NEVER = badge(BadgeState.VERIFIED, VerdictSummary(valid=False, certain_to_fail=True, errors=[MISMATCH]))
MOVED = badge(BadgeState.IMPORTED, VerdictSummary(valid=True))
GAVE_UP = badge(
    BadgeState.DEAD_LETTERED,
    VerdictSummary(valid=True),
    Problem(code="BADGR_UNAVAILABLE", message="Badgr did not take this badge after several tries."),
)
# Refused by Badgr: for an address the learner can add to their account, or for good.
REFUSED = badge(
    BadgeState.REJECTED,
    VerdictSummary(valid=True),
    Problem(code="VERIFY_RECIPIENT_IDENTIFIER", message="Add that address in Badgr and try again."),
)
REVOKED = badge(
    BadgeState.REJECTED,
    VerdictSummary(valid=True),
    Problem(code="VERIFY_SIGNED_ASSERTION_NOT_REVOKED", message="The issuer has revoked this badge."),
)


@pytest.mark.parametrize(
    ("badges", "summary"),
    [
        ([READY, READY, MOVED, NEVER], "2 of your badges are ready to move."),
        ([READY, MAYBE], "1 of your badges is ready to move, and 1 more may move (see the note beside it)."),
        ([MAYBE, MAYBE, NEVER], "2 of your badges may move (see the note beside each)."),
        ([MOVED, NEVER], None),
        ([MOVED, REFUSED, REVOKED], "1 of your badges may move (see the note beside it)."),
        (
            [READY, GAVE_UP],
            "1 of your badges is ready to move, and 1 more may move (see the note beside it).",
        ),
    ],
)
def test_the_landing_summary_tells_badges_ready_to_move_from_those_that_may(
    badges: list[BadgeRecord], summary: str | None
) -> None:
    assert movable_summary(badges) == summary
    lines = [verdict_line(b)[1] for b in badges]
    ready = sum(line == "This badge is valid and ready to move." for line in lines)
    maybe = sum(line.startswith("This badge may not move") for line in lines)
    assert (ready, maybe) == (badges.count(READY), badges.count(MAYBE))


def test_a_finished_move_with_badges_that_can_move_again_leads_back_to_them() -> None:
    assert REFUSED.can_move_again and not REVOKED.can_move_again and not MAYBE.can_move_again
    page = status_page("tok", [MOVED, REFUSED, REVOKED])
    assert "1 badge can still move: see the note beside it" in page
    assert "<a href='/l/tok'>go back to your badges</a>" in page
    assert "can still move" not in status_page("tok", [MOVED, REVOKED])
    # While the move runs, the page says how it goes, not what to do next.
    assert "can still move" not in status_page("tok", [MOVED, REFUSED, badge(BadgeState.QUEUED)])


def test_the_summary_email_says_which_badges_can_still_move() -> None:
    email = summary("ada@example.org", "https://badges.example.org/l/tok", iter([MOVED, REFUSED, GAVE_UP]))
    said = "2 badges can still move: see the note beside each, then open your link again to move them."
    assert said in email.text and said in email.html
    assert "can still move" not in summary("ada@example.org", "https://x.example/l/t", [MOVED, REVOKED]).text
