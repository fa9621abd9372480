"""`make demo` and `make local`: the whole migration on this machine, as its users would see it.

The demo moves a 2019 ZIP export, then the Backpack's own database (``demo_db``: MariaDB,
export-db, groups as Badgr collections) through the same stack.

The demo builds an export of about twenty learners and a hundred really baked badges, serves
their issuers' sites on loopback, starts the Badgr sandbox and the local stack (moto in server
mode, resources from template.yaml), uploads the export, plays every learner's clicks through
the real HTTP routes and the OAuth round trip, waits for the jobs, prints the operator's report,
and checks that every badge reached its expected final state and that Badgr holds exactly the
badges it should.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import secrets
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import requests

from backpack_migrate.badgr import BadgrClient
from backpack_migrate.domain import FINAL_STATES
from backpack_migrate.report import export_report, format_report
from infra.local.badgr_sandbox import BadgrSandbox
from infra.local.issuer_site import IssuerSite
from infra.local.sample_export import DemoWorld, build_demo
from infra.local.stack import LocalStack

CLIENT_ID = "backpack-migrate-local"
LINK = re.compile(r"https?://\S+/l/[A-Za-z0-9_\-.]+")


class _Forms(HTMLParser):
    """The forms of a page: action and the values a browser would submit."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append({"action": values.get("action", ""), "fields": {}})
        elif tag == "input" and self.forms and values.get("name"):
            self.forms[-1]["fields"][values["name"]] = values.get("value", "")


def forms_of(page: str) -> list[dict[str, Any]]:
    parser = _Forms()
    parser.feed(page)
    return parser.forms


@dataclass
class Running:
    world: DemoWorld
    site: IssuerSite
    sandbox: BadgrSandbox
    stack: LocalStack

    def upload(self) -> str:
        import boto3

        bucket = self.stack.resource("ExportsBucket")
        key = "exports/backpack-demo.zip"
        boto3.client("s3").upload_file(str(self.world.zip_path), bucket, key)
        return key


@contextlib.contextmanager
def running(root: Path, work: Path, http_port: int = 0) -> Iterator[Running]:
    """Issuer sites, Badgr sandbox and local stack, started together and stopped together."""
    work.mkdir(parents=True, exist_ok=True)
    site_dir = work / "site"
    site_dir.mkdir(exist_ok=True)
    client_secret = secrets.token_urlsafe(24)
    with IssuerSite(site_dir) as site:
        world = build_demo(work, site.url)
        with BadgrSandbox(CLIENT_ID, client_secret, redirect_uris=[]) as sandbox:
            for account in world.accounts:
                sandbox.add_account(
                    account.username, account.password, [(e.email, e.verified) for e in account.emails]
                )
            # Some badges are already in Badgr before the move: they must end as "already in Badgr".
            client = BadgrClient(sandbox.url, CLIENT_ID, client_secret)
            for username, assertions in world.preimport.items():
                token = sandbox.issue_token(username)["access_token"]
                for assertion_url in assertions:
                    client.import_badge(token, url=assertion_url)
            stack = LocalStack(
                root,
                badgr_api_url=sandbox.url,
                badgr_authorize_url=sandbox.authorize_endpoint,
                badgr_client_secret=client_secret,
                http_port=http_port,
                env_overrides={
                    "BADGR_CLIENT_ID": CLIENT_ID,
                    "EMAILS_PER_SECOND": "50",
                    "LEARNERS_PER_CHUNK": "4",
                },
            )
            with stack:
                from backpack_migrate.services import reset_services

                reset_services()
                sandbox.redirect_uris.append(f"{stack.url}/oauth/callback")
                yield Running(world, site, sandbox, stack)


def _text_of(email: dict[str, Any]) -> str:
    """The readable body of a captured email (moto keeps the HTML part)."""
    body = str(email["body"] or "")
    body = re.sub(r"<a href=\"([^\"]+)\">([^<]+)</a>", r"\2: \1", body)
    return html.unescape(re.sub(r"<[^>]+>", "\n", body)).replace("\n\n", "\n").strip()


def is_invitation(subject: str | None) -> bool:
    """Invitations: to move badges, or (for an address listed with none) to see or erase the data."""
    return "ready to move" in (subject or "") or "no badges to move" in (subject or "")


