"""The migration end to end on the local stack: moto in server mode with the resources of
template.yaml, the real handlers run by Lambda look-alike dispatchers, the Badgr sandbox and issuer
sites on loopback, and learners' clicks played over real HTTP.

Each test builds the world it needs and stops it before the next one starts (one local stack at a
time: they share the process's environment and moto's backends). The demo world is shared by the
tests of ``TestDemoMigration``; the other tests use a few learners with a few badges each.
"""

from __future__ import annotations

import base64
import contextlib
import html
import json
import logging
import os
import secrets
import subprocess
import sys
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import boto3
import pytest
import requests

from backpack_migrate.crypto import badge_id_for
from backpack_migrate.domain import FINAL_STATES, BadgeRecord, BadgeState, Confirmation, ExportStatus
from backpack_migrate.export import MESSAGES
from backpack_migrate.links import sign_link, verify_link
from backpack_migrate.observability import logger as powertools_logger
from backpack_migrate.services import Services, get_services, reset_services
from infra.local.badgr_sandbox import BadgrSandbox
from infra.local.bakery import bake_png, make_png
from infra.local.demo import CLIENT_ID, check, forms_of, links_by_email, play_learner, running
from infra.local.issuer_site import IssuerSite
from infra.local.sample_export import hash_recipient, write_document
from infra.local.stack import LocalStack

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
IMPORT_PATH = "/v2/backpack/import"
INVITATION = "ready to move"
SUMMARY = "have moved"


# ---------------------------------------------------------------------------------- helpers


class LogCapture(logging.Handler):
    """Every log record of the run, as the functions would print it (Powertools' JSON for theirs)."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []
        self._plain = logging.Formatter("%(levelname)s %(name)s %(message)s")
        self._lock2 = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if record.name.startswith(powertools_logger.service):
                line = powertools_logger.registered_formatter.format(record)
            else:
                line = self._plain.format(record)
        except Exception:  # a record that cannot be formatted is still looked at
            line = f"{record.msg!r} {record.args!r} {record.__dict__!r}"
        with self._lock2:
            self.lines.append(line)

    @property
    def text(self) -> str:
        with self._lock2:
            return "\n".join(self.lines)


@contextlib.contextmanager
def captured_logs() -> Iterator[LogCapture]:
    capture = LogCapture()
    root = logging.getLogger()
    root.addHandler(capture)
    try:
        yield capture
    finally:
        root.removeHandler(capture)


def import_requests(sandbox: BadgrSandbox) -> list[int]:
    """Statuses of every import request Badgr received, oldest first."""
    return [r.status for r in sandbox.request_log if r.method == "POST" and r.path == IMPORT_PATH]


def emails_with(stack: LocalStack, subject_part: str) -> Counter[str]:
    return Counter(e["to"][0].lower() for e in stack.sent_emails() if subject_part in (e["subject"] or ""))


def learner_badges(svc: Services, email: str) -> list[BadgeRecord]:
    return svc.store.list_badges(svc.learner_id(email))


def token_of(link: str) -> str:
    return link.rsplit("/l/", 1)[1]


def record_tokens(sandbox: BadgrSandbox) -> set[str]:
    """Make the sandbox remember every access and refresh token it hands out from now on."""
    issued: set[str] = set()
    original = sandbox._new_tokens

    def remembering(*args: Any, **kwargs: Any) -> dict[str, Any]:
        tokens = original(*args, **kwargs)
        issued.update({tokens["access_token"], tokens["refresh_token"]})
        return tokens

    sandbox._new_tokens = remembering  # type: ignore[method-assign]
    return issued


def fake_aws_env(stack: LocalStack) -> dict[str, str]:
    """What an operator's shell needs to point the CLI at the running stack."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(stack.env)
    env.update(
        {
            "AWS_ENDPOINT_URL": stack.endpoint_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
        }
    )
    return env


def cli(stack: LocalStack, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("backpack-migrate")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "backpack_migrate.cli"]
    return subprocess.run(
        [*command, *args],
        cwd=cwd,
        env=fake_aws_env(stack),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def queue_depth(stack: LocalStack, logical_id: str) -> int:
    sqs = boto3.client("sqs")
    attrs = sqs.get_queue_attributes(
        QueueUrl=stack.resource(logical_id),
        AttributeNames=[
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ],
    )["Attributes"]
    return sum(int(v) for v in attrs.values())


def count_calls(stack: LocalStack, logical_id: str) -> list[dict[str, Any]]:
    """Record every invocation of a function of the stack (the events it was given)."""
    spec = stack.functions[logical_id]
    original = spec.handler
    assert original is not None
    calls: list[dict[str, Any]] = []

    def counted(event: dict[str, Any], context: Any) -> Any:
        calls.append(event)
        return original(event, context)

    spec.handler = counted
    return calls


# ---------------------------------------------------------------------------------- a small world


@dataclass
class Learner:
    email: str
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12))

    @property
    def username(self) -> str:
        return self.email


