"""A small chaos run with a fixed seed: the real handlers on the local stack while Badgr, the
migrate workers and AWS fail, and every badge still ends final, true and once in Badgr.

Bounded by design: the run gives up waiting after its own deadline and the tally then shows what
was left; nothing here is a timed assertion.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.chaos.run import ChaosConfig, print_tally, run_chaos

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(900)
def test_a_small_chaos_run_ends_with_every_badge_final_and_what_we_say_is_true(tmp_path: Path) -> None:
    config = ChaosConfig(
        badgr_rate=0.3,
        kill_rate=0.15,
        aws_rate=0.03,
        extra_learners=8,
        demo_learners=False,
        seed=11,
        migrate_workers=4,
        hang_s=10.5,  # just past the Badgr client's timeout
        timeout_s=600,
    )
    tally = run_chaos(ROOT, config, work=tmp_path)
    print_tally(tally)
    assert sum(tally.faults["badgr_faults"].values()) > 0, "the run met no Badgr fault"
    assert tally.examples == []
    assert (tally.final, tally.lost) == (tally.badges, 0)
    assert (tally.contradictions, tally.mislabelled, tally.duplicates) == (0, 0, 0)
    assert tally.every_learner_invited_once