def links_by_email(stack: LocalStack) -> dict[str, str]:
    found: dict[str, str] = {}
    for email in stack.sent_emails():
        if not is_invitation(email["subject"]):
            continue
        match = LINK.search(str(email["body"]))
        if match:
            found[email["to"][0].lower()] = html.unescape(match.group(0))
    return found


def play_learner(link: str, username: str, password: str) -> requests.Response:
    """What a learner does: open the link, press the button, sign in to Badgr, allow."""
    browser = requests.Session()
    page = browser.get(link, timeout=30)
    page.raise_for_status()
    move = next(f for f in forms_of(page.text) if f["action"].endswith("/connect"))
    authorize = browser.post(urljoin(page.url, move["action"]), data=move["fields"], timeout=30)
    authorize.raise_for_status()
    consent = forms_of(authorize.text)[0]
    fields = {**consent["fields"], "username": username, "password": password, "decision": "allow"}
    status = browser.post(urljoin(authorize.url, consent["action"]), data=fields, timeout=60)
    status.raise_for_status()
    return status


def check(run: Running) -> list[str]:
    """Every listed badge in its expected final state; Badgr holding exactly what it should."""
    from backpack_migrate.services import get_services

    svc = get_services()
    failures = []
    for expected in run.world.expected:
        learner_id = svc.learner_id(expected.email)
        badge = next((b for b in svc.store.list_badges(learner_id) if b.file_name == expected.file), None)
        if badge is None:
            failures.append(f"{expected.file} of {expected.email}: no record")
        elif badge.state not in FINAL_STATES:
            failures.append(f"{expected.file} of {expected.email}: still {badge.state.value}")
        elif badge.state != expected.state:
            failures.append(
                f"{expected.file} of {expected.email}: {badge.state.value}, expected {expected.state.value}"
                f" ({expected.reason})"
            )
    for account in run.world.accounts:
        held = {a.get("openBadgeId") for a in run.sandbox.assertions_of(account.username)}
        should = run.world.held_ids(account.username, include_pending=True)
        if held != should:
            failures.append(
                f"Badgr account {account.username}: holds {sorted(map(str, held - should))} it should not, "
                f"lacks {sorted(should - held)}"
            )
    return failures


def _quiet() -> None:
    """The functions' JSON logs and moto's request lines would bury the story; keep warnings."""
    import logging

    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)


def run_demo(root: Path) -> int:
    _quiet()
    work = root / ".local-stack" / "demo"
    started = time.monotonic()
    with running(root, work) as run:
        world = run.world
        distinct = len({learner.email.strip().lower() for learner in world.learners})
        print(
            f"Export: {len(world.learners)} manifest entries ({distinct} learners), "
            f"{len(world.expected)} badges -> {world.zip_path.name}"
        )
        print(
            f"Issuer sites on {run.site.url}; Badgr sandbox on {run.sandbox.url}; HTTP API on {run.stack.url}"
        )
        key = run.upload()
        print(f"Uploaded s3://{run.stack.resource('ExportsBucket')}/{key}; waiting for intake and emails...")
        run.stack.wait_idle(timeout=300)
        links = links_by_email(run.stack)
        print(f"\n{len(run.stack.sent_emails())} emails sent:")
        for email in run.stack.sent_emails():
            print(f"  to {email['to'][0]:<34} {email['subject']}")
        first = run.stack.sent_emails()[0]
        print(f"\nThe first one, as the learner reads it (to {first['to'][0]}):")
        print("  | " + "\n  | ".join(_text_of(first).splitlines()))
        accounts = {a.username: a for a in world.accounts}
        print("\nEach learner opens the link, presses 'Move my badges to Badgr', signs in and allows:")
        for learner in world.learners:
            # A learner listed twice in the manifest got one email, and clicks once.
            link = links.pop(learner.email.strip().lower(), None)
            if link is None:
                continue
            account = accounts[learner.account]
            answer = play_learner(link, account.username, account.password)
            print(
                f"  {learner.email:<34} -> {answer.url.split('/l/')[0]}/l/.../status ({answer.status_code})"
            )
        run.stack.wait_idle(timeout=300)
        from backpack_migrate.services import get_services

        svc = get_services()
        print("\nOperator's report:")
        for export in svc.store.list_exports():
            print(format_report(export_report(svc.store, export)))
        summaries = [e for e in run.stack.sent_emails() if "have moved" in (e["subject"] or "")]
        print(f"\nSummary emails sent: {len(summaries)}")
        print("Expected outcomes:", dict(Counter(str(b.state.value) for b in world.expected)))
        failures = check(run)
        dead = run.stack.dlq_messages("MigrateQueue")
    # The database holds some of the same people as the ZIP: it runs on a stack of its own, as
    # a Backpack's operator would move one source or the other.
    print("\nThe Backpack's own database (MariaDB), exported with export-db, on a fresh stack:")
    failures += run_database_demo(root, work / "database")
    elapsed = time.monotonic() - started
    if failures:
        print(f"\nDEMO FAILED ({len(failures)} problems, {elapsed:.0f}s):")
        for failure in failures:
            print("  -", failure)
        return 1
    print(
        f"\nDemo passed in {elapsed:.0f}s: every badge and group reached a recorded final state, "
        f"Badgr holds exactly the badges and collections it should, {len(dead)} dead-lettered jobs."
    )
    return 0


