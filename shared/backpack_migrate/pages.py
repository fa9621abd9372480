"""The learner's pages, rendered as plain HTML: readable without JavaScript, escaped everywhere.

Badges are shown grouped by what will happen to them (``domain.badge_group``): the counts a
page gives are the sizes of those groups, so they always add up to the badges it lists. The
only script, on the status page, is ``templates/status.js``, allowed by its hash (``SCRIPT_HASH``).
"""

from __future__ import annotations

import base64
import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from importlib import resources

from .domain import (
    GROUP_WORDS,
    STATE_WORDS,
    BadgeGroup,
    BadgeRecord,
    BadgeState,
    badge_group,
    is_settled,
    movable_counts,
)


def _template(name: str) -> str:
    return resources.files(__package__).joinpath("templates", name).read_text(encoding="utf-8")


_STYLE = _template("style.css")
STATUS_SCRIPT = _template("status.js")
# The Content-Security-Policy allows this script and no other.
SCRIPT_HASH = "sha256-" + base64.b64encode(hashlib.sha256(STATUS_SCRIPT.encode()).digest()).decode()

_SHOWN_MEDIA = ("image/png", "image/svg+xml")
# Groups in the order a learner reads them: what needs them first, what will not move last.
GROUP_ORDER = (
    BadgeGroup.NEEDS_YOU,
    BadgeGroup.READY,
    BadgeGroup.MAYBE,
    BadgeGroup.CHECKING,
    BadgeGroup.MOVING,
    BadgeGroup.MOVED,
    BadgeGroup.CANNOT,
)


@dataclass(frozen=True)
class PageContext:
    """What every learner page needs besides its badges."""

    token: str
    support_email: str
    badgr_web_url: str
    email: str | None = None  # the learner's own address, decrypted for this page only
    expires_at: int | None = None  # when the link stops working

    @property
    def base(self) -> str:
        return f"/l/{escape(self.token)}"

    def badgr(self, path: str) -> str:
        return escape(f"{self.badgr_web_url.rstrip('/')}{path}")


def readable_date(value: str | int | None) -> str:
    """'2019-03-03T10:00:00Z' (or a Unix time) as '3 March 2019'; the text itself if unreadable."""
    if value is None:
        return ""
    try:
        if isinstance(value, int):
            when = datetime.fromtimestamp(value, tz=UTC)
        else:
            when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except (ValueError, OSError, OverflowError):
        return str(value)
    return f"{when.day} {when:%B %Y}"


def _support(support_email: str) -> str:
    address = escape(support_email)
    return f"<a href='mailto:{address}'>{address}</a>"


def layout(title: str, body: str, support_email: str, script: str | None = None) -> str:
    tag = f"<script>{script}</script>" if script else ""
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main>{body}</main>"
        f"<footer><p>Questions or problems? Write to {_support(support_email)}.</p></footer>"
        f"{tag}</body></html>"
    )


def badge_title(badge: BadgeRecord) -> str:
    verdict = badge.verdict
    if verdict and verdict.name:
        return verdict.name
    # Nothing names it (its issuer's site is gone, say): the file it came in is all there is.
    return f"Unnamed badge ({badge.file_name.rsplit('/', 1)[-1]})"


def _issuer_unknown_reason(badge: BadgeRecord) -> str:
    if badge.state == BadgeState.UNREADABLE or badge.verdict is None:
        return "nothing could be read from this file"
    errors = badge.verdict.errors
    if errors:
        return errors[0].message.rstrip(".")
    return "the badge does not name its issuer"


def _badge_facts(badge: BadgeRecord) -> str:
    verdict = badge.verdict
    if verdict and verdict.issuer_name:
        facts = f"Issued by {escape(verdict.issuer_name)}"
    else:
        facts = f"Unknown issuer ({escape(_issuer_unknown_reason(badge))})"
    if verdict and verdict.issued_on:
        facts += f" on {escape(readable_date(verdict.issued_on))}"
    return f"<div class='facts'>{facts}.</div>"


