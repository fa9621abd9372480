"""A learner listed in two exports: each export's badges stay tied to the export they came from.

Two cases the service meets: a corrected re-upload (the same file names, one of them missing the
first time) and the same person in another export (other file names at other offsets).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from backpack_migrate.domain import BadgeState
from backpack_migrate.intake import ChunkJob, process_chunk, read_export
from backpack_migrate.migration import verify_learner
from backpack_migrate.notices import send_notice
from backpack_migrate.openbadges import Verifier
from tests.fakes import fake_services
from tests.unit.badges import baked, fetcher, hosted_assertion, issuer_documents, make_export

pytestmark = pytest.mark.unit

ANA = "ana@example.org"


def _world(slugs: list[str]) -> tuple[Any, Any, Any, Any]:
    served = issuer_documents(slugs)
    assertions = {slug: hosted_assertion(slug, ANA) for slug in slugs}
    for assertion in assertions.values():
        served[assertion["id"]] = (200, json.dumps(assertion).encode(), "application/json")
    svc, store, queue, s3, _sender = fake_services(verifier=Verifier(fetcher(served)))
    return svc, store, queue, (s3, assertions)


def _run(svc: Any, queue: Any, s3: Any, key: str, data: bytes) -> str:
    etag = s3.put("exports-bucket", key, data)
    export = read_export(svc, "exports-bucket", key, etag, len(data))
    for job in queue.take("chunk"):
        process_chunk(svc, ChunkJob.model_validate(job), lambda: 600_000)
    for job in queue.take("verify"):
        verify_learner(svc, job["learner_id"])
    for job in queue.take("notify"):
        send_notice(svc, job)
    return export.export_id


def test_a_corrected_export_repairs_a_missing_file_and_the_first_one_stays_as_it_was() -> None:
    svc, store, queue, (s3, assertions) = _world(["a1", "a2"])
    first = make_export({ANA: {"a1.png": baked(assertions["a1"])}}, {ANA: ["a1.png", "a2.png"]})
    first_id = _run(svc, queue, s3, "exports/backpack.zip", first)
    learner_id = svc.learner_id(ANA)
    (missing,) = [b for b in store.list_badges(learner_id) if b.file_name == "a2.png"]
    assert missing.state == BadgeState.UNREADABLE and missing.problem.code == "FILE_MISSING"  # type: ignore[union-attr]

    corrected = make_export({ANA: {"a1.png": baked(assertions["a1"]), "a2.png": baked(assertions["a2"])}})
    second_id = _run(svc, queue, s3, "exports/backpack-corrected.zip", corrected)
    assert second_id != first_id

    badges = store.list_badges(learner_id)
    by_export = {(b.export_id, b.file_name): b for b in badges}
    # The union: nothing of the first export lost, the corrected file read from the second.
    assert set(by_export) == {
        (first_id, "a1.png"),
        (first_id, "a2.png"),
        (second_id, "a1.png"),
        (second_id, "a2.png"),
    }
    assert by_export[(first_id, "a2.png")].state == BadgeState.UNREADABLE
    repaired = by_export[(second_id, "a2.png")]
    assert repaired.state == BadgeState.VERIFIED and repaired.verdict is not None and repaired.verdict.valid
    assert repaired.verdict.hosted_url == assertions["a2"]["id"]
    assert len({b.badge_id for b in badges}) == 4


def test_the_same_learner_in_another_export_is_verified_from_that_export() -> None:
    svc, store, queue, (s3, assertions) = _world(["a1", "b1", "b2"])
    first = make_export({ANA: {"a1.png": baked(assertions["a1"])}})
    first_id = _run(svc, queue, s3, "exports/spring.zip", first)
    # Other names, other offsets: a padding learner comes first in the second ZIP.
    other = make_export(
        {
            "zed@example.org": {"zed.png": b"\x89PNG not really" * 200},
            ANA: {"b1.png": baked(assertions["b1"]), "b2.png": baked(assertions["b2"])},
        }
    )
    second_id = _run(svc, queue, s3, "exports/autumn.zip", other)

    learner_id = svc.learner_id(ANA)
    states = {(b.export_id, b.file_name): (b.state, b.problem) for b in store.list_badges(learner_id)}
    assert states == {
        (first_id, "a1.png"): (BadgeState.VERIFIED, None),
        (second_id, "b1.png"): (BadgeState.VERIFIED, None),
        (second_id, "b2.png"): (BadgeState.VERIFIED, None),
    }
    for badge in store.list_badges(learner_id):
        assert badge.verdict is not None and badge.verdict.valid, badge
    # The learner record (and the email sealed under its export's key) stays the first one's.
    assert store.get_learner(learner_id).export_id == first_id  # type: ignore[union-attr]
