"""The operator's view of an export: learners, badges by outcome, and every error, by query."""

from __future__ import annotations

from collections import Counter
from typing import Any

from .domain import FINAL_STATES, ExportRecord
from .store import Store


def export_report(store: Store, export: ExportRecord) -> dict[str, Any]:
    states: Counter[str] = Counter()
    problems: Counter[str] = Counter()
    learners: set[str] = set()
    badges = 0
    second_looks = 0
    for badge in store.iter_export_badges(export.export_id):
        badges += 1
        learners.add(badge.learner_id)
        states[badge.state.value] += 1
        second_looks += badge.awaiting_second_look
        if badge.problem is not None:
            problems[badge.problem.code] += 1
    learner_problems: Counter[str] = Counter()
    # Where each learner problem is in the manifest: the operator finds the entries without the
    # report naming any address.
    entries: dict[str, set[int]] = {}
    for learner in store.iter_export_learners(export.export_id):
        learners.add(learner.learner_id)
        for problem in learner.problems:
            learner_problems[problem.code] += 1
            if learner.manifest_entry is not None:
                entries.setdefault(problem.code, set()).add(learner.manifest_entry)
    final = sum(count for state, count in states.items() if state in {s.value for s in FINAL_STATES})
    # Groups of a full-fidelity export: what each became in Badgr, and what was wrong with them.
    collections: Counter[str] = Counter()
    group_problems: Counter[str] = Counter()
    left_out = 0
    for group in store.iter_export_groups(export.export_id):
        collections[group.collection.state if group.collection else "waiting"] += 1
        left_out += len(group.collection.badges_left_out) if group.collection else 0
        for problem in group.problems:
            group_problems[problem.code] += 1
        if group.collection and group.collection.problem:
            group_problems[group.collection.problem.code] += 1
    report: dict[str, Any] = {
        "export_id": export.export_id,
        "key": export.key,
        "status": export.status.value,
        "learners_listed": export.learner_count,
        "learners_on_record": len(learners),
        "badges_listed": export.badge_count,
        "badges_on_record": badges,
        "badges_final": final,
        # Dead-lettered after an import of ours was sent: the reconciler looks in Badgr once more.
        "badges_awaiting_second_look": second_looks,
        "badges_by_state": dict(sorted(states.items())),
        "badge_problems": dict(problems.most_common()),
        "learner_problems": dict(learner_problems.most_common()),
        "learner_problem_entries": {code: sorted(places) for code, places in sorted(entries.items())},
        "export_problems": [problem.model_dump() for problem in export.problems],
    }
    if collections:
        report["groups_by_collection_state"] = dict(sorted(collections.items()))
        report["group_problems"] = dict(group_problems.most_common())
        report["badges_left_out_of_collections"] = left_out
    return report


def format_report(report: dict[str, Any]) -> str:
    lines = [
        f"Export {report['key']} ({report['export_id']}): {report['status']}",
        f"  learners: {report['learners_on_record']} on record of {report['learners_listed']} listed",
        f"  badges:   {report['badges_on_record']} on record of {report['badges_listed']} listed, "
        f"{report['badges_final']} in a final state",
    ]
    if report.get("badges_awaiting_second_look"):
        lines.append(
            f"  {report['badges_awaiting_second_look']} dead-lettered after an import was sent, "
            "awaiting the reconciler's second look in Badgr"
        )
    lines += [f"    {state:<18} {count}" for state, count in report["badges_by_state"].items()]
    for problem in report["export_problems"]:
        label = "error" if report["status"] == "failed" else "note"
        lines.append(f"  {label} {problem['code']}: {problem['message']}")
    if report["learner_problems"]:
        lines.append(
            "  learner problems: " + ", ".join(f"{k} x{v}" for k, v in report["learner_problems"].items())
        )
        for code, places in report.get("learner_problem_entries", {}).items():
            lines.append(f"    {code} at manifest entries {', '.join(str(p) for p in places)}")
    if report["badge_problems"]:
        lines.append(
            "  badge problems:   " + ", ".join(f"{k} x{v}" for k, v in report["badge_problems"].items())
        )
    if report.get("groups_by_collection_state"):
        groups = report["groups_by_collection_state"]
        lines.append(
            f"  groups:   {sum(groups.values())}, as Badgr collections: "
            + ", ".join(f"{state} {count}" for state, count in groups.items())
            + f"; {report['badges_left_out_of_collections']} badges left out of one"
        )
        if report["group_problems"]:
            lines.append(
                "  group problems:   " + ", ".join(f"{k} x{v}" for k, v in report["group_problems"].items())
            )
    return "\n".join(lines)


def format_reconcile_run(run: dict[str, Any]) -> str:
    """The reconciler's last run, in the operator's words."""
    settled = ", ".join(f"{state} {count}" for state, count in sorted(run.get("settled", {}).items()))
    lines = [
        f"Reconciler, last run {run.get('started_at')} to {run.get('finished_at') or 'unfinished'}"
        + (" (cut short; the next run goes on)" if run.get("cut_short") else ""),
        f"  looked at {run.get('looked_at', 0)} items left half-way, "
        f"read {run.get('dead_letters_read', 0)} dead-lettered jobs",
        f"  sent again: {run.get('badges_requeued', 0)} imports, {run.get('verify_jobs_resent', 0)} "
        f"verifications, {run.get('invitations_resent', 0)} invitations; "
        f"{run.get('requests_repaired', 0)} moves finished, {run.get('summaries_sent', 0)} summaries",
        f"  settled against Badgr: {settled or 'none'}",
    ]
    if run.get("kept_waiting"):
        lines.append(
            f"  kept waiting: {run['kept_waiting']} badges past their repairs, not given up while the "
            "migrate queue holds jobs"
        )
    if run.get("backlog_unread"):
        lines.append("  the migrate queue's depth could not be read: no import was given up on this run")
    if run.get("left_for_operator"):
        lines.append(f"  left for an operator: {run['left_for_operator']} (see the dead-letter queues)")
    return "\n".join(lines)