def verdict_line(badge: BadgeRecord) -> tuple[str, str]:
    """A css class and one sentence about where this badge stands, in plain words."""
    if badge.state == BadgeState.UNREADABLE:
        reason = badge.problem.message if badge.problem else "Nothing could be read from this file."
        return "bad", f"This badge cannot be moved: {reason}"
    if badge.state in (BadgeState.IMPORTED, BadgeState.ALREADY_IN_BADGR):
        return "ok", STATE_WORDS[badge.state] + "."
    if badge.state == BadgeState.PENDING:
        return "warn", STATE_WORDS[badge.state] + "."
    if badge.state in (BadgeState.REJECTED, BadgeState.DEAD_LETTERED):
        reason = badge.problem.message if badge.problem else STATE_WORDS[badge.state]
        line = f"Could not be moved: {reason}"
        verdict = badge.verdict
        if badge.badgr and verdict and verdict.valid:
            line += " (Our own check found this badge valid; Badgr did not accept it.)"
        return ("warn" if badge.can_move_again else "bad"), line
    verdict = badge.verdict
    if verdict is not None and verdict.certain_to_fail:
        reason = verdict.errors[0].message if verdict.errors else "This badge is not valid."
        return "bad", f"This badge cannot be moved: {reason}"
    if badge.state == BadgeState.EXTRACTED or verdict is None:
        return "warn", "We are still checking this badge."
    if not verdict.valid and verdict.errors:
        return "warn", f"This badge may not move: {verdict.errors[0].message}"
    if badge.state in (BadgeState.QUEUED, BadgeState.FAILED_RETRYABLE):
        return "warn", STATE_WORDS[badge.state] + "."
    return "ok", "This badge is valid and ready to move."


def outcome_line(badge: BadgeRecord) -> str:
    return verdict_line(badge)[1]


def _badge_item(ctx: PageContext, badge: BadgeRecord) -> str:
    css, line = verdict_line(badge)
    # Only files that really are PNG or SVG get an <img>; anything else would show a broken image.
    image = (
        f"<img alt='' src='{ctx.base}/badges/{escape(badge.badge_id)}/image'>"
        if badge.member is not None and badge.media_type in _SHOWN_MEDIA
        else "<span class='noimage' aria-hidden='true'></span>"
    )
    return (
        f"<li class='badge' data-badge='{escape(badge.badge_id)}' data-state='{escape(badge.state.value)}' "
        f"data-group='{badge_group(badge).value}'>{image}<div>"
        f"<div class='name'><strong>{escape(badge_title(badge))}</strong></div>{_badge_facts(badge)}"
        f"<div class='verdict {css}'>{escape(line)}</div></div></li>"
    )


def _needs_you(ctx: PageContext, badges: Sequence[BadgeRecord]) -> str:
    """Exactly what the learner has to do in Badgr, with the address and the links."""
    address = f"<strong>{escape(ctx.email)}</strong>" if ctx.email else "your address"
    steps = []
    if any(b.state == BadgeState.PENDING for b in badges):
        steps.append(
            f"<p class='todo'>Confirm {address} in Badgr (<a href='{ctx.badgr('/profile/profile')}'>"
            "open your Badgr account</a>: Badgr sent you an email to confirm it), then "
            f"<a href='{ctx.base}/status'>come back here</a>.</p>"
        )
    refused = [b for b in badges if b.can_move_again]
    # Our check tells the two cases apart: issued to the learner's own address (which their Badgr
    # account lacks), or to another one, which only the learner knows.
    to_other = [b for b in refused if _issued_to_another_address(b)]
    to_own = [b for b in refused if b not in to_other]
    if to_own:
        steps.append(_add_address_step(ctx, f"Add {address}", len(to_own)))
    if to_other:
        which = "the address this badge was" if len(to_other) == 1 else "the addresses these badges were"
        not_yours = f" (not {address})" if ctx.email else ""
        steps.append(_add_address_step(ctx, f"Add {which} issued to{not_yours}", len(to_other)))
    return "".join(steps)


def _add_address_step(ctx: PageContext, what: str, count: int) -> str:
    return (
        f"<p class='todo'>{what} to your Badgr account "
        f"(<a href='{ctx.badgr('/profile/profile')}'>open your Badgr account</a>), then "
        f"<a href='{ctx.base}'>come back here</a> to move {'it' if count == 1 else 'them'} again.</p>"
    )


def _issued_to_another_address(badge: BadgeRecord) -> bool:
    verdict = badge.verdict
    return verdict is not None and any(e.code == "RECIPIENT_MISMATCH" for e in verdict.errors)


def _groups(ctx: PageContext, badges: Sequence[BadgeRecord]) -> str:
    grouped: dict[BadgeGroup, list[BadgeRecord]] = {}
    for badge in badges:
        grouped.setdefault(badge_group(badge), []).append(badge)
    sections = []
    for group in GROUP_ORDER:
        members = grouped.get(group)
        if not members:
            continue
        todo = _needs_you(ctx, members) if group == BadgeGroup.NEEDS_YOU else ""
        sections.append(
            f"<section class='group' data-group='{group.value}'>"
            f"<h2>{escape(GROUP_WORDS[group])} ({len(members)})</h2>{todo}"
            f"<ul class='badges'>{''.join(_badge_item(ctx, b) for b in members)}</ul></section>"
        )
    return "".join(sections)


