"""The learner's pages, rendered as plain HTML: readable without JavaScript, escaped everywhere."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from html import escape

from .domain import FINAL_STATES, STATE_WORDS, BadgeRecord, BadgeState, movable_counts

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem;color:#1d1d1f}
h1{font-size:1.6rem}ul.badges{list-style:none;padding:0}
li.badge{display:flex;gap:1rem;align-items:flex-start;border-bottom:1px solid #ddd;padding:.8rem 0}
li.badge img,.noimage{width:72px;height:72px;flex:none;object-fit:contain}
.noimage{box-sizing:border-box;border:2px dashed #bbb;border-radius:50%}
.verdict{font-size:.95rem}.ok{color:#1a7f37}.warn{color:#9a6700}.bad{color:#b42318}
button{font-size:1.05rem;padding:.6rem 1.2rem;border-radius:.4rem;border:0;background:#0b57d0;color:#fff}
.progress{font-weight:600}
"""

_SHOWN_MEDIA = ("image/png", "image/svg+xml")


def _layout(title: str, body: str, refresh: int | None = None) -> str:
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"{meta}<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main>{body}</main></body></html>"
    )


def _badge_title(badge: BadgeRecord) -> str:
    verdict = badge.verdict
    if verdict and verdict.name:
        return verdict.name
    # Nothing names it (its issuer's site is gone, say): the file it came in is all there is.
    return f"Unnamed badge ({badge.file_name.rsplit('/', 1)[-1]})"


def _badge_facts(badge: BadgeRecord) -> str:
    verdict = badge.verdict
    if verdict is None:
        return ""
    facts = []
    if verdict.issuer_name:
        facts.append(f"Issued by {escape(verdict.issuer_name)}")
    if verdict.issued_on:
        facts.append(f"{'on' if facts else 'Issued on'} {escape(verdict.issued_on[:10])}")
    return f"<div class='facts'>{' '.join(facts)}</div>" if facts else ""


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
        return "bad", line
    verdict = badge.verdict
    if badge.state == BadgeState.EXTRACTED or verdict is None:
        return "warn", "We are still checking this badge."
    if verdict.certain_to_fail:
        reason = verdict.errors[0].message if verdict.errors else "This badge is not valid."
        return "bad", f"This badge cannot be moved: {reason}"
    if not verdict.valid and verdict.errors:
        return "warn", f"This badge may not move: {verdict.errors[0].message}"
    if badge.state in (BadgeState.QUEUED, BadgeState.FAILED_RETRYABLE):
        return "warn", STATE_WORDS[badge.state] + "."
    return "ok", "This badge is valid and ready to move."


def _badge_items(token: str, badges: Sequence[BadgeRecord]) -> str:
    items = []
    for badge in badges:
        css, line = verdict_line(badge)
        # Only files that really are PNG or SVG get an <img>; anything else would show a broken image.
        image = (
            f"<img alt='' src='/l/{escape(token)}/badges/{escape(badge.badge_id)}/image'>"
            if badge.member is not None and badge.media_type in _SHOWN_MEDIA
            else "<span class='noimage' aria-hidden='true'></span>"
        )
        items.append(
            f"<li class='badge' data-state='{escape(badge.state.value)}'>{image}<div>"
            f"<div class='name'><strong>{escape(_badge_title(badge))}</strong></div>{_badge_facts(badge)}"
            f"<div class='verdict {css}'>{escape(line)}</div></div></li>"
        )
    return f"<ul class='badges'>{''.join(items)}</ul>"


def movable_summary(badges: Sequence[BadgeRecord]) -> str | None:
    """How many badges a move would send, told apart by how sure we are; None when there are none."""
    ready, uncertain = movable_counts(badges)
    note = f"see the note beside {'it' if uncertain == 1 else 'each'}"
    if ready and uncertain:
        return (
            f"{ready} of your badges {'is' if ready == 1 else 'are'} ready to move, "
            f"and {uncertain} more may move ({note})."
        )
    if ready:
        return f"{ready} of your badges {'is' if ready == 1 else 'are'} ready to move."
    if uncertain:
        return f"{uncertain} of your badges may move ({note})."
    return None


def landing_page(
    token: str, csrf: str, badges: Sequence[BadgeRecord], requested: bool, groups_html: str = ""
) -> str:
    summary = movable_summary(badges)
    if summary:
        action = (
            f"<form method='post' action='/l/{escape(token)}/connect'>"
            f"<input type='hidden' name='csrf' value='{escape(csrf)}'>"
            f"<p>{escape(summary)} Badgr will ask you to sign in and allow us to add them "
            "to your backpack.</p><button type='submit'>Move my badges to Badgr</button></form>"
        )
    else:
        action = "<p>None of these badges is waiting to move.</p>"
    if requested:
        action += f"<p><a href='/l/{escape(token)}/status'>See how the move is going</a></p>"
    body = (
        "<h1>Your Mozilla Backpack badges</h1>"
        f"<p>We kept {len(badges)} badge{'s' if len(badges) != 1 else ''} from your Backpack. "
        "Each one shows whether it can move to Badgr, and why not if it cannot.</p>"
        f"{action}{_badge_items(token, badges)}{groups_html}"
    )
    return _layout("Your badges", body)


def status_page(token: str, badges: Sequence[BadgeRecord], groups_html: str = "") -> str:
    counts = Counter(badge.state for badge in badges)
    done = sum(counts[state] for state in FINAL_STATES)
    finished = done == len(badges)
    lines = "".join(
        f"<li>{escape(STATE_WORDS[state])}: {count}</li>" for state, count in sorted(counts.items())
    )
    headline = (
        "Moving your badges has finished."
        if finished
        else f"Moving your badges: {done} of {len(badges)} done."
    )
    again = ""
    left = sum(movable_counts(badges)) if finished else 0
    if left:
        one = left == 1
        again = (
            f"<p class='again'>{left} badge{'' if one else 's'} can still move: see the note beside "
            f"{'it' if one else 'each'}, then <a href='/l/{escape(token)}'>go back to your badges</a> "
            f"to move {'it' if one else 'them'} again.</p>"
        )
    body = (
        f"<h1>Your move to Badgr</h1><p class='progress' data-finished='{str(finished).lower()}'>"
        f"{escape(headline)}</p><ul>{lines}</ul>{again}{groups_html}{_badge_items(token, badges)}"
    )
    return _layout("Your move to Badgr", body, refresh=None if finished else 3)


def message_page(title: str, message: str) -> str:
    return _layout(title, f"<h1>{escape(title)}</h1><p>{escape(message)}</p>")