def run_database_demo(root: Path, work: Path) -> list[str]:
    """The database path: MariaDB, export-db, upload, every Backpack user moves; the failures."""
    from backpack_migrate.services import get_services
    from infra.local.demo_db import run_database_part

    with running(root, work) as run:
        try:
            db_world, failures = run_database_part(run, work)
        except RuntimeError as error:
            return [str(error)]
        svc = get_services()
        groups = [
            group
            for learner_id in map(svc.store.learner_for_backpack_user, db_world.users.values())
            if learner_id
            for group in svc.store.list_groups(learner_id)
        ]
        states = Counter(g.collection.state if g.collection else "none" for g in groups)
        print(f"Groups: {len(groups)}; as Badgr collections: {dict(states)}")
        print("\nOperator's report:")
        for export in svc.store.list_exports():
            print(format_report(export_report(svc.store, export)))
        summaries = [e for e in run.stack.sent_emails() if "have moved" in (e["subject"] or "")]
        print(f"\nSummary emails sent: {len(summaries)}")
        dead = run.stack.dlq_messages("MigrateQueue") + run.stack.dlq_messages("CollectionsQueue")
        failures += [f"a job in a dead-letter queue: {message.get('Body', message)}" for message in dead]
    return failures


def _stop_on_term(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def run_local(root: Path, port: int = 3000) -> int:
    """The same stack, left running, with links a person can open in a browser."""
    _quiet()
    work = root / ".local-stack" / "local"
    if not _port_free(port):
        print(f"Port {port} is taken; the HTTP API gets another one.")
        port = 0
    with running(root, work, http_port=port) as run:
        run.upload()
        run.stack.wait_idle(timeout=300)
        env_file = root / ".local-stack" / "env.json"
        # Everything `backpack-migrate upload/report` needs to reach this stack, moto's fake
        # credentials included; removed when the stack stops.
        local_aws = {
            "AWS_ENDPOINT_URL": run.stack.endpoint_url,
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        }
        env_file.write_text(json.dumps({**run.stack.env, **local_aws}))
        links = links_by_email(run.stack)
        accounts = {a.username: a for a in run.world.accounts}
        print(f"Local stack running: HTTP API {run.stack.url}, Badgr sandbox {run.sandbox.url}")
        print("Open a learner's link in a browser; sign in to the Badgr sandbox with the password shown:\n")
        for learner in run.world.learners:
            link = links.get(learner.email.strip().lower())
            if link:
                account = accounts[learner.account]
                print(
                    f"  {learner.email}\n    link: {link}\n    Badgr: {account.username} / {account.password}"
                )
        from infra.local.third_party import start_for_local

        trier = next(x for x in run.world.learners if x.email.strip().lower() == "ken@example.org")
        third_party = start_for_local(run, trier.email)
        print(
            "\nA third-party issuer page (another site) using issuer.js and Backpack Connect: "
            f"{third_party.url}/\n"
            f"  Open {trier.email}'s link above in the same browser first (and connect Badgr), then\n"
            "  press OpenBadges.issue there: the frame shows the badges, a window of ours asks to add them."
        )
        print("\n`backpack-migrate report` in another terminal shows the export's state. Ctrl-C stops.")
        signal.signal(signal.SIGTERM, _stop_on_term)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            print("stopping")
        finally:
            third_party.stop()
            env_file.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_demo(Path(__file__).resolve().parents[2]))