class Issuer:
    """One Open Badges 2.0 issuer with one badge class, its documents written for an IssuerSite."""

    def __init__(self, site_dir: Path, base_url: str) -> None:
        self.dir = site_dir
        self.base = base_url.rstrip("/")
        self.count = 0
        self.png = make_png("#2ca02c", 32)
        self.issuer_url = f"{self.base}/acme/issuer.json"
        self.class_url = f"{self.base}/acme/badges/tests.json"
        self._write(
            "acme/issuer.json",
            {
                "@context": "https://w3id.org/openbadges/v2",
                "type": "Issuer",
                "id": self.issuer_url,
                "name": "Acme Test Academy",
                "url": f"{self.base}/acme/",
                "email": "badges@acme.example.org",
            },
        )
        self._write("acme/images/tests.png", self.png)
        self._write("acme/criteria/tests.html", "<!doctype html><title>Tests</title><p>Write tests.</p>")
        self._write(
            "acme/badges/tests.json",
            {
                "@context": "https://w3id.org/openbadges/v2",
                "type": "BadgeClass",
                "id": self.class_url,
                "name": "Test Writer",
                "description": "Awarded for writing end-to-end tests.",
                "image": f"{self.base}/acme/images/tests.png",
                "criteria": {"id": f"{self.base}/acme/criteria/tests.html", "narrative": "Write tests."},
                "issuer": self.issuer_url,
            },
        )

    def _write(self, path: str, content: Any) -> None:
        write_document(self.dir, path, content)

    def badge(self, email: str) -> tuple[str, bytes]:
        """A hosted 2.0 assertion for ``email`` (hashed recipient): its URL and a PNG with it baked."""
        self.count += 1
        salt = secrets.token_hex(8)
        url = f"{self.base}/acme/assertions/{self.count:04d}.json"
        self._write(
            f"acme/assertions/{self.count:04d}.json",
            {
                "@context": "https://w3id.org/openbadges/v2",
                "type": "Assertion",
                "id": url,
                "recipient": {
                    "type": "email",
                    "hashed": True,
                    "salt": salt,
                    "identity": hash_recipient(email, salt),
                },
                "badge": self.class_url,
                "verification": {"type": "hosted"},
                "issuedOn": "2018-03-04T10:00:00+00:00",
            },
        )
        return url, bake_png(self.png, url)


def write_zip(path: Path, members: dict[str, bytes], manifest: Any = None) -> Path:
    """A ZIP with ``manifest.txt`` (JSON of ``manifest``, or the bytes given) and ``members``."""
    with zipfile.ZipFile(path, "w") as archive:
        if manifest is not None:
            text = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
            archive.writestr("manifest.txt", text, compress_type=zipfile.ZIP_DEFLATED)
        for name, data in members.items():
            archive.writestr(name, data)
    return path


@dataclass
class World:
    tmp: Path
    site: IssuerSite
    sandbox: BadgrSandbox
    stack: LocalStack
    issuer: Issuer
    learners: dict[str, Learner] = field(default_factory=dict)
    assertion_urls: dict[str, list[str]] = field(default_factory=dict)  # email -> hosted URLs

    @property
    def svc(self) -> Services:
        return get_services()

    @property
    def bucket(self) -> str:
        return self.stack.resource("ExportsBucket")

    def export(self, name: str, badges: dict[str, int], extra: dict[str, bytes] | None = None) -> Path:
        """An export where each learner has ``badges[email]`` good badges (plus listed ``extra``)."""
        manifest: dict[str, list[str]] = {}
        members: dict[str, bytes] = {}
        for email, count in badges.items():
            if email not in self.learners:
                learner = self.learners[email] = Learner(email)
                self.sandbox.add_account(learner.username, learner.password, [(email, True)])
            files = manifest.setdefault(email, [])
            for _ in range(count):
                url, png = self.issuer.badge(email)
                self.assertion_urls.setdefault(email, []).append(url)
                file_name = f"badges/{self.issuer.count:04d}.png"
                files.append(file_name)
                members[file_name] = png
        return write_zip(self.tmp / name, members, manifest)

    def upload(self, path: Path, key: str | None = None) -> str:
        key = key or f"exports/{path.name}"
        boto3.client("s3").upload_file(str(path), self.bucket, key)
        return key

    def links(self) -> dict[str, str]:
        return links_by_email(self.stack)

    def play(self, email: str) -> requests.Response:
        learner = self.learners[email]
        return play_learner(self.links()[email], learner.username, learner.password)

    def badge_ids(self, email: str) -> list[str]:
        learner_id = self.svc.learner_id(email)
        return [badge_id_for(learner_id, b.export_id, b.file_name) for b in learner_badges(self.svc, email)]

    def files_of(self, email: str) -> list[str]:
        return [b.file_name for b in learner_badges(self.svc, email)]

    def states(self, email: str) -> dict[str, BadgeState]:
        return {b.file_name: b.state for b in learner_badges(self.svc, email)}

    def held(self, email: str) -> list[str]:
        return [str(a.get("openBadgeId")) for a in self.sandbox.assertions_of(self.learners[email].username)]


@contextlib.contextmanager
def small_world(
    tmp: Path, env: dict[str, str] | None = None, *, dynamodb_process: bool = False
) -> Iterator[World]:
    """Issuer site, Badgr sandbox and local stack for a few learners; stopped together."""
    site_dir = tmp / "site"
    site_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(24)
    with (
        IssuerSite(site_dir) as site,
        BadgrSandbox(CLIENT_ID, secret, redirect_uris=[]) as sandbox,
        LocalStack(
            ROOT,
            badgr_api_url=sandbox.url,
            badgr_authorize_url=sandbox.authorize_endpoint,
            badgr_client_secret=secret,
            env_overrides={"BADGR_CLIENT_ID": CLIENT_ID, "EMAILS_PER_SECOND": "50", **(env or {})},
            dynamodb_process=dynamodb_process,
        ) as stack,
    ):
        reset_services()
        try:
            sandbox.redirect_uris.append(f"{stack.url}/oauth/callback")
            yield World(tmp, site, sandbox, stack, Issuer(site_dir, site.url))
        finally:
            reset_services()


