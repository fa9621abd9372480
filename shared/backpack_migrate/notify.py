"""The emails learners receive: the invitation with their secure link, and the summary."""

from __future__ import annotations

import html
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .domain import STATE_WORDS, BadgeRecord, BadgeState, movable_counts


@dataclass(frozen=True)
class Email:
    to: str
    subject: str
    text: str
    html: str


class EmailSender(Protocol):
    def send(self, email: Email) -> str: ...


class SesSender:
    def __init__(self, ses: Any, sender: str) -> None:
        self._ses = ses
        self._sender = sender

    def send(self, email: Email) -> str:
        answer = self._ses.send_email(
            Source=self._sender,
            Destination={"ToAddresses": [email.to]},
            Message={
                "Subject": {"Data": email.subject, "Charset": "UTF-8"},
                "Body": {
                    "Text": {"Data": email.text, "Charset": "UTF-8"},
                    "Html": {"Data": email.html, "Charset": "UTF-8"},
                },
            },
        )
        return str(answer["MessageId"])


class RateLimiter:
    """Spaces one process's calls evenly; each notify instance gets its share of the rate."""

    def __init__(self, per_second: float, clock: Any = time.monotonic, sleep: Any = time.sleep) -> None:
        self._interval = 1.0 / per_second
        self._clock = clock
        self._sleep = sleep
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = self._clock()
            delay = self._next - now
            self._next = max(now, self._next) + self._interval
        if delay > 0:
            self._sleep(delay)


def _page(body: str, support_email: str) -> str:
    address = html.escape(support_email)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"></head>'
        '<body style="font-family:sans-serif;max-width:36em;margin:auto">'
        f'{body}<p style="color:#555">Questions or problems? Write to '
        f'<a href="mailto:{address}">{address}</a>.</p></body></html>'
    )


def _signed(text: str, support_email: str) -> str:
    return f"{text}\nQuestions or problems? Write to {support_email}.\n"


def invitation(to: str, link: str, badge_count: int, expires_on: str, support_email: str) -> Email:
    if badge_count == 0:
        # Nothing to move: say so, and what the link is still good for.
        text = (
            "Hello,\n\n"
            "The Mozilla Backpack has closed. Its export lists this address, but no badges, so there "
            "is nothing to move to Badgr.\n\n"
            f"See what we hold about you, or erase it: {link}\n\n"
            f"This link is yours alone and works until {expires_on}. Do not forward it.\n"
        )
        body = (
            "<p>Hello,</p>"
            "<p>The Mozilla Backpack has closed. Its export lists this address, but no badges, so there "
            "is nothing to move to Badgr.</p>"
            f'<p><a href="{html.escape(link)}">See what we hold about you, or erase it</a></p>'
            f"<p>This link is yours alone and works until {html.escape(expires_on)}. Do not forward it.</p>"
        )
        return Email(
            to=to,
            subject="The Mozilla Backpack has closed: no badges to move for you",
            text=_signed(text, support_email),
            html=_page(body, support_email),
        )
    badges = "1 badge" if badge_count == 1 else f"{badge_count} badges"
    text = (
        "Hello,\n\n"
        f"The Mozilla Backpack has closed. We kept {badges} for you and can move them to Badgr, "
        "where you can keep sharing them.\n\n"
        f"See your badges and move them: {link}\n\n"
        "The same link lets you download your badges, or erase what we hold about you.\n\n"
        f"This link is yours alone and works until {expires_on}. Do not forward it.\n"
    )
    body = (
        "<p>Hello,</p>"
        f"<p>The Mozilla Backpack has closed. We kept {html.escape(badges)} for you and can move them "
        "to Badgr, where you can keep sharing them.</p>"
        f'<p><a href="{html.escape(link)}">See your badges and move them</a></p>'
        "<p>The same link lets you download your badges, or erase what we hold about you.</p>"
        f"<p>This link is yours alone and works until {html.escape(expires_on)}. Do not forward it.</p>"
    )
    return Email(
        to=to,
        subject="Your Mozilla Backpack badges are ready to move",
        text=_signed(text, support_email),
        html=_page(body, support_email),
    )


def summary(
    to: str, link: str, badges: Iterable[BadgeRecord], support_email: str, collections: Sequence[str] = ()
) -> Email:
    """The end of a move; ``collections`` are the lines saying what became of the learner's groups."""
    badges = list(badges)
    counts = Counter(badge.state for badge in badges)
    moved = counts[BadgeState.IMPORTED] + counts[BadgeState.ALREADY_IN_BADGR]
    lines = [f"{STATE_WORDS[state]}: {count}" for state, count in sorted(counts.items())]
    left = sum(movable_counts(badges))
    one = left == 1
    again = (
        f"{left} badge{'' if one else 's'} can still move: see the note beside {'it' if one else 'each'}, "
        f"then open your link again to move {'it' if one else 'them'}."
        if left
        else ""
    )
    text = (
        "Hello,\n\n"
        f"Moving your badges to Badgr has finished: {moved} of {counts.total()} "
        "are in your Badgr backpack.\n\n"
        + "\n".join(lines)
        + (f"\n\n{again}" if again else "")
        + ("\n\nYour groups as Badgr collections:\n" + "\n".join(collections) if collections else "")
        + f"\n\nEvery badge, with the reason for any that could not move: {link}\n"
    )
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
    body = (
        "<p>Hello,</p>"
        f"<p>Moving your badges to Badgr has finished: {moved} of {counts.total()} are in your "
        f"Badgr backpack.</p><ul>{items}</ul>"
        + (f"<p>{html.escape(again)}</p>" if again else "")
        + (
            "<p>Your groups as Badgr collections:</p><ul>"
            + "".join(f"<li>{html.escape(line.strip())}</li>" for line in collections)
            + "</ul>"
            if collections
            else ""
        )
        + f'<p><a href="{html.escape(link)}">'
        "See every badge, with the reason for any that could not move</a></p>"
    )
    return Email(
        to=to,
        subject="Your badges have moved to Badgr",
        text=_signed(text, support_email),
        html=_page(body, support_email),
    )
