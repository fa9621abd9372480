"""The operator's terminal views: what they say, and when the live view stops."""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import Console

from backpack_migrate.console import print_reports, progress_table, settled, watch
from backpack_migrate.services import badgr_answer_class

pytestmark = pytest.mark.unit


def _report(**changes: Any) -> dict[str, Any]:
    report: dict[str, Any] = {
        "export_id": "e1",
        "key": "exports/spring.zip",
        "status": "chunked",
        "learners_listed": 3,
        "learners_on_record": 3,
        "badges_listed": 4,
        "badges_on_record": 4,
        "badges_final": 2,
        "badges_by_state": {"imported": 1, "unreadable": 1, "verified": 2},
        "badge_problems": {"FILE_MISSING": 1},
        "learner_problems": {"INVALID_EMAIL": 2},
        "learner_problem_entries": {"INVALID_EMAIL": [3, 7]},
        "export_problems": [
            {"code": "UNLISTED_FILES", "message": "2 files in the ZIP belong to no learner."}
        ],
    }
    report.update(changes)
    return report


def _text(renderable_printer: Any) -> str:
    out = io.StringIO()
    renderable_printer(Console(file=out, width=160, color_system=None))
    return out.getvalue()


def test_report_tables_name_states_problems_and_manifest_entries() -> None:
    text = _text(lambda console: print_reports([_report()], console))
    assert "Export exports/spring.zip (e1): chunked" in text
    assert "imported (final)" in text and "In your Badgr backpack" in text
    assert "INVALID_EMAIL" in text and "manifest entries 3, 7" in text
    assert "UNLISTED_FILES" in text and "FILE_MISSING" in text
    assert _text(lambda console: print_reports([], console)).strip() == "no exports on record"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, True),  # verified badges wait for their learners, not for the service
        ({"badges_by_state": {"queued": 1, "imported": 3}}, False),
        ({"badges_by_state": {"failed_retryable": 1, "imported": 3}}, False),
        ({"status": "reading"}, False),
        ({"badges_on_record": 3}, False),
        ({"status": "failed", "badges_on_record": 0, "badges_by_state": {}}, True),
    ],
)
def test_an_export_is_settled_when_nothing_is_in_flight(changes: dict[str, Any], expected: bool) -> None:
    assert settled(_report(**changes)) is expected


def test_watch_shows_progress_until_settled_and_gives_up_at_its_timeout() -> None:
    moving = _report(badges_by_state={"queued": 2, "imported": 2})
    answers = iter([[moving], [moving], [_report()]])
    out = io.StringIO()
    assert watch(lambda: next(answers), Console(file=out, width=160), interval=0, timeout=30)
    assert "settled" in out.getvalue()
    assert not watch(lambda: [moving], Console(file=io.StringIO()), interval=0, timeout=0)


def test_progress_table_counts_what_waits_for_learners() -> None:
    text = _text(lambda console: console.print(progress_table([_report()])))
    assert "exports/spring.zip" in text and "chunked (settled)" in text


@pytest.mark.parametrize(
    ("status", "label"), [(200, "2xx"), (201, "2xx"), (400, "4xx"), (429, "429"), (503, "5xx"), (99, "other")]
)
def test_badgr_answers_are_counted_by_class(status: int, label: str) -> None:
    assert badgr_answer_class(status) == label
