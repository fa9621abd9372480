"""EventBridge schedules (SAM ``Schedule`` and ``ScheduleV2`` events) run at their rate, scaled.

Only ``rate(...)`` expressions have a period to scale; a ``cron(...)`` schedule is reported and
not run, so nothing runs at a time the template does not say.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from infra.local.cloudformation import ACCOUNT_ID, REGION
from infra.local.lambda_runtime import FunctionSpec, InvocationKilled, Invoker

log = logging.getLogger("backpack_migrate.local_stack")

_UNITS = {"minute": 60, "minutes": 60, "hour": 3600, "hours": 3600, "day": 86400, "days": 86400}


def rate_seconds(expression: str) -> float | None:
    """The period of ``rate(5 minutes)`` in seconds; None for anything else (cron)."""
    match = re.fullmatch(r"\s*rate\(\s*(\d+)\s+([a-z]+)\s*\)\s*", expression)
    if not match or match.group(2) not in _UNITS:
        return None
    return int(match.group(1)) * _UNITS[match.group(2)]


@dataclass
class Schedule:
    function: FunctionSpec
    event_name: str
    kind: str  # Schedule | ScheduleV2
    period_s: float
    payload: dict[str, Any] | None  # the event's Input, when the template gives one

    def event(self) -> dict[str, Any]:
        if self.payload is not None:
            return dict(self.payload)
        now = datetime.now(UTC)
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Scheduled Event",
            "source": "aws.events" if self.kind == "Schedule" else "aws.scheduler",
            "account": ACCOUNT_ID,
            "time": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": REGION,
            "resources": [
                f"arn:aws:events:{REGION}:{ACCOUNT_ID}:rule/{self.function.logical_id}{self.event_name}"
            ],
            "detail": {},
        }


def find_schedules(sam_template: dict[str, Any], functions: dict[str, FunctionSpec]) -> list[Schedule]:
    """Every enabled Schedule/ScheduleV2 event of the template's functions."""
    found = []
    for logical_id, resource in sam_template.get("Resources", {}).items():
        if resource.get("Type") != "AWS::Serverless::Function" or logical_id not in functions:
            continue
        for event_name, event in (resource.get("Properties", {}).get("Events") or {}).items():
            kind = event.get("Type")
            if kind not in ("Schedule", "ScheduleV2"):
                continue
            props = event.get("Properties", {})
            expression = str(props.get("Schedule") or props.get("ScheduleExpression") or "")
            if props.get("Enabled") is False or str(props.get("State", "ENABLED")).upper() == "DISABLED":
                continue
            period = rate_seconds(expression)
            if period is None:
                log.warning(
                    "%s.%s: %r is not a rate; the local stack does not run it",
                    logical_id,
                    event_name,
                    expression,
                )
                continue
            raw_input = props.get("Input")
            payload = json.loads(raw_input) if isinstance(raw_input, str) else None
            found.append(Schedule(functions[logical_id], event_name, kind, float(period), payload))
    return found


class Scheduler:
    """One thread per schedule: wait a (scaled) period, invoke, and again."""

    def __init__(self, invoker: Invoker, stop: threading.Event, *, time_scale: float) -> None:
        self._invoker = invoker
        self._stop = stop
        self.time_scale = time_scale
        self.schedules: list[Schedule] = []
        self.runs: dict[str, int] = {}

    def threads(self) -> list[tuple[Callable[[], None], str]]:
        return [
            (functools.partial(self._run, s), f"local-schedule-{s.function.logical_id}-{s.event_name}")
            for s in self.schedules
        ]

    def _run(self, schedule: Schedule) -> None:
        while not self._stop.wait(schedule.period_s * self.time_scale):
            with self._invoker.running_one():
                try:
                    self._invoker.invoke(schedule.function, schedule.event())
                except (Exception, InvocationKilled):
                    log.exception("scheduled %s failed", schedule.function.logical_id)
            key = schedule.function.logical_id
            self.runs[key] = self.runs.get(key, 0) + 1
