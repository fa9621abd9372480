"""What the local stack's table holds, counted inside moto (the benchmark's progress gauge).

Asking the stack through DynamoDB (a query per learner) to learn how far an export has come
costs the stack itself a query per learner and poll: at 20,000 learners the gauge was the
heaviest load on moto. moto runs in this process, so the gauge reads its table directly, under
the same lock the stack's DynamoDB requests take (:mod:`infra.local.moto_locks`). Where moto's
DynamoDB runs in a process of its own (``LocalStack(dynamodb_process=True)``), that process
takes the census the same way and answers it at the stack's ``census_url``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Census:
    """Badges by state and learners recorded, at one moment."""

    badges: Counter[str] = field(default_factory=Counter)
    learners: int = 0

    @property
    def badge_count(self) -> int:
        return sum(self.badges.values())

    def count(self, states: frozenset[str] | set[str]) -> int:
        return sum(n for state, n in self.badges.items() if state in states)


def take_census(table_name: str, url: str = "") -> Census:
    """Count the badges (by state) and learners of the migration table in moto's own store
    (in this process, or in moto's DynamoDB process at ``url``)."""
    if url:
        import requests

        answer = requests.get(url, params={"table": table_name}, timeout=60)
        answer.raise_for_status()
        counted = answer.json()
        return Census(badges=Counter(counted["badges"]), learners=counted["learners"])
    from moto.backends import get_backend

    from infra.local.cloudformation import ACCOUNT_ID, REGION
    from infra.local.moto_locks import dynamodb_lock

    census = Census()
    backend = get_backend("dynamodb")[ACCOUNT_ID][REGION]
    with dynamodb_lock():
        table = backend.tables.get(table_name)
        if table is None:
            return census
        for hash_key, items in table.items.items():
            if not str(hash_key.value).startswith("LEARNER#"):
                continue
            for range_key, item in items.items():
                sort_key = str(range_key.value)
                if sort_key.startswith("BADGE#"):
                    census.badges[str(item.attrs["state"].value)] += 1
                elif sort_key == "META":
                    census.learners += 1
    return census
