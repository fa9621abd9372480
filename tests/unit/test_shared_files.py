"""A file listed under more than one learner: the badge inside says whose it is."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from backpack_migrate.domain import BadgeState
from backpack_migrate.export import BytesRangeReader, PlanStats, find_manifest, iter_learners
from backpack_migrate.export import scratch as export_scratch
from backpack_migrate.intake import ChunkJob, process_chunk, read_export
from backpack_migrate.openbadges import Verifier
from backpack_migrate.shared_files import find_shared_files
from tests.fakes import ScriptedBadgr, fake_services
from tests.unit.badges import baked, fetcher, hosted_assertion

pytestmark = pytest.mark.unit

ADA, BOB, CY = "ada@example.org", "Bob@Example.org", "cy@example.org"


def zip_of(manifest: dict[str, list[str]], files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("manifest.txt", json.dumps(manifest))
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def plan(manifest: dict[str, list[str]], files: dict[str, bytes]) -> dict[str, Any]:
    """email -> (file name -> problem code or None, learner problem codes), through the stream."""
    reader = BytesRangeReader(zip_of(manifest, files))
    _manifest, index = find_manifest(reader)
    with index:
        shared = find_shared_files(reader, index)
        stats = PlanStats()
        out: dict[str, Any] = {}
        for entry in iter_learners(reader, index=index, stats=stats, review=shared.reviewer(reader)):
            files_seen = {f.name: (f.problem.code if f.problem else None) for f in entry.files}
            located = {f.name: f.location is not None for f in entry.files}
            out[entry.email] = (files_seen, [p.code for p in entry.problems], located)
    return out


@pytest.fixture(params=["memory", "sqlite"])
def paths(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(export_scratch, "IN_MEMORY_ENTRIES", 10**9 if request.param == "memory" else 1)
    return str(request.param)


@pytest.mark.parametrize("owner_first", [True, False])
def test_the_listing_the_badge_does_not_name_is_not_theirs(owner_first: bool, paths: str) -> None:
    theirs = baked(hosted_assertion("s1", ADA), hosted=False)  # the recipient is baked in
    own = baked(hosted_assertion("b1", BOB.lower()), hosted=False)
    listings = [(ADA, ["s.png"]), (BOB, ["s.png", "b.png"])]
    manifest = dict(listings if owner_first else reversed(listings))
    got = plan(manifest, {"s.png": theirs, "b.png": own})
    assert got[ADA][0] == {"s.png": None} and got[ADA][1] == []
    assert got[BOB][0] == {"s.png": "NOT_THEIRS", "b.png": None}
    # Someone else's badge is never read for this learner: no location to read it from.
    assert got[BOB][2] == {"s.png": False, "b.png": True}


def test_a_badge_naming_neither_is_kept_for_both_and_each_is_told(paths: str) -> None:
    stranger = baked(hosted_assertion("x", "someone@example.org"), hosted=False)
    got = plan({ADA: ["x.png"], BOB: ["x.png"], CY: ["x.png"]}, {"x.png": stranger})
    for email in (ADA, BOB, CY):
        assert got[email][0] == {"x.png": None}
        assert got[email][1] == ["SHARED_FILE_NAMES_NONE"]


def test_a_badge_that_does_not_say_offline_is_kept_for_both_and_each_is_told(paths: str) -> None:
    hosted_only = baked(hosted_assertion("h", ADA), hosted=True)  # only its URL is baked in
    got = plan({ADA: ["h.png"], BOB: ["h.png"]}, {"h.png": hosted_only})
    assert got[ADA][0] == got[BOB][0] == {"h.png": None}
    assert got[ADA][1] == got[BOB][1] == ["SHARED_FILE_UNDECIDED"]


def test_the_same_learner_twice_is_no_sharing(paths: str) -> None:
    badge = baked(hosted_assertion("d", "other@example.org"), hosted=False)
    got = plan({ADA: ["d.png"], ADA.upper(): ["d.png"], CY: ["c.png"]}, {"d.png": badge, "c.png": badge})
    assert got[ADA][0] == {"d.png": None} and got[ADA][1] == []
    assert got[CY][1] == []


def test_through_intake_the_other_listing_is_recorded_unreadable_before_any_verdict() -> None:
    ada_badge = hosted_assertion("s1", ADA)
    data = zip_of({BOB: ["s.png"], ADA: ["s.png"]}, {"s.png": baked(ada_badge, hosted=False)})
    served = {ada_badge["id"]: (200, json.dumps(ada_badge).encode(), "application/json")}
    svc, store, queue, s3, _sender = fake_services(verifier=Verifier(fetcher(served)), badgr=ScriptedBadgr())
    etag = s3.put("exports-bucket", "exports/shared.zip", data)
    exported = read_export(svc, "exports-bucket", "exports/shared.zip", etag, len(data))
    for job in queue.take("chunk"):
        process_chunk(svc, ChunkJob.model_validate(job), lambda: 600_000)
    [bobs] = store.list_badges(svc.learner_id(BOB))
    [adas] = store.list_badges(svc.learner_id(ADA))
    assert bobs.state == BadgeState.UNREADABLE and bobs.problem is not None
    assert bobs.problem.code == "NOT_THEIRS" and bobs.member is None
    assert "issued to that learner, not to you" in bobs.problem.message
    assert adas.state == BadgeState.EXTRACTED and adas.problem is None
    assert [p.code for p in exported.problems] == ["NOT_THEIRS"]
