"""The database path of `make demo`: from the Backpack's own MariaDB to Badgr collections.

A private MariaDB server is started and filled with the generated sample (every email
combination, hosted, signed, 0.5/1.0/2.0 badges, groups public and private with stale ids,
portfolios, Connect grants, rows bad on purpose), ``export-db`` writes the full-fidelity export,
it is uploaded to the local stack, every learner (a Backpack user) plays through the link and the
OAuth round trip, and the outcome is checked: every badge and every group in a final recorded
state, and every group made into one Badgr collection holding exactly what is on record.
"""

from __future__ import annotations

import secrets
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backpack_migrate import fullexport
from backpack_migrate.domain import FINAL_STATES, BadgeState, normalize_email
from backpack_migrate.fullintake import contact_address

SAMPLE_DATABASE = "backpack"


@dataclass
class DatabaseWorld:
    """What the database part made: the export, and one Badgr account per Backpack user."""

    zip_path: Path
    accounts: dict[str, tuple[str, str]] = field(default_factory=dict)  # contact -> (username, password)
    users: dict[str, int] = field(default_factory=dict)  # contact -> Backpack user id
    badges: int = 0
    groups: int = 0


def build_database_export(
    work: Path, site_dir: Path, site_url: str, say: Callable[[str], None]
) -> DatabaseWorld:
    """Start MariaDB, load the Backpack's schema and the sample, and run ``export-db``."""
    from backpack_migrate.export_db import export_database
    from infra.local.backpack_data import fill_sample
    from infra.local.mariadb import SCHEMA_SQL, MariaDBServer, missing_tools

    reason = missing_tools()
    if reason:
        raise RuntimeError(f"the database part needs MariaDB: {reason} (make database installs it)")
    if not SCHEMA_SQL.is_file():
        raise RuntimeError(
            "the Backpack's schema (../shared/backpack-db/schema.sql) is not beside the project"
        )
    out = work / "backpack-db-export.zip"
    with MariaDBServer() as server:
        server.create_database(SAMPLE_DATABASE)
        fill_sample(server, SAMPLE_DATABASE, site_dir, site_url)
        summary = export_database(server.url(SAMPLE_DATABASE), out)
    say(f"export-db wrote {out.name}: " + ", ".join(f"{n} {what}" for what, n in summary.counts.items()))
    world = DatabaseWorld(zip_path=out)
    with zipfile.ZipFile(out) as archive:
        for user in fullexport.iter_member(archive, fullexport.USERS_MEMBER, fullexport.ExportedUser):
            contact = contact_address(user)
            if contact is None:
                continue
            contact = normalize_email(contact)
            world.users[contact] = user.id
            world.accounts[contact] = (f"user{user.id}@badgr.example", secrets.token_urlsafe(12))
        world.badges = sum(1 for _ in fullexport.iter_member(archive, fullexport.BADGES_MEMBER))
        world.groups = sum(1 for _ in fullexport.iter_member(archive, fullexport.GROUPS_MEMBER))
    return world


def badgr_emails(zip_path: Path, user_id: int) -> list[tuple[str, bool]]:
    """The addresses a Backpack user's Badgr account holds: the verified ones, confirmed."""
    with zipfile.ZipFile(zip_path) as archive:
        for user in fullexport.iter_member(archive, fullexport.USERS_MEMBER, fullexport.ExportedUser):
            if user.id == user_id:
                contact = normalize_email(contact_address(user) or "")
                found = [(normalize_email(e.address), True) for e in user.emails if e.verified]
                if contact not in {a for a, _ in found}:
                    found.insert(0, (contact, True))
                return found
    return []


def check_database_world(svc: Any, sandbox: Any, world: DatabaseWorld) -> list[str]:
    """Every badge and group of every Backpack user final, and Badgr's collections as recorded."""
    failures: list[str] = []
    for contact, user_id in world.users.items():
        learner_id = svc.store.learner_for_backpack_user(user_id)
        if learner_id is None:
            failures.append(f"Backpack user {user_id}: no learner on record")
            continue
        badges = svc.store.list_badges(learner_id)
        for badge in badges:
            if badge.state not in FINAL_STATES:
                failures.append(
                    f"badge {badge.backpack_badge_id} of user {user_id}: still {badge.state.value}"
                )
        username = world.accounts[contact][0]
        made = {c["entityId"]: c for c in sandbox.collections_of(username)}
        filled = 0
        for group in svc.store.list_groups(learner_id):
            c = group.collection
            where = f"group {group.group_id} of user {user_id}"
            if c is None or c.state == "creating":
                failures.append(f"{where}: collection {'not started' if c is None else 'still being made'}")
                continue
            if c.state == "skipped":
                if c.entity_id is None and any(
                    b.state == BadgeState.IMPORTED and b.backpack_badge_id in group.badge_ids for b in badges
                ):
                    failures.append(f"{where}: skipped although a badge of it is in Badgr ({c.problem})")
                continue
            filled += 1
            held = made.get(c.entity_id or "")
            if held is None:
                failures.append(f"{where}: collection {c.entity_id} is not in Badgr")
                continue
            if held["assertions"] != c.assertion_ids or held["published"] != group.public:
                failures.append(f"{where}: Badgr holds {held['assertions']}, on record {c.assertion_ids}")
            imported = {
                b.badgr.entity_id
                for b in badges
                if b.state == BadgeState.IMPORTED and b.badgr and b.backpack_badge_id in group.badge_ids
            }
            if not imported <= set(held["assertions"]):
                missing = imported - set(held["assertions"])
                failures.append(f"{where}: badges in Badgr but not in its collection: {sorted(missing)}")
        if len(made) != filled:
            failures.append(f"user {user_id}: {len(made)} collections in Badgr, {filled} groups filled")
    return failures


def run_database_part(
    run: Any, work: Path, say: Callable[[str], None] = print
) -> tuple[DatabaseWorld, list[str]]:
    """On a running demo stack: database -> export-db -> upload -> every learner moves -> checks."""
    import boto3
    import requests

    from backpack_migrate.services import get_services
    from infra.local.demo import forms_of, links_by_email, play_learner
    from infra.local.issuer_site import IssuerSite

    site_dir = work / "db-site"
    site_dir.mkdir(parents=True, exist_ok=True)
    with IssuerSite(site_dir) as site:
        world = build_database_export(work, site_dir, site.url, say)
        for contact, (username, password) in world.accounts.items():
            run.sandbox.add_account(username, password, badgr_emails(world.zip_path, world.users[contact]))
        bucket = run.stack.resource("ExportsBucket")
        key = "exports/backpack-db.zip"
        boto3.client("s3").upload_file(str(world.zip_path), bucket, key)
        say(
            f"Uploaded s3://{bucket}/{key}: {len(world.users)} Backpack users, {world.badges} badges, "
            f"{world.groups} groups; waiting for intake and emails..."
        )
        run.stack.wait_idle(timeout=300)
        links = links_by_email(run.stack)
        failures = []
        for contact, (username, password) in world.accounts.items():
            link = links.get(contact)
            if link is None:
                failures.append(
                    f"no invitation to the contact address of Backpack user {world.users[contact]}"
                )
                continue
            page = requests.get(link, timeout=30)
            if not any(f["action"].endswith("/connect") for f in forms_of(page.text)):
                say(f"  Backpack user {world.users[contact]:<3} has nothing to move")
                continue
            answer = play_learner(link, username, password)
            say(f"  Backpack user {world.users[contact]:<3} -> .../l/.../status ({answer.status_code})")
        run.stack.wait_idle(timeout=300)
        failures += check_database_world(get_services(), run.sandbox, world)
    return world, failures
