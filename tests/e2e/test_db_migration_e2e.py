"""The database path end to end on the local stack: a generated Backpack database in a private
MariaDB, ``export-db``, upload, every Backpack user's clicks over real HTTP, and Badgr collections
in the sandbox exactly as recorded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from backpack_migrate.domain import BadgeState
from backpack_migrate.services import get_services
from infra.local.demo import running
from infra.local.demo_db import run_database_part
from infra.local.mariadb import SCHEMA_SQL, missing_tools

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(900)  # a MariaDB server, export-db and a local stack, on a shared machine
def test_a_backpack_database_moves_to_badgr_with_its_groups_as_collections(tmp_path: Path) -> None:
    reason = missing_tools() or (None if SCHEMA_SQL.is_file() else "the Backpack's schema is not present")
    if reason:
        if os.environ.get("CI") and SCHEMA_SQL.is_file():
            pytest.fail(f"MariaDB is needed here: {reason}")
        pytest.skip(reason)
    with running(ROOT, tmp_path / "demo") as run:
        # Badgr fails the first collection calls: the collections jobs come back through SQS.
        run.sandbox.fail_next("/v2/backpack/collections", 503, count=2)
        world, failures = run_database_part(run, tmp_path / "db", say=lambda _line: None)
        assert failures == []
        svc = get_services()
        ada = svc.store.learner_for_backpack_user(1)
        assert ada is not None
        badges = {b.backpack_badge_id: b for b in svc.store.list_badges(ada)}
        # Issued to her second, verified address: it moved.
        signed = [b for b in badges.values() if b.verdict and b.verdict.payload_kind == "jws"]
        assert signed and all(b.state == BadgeState.IMPORTED for b in signed)
        groups = {g.group_id: g for g in svc.store.list_groups(ada)}
        work = groups[1].collection
        assert work is not None and work.state == "filled" and work.published
        (made,) = [
            c for c in run.sandbox.collections_of(world.accounts["ada@example.org"][0]) if c["name"] == "Work"
        ]
        assert "What I learnt at work" in made["description"] and made["assertions"] == work.assertion_ids
        assert groups[3].collection is not None and groups[3].collection.state == "skipped"  # empty group
        summaries = [
            e
            for e in run.stack.sent_emails()
            if "have moved" in (e["subject"] or "") and e["to"][0] == "ada@example.org"
        ]
        assert summaries and "collection" in str(summaries[-1]["body"])
        assert run.stack.dlq_depth("CollectionsQueue") == 0
        # Each filled group is one collection, the failed calls notwithstanding.
        made = run.sandbox.collections_of(world.accounts["ada@example.org"][0])
        assert len(made) == sum(1 for g in groups.values() if g.collection and g.collection.state == "filled")
