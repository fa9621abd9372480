"""In-memory stand-ins for the service's ports, with the same conditional semantics as AWS."""

from __future__ import annotations

import io
import json
import os
import secrets
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from botocore.exceptions import ClientError

from backpack_migrate.badgr import BadgrNotFound, BadgrRefused, BadgrUnavailable, ImportResult, Tokens
from backpack_migrate.config import Settings
from backpack_migrate.crypto import EmailCipher, TokenVault
from backpack_migrate.domain import (
    BadgeRecord,
    BadgeState,
    ExportRecord,
    GrantRecord,
    GroupRecord,
    LearnerRecord,
    check_transition,
    now_iso,
)
from backpack_migrate.notify import Email, RateLimiter
from backpack_migrate.services import Services
from backpack_migrate.store import badge_is_open


class InMemoryStore:
    def __init__(self) -> None:
        self.exports: dict[str, ExportRecord] = {}
        self.learners: dict[str, LearnerRecord] = {}
        self.badges: dict[tuple[str, str], BadgeRecord] = {}
        self.tokens: dict[str, tuple[str, int]] = {}
        self.sessions: dict[str, tuple[dict[str, str], float]] = {}
        # What the store's sparse Open index would hold: learner ids, (learner, badge) -> since.
        self.open_learners: dict[str, str] = {}
        self.reconcile_runs: list[dict[str, Any]] = []
        self.erased: set[str] = set()
        self.groups: dict[tuple[str, int], GroupRecord] = {}
        self.grants: dict[str, GrantRecord] = {}
        self.index: dict[str, dict[str, Any]] = {}  # PK of an index item -> its values
        self._lock = threading.Lock()

    def put_export_if_absent(self, export: ExportRecord) -> bool:
        with self._lock:
            if export.export_id in self.exports:
                return False
            self.exports[export.export_id] = export
            return True

    def save_export(self, export: ExportRecord) -> None:
        self.exports[export.export_id] = export

    def get_export(self, export_id: str) -> ExportRecord | None:
        return self.exports.get(export_id)

    def list_exports(self) -> list[ExportRecord]:
        return list(self.exports.values())

    def put_learner_if_absent(self, learner: LearnerRecord) -> bool:
        with self._lock:
            if learner.learner_id in self.learners:
                return False
            self.learners[learner.learner_id] = learner
            if learner.expects_invitation and not learner.invited_at:
                self.open_learners[learner.learner_id] = now_iso()
            return True

    def save_learner(self, learner: LearnerRecord) -> None:
        self.learners[learner.learner_id] = learner

    def get_learner(self, learner_id: str) -> LearnerRecord | None:
        return self.learners.get(learner_id)

    def mark_migration_requested(self, learner_id: str, at: str) -> None:
        with self._lock:
            learner = self.learners[learner_id]
            self.learners[learner_id] = learner.model_copy(
                update={"migration_requested_at": at, "summary_for": None}
            )
            self.open_learners[learner_id] = at

    def claim_summary(self, learner_id: str, requested_at: str) -> bool:
        with self._lock:
            learner = self.learners[learner_id]
            if learner.migration_requested_at != requested_at or learner.summary_for is not None:
                return False
            self.learners[learner_id] = learner.model_copy(update={"summary_for": requested_at})
            self.open_learners.pop(learner_id, None)
            return True

    def iter_export_learners(self, export_id: str) -> Iterator[LearnerRecord]:
        return (learner for learner in list(self.learners.values()) if learner.export_id == export_id)

    def put_badges_if_absent(self, badges: Iterable[BadgeRecord]) -> int:
        written = 0
        with self._lock:
            for badge in badges:
                key = (badge.learner_id, badge.badge_id)
                if key not in self.badges:
                    # As the real store: a put carries no revision (only a change makes one).
                    self.badges[key] = badge.model_copy(update={"rev": None})
                    written += 1
        return written

    def get_badge(self, learner_id: str, badge_id: str) -> BadgeRecord | None:
        return self.badges.get((learner_id, badge_id))

    def list_badges(self, learner_id: str) -> list[BadgeRecord]:
        found = [badge for (lid, _), badge in list(self.badges.items()) if lid == learner_id]
        return sorted(found, key=lambda badge: badge.file_name)

    def iter_export_badges(self, export_id: str) -> Iterator[BadgeRecord]:
        return (badge for badge in list(self.badges.values()) if badge.export_id == export_id)

    def transition(
        self, badge: BadgeRecord, expected: Iterable[BadgeState], *, unchanged: bool = False
    ) -> bool:
        expected = frozenset(expected)
        check_transition(expected, badge.state)
        with self._lock:
            key = (badge.learner_id, badge.badge_id)
            current = self.badges.get(key)
            if current is None or current.state not in set(expected):
                return False
            if unchanged and current.rev != badge.rev:
                return False
            self.badges[key] = badge.model_copy(update={"updated_at": now_iso(), "rev": secrets.token_hex(8)})
            return True

    def save_token(self, learner_id: str, ciphertext: str, version: int) -> bool:
        with self._lock:
            current = self.tokens.get(learner_id)
            if (current is None and version != 1) or (current is not None and current[1] != version - 1):
                return False
            self.tokens[learner_id] = (ciphertext, version)
            return True

    def get_token(self, learner_id: str) -> tuple[str, int] | None:
        return self.tokens.get(learner_id)

    def put_session(self, session_id: str, data: dict[str, str], ttl_seconds: int) -> None:
        self.sessions[session_id] = (dict(data), time.time() + ttl_seconds)

    def remember_session(self, learner_id: str, session_id: str, ttl_seconds: int) -> None:
        return None

    def is_erased(self, mark: str) -> bool:
        return mark in self.erased

    def mark_erased(self, mark: str, at: str) -> None:
        self.erased.add(mark)

    def get_session(self, session_id: str) -> dict[str, str] | None:
        found = self.sessions.get(session_id)
        if found is None or found[1] < time.time():
            return None
        return dict(found[0])

    def mark_invited(self, learner_id: str, at: str) -> None:
        with self._lock:
            learner = self.learners[learner_id]
            self.learners[learner_id] = learner.model_copy(update={"invited_at": at})
            if learner.migration_requested_at is None:
                self.open_learners.pop(learner_id, None)

    def touch_learner(self, learner_id: str, at: str, close: bool = False) -> None:
        with self._lock:
            if close:
                self.open_learners.pop(learner_id, None)
            elif learner_id in self.open_learners:
                self.open_learners[learner_id] = at
                learner = self.learners[learner_id]
                self.learners[learner_id] = learner.model_copy(update={"repairs": learner.repairs + 1})

    def iter_open(self, older_than: str) -> Iterator[BadgeRecord | LearnerRecord]:
        found: list[BadgeRecord | LearnerRecord] = [
            badge
            for badge in list(self.badges.values())
            if badge_is_open(badge) and (badge.updated_at or "") < older_than
        ]
        found += [self.learners[lid] for lid, since in list(self.open_learners.items()) if since < older_than]
        return iter(found)

    def save_reconcile_run(self, run: dict[str, Any]) -> None:
        self.reconcile_runs.append(run)

    def last_reconcile_run(self) -> dict[str, Any] | None:
        return self.reconcile_runs[-1] if self.reconcile_runs else None

    # -- full-fidelity exports ---------------------------------------------------------------
    def put_groups_if_absent(self, groups: Iterable[GroupRecord]) -> int:
        written = 0
        with self._lock:
            for group in groups:
                key = (group.learner_id, group.group_id)
                if key not in self.groups:
                    self.groups[key] = group
                    written += 1
        return written

    def list_groups(self, learner_id: str) -> list[GroupRecord]:
        found = [group for (lid, _), group in list(self.groups.items()) if lid == learner_id]
        return sorted(found, key=lambda group: group.group_id)

    def iter_export_groups(self, export_id: str) -> Iterator[GroupRecord]:
        return (group for group in list(self.groups.values()) if group.export_id == export_id)

    def save_group(self, group: GroupRecord, *, expected_version: int | None = None) -> bool:
        with self._lock:
            key = (group.learner_id, group.group_id)
            if expected_version is not None:
                current = self.groups.get(key)
                if (current.version if current else 0) != expected_version:
                    return False
                group = group.model_copy(update={"version": expected_version + 1, "updated_at": now_iso()})
            self.groups[key] = group
            return True

    def _index_owner(self, pk: str, values: dict[str, Any]) -> bool:
        with self._lock:
            current = self.index.setdefault(pk, dict(values))
            return current.get("learner_id") == values.get("learner_id") and current.get(
                "badge_id"
            ) == values.get("badge_id")

    def put_learner_index(
        self, learner_id: str, backpack_user_id: int, address_ids: Iterable[str]
    ) -> list[str]:
        self._index_owner(f"BPUSER#{backpack_user_id}", {"learner_id": learner_id})
        values = {"learner_id": learner_id, "backpack_user_id": backpack_user_id}
        return [a for a in address_ids if not self._index_owner(f"ADDRESS#{a}", values)]

    def learner_for_address(self, address_id: str) -> str | None:
        item = self.index.get(f"ADDRESS#{address_id}")
        return str(item["learner_id"]) if item else None

    def learner_for_backpack_user(self, user_id: int) -> str | None:
        item = self.index.get(f"BPUSER#{user_id}")
        return str(item["learner_id"]) if item else None

    def put_body_hash_index(self, badges: Iterable[BadgeRecord]) -> list[str]:
        taken = []
        for badge in badges:
            if badge.body_hash:
                values = {"learner_id": badge.learner_id, "badge_id": badge.badge_id}
                if not self._index_owner(f"BODYHASH#{badge.body_hash}", values):
                    taken.append(badge.body_hash)
        return taken

    def badge_for_body_hash(self, body_hash: str) -> BadgeRecord | None:
        item = self.index.get(f"BODYHASH#{body_hash}")
        return self.get_badge(str(item["learner_id"]), str(item["badge_id"])) if item else None

    def put_grants_if_absent(self, grants: Iterable[GrantRecord]) -> int:
        written = 0
        with self._lock:
            for grant in grants:
                self.index.setdefault(
                    f"CONNECT#ACCESS#{grant.access_token_sha256}", {"grant_id": grant.grant_id}
                )
                self.index.setdefault(
                    f"CONNECT#REFRESH#{grant.refresh_token_sha256}", {"grant_id": grant.grant_id}
                )
                if grant.grant_id not in self.grants:
                    self.grants[grant.grant_id] = grant
                    written += 1
        return written

    def get_grant(self, grant_id: str) -> GrantRecord | None:
        return self.grants.get(grant_id)

    def _grant_by(self, kind: str, digest: str) -> GrantRecord | None:
        item = self.index.get(f"CONNECT#{kind}#{digest}")
        grant = self.grants.get(str(item["grant_id"])) if item else None
        if grant is None:
            return None
        current = grant.access_token_sha256 if kind == "ACCESS" else grant.refresh_token_sha256
        return grant if current == digest else None

    def grant_for_access_digest(self, digest: str) -> GrantRecord | None:
        return self._grant_by("ACCESS", digest)

    def grant_for_refresh_digest(self, digest: str) -> GrantRecord | None:
        return self._grant_by("REFRESH", digest)

    def rotate_grant(self, current: GrantRecord, rotated: GrantRecord) -> bool:
        with self._lock:
            self.index.setdefault(
                f"CONNECT#ACCESS#{rotated.access_token_sha256}", {"grant_id": rotated.grant_id}
            )
            self.index.setdefault(
                f"CONNECT#REFRESH#{rotated.refresh_token_sha256}", {"grant_id": rotated.grant_id}
            )
            if self.grants.get(current.grant_id) != current:
                return False
            self.grants[rotated.grant_id] = rotated
            return True


