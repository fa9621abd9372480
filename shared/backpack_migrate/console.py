"""The operator's terminal: report tables, a live view of exports, upload progress (``rich``).

Only the command line imports this module; ``rich`` is not a dependency of the functions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from .domain import FINAL_STATES, STATE_WORDS, BadgeState, ExportStatus

# A badge in one of these is being worked on by the service; the others wait for nobody
# (final) or for the learner (verified: ready, until the learner connects Badgr).
IN_FLIGHT = frozenset({BadgeState.EXTRACTED, BadgeState.QUEUED, BadgeState.FAILED_RETRYABLE})


def _entries(positions: Sequence[int]) -> str:
    shown = ", ".join(str(p) for p in positions[:12])
    return shown + (f" and {len(positions) - 12} more" if len(positions) > 12 else "")


def report_tables(report: dict[str, Any]) -> RenderableType:
    """One export's report: its title and notes, totals, badges by state, and every problem."""
    parts: list[RenderableType] = [
        Text(f"Export {report['key']} ({report['export_id']}): {report['status']}", style="bold")
    ]
    label = "error" if report["status"] == ExportStatus.FAILED.value else "note"
    parts += [Text(f"  {label} {p['code']}: {p['message']}") for p in report["export_problems"]]
    totals = Table(show_header=True)
    totals.add_column("")
    totals.add_column("on record", justify="right")
    totals.add_column("listed", justify="right")
    totals.add_column("final", justify="right")
    totals.add_row("learners", str(report["learners_on_record"]), str(report["learners_listed"]), "")
    totals.add_row(
        "badges",
        str(report["badges_on_record"]),
        str(report["badges_listed"]),
        str(report["badges_final"]),
    )
    parts.append(totals)
    if report["badges_by_state"]:
        states = Table(show_header=True)
        states.add_column("badge state")
        states.add_column("badges", justify="right")
        states.add_column("what the learner reads")
        for state, count in report["badges_by_state"].items():
            known = BadgeState(state) if state in BadgeState._value2member_map_ else None
            words = STATE_WORDS.get(known, "") if known else ""
            final = " (final)" if known in FINAL_STATES else ""
            states.add_row(state + final, str(count), words)
        parts.append(states)
    problems = Table(show_header=True)
    problems.add_column("about")
    problems.add_column("problem")
    problems.add_column("count", justify="right")
    problems.add_column("where")
    entries = report.get("learner_problem_entries", {})
    for code, count in report["learner_problems"].items():
        where = entries.get(code)
        problems.add_row("learner", code, str(count), f"manifest entries {_entries(where)}" if where else "")
    for code, count in report["badge_problems"].items():
        problems.add_row("badge", code, str(count), "")
    for code, count in report.get("group_problems", {}).items():
        problems.add_row("group", code, str(count), "")
    if report.get("groups_by_collection_state"):
        groups = Table(show_header=True)
        groups.add_column("groups as Badgr collections")
        groups.add_column("groups", justify="right")
        for state, count in report["groups_by_collection_state"].items():
            groups.add_row(state, str(count))
        groups.add_row("badges left out of a collection", str(report["badges_left_out_of_collections"]))
        parts.append(groups)
    if problems.row_count:
        parts.append(problems)
    return Group(*parts)


def print_reports(reports: Sequence[dict[str, Any]], console: Console) -> None:
    if not reports:
        console.print("no exports on record")
    for report in reports:
        console.print(report_tables(report))
        console.print()


def in_flight(report: dict[str, Any]) -> int:
    """Badges the service still works on (not final, not waiting for the learner)."""
    return sum(count for state, count in report["badges_by_state"].items() if state in IN_FLIGHT)


def settled(report: dict[str, Any]) -> bool:
    """Nothing left for the service to do on this export until a learner acts."""
    if report["status"] == ExportStatus.FAILED.value:
        return True
    return (
        report["status"] != ExportStatus.READING.value
        and report["badges_on_record"] >= report["badges_listed"]
        and in_flight(report) == 0
    )


def progress_table(reports: Sequence[dict[str, Any]]) -> Table:
    table = Table(title="Exports", title_justify="left")
    table.add_column("export")
    table.add_column("status")
    table.add_column("learners", justify="right")
    table.add_column("badges", justify="right")
    table.add_column("final", justify="right")
    table.add_column("in flight", justify="right")
    table.add_column("waiting for the learner", justify="right")
    table.add_column("by state")
    for report in reports:
        waiting = report["badges_by_state"].get(BadgeState.VERIFIED.value, 0)
        states = ", ".join(f"{state} {count}" for state, count in report["badges_by_state"].items())
        table.add_row(
            report["key"],
            report["status"] + ("" if not settled(report) else " (settled)"),
            f"{report['learners_on_record']}/{report['learners_listed']}",
            f"{report['badges_on_record']}/{report['badges_listed']}",
            str(report["badges_final"]),
            str(in_flight(report)),
            str(waiting),
            states,
        )
    return table


def watch(
    fetch: Callable[[], list[dict[str, Any]]],
    console: Console,
    *,
    interval: float = 2.0,
    timeout: float | None = None,
) -> bool:
    """Show live progress until every export is settled; False when ``timeout`` came first."""
    started = time.monotonic()
    reports = fetch()
    with Live(progress_table(reports), console=console, refresh_per_second=4, transient=False) as live:
        while True:
            if reports and all(settled(r) for r in reports):
                return True
            if timeout is not None and time.monotonic() - started > timeout:
                return False
            time.sleep(interval)
            reports = fetch()
            live.update(progress_table(reports))


def upload_with_progress(s3: Any, path: Path, bucket: str, key: str, console: Console) -> None:
    """Upload in parts (so a big export resumes part by part inside boto3) with a progress bar."""
    from boto3.s3.transfer import TransferConfig

    config = TransferConfig(multipart_threshold=16 * 1024 * 1024, multipart_chunksize=16 * 1024 * 1024)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(f"uploading {path.name}", total=path.stat().st_size)
        s3.upload_file(
            str(path),
            bucket,
            key,
            Config=config,
            Callback=lambda sent: progress.advance(task, sent),
        )
