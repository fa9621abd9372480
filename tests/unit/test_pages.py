from __future__ import annotations

import re

import pytest

from backpack_migrate.domain import BadgeRecord, BadgeState, Problem, VerdictSummary
from backpack_migrate.notify import invitation, summary
from backpack_migrate.pages import (
    PageContext,
    landing_page,
    movable_summary,
    readable_date,
    status_page,
    verdict_line,
)

pytestmark = pytest.mark.unit

MISMATCH = Problem(code="RECIPIENT_MISMATCH", message="This badge was issued to another email address.")


SUPPORT = "help@badges.example.org"
CTX = PageContext(
    token="tok", support_email=SUPPORT, badgr_web_url="https://badgr.example", email="pat@example.org"
)
_ids = iter(range(10_000))


def badge(
    state: BadgeState, verdict: VerdictSummary | None = None, problem: Problem | None = None
) -> BadgeRecord:
    return BadgeRecord(
        learner_id="l",
        badge_id=f"b{next(_ids)}",
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
    page = status_page(CTX, [MOVED, REFUSED, REVOKED])
    assert "1 badge can still move: see the note beside it" in page
    assert "<a href='/l/tok'>go back to your badges</a>" in page
    assert "can still move" not in status_page(CTX, [MOVED, REVOKED])
    # While the move runs, the page says how it goes, not what to do next.
    assert "can still move" not in status_page(CTX, [MOVED, REFUSED, badge(BadgeState.QUEUED)])


def test_the_summary_email_says_which_badges_can_still_move() -> None:
    email = summary(
        "ada@example.org", "https://badges.example.org/l/tok", iter([MOVED, REFUSED, GAVE_UP]), SUPPORT
    )
    said = "2 badges can still move: see the note beside each, then open your link again to move them."
    assert said in email.text and said in email.html
    assert (
        "can still move"
        not in summary("ada@example.org", "https://x.example/l/t", [MOVED, REVOKED], SUPPORT).text
    )


PENDING = badge(BadgeState.PENDING, VerdictSummary(valid=True))
QUEUED_DOOMED = badge(BadgeState.QUEUED, NEVER.verdict)  # queued, yet certain to fail: never sent
QUEUED = badge(BadgeState.QUEUED, VerdictSummary(valid=True))
UNREADABLE = badge(BadgeState.UNREADABLE, problem=Problem(code="NOT_AN_IMAGE", message="Not an image."))
CHECKING = badge(BadgeState.EXTRACTED, VerdictSummary(valid=False))
EVERY_KIND = [
    READY,
    MAYBE,
    NEVER,
    MOVED,
    GAVE_UP,
    REFUSED,
    REVOKED,
    PENDING,
    QUEUED_DOOMED,
    QUEUED,
    UNREADABLE,
    CHECKING,
]


@pytest.mark.parametrize(
    ("badges", "summary"),
    [
        ([QUEUED, QUEUED], "2 of your badges are already on their way to Badgr."),
        (
            [READY, QUEUED, MAYBE],
            "1 of your badges is ready to move, 1 more is already on its way to Badgr, "
            "and 1 more may move (see the note beside it).",
        ),
    ],
)
def test_badges_on_their_way_are_never_called_ready_to_move(badges: list[BadgeRecord], summary: str) -> None:
    assert movable_summary(badges) == summary
    assert "Move my badges to Badgr" in landing_page(CTX, "c", badges, requested=True)


def _group_counts(page: str) -> list[int]:
    return [int(n) for n in re.findall(r"<h2>[^<(]+\((\d+)\)</h2>", page)]


@pytest.mark.parametrize("n", range(1, len(EVERY_KIND) + 1))
def test_the_counts_on_every_page_add_up_to_the_badges_listed(n: int) -> None:
    badges = EVERY_KIND[:n]
    landing = landing_page(CTX, "csrf", badges, requested=True)
    listed = landing.count("<li class='badge'")
    assert listed == len(badges)
    assert sum(_group_counts(landing)) == listed
    assert f"We kept {len(badges)} badge" in landing
    status = status_page(CTX, badges)
    assert status.count("<li class='badge'") == len(badges)
    assert sum(_group_counts(status)) == len(badges)
    counts = re.findall(r"<li data-group='[a-z_]+'>[^<]+: (\d+)</li>", status)
    assert sum(int(c) for c in counts) == len(badges)
    value, most = map(int, re.search(r"<progress max='(\d+)' value='(\d+)'", status).groups()[::-1])
    assert most == len(badges) and 0 <= value <= most
    done = re.search(r"Moving your badges: (\d+) of (\d+) done", status)
    if done:
        assert (int(done[1]), int(done[2])) == (value, most)
    else:
        assert value == most and "Moving your badges has finished." in status


def test_a_badge_queued_but_certain_to_fail_is_not_counted_as_moving() -> None:
    page = status_page(CTX, [QUEUED_DOOMED, UNREADABLE, QUEUED])
    assert "Moving to Badgr now: 1</li>" in page
    assert "Cannot be moved: 2</li>" in page
    assert "Moving your badges: 2 of 3 done." in page


def test_outcomes_that_need_the_learner_say_what_to_do_with_which_address() -> None:
    page = status_page(CTX, [PENDING, REFUSED, MOVED])
    assert "Confirm <strong>pat@example.org</strong> in Badgr" in page
    assert "Add <strong>pat@example.org</strong> to your Badgr account" in page
    assert "href='https://badgr.example/profile/profile'" in page
    assert "<a href='/l/tok/status'>come back here</a>" in page
    assert "href='https://badgr.example/recipient/badges'>Open my Badgr backpack</a>" in page
    # Refused for an address our check found is not the learner's: they are not told to add theirs.
    elsewhere = badge(
        BadgeState.REJECTED,
        VerdictSummary(valid=False, errors=[MISMATCH]),
        Problem(code="VERIFY_RECIPIENT_IDENTIFIER", message="Add that address in Badgr and try again."),
    )
    other = status_page(CTX, [elsewhere])
    assert "Add the address this badge was issued to (not <strong>pat@example.org</strong>)" in other
    assert "Add <strong>pat@example.org</strong>" not in other
    # While the move runs there is no backpack button, and the page says it may be closed.
    running = status_page(CTX, [QUEUED, MOVED])
    assert "Open my Badgr backpack" not in running
    assert "You may close this page" in running and "<a href='/l/tok/status'>Refresh</a>" in running
    assert "<script>" in running and "<script>" not in page
    assert "http-equiv" not in running


def test_the_landing_page_names_the_address_the_expiry_badgr_and_the_issuer() -> None:
    ctx = PageContext(
        token="tok",
        support_email=SUPPORT,
        badgr_web_url="https://badgr.example",
        email="ada@example.org",
        expires_at=1_551_607_200,  # 3 March 2019
    )
    named = badge(
        BadgeState.VERIFIED,
        VerdictSummary(valid=True, name="Python", issuer_name="Acme", issued_on="2019-03-03T10:00:00Z"),
    )
    page = landing_page(ctx, "csrf", [named, UNREADABLE], requested=False)
    assert "This page is for <strong>ada@example.org</strong>. Its link works until 3 March 2019." in page
    assert "Badgr is a free website" in page and "href='https://badgr.example/signup'" in page
    assert "Issued by Acme on 3 March 2019." in page
    assert "Unknown issuer (nothing could be read from this file)." in page
    assert f"mailto:{SUPPORT}" in page
    assert "/l/tok/download'>Download my badges</a>" in page and "/l/tok/erase'>Erase my data</a>" in page


def test_readable_dates() -> None:
    assert readable_date("2019-03-03T00:00:00+00:00") == "3 March 2019"
    assert readable_date("2019-12-31") == "31 December 2019"
    assert readable_date("not a date") == "not a date"


def test_a_learner_with_no_badges_is_not_told_we_kept_0_badges() -> None:
    email = invitation("x@example.org", "https://b.example/l/t", 0, "3 March 2019", SUPPORT)
    for body in (email.text, email.html):
        assert "0 badges" not in body and "no badges" in body and SUPPORT in body
    page = landing_page(CTX, "csrf", [], requested=False)
    assert "0 badge" not in page and "no badges" in page and "<button" not in page


def test_every_email_names_the_support_address_in_both_parts() -> None:
    for email in (
        invitation("x@example.org", "https://b.example/l/t", 3, "3 March 2019", SUPPORT),
        summary("x@example.org", "https://b.example/l/t", [MOVED], SUPPORT),
    ):
        assert SUPPORT in email.text and f"mailto:{SUPPORT}" in email.html
