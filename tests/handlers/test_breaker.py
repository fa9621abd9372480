"""The shared Badgr gate on moto's DynamoDB: one rate and one circuit for every instance."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from backpack_migrate.breaker import COOL_DOWN_MS, FAILURES_TO_OPEN, MAX_SLEEP_MS, DynamoGate
from backpack_migrate.connection import Deferred
from tests.handlers.conftest import _table


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


class CountingTable:
    """The boto3 table, counting the calls each gate makes."""

    def __init__(self, table: Any) -> None:
        self._table = table
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._table, name)
        if not callable(attribute):
            return attribute

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return attribute(*args, **kwargs)

        return counted


@pytest.fixture
def table() -> Iterator[CountingTable]:
    with mock_aws():
        _table(boto3.client("dynamodb", region_name="us-east-1"), "migration", ["PK", "SK"], gsi=True)
        yield CountingTable(boto3.resource("dynamodb", region_name="us-east-1").Table("migration"))


def _gates(table: CountingTable, clock: Clock, count: int, rate: float = 10.0) -> list[DynamoGate]:
    return [DynamoGate(table, rate, clock=clock, sleep=clock.sleep) for _ in range(count)]


def test_instances_share_one_rate_with_one_update_per_permit(table: CountingTable) -> None:
    clock = Clock()
    gates = _gates(table, clock, 3)
    gates[0].acquire()  # the first permit creates the gate
    table.calls.clear()
    clock.slept.clear()
    for i in range(30):
        gates[i % 3].acquire()
    assert table.calls == ["update_item"] * 30
    # Thirty permits at 10 per second from three instances: each 100 ms after the one before.
    assert clock.slept == pytest.approx([0.1 * (i + 1) for i in range(30)][: len(clock.slept)])
    assert max(clock.slept) == pytest.approx(3.0)


def test_a_slot_too_far_ahead_is_waited_for_on_the_queue_and_kept(table: CountingTable) -> None:
    clock = Clock()
    (gate,) = _gates(table, clock, 1, rate=1.0)
    for _ in range(MAX_SLEEP_MS // 1000 + 1):
        gate.acquire()
    with pytest.raises(Deferred) as waiting:
        gate.acquire()
    assert waiting.value.delay == pytest.approx(6.0)
    slot = waiting.value.reserved_ms
    assert slot is not None
    # When the job comes back at its slot, it goes without queueing for another one.
    clock.now = slot / 1000
    table.calls.clear()
    gate.acquire(reserved_ms=slot)
    assert table.calls == []


def test_a_run_of_failures_opens_the_circuit_for_every_instance_then_one_probe_closes_it(
    table: CountingTable,
) -> None:
    clock = Clock()
    one, other = _gates(table, clock, 2)
    assert not other.circuit_open()
    for _ in range(FAILURES_TO_OPEN):
        one.acquire()
        one.record("failure")
    assert other.circuit_open()  # what a web request asks before it would call Badgr
    with pytest.raises(Deferred) as waiting:
        other.acquire()
    assert waiting.value.delay == pytest.approx(COOL_DOWN_MS / 1000, abs=0.2)
    clock.now += COOL_DOWN_MS / 1000 + 1
    other.acquire()  # the probe
    assert one.circuit_open()  # held open while the probe runs
    with pytest.raises(Deferred):
        one.acquire()  # only one probe at a time
    other.record("ok")
    assert not one.circuit_open()
    one.acquire()  # closed again
    one.record("ok")


def test_a_failed_probe_keeps_it_open(table: CountingTable) -> None:
    clock = Clock()
    (gate,) = _gates(table, clock, 1)
    for _ in range(FAILURES_TO_OPEN):
        gate.acquire()
        gate.record("failure")
    clock.now += COOL_DOWN_MS / 1000 + 1
    gate.acquire()
    gate.record("failure")
    with pytest.raises(Deferred):
        gate.acquire()


def test_a_429_halves_the_rate_and_successes_win_it_back_step_by_step(table: CountingTable) -> None:
    clock = Clock()
    gate, watcher = _gates(table, clock, 2)
    gate.acquire()
    gate.record("throttled")
    item = table._table.get_item(Key=DynamoGate.KEY)["Item"]
    assert int(item["interval_ms"]) == 200  # 5 per second
    gate.record("ok")  # clears the failure count, and wins back a twentieth: 5.5 per second
    intervals = []
    for _ in range(25):
        clock.now += 1
        gate.acquire()
        gate.record("ok")
        intervals.append(int(table._table.get_item(Key=DynamoGate.KEY)["Item"]["interval_ms"]))
    # Additive: half a rate per twenty successes, back to 10 per second, never above it.
    assert intervals[0] == round(1000 / 6)
    assert intervals == sorted(intervals, reverse=True)
    assert intervals[-1] == 100
    clock.now += 10
    watcher.acquire()
    assert watcher._seen.interval_ms == 100


def test_an_idle_slot_taken_by_another_instance_meanwhile_costs_one_more_update_not_a_wait(
    table: CountingTable,
) -> None:
    clock = Clock()
    (one,) = _gates(table, clock, 1)
    one.acquire()

    class Racing:
        """The table as the other instance sees it: its idle update comes just after one's."""

        def __init__(self) -> None:
            self.updates = 0

        def update_item(self, **kwargs: Any) -> Any:
            self.updates += 1
            if self.updates == 3:  # other's idle update, once its busy one failed
                one.acquire()
            return table.update_item(**kwargs)

        def get_item(self, **kwargs: Any) -> Any:
            return table.get_item(**kwargs)

    racing = Racing()
    other = DynamoGate(racing, 10.0, clock=clock, sleep=clock.sleep)
    other.acquire()
    clock.now += 5  # the gate is idle again
    table.calls.clear()
    other.acquire()  # busy fails, one takes the idle slot, idle fails: the busy slot is taken
    assert racing.updates == 4  # the first permit, then busy, idle and busy again
    assert "get_item" not in table.calls
    assert clock.slept[-1] == pytest.approx(0.1)  # the slot after one's, not a wait on the queue
