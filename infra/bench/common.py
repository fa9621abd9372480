"""What every part of the benchmark returns, and how it is printed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Part:
    """One part's outcome: a table, notes, and named figures (None where it could not run)."""

    title: str
    headers: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None

    def skip(self, reason: str) -> Part:
        self.skipped = reason
        self.notes.append(f"skipped: {reason}")
        return self


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    if not headers:
        return ""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row[: len(widths)]):
            widths[i] = max(widths[i], len(cell))
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)), line]
    out.extend("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) for row in rows)
    return "\n".join(out)


def render(part: Part) -> str:
    lines = [f"== {part.title} =="]
    table = format_table(part.headers, part.rows)
    if table:
        lines.append(table)
    lines.extend(f"  {note}" for note in part.notes)
    return "\n".join(lines)


def per_second(count: int, seconds: float) -> float | None:
    return round(count / seconds, 2) if seconds > 0 and count > 0 else None


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"