class FakeQueue:
    def __init__(self) -> None:
        self.sent: dict[str, list[dict[str, Any]]] = {}
        self.delays: list[tuple[str, str, int]] = []
        self.later: list[tuple[str, dict[str, Any], float]] = []

    def send(self, queue_url: str, jobs: Iterable[dict[str, Any]]) -> int:
        batch = [json.loads(json.dumps(job)) for job in jobs]
        self.sent.setdefault(queue_url, []).extend(batch)
        return len(batch)

    def delay(self, queue_url: str, receipt_handle: str, seconds: int) -> None:
        self.delays.append((queue_url, receipt_handle, seconds))

    def send_later(self, queue_url: str, jobs: Iterable[dict[str, Any]], seconds: float) -> int:
        batch = [json.loads(json.dumps(job)) for job in jobs]
        self.later.extend((queue_url, job, seconds) for job in batch)
        return self.send(queue_url, batch)

    def receive(self, queue_url: str, most: int) -> list[tuple[dict[str, Any], str]]:
        """Jobs not held back by ``delay``, as SQS would deliver them (then held for a minute)."""
        held = {receipt for url, receipt, _ in self.delays if url == queue_url}
        found = [
            (job, f"{queue_url}#{i}")
            for i, job in enumerate(self.sent.get(queue_url, []))
            if f"{queue_url}#{i}" not in held
        ]
        for _, receipt in found[:most]:
            self.delays.append((queue_url, receipt, 60))
        return found[:most]

    def take(self, queue_url: str) -> list[dict[str, Any]]:
        return self.sent.pop(queue_url, [])

    def waiting(self, queue_url: str) -> int:
        return len(self.sent.get(queue_url, []))