# ---------------------------------------------------------------------------------- 1 + 5: the demo


@dataclass
class DemoRun:
    run: Any  # infra.local.demo.Running
    links: dict[str, str]
    logs: LogCapture
    tokens: set[str]


@pytest.fixture(scope="class")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoRun]:
    """The whole demo migration (about twenty learners, a hundred badges), played once."""
    work = tmp_path_factory.mktemp("demo")
    with captured_logs() as logs, running(ROOT, work) as run:
        tokens = record_tokens(run.sandbox)
        run.upload()
        run.stack.wait_idle(timeout=180)
        links = links_by_email(run.stack)
        accounts = {a.username: a for a in run.world.accounts}
        clicked: set[str] = set()
        for learner in run.world.learners:
            email = learner.email.strip().lower()
            if email in clicked:  # listed twice in the manifest: one email, one visit
                continue
            clicked.add(email)
            account = accounts[learner.account]
            play_learner(links[email], account.username, account.password)
        run.stack.wait_idle(timeout=180)
        yield DemoRun(run, links, logs, tokens)


class TestDemoMigration:
    def test_every_badge_reaches_its_expected_state_and_badgr_holds_exactly_those(
        self, demo: DemoRun
    ) -> None:
        run = demo.run
        assert check(run) == []
        svc = get_services()
        (export,) = svc.store.list_exports()
        badges = list(svc.store.iter_export_badges(export.export_id))
        # One record per listed file, no more: a replayed chunk must not add any.
        assert len(badges) == len(run.world.expected)
        assert all(b.state in FINAL_STATES for b in badges)
        assert Counter(b.state for b in badges) == Counter(e.state for e in run.world.expected)
        for account in run.world.accounts:
            held = [a.get("openBadgeId") for a in run.sandbox.assertions_of(account.username)]
            assert len(held) == len(set(held)), f"{account.username} holds a badge twice"
            assert set(held) == run.world.held_ids(account.username, include_pending=True)
        # Exactly one import request per badge the worker sent (none for unreadable or certain to fail).
        sent = [b for b in badges if b.import_form is not None]
        assert len(import_requests(run.sandbox)) == len(sent) + sum(
            len(v) for v in run.world.preimport.values()
        )
        assert run.stack.dlq_depth("MigrateQueue") == 0

    def test_every_learner_got_one_invitation_and_one_summary(self, demo: DemoRun) -> None:
        stack = demo.run.stack
        learners = {learner.email.strip().lower() for learner in demo.run.world.learners}
        assert emails_with(stack, INVITATION) == dict.fromkeys(learners, 1)
        assert emails_with(stack, SUMMARY) == dict.fromkeys(learners, 1)
        assert len(stack.sent_emails()) == 2 * len(learners)

    def test_no_plaintext_email_in_any_dynamodb_key_or_record(self, demo: DemoRun) -> None:
        stack = demo.run.stack
        ddb = boto3.client(
            "dynamodb",
            endpoint_url=stack.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        emails = {learner.email.strip().lower() for learner in demo.run.world.learners}
        for logical_id in ("Table", "IdempotencyTable"):
            name = stack.resource(logical_id)
            table = ddb.describe_table(TableName=name)["Table"]
            keys = {k["AttributeName"] for k in table["KeySchema"]}
            for index in table.get("GlobalSecondaryIndexes", []) + table.get("LocalSecondaryIndexes", []):
                keys |= {k["AttributeName"] for k in index["KeySchema"]}
            items = [i for page in ddb.get_paginator("scan").paginate(TableName=name) for i in page["Items"]]
            assert items, f"{logical_id} is empty: the scan looked at nothing"
            for item in items:
                for key in keys & item.keys():
                    value = str(next(iter(item[key].values())))
                    assert "@" not in value, f"{logical_id} key {key}={value!r}"
                # The email is kept once, encrypted: never in plain text in any attribute.
                text = json.dumps(item).lower()
                leaked = [email for email in emails if email in text]
                assert not leaked, f"{logical_id} item {item.get('PK') or item.get('id')} holds {leaked}"

    def test_forged_altered_and_expired_links_get_a_clear_page(self, demo: DemoRun) -> None:
        stack = demo.run.stack
        svc = get_services()
        secret = svc.link_secret()
        good = token_of(next(iter(demo.links.values())))
        claims = verify_link(secret, good)
        others = [verify_link(secret, token_of(link)) for link in demo.links.values()]
        other = next(c for c in others if c.learner_id != claims.learner_id)
        body, _, signature = good.partition(".")
        other_body = (
            base64.urlsafe_b64encode(f"v1|{other.learner_id}|{claims.export_id}|{claims.expires_at}".encode())
            .rstrip(b"=")
            .decode()
        )
        bad = {
            "forged": (
                sign_link(b"not the service's secret", claims.learner_id, claims.export_id, 3600),
                403,
            ),
            "altered": (f"{other_body}.{signature}", 403),
            "bad signature": (f"{body}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}", 403),
            "truncated": (good[: len(body) // 2], 403),
            "expired": (sign_link(secret, claims.learner_id, claims.export_id, -60), 410),
        }
        for what, (token, status) in bad.items():
            for method, path in (
                ("GET", f"/l/{token}"),
                ("GET", f"/l/{token}/status"),
                ("GET", f"/l/{token}/status.json"),
                ("POST", f"/l/{token}/connect"),
                ("GET", f"/l/{token}/badges/x/image"),
            ):
                answer = requests.request(method, stack.url + path, timeout=30, allow_redirects=False)
                where = f"{what} link, {method} {path.split('/', 3)[-1][-20:]}"
                assert answer.status_code == status, where
                assert answer.headers["content-type"].startswith("text/html"), where
                assert "This link cannot be used" in answer.text, where
                assert "Traceback" not in answer.text and "Internal Server Error" not in answer.text, where
                assert "class='badge'" not in answer.text, f"{where}: shows badges"
            if what == "expired":
                assert "expired" in answer.text

    def test_logs_hold_no_learner_email_and_no_badgr_token(self, demo: DemoRun) -> None:
        # Runs last in the class: the logs of the whole run and of the tests above are in.
        text = demo.logs.text
        messages = set()
        for line in demo.logs.lines:
            with contextlib.suppress(ValueError):
                messages.add(json.loads(line).get("message"))
        assert "export read" in messages, "the capture missed the functions' logs"
        emails = {learner.email.strip().lower() for learner in demo.run.world.learners}
        emails |= {e.email.lower() for account in demo.run.world.accounts for e in account.emails}
        leaked = sorted(email for email in emails if email in text.lower())
        assert not leaked, f"learner emails in the logs: {leaked}"
        sandbox = demo.run.sandbox
        tokens = demo.tokens | set(sandbox._access) | set(sandbox._refresh)
        assert len(tokens) >= 2 * len(demo.run.world.accounts)
        assert not [t for t in tokens if t in text], "a Badgr token is in the logs"


def test_connect_needs_this_sessions_csrf_token_and_callback_needs_its_state(tmp_path: Path) -> None:
    with small_world(tmp_path) as world:
        stack = world.stack
        jo, kim = "jo@example.org", "kim@example.org"
        world.upload(world.export("sessions.zip", {jo: 1, kim: 1}))
        stack.wait_idle(timeout=60)
        links = world.links()
        connect = f"{links[jo]}/connect"

        def session_on(link: str) -> tuple[requests.Session, str]:
            browser = requests.Session()
            page = browser.get(link, timeout=30)
            assert page.status_code == 200
            cookie = page.headers["Set-Cookie"]
            assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
            form = next(f for f in forms_of(page.text) if f["action"].endswith("/connect"))
            return browser, form["fields"]["csrf"]

        browser, csrf = session_on(links[jo])
        other, other_csrf = session_on(links[jo])  # the same learner in another browser
        stranger, stranger_csrf = session_on(links[kim])
        assert len({csrf, other_csrf, stranger_csrf}) == 3
        refused = {
            "no token": browser.post(connect, data={}, allow_redirects=False, timeout=30),
            "empty token": browser.post(connect, data={"csrf": ""}, allow_redirects=False, timeout=30),
            "other session's token": browser.post(
                connect, data={"csrf": other_csrf}, allow_redirects=False, timeout=30
            ),
            "other learner's token": browser.post(
                connect, data={"csrf": stranger_csrf}, allow_redirects=False, timeout=30
            ),
            "other learner's session": stranger.post(
                connect, data={"csrf": stranger_csrf}, allow_redirects=False, timeout=30
            ),
            "no session": requests.post(connect, data={"csrf": csrf}, allow_redirects=False, timeout=30),
        }
        for what, answer in refused.items():
            assert answer.status_code == 403, what
            assert "Location" not in answer.headers, what
            assert answer.headers["content-type"].startswith("text/html"), what
            assert "did not come from your badge page" in html.unescape(answer.text), what

        # This session's own token goes on to Badgr, with a state bound to this session.
        accepted = browser.post(connect, data={"csrf": csrf}, allow_redirects=False, timeout=30)
        assert accepted.status_code == 303
        location = accepted.headers["Location"]
        assert location.startswith(world.sandbox.authorize_endpoint)
        state = parse_qs(urlsplit(location).query)["state"][0]
        callback = f"{stack.url}/oauth/callback"
        wrong = {
            "forged state": (browser, {"code": "x", "state": "forged"}, 403),
            "no state": (browser, {"code": "x"}, 403),
            "state in another browser": (other, {"code": "x", "state": state}, 400),
            "state without a session": (requests.Session(), {"code": "x", "state": state}, 400),
        }
        for what, (client, params, status) in wrong.items():
            answer = client.get(callback, params=params, timeout=30, allow_redirects=False)
            assert answer.status_code == status, what
            assert answer.headers["content-type"].startswith("text/html"), what
            assert "Traceback" not in answer.text, what
        stack.wait_idle(timeout=30)
        assert import_requests(world.sandbox) == []
        assert world.svc.store.get_token(world.svc.learner_id(jo)) is None
        assert set(world.states(jo).values()) == {BadgeState.VERIFIED}

        # The refused answers spoiled nothing: the real round trip still works from this session.
        consent = browser.get(location, timeout=30)
        form = forms_of(consent.text)[0]
        fields = {
            **form["fields"],
            "username": jo,
            "password": world.learners[jo].password,
            "decision": "allow",
        }
        done = browser.post(urljoin(consent.url, form["action"]), data=fields, timeout=60)
        assert done.status_code == 200 and done.url.endswith("/status")
        stack.wait_idle(timeout=60)
        assert set(world.states(jo).values()) == {BadgeState.IMPORTED}
        assert set(world.states(kim).values()) == {BadgeState.VERIFIED}


# ---------------------------------------------------------------------------------- 2: at least once


def test_replayed_s3_events_and_sqs_messages_and_a_dying_worker_change_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with small_world(tmp_path) as world:
        stack, sandbox = world.stack, world.sandbox
        amy, bob, cat = "amy@example.org", "bob@example.org", "cat@example.org"
        key = world.upload(world.export("replays.zip", {amy: 2, bob: 2, cat: 1}))
        # The same ObjectCreated event twice more while the first delivery is being worked on...
        stack.invoke_s3_event(world.bucket, key, wait=False)
        stack.invoke_s3_event(world.bucket, key, wait=False)
        stack.wait_idle(timeout=60)
        svc = world.svc
        (export,) = svc.store.list_exports()

        def snapshot() -> tuple[Any, ...]:
            badges = sorted(b.model_dump_json() for b in svc.store.iter_export_badges(export.export_id))
            learners = sorted(x.model_dump_json() for x in svc.store.iter_export_learners(export.export_id))
            return badges, learners, svc.store.get_export(export.export_id)

        first = snapshot()
        assert len(first[0]) == 5 and len(first[1]) == 3
        assert emails_with(stack, INVITATION) == {amy: 1, bob: 1, cat: 1}
        # ... and twice after it finished.
        stack.invoke_s3_event(world.bucket, key)
        stack.invoke_s3_event(world.bucket, key)
        stack.wait_idle(timeout=60)
        assert snapshot() == first
        assert emails_with(stack, INVITATION) == {amy: 1, bob: 1, cat: 1}
        assert len(svc.store.list_exports()) == 1

        # A migrate job delivered twice: once while the first copy is in flight, once after.
        migrate_queue = stack.resource("MigrateQueue")
        sqs = boto3.client("sqs")

        def send_duplicates(email: str) -> None:
            learner_id = svc.learner_id(email)
            for badge_id in world.badge_ids(email):
                body = json.dumps({"learner_id": learner_id, "badge_id": badge_id}, separators=(",", ":"))
                sqs.send_message(QueueUrl=migrate_queue, MessageBody=body)

        world.play(amy)
        send_duplicates(amy)
        stack.wait_idle(timeout=60)
        send_duplicates(amy)
        stack.wait_idle(timeout=60)
        assert set(world.states(amy).values()) == {BadgeState.IMPORTED}
        assert len(import_requests(sandbox)) == 2
        assert sorted(world.held(amy)) == sorted(world.assertion_urls[amy])

        # A worker that dies after Badgr took the badge but before the state was recorded.
        crashed: list[str] = []
        real_transition = svc.store.transition
        bob_id = svc.learner_id(bob)

        def dies_once(badge: BadgeRecord, expected: Any, **kwargs: Any) -> bool:
            if badge.learner_id == bob_id and badge.state == BadgeState.IMPORTED and not crashed:
                crashed.append(badge.badge_id)
                raise ConnectionError("the worker died before recording the import")
            return bool(real_transition(badge, expected, **kwargs))

        monkeypatch.setattr(svc.store, "transition", dies_once)
        world.play(bob)
        stack.wait_idle(timeout=60)
        assert len(crashed) == 1
        assert set(world.states(bob).values()) == {BadgeState.IMPORTED}
        redelivered = svc.store.get_badge(bob_id, crashed[0])
        assert redelivered is not None and redelivered.attempts == 2  # it did come back
        # Badgr was asked once per badge: the retry used the recorded answer, not a second import.
        assert len(import_requests(sandbox)) == 4
        assert sorted(world.held(bob)) == sorted(world.assertion_urls[bob])
        assert stack.dlq_depth("MigrateQueue") == 0
        assert emails_with(stack, SUMMARY) == {amy: 1, bob: 1}


def test_with_dynamodb_in_its_own_process_the_migration_moves_every_badge_once(tmp_path: Path) -> None:
    # The benchmark's stack: moto's DynamoDB answers from a process of its own, with the tables
    # the template made (keys, indexes, time to live), and nothing is left in the stack's own.
    with small_world(tmp_path, dynamodb_process=True) as world:
        stack, sandbox = world.stack, world.sandbox
        assert stack.dynamodb_endpoint_url != stack.endpoint_url
        here = boto3.client("dynamodb", endpoint_url=stack.endpoint_url)
        assert here.list_tables()["TableNames"] == []
        dynamodb = boto3.client("dynamodb")  # as the functions make it: from the environment
        table = dynamodb.describe_table(TableName=stack.resource("Table"))["Table"]
        assert [i["IndexName"] for i in table["GlobalSecondaryIndexes"]] == ["GSI1", "Open"]
        ttl = dynamodb.describe_time_to_live(TableName=stack.resource("Table"))["TimeToLiveDescription"]
        assert ttl["AttributeName"] == "expires_at"

        amy, bob = "amy@example.org", "bob@example.org"
        world.upload(world.export("own-process.zip", {amy: 2, bob: 1}))
        stack.wait_idle(timeout=60)
        world.play(amy)
        world.play(bob)
        stack.wait_idle(timeout=90)
        assert set(world.states(amy).values()) == set(world.states(bob).values()) == {BadgeState.IMPORTED}
        assert len(import_requests(sandbox)) == 3
        assert sorted(world.held(amy)) == sorted(world.assertion_urls[amy])

        from infra.bench.census import take_census

        census = take_census(stack.resource("Table"), stack.census_url)
        assert (census.learners, dict(census.badges)) == (2, {"imported": 3})
        child = stack._dynamodb
    assert child is not None and child.poll() is not None  # stopped with the stack


# ---------------------------------------------------------------------------------- 3: retries, DLQ


def test_badgr_failures_are_retried_with_backoff_then_dead_lettered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with small_world(tmp_path) as world:
        stack, sandbox = world.stack, world.sandbox
        dan, eve = "dan@example.org", "eve@example.org"
        world.upload(world.export("retries.zip", {dan: 1, eve: 1}))
        stack.wait_idle(timeout=60)
        svc = world.svc
        delays: list[int] = []
        real_delay = svc.queue.delay

        def delay(queue_url: str, receipt_handle: str, seconds: int) -> None:
            delays.append(seconds)
            real_delay(queue_url, receipt_handle, seconds)

        monkeypatch.setattr(svc.queue, "delay", delay)

        # Badgr answers 502, 500 and 429 (Retry-After: 1) to the next three imports.
        sandbox.fail_next(IMPORT_PATH, 502)
        sandbox.fail_next(IMPORT_PATH, 500)
        sandbox.fail_next(IMPORT_PATH, 429)
        world.play(dan)
        stack.wait_idle(timeout=60)
        (badge,) = learner_badges(svc, dan)
        assert badge.state == BadgeState.IMPORTED
        assert badge.attempts == 4 and badge.problem is None
        statuses = import_requests(sandbox)
        assert statuses[:3] == [502, 500, 429] and 200 <= statuses[3] < 300 and len(statuses) == 4
        assert world.held(dan) == world.assertion_urls[dan]
        # Exponential backoff with jitter, then what Badgr asked for.
        assert 2 <= delays[0] <= 5 and 4 <= delays[1] <= 7 and delays[2] == 1, delays
        assert emails_with(stack, SUMMARY) == {dan: 1}

        # Badgr failing on every delivery: after maxReceiveCount (5) the job is dead-lettered.
        sandbox.fail_next(IMPORT_PATH, 500, count=5)
        world.play(eve)
        stack.wait_idle(timeout=90)
        (badge,) = learner_badges(svc, eve)
        assert badge.state == BadgeState.DEAD_LETTERED
        assert badge.attempts == 5
        assert badge.problem is not None and badge.problem.code == "BADGR_UNAVAILABLE"
        assert "Traceback" not in badge.problem.message and badge.problem.message.endswith(".")
        assert "try again" not in badge.problem.message, "a dead-lettered badge promises a retry"
        assert len(import_requests(sandbox)) == 4 + 5  # and no sixth try
        # One job in the dead-letter queue; once the reconciler has read it, it is held out of sight.
        assert stack.dlq_depth("MigrateQueue") == 1
        dead = stack.dlq_messages("MigrateQueue")
        assert [json.loads(m["Body"])["badge_id"] for m in dead] in ([], [badge.badge_id])
        assert world.held(eve) == []
        # The learner's page says so in plain words; the summary email went out once.
        page = requests.get(world.links()[eve] + "/status", timeout=30)
        assert page.status_code == 200
        text = html.unescape(page.text)
        assert f"Could not be moved: {badge.problem.message}" in text
        assert "data-state='dead_lettered'" in page.text
        # Our imports were sent, so one may still land: her summary waits for the second look
        # in Badgr, which the reconciler takes a stale-deadline later.
        assert "once more within a few hours" in badge.problem.message
        assert emails_with(stack, SUMMARY) == {dan: 1}
        for _ in range(300):
            (badge,) = learner_badges(svc, eve)
            if not badge.awaiting_second_look:
                break
            time.sleep(0.5)
        assert badge.state == BadgeState.DEAD_LETTERED
        assert badge.confirmed_by == Confirmation.BACKPACK_RELISTED
        assert badge.problem is not None and "once more" not in badge.problem.message
        stack.wait_idle(timeout=60)
        assert emails_with(stack, SUMMARY) == {dan: 1, eve: 1}


def test_a_badge_refused_for_its_address_moves_once_the_learner_adds_that_address_in_badgr(
    tmp_path: Path,
) -> None:
    with small_world(tmp_path) as world:
        fay, old = "fay@example.org", "fay.old@example.org"
        learner = world.learners[fay] = Learner(fay)
        world.sandbox.add_account(learner.username, learner.password, [(fay, True)])
        url, png = world.issuer.badge(old)  # issued to an address Badgr does not know for her
        world.upload(write_zip(tmp_path / "fay.zip", {"old.png": png}, {fay: ["old.png"]}))
        world.stack.wait_idle(timeout=60)
        link = world.links()[fay]
        landing = html.unescape(requests.get(link, timeout=30).text)
        assert "1 of your badges may move (see the note beside it)." in landing

        world.play(fay)
        world.stack.wait_idle(timeout=60)
        (badge,) = learner_badges(world.svc, fay)
        assert badge.state == BadgeState.REJECTED and badge.can_move_again
        status = html.unescape(requests.get(link + "/status", timeout=30).text)
        assert "1 badge can still move: see the note beside it" in status
        assert "add that address in Badgr and try again" in status
        assert world.held(fay) == []

        # She adds the address in Badgr, then moves again from her link: Badgr is asked again.
        world.sandbox.set_email(learner.username, old, verified=True)
        world.play(fay)
        world.stack.wait_idle(timeout=60)
        (badge,) = learner_badges(world.svc, fay)
        assert badge.state == BadgeState.IMPORTED and badge.problem is None
        assert world.held(fay) == [url]
        assert import_requests(world.sandbox) == [400, 201]
        assert emails_with(world.stack, SUMMARY) == {fay: 2}  # one summary for each move
        assert "can still move" not in requests.get(link + "/status", timeout=30).text


# ---------------------------------------------------------------------------------- 4: bad exports


def _truncated_zip(tmp: Path) -> bytes:
    """An export cut short where its manifest was: written last, it went with the cut."""
    with zipfile.ZipFile(tmp / "whole.zip", "w") as archive:
        archive.writestr("badges/a.png", make_png("#123456", 24))
        archive.writestr("manifest.txt", json.dumps({"a@example.org": ["badges/a.png"]}))
    data = (tmp / "whole.zip").read_bytes()
    return data[: data.index(b"manifest.txt") + 20]


def test_unreadable_exports_fail_once_with_a_clear_error(tmp_path: Path) -> None:
    png = make_png("#abcdef", 24)
    exports = {
        "not-a-zip.zip": (b"%PDF-1.4\nthis is a certificate, not an export\n%%EOF\n", "NOT_A_ZIP"),
        "truncated.zip": (_truncated_zip(tmp_path), "TRUNCATED_ZIP"),
        "no-manifest.zip": (write_zip(tmp_path / "n.zip", {"badges/a.png": png}).read_bytes(), "NO_MANIFEST"),
        "manifest-not-json.zip": (
            write_zip(
                tmp_path / "j.zip", {"badges/a.png": png}, b"amy@example.org: badges/a.png"
            ).read_bytes(),
            "MANIFEST_NOT_JSON",
        ),
        "manifest-wrong-shape.zip": (
            write_zip(
                tmp_path / "s.zip", {"badges/a.png": png}, ["amy@example.org", "badges/a.png"]
            ).read_bytes(),
            "MANIFEST_BAD_SHAPE",
        ),
    }
    with small_world(tmp_path) as world:
        stack = world.stack
        intake_calls = count_calls(stack, "IntakeFunction")
        chunk_calls = count_calls(stack, "ChunkFunction")
        s3 = boto3.client("s3")
        for name, (data, _) in exports.items():
            s3.put_object(Bucket=world.bucket, Key=f"exports/{name}", Body=data)
        stack.wait_idle(timeout=60)

        answer = cli(stack, tmp_path, "report", "--json")
        assert answer.returncode == 0, answer.stderr
        reports = {r["key"].removeprefix("exports/"): r for r in json.loads(answer.stdout)}
        assert set(reports) == set(exports)
        for name, (_, code) in exports.items():
            report = reports[name]
            assert report["status"] == ExportStatus.FAILED.value, name
            (problem,) = report["export_problems"]
            assert problem["code"] == code, name
            # The stock sentence, sometimes made more precise (e.g. "... (the manifest must be ...).").
            assert problem["message"].startswith(MESSAGES[code].rstrip(".")), problem
            assert report["badges_on_record"] == 0 and report["learners_on_record"] == 0, name
        text = cli(stack, tmp_path, "report", "not-a-zip.zip")
        assert text.returncode == 0 and f"NOT_A_ZIP: {MESSAGES['NOT_A_ZIP']}" in text.stdout

        # Each export was read once, failed cleanly, and nothing was retried or dead-lettered.
        assert len(intake_calls) == len(exports)
        assert chunk_calls == []
        for queue in ("ChunkQueue", "VerifyQueue", "NotifyQueue", "MigrateQueue"):
            assert queue_depth(stack, queue) == 0, queue
            assert stack.dlq_depth(queue) == 0, queue
        assert stack.dlq_depth("IntakeDeadLetterQueue") == 0
        assert stack.sent_emails() == []


def test_broken_files_are_unreadable_with_reasons_and_the_rest_moves(tmp_path: Path) -> None:
    with small_world(tmp_path) as world:
        stack = world.stack
        fay, gus = "fay@example.org", "gus@example.org"
        url, good = world.issuer.badge(fay)
        _, good2 = world.issuer.badge(gus)
        world.learners = {fay: Learner(fay), gus: Learner(gus)}
        for learner in world.learners.values():
            world.sandbox.add_account(learner.username, learner.password, [(learner.email, True)])
        manifest = {
            fay: ["badges/good.png", "badges/missing.png", "badges/certificate.png"],
            gus: ["badges/plain.png", "badges/good2.png"],
        }
        members = {
            "badges/good.png": good,
            "badges/certificate.png": b"%PDF-1.4\n% a certificate, not a badge\n%%EOF\n",
            "badges/plain.png": make_png("#777777", 24),
            "badges/good2.png": good2,
        }
        key = world.upload(write_zip(tmp_path / "partly-broken.zip", members, manifest))
        stack.wait_idle(timeout=60)
        svc = world.svc
        by_file = {b.file_name: b for email in (fay, gus) for b in learner_badges(svc, email)}
        assert set(by_file) == {name for files in manifest.values() for name in files}
        unreadable = {
            "badges/missing.png": "FILE_MISSING",
            "badges/certificate.png": "NOT_AN_IMAGE",
            "badges/plain.png": "NOTHING_BAKED",
        }
        for name, code in unreadable.items():
            badge = by_file[name]
            assert badge.state == BadgeState.UNREADABLE, name
            assert badge.problem is not None and badge.problem.code == code, (name, badge.problem)
            assert badge.problem.message.endswith("."), badge.problem
        for name in ("badges/good.png", "badges/good2.png"):
            assert by_file[name].state == BadgeState.VERIFIED
            assert by_file[name].verdict is not None and by_file[name].verdict.valid, by_file[name].verdict
        assert emails_with(stack, INVITATION) == {fay: 1, gus: 1}
        # The learner's page gives each reason; the good badge still moves.
        page = requests.get(world.links()[gus], timeout=30)
        assert by_file["badges/plain.png"].problem.message in html.unescape(page.text)  # type: ignore[union-attr]
        world.play(fay)
        stack.wait_idle(timeout=60)
        assert world.states(fay) == {
            "badges/good.png": BadgeState.IMPORTED,
            "badges/missing.png": BadgeState.UNREADABLE,
            "badges/certificate.png": BadgeState.UNREADABLE,
        }
        assert world.held(fay) == [url]
        assert emails_with(stack, SUMMARY) == {fay: 1}
        report = json.loads(cli(stack, tmp_path, "report", "--json", key).stdout)[0]
        assert report["status"] == ExportStatus.CHUNKED.value
        assert report["badges_on_record"] == report["badges_listed"] == 5
        assert report["badge_problems"] == {"FILE_MISSING": 1, "NOT_AN_IMAGE": 1, "NOTHING_BAKED": 1}


# ---------------------------------------------------------------------------------- the operator's CLI


def test_operator_uploads_and_reports_with_the_cli(tmp_path: Path) -> None:
    with small_world(tmp_path) as world:
        stack = world.stack
        export = world.export("spring-2019.zip", {"hal@example.org": 2, "ivy@example.org": 1})
        uploaded = cli(stack, tmp_path, "upload", str(export))
        assert uploaded.returncode == 0, uploaded.stderr
        assert f"s3://{world.bucket}/exports/spring-2019.zip" in uploaded.stdout
        refused = cli(stack, tmp_path, "upload", str(export), "--key", "spring.txt")
        assert refused.returncode == 2 and "must end in .zip" in refused.stderr
        stack.wait_idle(timeout=60)

        answer = cli(stack, tmp_path, "report", "--json")
        assert answer.returncode == 0, answer.stderr
        (report,) = json.loads(answer.stdout)
        assert report["key"] == "exports/spring-2019.zip"
        assert report["status"] == ExportStatus.CHUNKED.value
        assert report["learners_listed"] == report["learners_on_record"] == 2
        assert report["badges_listed"] == report["badges_on_record"] == 3
        assert report["badges_by_state"] == {"verified": 3}
        assert report["export_problems"] == [] and report["badge_problems"] == {}
        assert f"export id: {report['export_id']}" in uploaded.stdout
        text = cli(stack, tmp_path, "report", "spring-2019.zip")
        assert text.returncode == 0
        assert "Export exports/spring-2019.zip" in text.stdout and "verified" in text.stdout
        assert "Ready to move" in text.stdout  # the words the learner reads, beside each state
        missing = cli(stack, tmp_path, "report", "autumn.zip")
        assert missing.returncode == 2 and "no export" in missing.stderr
        watched = cli(stack, tmp_path, "watch", "spring-2019.zip", "--interval", "0.2", "--timeout", "30")
        assert watched.returncode == 0, watched.stderr
        assert "spring-2019.zip" in watched.stdout and "settled" in watched.stdout

        # A verify job that gave up waits in its dead-letter queue; redrive puts it back to work.
        learner_id = world.svc.learner_id("hal@example.org")
        sqs = boto3.client("sqs")
        sqs.send_message(
            QueueUrl=stack.resource("VerifyDeadLetterQueue"),
            MessageBody=json.dumps({"learner_id": learner_id}),
        )
        verify_calls = count_calls(stack, "VerifyFunction")
        redriven = cli(stack, tmp_path, "redrive", "verify")
        assert redriven.returncode == 0, redriven.stderr
        assert "moved 1 jobs back to the verify queue; 0 left" in redriven.stdout
        stack.wait_idle(timeout=60)
        assert queue_depth(stack, "VerifyDeadLetterQueue") == 0
        assert [r["body"] for call in verify_calls for r in call["Records"]] == [
            json.dumps({"learner_id": learner_id})
        ]
        unknown = cli(stack, tmp_path, "redrive", "sideways")
        assert unknown.returncode == 2 and "unknown queue" in unknown.stderr
        # The operator's output names no learner.
        assert "@" not in answer.stdout + text.stdout + watched.stdout + redriven.stdout
        assert emails_with(stack, INVITATION) == {"hal@example.org": 1, "ivy@example.org": 1}