def group_counts(badges: Sequence[BadgeRecord]) -> dict[BadgeGroup, int]:
    counted = Counter(badge_group(b) for b in badges)
    return {group: counted[group] for group in GROUP_ORDER if counted[group]}


def movable_summary(badges: Sequence[BadgeRecord]) -> str | None:
    """How many badges a move would send, told apart by how sure we are; None when there are none.

    Badges already on their way are named as such, not as "ready": they are sent again only if
    their first move was lost, and Badgr never takes a badge twice.
    """
    ready, moving, uncertain = movable_counts(badges)
    note = f"see the note beside {'it' if uncertain == 1 else 'each'}"
    phrases: list[str] = []

    def count(n: int) -> str:
        return f"{n} more" if phrases else f"{n} of your badges"

    if ready:
        phrases.append(f"{count(ready)} {'is' if ready == 1 else 'are'} ready to move")
    if moving:
        its = "its" if moving == 1 else "their"
        phrases.append(f"{count(moving)} {'is' if moving == 1 else 'are'} already on {its} way to Badgr")
    if uncertain:
        phrases.append(f"{count(uncertain)} may move ({note})")
    if not phrases:
        return None
    if len(phrases) == 1:
        return phrases[0] + "."
    return ", ".join(phrases[:-1]) + ", and " + phrases[-1] + "."


def _your_data(ctx: PageContext) -> str:
    return (
        "<section class='data'><h2>Your badge data</h2>"
        f"<p><a href='{ctx.base}/download'>Download my badges</a>: a ZIP of every badge image as "
        "the Backpack kept it, with a list of their details.</p>"
        f"<p><a href='{ctx.base}/erase'>Erase my data</a>: delete everything this service holds "
        "about you.</p></section>"
    )


def landing_page(
    ctx: PageContext, csrf: str, badges: Sequence[BadgeRecord], requested: bool, groups_html: str = ""
) -> str:
    who = f"This page is for <strong>{escape(ctx.email)}</strong>." if ctx.email else ""
    until = f" Its link works until {escape(readable_date(ctx.expires_at))}." if ctx.expires_at else ""
    intro = f"<p class='for'>{who}{until}</p>" if who or until else ""
    badgr = (
        "<p class='badgr'>Badgr is a free website where you keep your badges and share them; "
        f"if you have no Badgr account yet, <a href='{ctx.badgr('/signup')}'>create one on Badgr</a> "
        "first.</p>"
    )
    if not badges:
        body = (
            f"<h1>Your Mozilla Backpack badges</h1>{intro}"
            "<p class='kept'>The Backpack's export lists your address, but no badges, so there is "
            "nothing to move.</p>"
            f"{_your_data(ctx)}"
        )
        return layout("Your badges", body, ctx.support_email)
    summary = movable_summary(badges)
    if summary:
        action = (
            f"<form method='post' action='{ctx.base}/connect'>"
            f"<input type='hidden' name='csrf' value='{escape(csrf)}'>"
            f"<p>{escape(summary)} Badgr will ask you to sign in and allow us to add them "
            "to your backpack.</p><button type='submit'>Move my badges to Badgr</button></form>"
        )
    else:
        action = "<p>None of these badges is waiting to move.</p>"
    if requested:
        action += f"<p><a href='{ctx.base}/status'>See how the move is going</a></p>"
    count = f"{len(badges)} badge{'s' if len(badges) != 1 else ''}"
    body = (
        f"<h1>Your Mozilla Backpack badges</h1>{intro}"
        f"<p class='kept'>We kept {count} from your Backpack. They are grouped below by what will "
        "happen to them, with the reason for any that cannot move.</p>"
        f"{badgr}{action}{_groups(ctx, badges)}{groups_html}{_your_data(ctx)}"
    )
    return layout("Your badges", body, ctx.support_email)


@dataclass(frozen=True)
class Progress:
    total: int
    done: int
    finished: bool
    digest: str  # changes whenever any badge's state does


def progress_of(badges: Sequence[BadgeRecord]) -> Progress:
    done = sum(is_settled(b) for b in badges)
    states = "|".join(f"{b.badge_id}:{b.state.value}" for b in badges)
    return Progress(
        total=len(badges),
        done=done,
        finished=done == len(badges),
        digest=hashlib.sha256(states.encode()).hexdigest()[:16],
    )