class FakeKms:
    """Reversible 'encryption' that still checks the encryption context, as KMS does."""

    def __init__(self) -> None:
        self.calls = 0

    def generate_data_key(self, **kwargs: Any) -> dict[str, Any]:
        self.calls += 1
        plain = os.urandom(32)
        return {"Plaintext": plain, "CiphertextBlob": self._wrap(plain, kwargs.get("EncryptionContext"))}

    def encrypt(self, **kwargs: Any) -> dict[str, Any]:
        self.calls += 1
        return {"CiphertextBlob": self._wrap(kwargs["Plaintext"], kwargs.get("EncryptionContext"))}

    def decrypt(self, **kwargs: Any) -> dict[str, Any]:
        self.calls += 1
        blob = json.loads(kwargs["CiphertextBlob"])
        if blob["context"] != kwargs.get("EncryptionContext"):
            raise ClientError({"Error": {"Code": "InvalidCiphertextException", "Message": ""}}, "Decrypt")
        return {"Plaintext": bytes.fromhex(blob["plain"])}

    @staticmethod
    def _wrap(plain: bytes, context: Any) -> bytes:
        return json.dumps({"plain": plain.hex(), "context": context}).encode()


class FakeS3:
    """head_object / get_object with Range and IfMatch over objects held in memory."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}

    def put(self, bucket: str, key: str, data: bytes) -> str:
        self.objects[(bucket, key)] = data
        return self.etag(bucket, key)

    def etag(self, bucket: str, key: str) -> str:
        import hashlib

        return '"' + hashlib.md5(self.objects[(bucket, key)]).hexdigest() + '"'  # noqa: S324 - like S3

    def _object(self, bucket: str, key: str, if_match: str | None) -> bytes:
        if (bucket, key) not in self.objects:
            raise ClientError(
                {"Error": {"Code": "NoSuchKey"}, "ResponseMetadata": {"HTTPStatusCode": 404}}, "Get"
            )
        if if_match and if_match != self.etag(bucket, key):
            raise ClientError(
                {"Error": {"Code": "PreconditionFailed"}, "ResponseMetadata": {"HTTPStatusCode": 412}}, "Get"
            )
        return self.objects[(bucket, key)]

    def head_object(self, Bucket: str, Key: str, IfMatch: str | None = None) -> dict[str, Any]:
        data = self._object(Bucket, Key, IfMatch)
        return {"ContentLength": len(data), "ETag": self.etag(Bucket, Key)}

    def get_object(
        self, Bucket: str, Key: str, Range: str | None = None, IfMatch: str | None = None
    ) -> dict[str, Any]:
        data = self._object(Bucket, Key, IfMatch)
        if Range:
            start, end = (int(x) for x in Range.removeprefix("bytes=").split("-"))
            data = data[start : end + 1]
        return {"Body": io.BytesIO(data), "ContentLength": len(data)}


class FakeSender:
    def __init__(self) -> None:
        self.sent: list[Email] = []

    def send(self, email: Email) -> str:
        self.sent.append(email)
        return f"msg-{len(self.sent)}"


def fake_services(
    *, verifier: Any = None, badgr: Any = None, settings: Settings | None = None
) -> tuple[Services, InMemoryStore, FakeQueue, FakeS3, FakeSender]:
    settings = settings or Settings.model_validate(
        {
            "CHUNK_QUEUE_URL": "chunk",
            "INTAKE_QUEUE_URL": "intake",
            "VERIFY_QUEUE_URL": "verify",
            "NOTIFY_QUEUE_URL": "notify",
            "MIGRATE_QUEUE_URL": "migrate",
            "COLLECTIONS_QUEUE_URL": "collections",
            "LEARNERS_PER_CHUNK": 3,
            "PUBLIC_BASE_URL": "https://badges.example.org",
        }
    )
    store, queue, s3, sender, kms = InMemoryStore(), FakeQueue(), FakeS3(), FakeSender(), FakeKms()
    services = Services(
        settings=settings,
        store=store,
        queue=queue,
        s3=s3,
        emails=EmailCipher(kms, "key"),
        tokens=TokenVault(kms, "key"),
        link_secret=lambda: b"k" * 32,
        learner_id_secret=lambda: b"i" * 32,
        sender=sender,
        rate=RateLimiter(1000.0, sleep=lambda _s: None),
        verifier_factory=lambda: verifier,
        badgr_factory=lambda: badgr,
    )
    return services, store, queue, s3, sender


class ScriptedBadgr:
    """Answers like the Badgr client, and keeps a backpack like Badgr does.

    Each import of an assertion URL takes the next scripted outcome ('imported' by default):
    'lost' imports the badge and then loses the answer (as a timeout or reset after Badgr took
    it would), 'retry' fails without importing. A badge the backpack already holds gets
    DUPLICATE_BADGE, as from the real server. ``listing`` scripts the backpack listings
    ('ok' by default, 'fail' for Badgr being unavailable, 'stale' for an empty listing).
    """

    def __init__(self, script: dict[str, list[str]] | None = None, listing: list[str] | None = None) -> None:
        self.script = script or {}
        self.listing = listing or []
        self.imports: list[dict[str, Any]] = []
        self.listings = 0
        self.refreshes = 0
        self.backpack: dict[str, dict[str, Any]] = {}  # openBadgeId -> listed assertion
        self._assertions_made = 0
        # Collections, answered as the real server does (see ../shared/docs/badgr-api.md).
        self.collections: dict[str, dict[str, Any]] = {}
        self.collection_calls: list[str] = []
        # Faults, one taken per call of that kind: "lost" (done, answer lost), "down" (not done).
        self.faults: dict[str, list[str]] = {}

    def hold(self, open_badge_id: str, pending: bool = False) -> None:
        """Put a badge into the backpack (as the learner or an earlier import would have)."""
        self._new_assertion(open_badge_id, pending)

    @property
    def held(self) -> list[str]:
        """Entity ids of the assertions in the learner's backpack."""
        return [item["entityId"] for item in self.backpack.values()]

    def forget(self, entity_id: str) -> None:
        """The learner deletes a badge in Badgr."""
        self.backpack = {k: v for k, v in self.backpack.items() if v["entityId"] != entity_id}

    def _fault(self, call: str) -> str | None:
        self.collection_calls.append(call)
        pending = self.faults.get(call)
        return pending.pop(0) if pending else None

    def import_badge(self, access_token: str, **form: Any) -> ImportResult:
        self.imports.append({"token": access_token, **form})
        key = form.get("url") or "image"
        outcomes = self.script.get(key)
        outcome = outcomes.pop(0) if outcomes else "imported"
        if outcome in ("imported", "pending", "lost") and form.get("url") in self.backpack:
            outcome = "already_in_badgr"
        if outcome in ("imported", "pending", "lost") and form.get("url"):
            self.hold(form["url"], pending=outcome == "pending")
        if outcome == "lost":
            return ImportResult(outcome="retry", status=0, reason="reason for retry")
        status = {"imported": 201, "pending": 201, "already_in_badgr": 400, "rejected": 400}.get(outcome, 503)
        codes = {"already_in_badgr": ["DUPLICATE_BADGE"], "rejected": ["VERIFY_RECIPIENT_IDENTIFIER"]}
        entity = self.backpack[form["url"]]["entityId"] if form.get("url") in self.backpack else None
        return ImportResult(
            outcome=outcome,  # type: ignore[arg-type]
            status=401 if outcome == "unauthorized" else status,
            entity_id=(entity or self._new_assertion()) if status == 201 else None,
            codes=codes.get(outcome, []),
            reason=f"reason for {outcome}",
        )

    def list_assertions(self, access_token: str, include_pending: bool = True) -> list[dict[str, Any]]:
        from backpack_migrate.badgr import BadgrUnavailable

        if self._fault("list_assertions") == "down":
            raise BadgrUnavailable("down")
        self.listings += 1
        answer = self.listing.pop(0) if self.listing else "ok"
        if answer == "fail":
            raise BadgrUnavailable("Badgr answered 503 on /v2/backpack/assertions", status=503)
        if answer == "stale":  # a listing that does not show a badge imported moments ago
            return []
        return [dict(item) for item in self.backpack.values() if include_pending or not item["pending"]]

    def refresh(self, refresh_token: str) -> Tokens:
        self.refreshes += 1
        return Tokens(
            access_token=f"access{self.refreshes + 1}",
            refresh_token=f"refresh{self.refreshes + 1}",
            expires_at=0,
            scope="rw:backpack",
        )

    def _new_assertion(self, open_badge_id: str | None = None, pending: bool = False) -> str:
        self._assertions_made += 1
        entity_id = f"E{self._assertions_made}"
        open_badge_id = open_badge_id or f"https://issuer.example/{entity_id}"
        self.backpack[open_badge_id] = {
            "entityId": entity_id,
            "openBadgeId": open_badge_id,
            "pending": pending,
            "acceptance": "Pending" if pending else "Accepted",
        }
        return entity_id

    def list_collections(self, access_token: str) -> list[dict[str, Any]]:
        if self._fault("list_collections") == "down":
            raise BadgrUnavailable("down")
        return [dict(c) for c in self.collections.values()]

    def create_collection(
        self, access_token: str, *, name: str, description: str, published: bool
    ) -> dict[str, Any]:
        fault = self._fault("create_collection")
        if fault == "down":
            raise BadgrUnavailable("down")
        if not name:
            raise BadgrRefused("bad request", status=400, field_errors={"name": ["This field is required."]})
        entity_id = f"C{len(self.collections) + 1}"
        self.collections[entity_id] = {
            "entityId": entity_id,
            "name": name,
            "description": description,
            "published": published,
            "assertions": [],
            "share_url": f"https://badgr.example/c/{entity_id}" if published else None,
        }
        if fault == "lost":
            raise BadgrUnavailable("answer lost")
        return dict(self.collections[entity_id])

    def put_collection(
        self,
        access_token: str,
        entity_id: str,
        *,
        name: str,
        description: str,
        published: bool,
        assertions: Any,
    ) -> dict[str, Any]:
        fault = self._fault("put_collection")
        if fault == "down":
            raise BadgrUnavailable("down")
        if entity_id not in self.collections:
            raise BadgrNotFound("entity not found or insufficient privileges", status=404)
        if not name:
            raise BadgrRefused("bad request", status=400, field_errors={"name": ["This field is required."]})
        unknown = [a for a in assertions if a not in self.held]
        if unknown:
            raise BadgrRefused(
                "bad request", status=400, field_errors={"assertions": [f"Invalid id {unknown[0]}"]}
            )
        self.collections[entity_id].update(
            {"name": name, "description": description, "published": published, "assertions": list(assertions)}
        )
        if fault == "lost":
            raise BadgrUnavailable("answer lost")
        return dict(self.collections[entity_id])
