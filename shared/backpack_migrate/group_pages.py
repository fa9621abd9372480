"""A Backpack user's groups in plain words: on the landing page (before), and as the Badgr
collections they became on the status page and in the summary email (after)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from .domain import BadgeRecord, GroupRecord
from .groups import collection_name


def _titles(badges: Sequence[BadgeRecord]) -> dict[int, str]:
    from .pages import badge_title

    return {b.backpack_badge_id: badge_title(b) for b in badges if b.backpack_badge_id is not None}


def _count(n: int) -> str:
    return "1 badge" if n == 1 else f"{n} badges"


def groups_before(groups: Sequence[GroupRecord], badges: Sequence[BadgeRecord]) -> str:
    """The groups as the Backpack had them, and what will happen to them."""
    if not groups:
        return ""
    titles = _titles(badges)
    items = []
    for group in groups:
        names = [titles[i] for i in group.badge_ids if i in titles]
        kind = "public" if group.public else "private"
        portfolio = (
            f"<div class='portfolio'>Its page: “{escape(group.portfolio_title)}”</div>"
            if group.portfolio_title
            else ""
        )
        listed = "".join(f"<li>{escape(name)}</li>" for name in names) or "<li>No badges</li>"
        items.append(
            f"<li class='group' data-group='{group.group_id}'>"
            f"<strong>{escape(collection_name(group))}</strong> "
            f"({kind}, {_count(len(names))}){portfolio}<ul>{listed}</ul></li>"
        )
    return (
        "<section class='groups'><h2>Your groups</h2><p>Once your badges have moved, each group becomes "
        "a collection in Badgr with the badges of it that arrived (public groups as public collections)."
        f"</p><ul>{''.join(items)}</ul></section>"
    )


def collection_lines(groups: Sequence[GroupRecord], badges: Sequence[BadgeRecord]) -> list[str]:
    """What became of each group: one line, then one line per badge that could not join, and why."""
    titles = _titles(badges)
    lines = []
    for group in groups:
        name = collection_name(group)
        c = group.collection
        if c is None or c.state == "creating":
            lines.append(f"“{name}”: the collection is being made.")
        elif c.state == "skipped":
            reason = f" {c.problem.message}" if c.problem else ""
            lines.append(f"“{name}”: no collection was made.{reason}")
        else:
            kind = "public" if c.published else "private"
            lines.append(
                f"“{name}”: made in Badgr as a {kind} collection with {_count(len(c.assertion_ids))}."
            )
        for left in c.badges_left_out if c else []:
            title = titles.get(left.badge_id, f"Badge {left.badge_id}")
            lines.append(f"  Not in it: {title}. {left.reason}")
    return lines


def groups_after(groups: Sequence[GroupRecord], badges: Sequence[BadgeRecord]) -> str:
    """The status page's section on collections."""
    if not groups:
        return ""
    items = []
    for line in collection_lines(groups, badges):
        if line.startswith("  "):
            items.append(f"<li class='left-out'>{escape(line.strip())}</li>")
        else:
            items.append(f"<li class='collection'>{escape(line)}</li>")
    return (
        "<section class='collections'><h2>Your groups as Badgr collections</h2>"
        f"<ul>{''.join(items)}</ul></section>"
    )
