"""The legacy APIs answering from what intake really stored: the sample Backpack database in
MariaDB, exported by ``export-db``, uploaded to the local stack and read by intake there."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from infra.local.demo import Running, running
from infra.local.third_party import write_issued_badges
from tests.e2e.test_legacy_apis_e2e import connect_badgr

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class DbWorld:
    run: Running
    sample: Any

    @property
    def api(self) -> str:
        return self.run.stack.url


@pytest.fixture(scope="module")
def db_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DbWorld]:
    import boto3

    from backpack_migrate.export_db import export_database
    from infra.local.backpack_data import fill_sample
    from infra.local.mariadb import SCHEMA_SQL, MariaDBServer, MariaDBUnavailableError, missing_tools

    if not SCHEMA_SQL.is_file():
        # Not the project's to install: the schema sits beside it where it is present at all.
        pytest.skip(
            "the Backpack's schema (../shared/backpack-db/schema.sql beside the project) is not present"
        )
    reason = missing_tools()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"MariaDB is needed here: {reason}")
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("legacy-db")
    with running(ROOT, work / "stack") as run:
        out = work / "backpack-export.zip"
        server = MariaDBServer()
        try:
            server.start()
        except MariaDBUnavailableError as error:
            pytest.skip(str(error))
        try:
            server.create_database("backpack")
            sample = fill_sample(server, "backpack", run.site.root_dir, run.site.url)
            export_database(server.url("backpack"), out)
        finally:
            server.stop()
        boto3.client("s3").upload_file(
            str(out), run.stack.resource("ExportsBucket"), "exports/backpack-db.zip"
        )
        run.stack.wait_idle(timeout=300)
        yield DbWorld(run, sample)


def _stored(world: DbWorld, user_id: int) -> tuple[str, list[Any], list[Any]]:
    from backpack_migrate.services import get_services

    svc = get_services()
    learner_id = svc.store.learner_for_backpack_user(user_id)
    assert learner_id is not None, f"intake stored no learner for Backpack user {user_id}"
    return learner_id, svc.store.list_groups(learner_id), svc.store.list_badges(learner_id)


def test_displayer_answers_with_the_backpacks_ids_from_intakes_records(db_world: DbWorld) -> None:
    api = db_world.api
    found = requests.post(f"{api}/displayer/convert/email", data={"email": "ADA@example.org"}, timeout=30)
    assert found.json() == {"status": "okay", "email": "ADA@example.org", "userId": 1}
    unverified = requests.post(
        f"{api}/displayer/convert/email", data={"email": "ada@old.example"}, timeout=30
    )
    assert unverified.status_code == 404
    checked = 0
    for user_id in sorted(set(db_world.sample.groups.values())):
        if user_id in db_world.sample.inactive_users:
            continue
        _learner_id, groups, badges = _stored(db_world, user_id)
        answer = requests.get(f"{api}/displayer/{user_id}/groups.json", timeout=30)
        assert answer.status_code == 200, user_id
        public = [g for g in groups if g.public and not (g.collection and g.collection.state == "filled")]
        listed = {g["groupId"]: g for g in answer.json()["groups"]}
        for group in public:
            assert listed[group.group_id]["badges"] == len(group.badge_ids), (user_id, group.group_id)
            detail = requests.get(f"{api}/displayer/{user_id}/group/{group.group_id}", timeout=30).json()
            by_id = {b.backpack_badge_id: b for b in badges}
            expected = sorted(i for i in group.badge_ids if i in by_id)
            assert [b["assertion"] for b in detail["badges"]] == [by_id[i].backpack_body for i in expected]
            for item in detail["badges"]:
                if item["imageUrl"]:
                    image = requests.get(item["imageUrl"], timeout=30)
                    assert image.status_code == 200 and image.content[:4] in (b"\x89PNG", b"<svg", b"<?xm")
                checked += 1
        for group in groups:
            if not group.public and not group.collection:
                missing = requests.get(f"{api}/displayer/{user_id}/group/{group.group_id}", timeout=30)
                assert missing.status_code == 404
    assert checked > 0


def test_an_exported_grant_has_expired_and_its_refresh_token_still_works(db_world: DbWorld) -> None:
    from backpack_migrate.links import sign_link
    from backpack_migrate.services import get_services

    api, sample = db_world.api, db_world.sample
    grant_id = next(g for g, user in sorted(sample.grants.items()) if user == 1)
    access, refresh = sample.tokens[grant_id]
    origin = "https://moodle.example"

    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": "Bearer " + base64.b64encode(token.encode()).decode(), "Origin": origin}

    expired = requests.get(f"{api}/api/identity", headers=bearer(access), timeout=30)
    assert (expired.status_code, expired.json()["message"]) == (401, "token expired")
    fresh = requests.post(
        f"{api}/api/token", data={"grant_type": "refresh_token", "refresh_token": refresh}, timeout=30
    )
    assert fresh.status_code == 200, fresh.text
    token = fresh.json()["access_token"]
    assert requests.get(f"{api}/api/identity", headers=bearer(token), timeout=30).status_code == 200

    # Ada connects Badgr through this service; a badge sent with the grant lands there once.
    svc = get_services()
    learner_id, *_ = _stored(db_world, 1)
    learner = svc.store.get_learner(learner_id)
    assert learner is not None
    db_world.run.sandbox.add_account("ada-db", "pw-ada", [("ada@example.org", True)])
    link = f"{api}/l/" + sign_link(svc.link_secret(), learner_id, learner.export_id, 3600)
    connect_badgr(link, "ada-db", "pw-ada")
    (badge,) = write_issued_badges(
        db_world.run.site.root_dir, db_world.run.site.url, ["ada@example.org"], "db"
    )
    sent = requests.post(f"{api}/api/issue", json={"badge": badge}, headers=bearer(token), timeout=60)
    assert sent.status_code == 201, sent.text
    again = requests.post(f"{api}/api/issue", json={"badge": badge}, headers=bearer(token), timeout=60)
    assert again.status_code == 304
    held = [a.get("openBadgeId") for a in db_world.run.sandbox.assertions_of("ada-db")]
    assert held.count(badge) == 1
