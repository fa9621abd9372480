"""One gate in front of Badgr for every migrate instance: a shared import rate and a circuit breaker.

The gate is one DynamoDB item. Taking a permit is one conditional update that moves the next
free time slot on by the current interval (1 / rate), so a thousand instances together keep to
``BadgrImportsPerSecond``. A run of failures (5xx, timeouts, 429) opens the circuit: no permit
is given until a cool-down has passed, then one instance probes, and a success closes it. A 429
halves the rate; each success while it is below the configured rate adds a twentieth of it back
(AIMD). Only changes of state cost a second write.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from botocore.exceptions import ClientError

from .connection import Deferred

Outcome = Literal["ok", "failure", "throttled"]

FAILURES_TO_OPEN = 5
COOL_DOWN_MS = 30_000
MAX_SLEEP_MS = 5_000  # a slot further ahead than this is waited for on the queue, not in Lambda
BURST_MS = 1_000  # an idle gate lets this much of the rate go at once
RECOVERY_STEPS = 20  # additive increase: a twentieth of the configured rate per success
SLOWEST_INTERVAL_MS = 10_000  # halving stops at one import every 10 s


class BadgrGate(Protocol):
    def acquire(self, reserved_ms: int | None = None) -> None: ...
    def record(self, outcome: Outcome) -> None: ...
    def circuit_open(self) -> bool: ...


class OpenGate:
    """No gate at all (tests of other parts, and the dev tools)."""

    def acquire(self, reserved_ms: int | None = None) -> None:
        return None

    def circuit_open(self) -> bool:
        return False

    def record(self, outcome: Outcome) -> None:
        return None


@dataclass
class GateState:
    next_ms: int = 0
    interval_ms: int = 100
    failures: int = 0
    open_until_ms: int = 0


def _condition_failed(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


class DynamoGate:
    """The gate as one item (PK=BADGR, SK=GATE) of the migration table."""

    KEY = {"PK": "BADGR", "SK": "GATE"}

    def __init__(
        self,
        table: Any,
        imports_per_second: float,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._table = table
        self._base_interval = max(1, round(1000 / imports_per_second))
        self._clock = clock
        self._sleep = sleep
        self._seen = GateState(interval_ms=self._base_interval)
        self._probing = False

    def _now(self) -> int:
        return int(self._clock() * 1000)

    def _update(self, expression: str, condition: str, values: dict[str, Any]) -> GateState | None:
        try:
            answer = self._table.update_item(
                Key=self.KEY,
                UpdateExpression=expression,
                ConditionExpression=condition,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except ClientError as error:
            if _condition_failed(error):
                return None
            raise
        item = answer["Attributes"]
        self._seen = GateState(
            next_ms=int(item.get("next_ms", 0)),
            interval_ms=int(item.get("interval_ms", self._base_interval)),
            failures=int(item.get("failures", 0)),
            open_until_ms=int(item.get("open_until_ms", 0)),
        )
        return self._seen

    # -- permits -------------------------------------------------------------------------------
    def acquire(self, reserved_ms: int | None = None) -> None:
        """Return when this instance may call Badgr; raise ``Deferred`` when it must wait longer.

        ``reserved_ms`` is a slot taken earlier by this job (it waited on the queue for it).
        """
        now = self._now()
        if (
            reserved_ms is not None
            and reserved_ms <= now + MAX_SLEEP_MS
            and self._seen.failures < FAILURES_TO_OPEN
        ):
            self._sleep(max(0, reserved_ms - now) / 1000)
            return
        closed = "(attribute_not_exists(open_until_ms) OR open_until_ms <= :now) AND failures < :open"
        values = {":now": now, ":open": FAILURES_TO_OPEN, ":floor": now - BURST_MS}
        # Busy: the next slot is the one after the last given. Idle: the next slot is now.
        state = self._update("SET next_ms = next_ms + interval_ms", f"next_ms >= :floor AND {closed}", values)
        if state is None:
            state = self._update(
                "SET next_ms = :start, interval_ms = if_not_exists(interval_ms, :base), "
                "failures = if_not_exists(failures, :zero), "
                "open_until_ms = if_not_exists(open_until_ms, :zero)",
                "(attribute_not_exists(next_ms) OR next_ms < :floor) AND "
                "(attribute_not_exists(failures) OR failures < :open) AND "
                "(attribute_not_exists(open_until_ms) OR open_until_ms <= :now)",
                # The slot given is ``now``; the next one is an interval on (as last seen).
                {**values, ":start": now + self._seen.interval_ms, ":base": self._base_interval, ":zero": 0},
            )
            if state is not None:
                state.next_ms = now + state.interval_ms
        if state is None and self._seen.failures < FAILURES_TO_OPEN:
            # Another instance took the idle slot between our two updates: the gate is busy now,
            # and a permit from it costs one more update, not a wait on the queue.
            state = self._update(
                "SET next_ms = next_ms + interval_ms", f"next_ms >= :floor AND {closed}", values
            )
        if state is None:
            self._when_open(now)
            return
        slot = state.next_ms - state.interval_ms
        wait = slot - now
        if wait > MAX_SLEEP_MS:
            raise Deferred(wait / 1000, reserved_ms=slot)
        if wait > 0:
            self._sleep(wait / 1000)

    def _when_open(self, now: int) -> None:
        item = self._table.get_item(Key=self.KEY, ConsistentRead=True).get("Item") or {}
        failures = int(item.get("failures", 0))
        open_until = int(item.get("open_until_ms", 0))
        if open_until > now:
            raise Deferred((open_until - now) / 1000)
        if failures < FAILURES_TO_OPEN:
            # Closed after all (another instance changed it between our two updates).
            raise Deferred(0.5)
        # Cooled down: one instance probes, and holds the circuit open while it does.
        probe = self._update(
            "SET open_until_ms = :until",
            "open_until_ms = :seen",
            {":until": now + COOL_DOWN_MS, ":seen": open_until},
        )
        if probe is None:
            raise Deferred(COOL_DOWN_MS / 1000)
        self._probing = True

    def circuit_open(self) -> bool:
        """Whether Badgr is being left alone after a run of failures (one eventually consistent
        read: for a caller that would rather not call Badgr then, not for a permit)."""
        item = self._table.get_item(Key=self.KEY).get("Item") or {}
        return (
            int(item.get("failures", 0)) >= FAILURES_TO_OPEN
            and int(item.get("open_until_ms", 0)) > self._now()
        )

    # -- outcomes ------------------------------------------------------------------------------
    def record(self, outcome: Outcome) -> None:
        now = self._now()
        seen = self._seen
        if outcome == "ok":
            if seen.failures or self._probing:
                # Badgr answered: the run of failures is over, and a probe's success closes it.
                self._update(
                    "SET failures = :zero, open_until_ms = :zero", "attribute_exists(PK)", {":zero": 0}
                )
                self._probing = False
            if seen.interval_ms > self._base_interval:
                rate = 1000 / seen.interval_ms + 1000 / self._base_interval / RECOVERY_STEPS
                faster = max(self._base_interval, round(1000 / rate))
                self._update(
                    "SET interval_ms = :new",
                    "interval_ms = :seen",
                    {":new": faster, ":seen": seen.interval_ms},
                )
            return
        self._probing = False
        state = self._update("ADD failures :one", "attribute_exists(PK)", {":one": 1})
        if state is not None and state.failures >= FAILURES_TO_OPEN and state.open_until_ms <= now:
            self._update(
                "SET open_until_ms = :until",
                "open_until_ms = :seen",
                {":until": now + COOL_DOWN_MS, ":seen": state.open_until_ms},
            )
        if outcome == "throttled":
            current = (state or seen).interval_ms
            slower = min(SLOWEST_INTERVAL_MS, current * 2)
            if slower != current:
                self._update(
                    "SET interval_ms = :new", "interval_ms = :seen", {":new": slower, ":seen": current}
                )