def status_region(ctx: PageContext, badges: Sequence[BadgeRecord]) -> str:
    """The part of the status page that changes as the move goes on (status.json carries it)."""
    progress = progress_of(badges)
    headline = (
        "Moving your badges has finished."
        if progress.finished
        else f"Moving your badges: {progress.done} of {progress.total} done."
    )
    counts = "".join(
        f"<li data-group='{group.value}'>{escape(GROUP_WORDS[group])}: {count}</li>"
        for group, count in group_counts(badges).items()
    )
    after = ""
    if progress.finished:
        left = sum(movable_counts(badges))
        if left:
            one = left == 1
            after += (
                f"<p class='again'>{left} badge{'' if one else 's'} can still move: see the note beside "
                f"{'it' if one else 'each'}, then <a href='{ctx.base}'>go back to your badges</a> "
                f"to move {'it' if one else 'them'} again.</p>"
            )
        if any(badge_group(b) == BadgeGroup.MOVED for b in badges):
            after += (
                f"<p><a class='button' href='{ctx.badgr('/recipient/badges')}'>Open my Badgr backpack</a></p>"
            )
    else:
        after = "<p class='close'>You may close this page: we will email you when the move has finished.</p>"
    return (
        f"<p class='progress' id='headline' data-finished='{str(progress.finished).lower()}'>"
        f"{escape(headline)}</p>"
        f"<progress max='{progress.total}' value='{progress.done}' aria-labelledby='headline'>"
        f"{progress.done} of {progress.total}</progress>"
        f"<ul class='counts'>{counts}</ul>{after}{_groups(ctx, badges)}"
    )


def status_page(ctx: PageContext, badges: Sequence[BadgeRecord], groups_html: str = "") -> str:
    progress = progress_of(badges)
    # Without script, a link reloads the page; with it, status.js polls status.json instead.
    refresh = "" if progress.finished else f"<p class='refresh'><a href='{ctx.base}/status'>Refresh</a></p>"
    body = (
        f"<h1>Your move to Badgr</h1><div id='live' data-digest='{progress.digest}' "
        f"data-finished='{str(progress.finished).lower()}'>{status_region(ctx, badges)}</div>"
        f"{groups_html}{refresh}"
    )
    return layout(
        "Your move to Badgr", body, ctx.support_email, script=None if progress.finished else STATUS_SCRIPT
    )


def message_page(title: str, message: str, support_email: str) -> str:
    return layout(title, f"<h1>{escape(title)}</h1><p>{escape(message)}</p>", support_email)


def not_found_page(support_email: str) -> str:
    return message_page(
        "Page not found",
        "There is no page at this address. Please open the link from your email again.",
        support_email,
    )


def erase_confirm_page(ctx: PageContext, csrf: str, badge_count: int, export_gone_by: str | None) -> str:
    moved = (
        "Badges already in your Badgr backpack stay there: they are yours in Badgr, and you can "
        "delete them there."
    )
    export = (
        f" The export file the Backpack's operators uploaded still holds a copy of your badges and "
        f"address until it expires, by {escape(export_gone_by)}; nothing reads it for you any more."
        if export_gone_by
        else ""
    )
    body = (
        "<h1>Erase my data</h1>"
        f"<p>This deletes everything this service holds about you: your address (kept encrypted), "
        f"the record of your {badge_count} badge{'' if badge_count == 1 else 's'}, your visits and "
        f"your connection to Badgr. This link will stop working. {moved}{export}</p>"
        "<p>Badgr also remembers that you allowed this service to add badges to your backpack: you "
        f"can remove that in <a href='{ctx.badgr('/profile/profile')}'>your Badgr account</a>.</p>"
        f"<p>You may want to <a href='{ctx.base}/download'>download your badges</a> first.</p>"
        f"<form method='post' action='{ctx.base}/erase'>"
        f"<input type='hidden' name='csrf' value='{escape(csrf)}'>"
        "<button type='submit' class='danger'>Erase my data now</button></form>"
        f"<p><a href='{ctx.base}'>Keep my data and go back to my badges</a></p>"
    )
    return layout("Erase my data", body, ctx.support_email)


def erased_page(support_email: str, export_gone_by: str | None) -> str:
    export = (
        f" The export file itself expires by {export_gone_by}, with every other learner's in it."
        if export_gone_by
        else ""
    )
    return message_page(
        "Your data has been erased",
        "We deleted everything this service held about you, and a new copy of the Backpack's export "
        f"will not bring it back or email you.{export}",
        support_email,
    )
