"""Where the migration keeps its records: a small interface and its DynamoDB implementation.

Items of one table (single-table design):
- export   PK=EXPORT#<id>   SK=META            GSI1PK=EXPORTS               GSI1SK=<created>#<id>
- learner  PK=LEARNER#<id>  SK=META            GSI1PK=EXPORT#<id>#LEARNERS  GSI1SK=<learner id>
- badge    PK=LEARNER#<id>  SK=BADGE#<badge>   GSI1PK=EXPORT#<id>#BADGES    GSI1SK=<learner>#<badge>
- token    PK=LEARNER#<id>  SK=TOKEN           (KMS ciphertext only)
- session  PK=SESSION#<id>  SK=META            expires_at (TTL)
- gate     PK=BADGR         SK=GATE            the shared Badgr rate and circuit (breaker.py)
- run      PK=RECONCILER    SK=LAST            what the last reconciler run did
           PK=LEARNER#<id>  SK=SESSION#<id>     expires_at (TTL): the learner's sessions, found to erase them
- erased   PK=ERASED#<mark> SK=META            a learner who erased their data: <mark> is an HMAC of
                                               the learner id, the item holds nothing personal
- audit    PK=AUDIT#<day>   SK=<time>#<random> what was done (erasures), with no personal data
- group    PK=LEARNER#<id>  SK=GROUP#<group>   GSI1PK=EXPORT#<id>#GROUPS    GSI1SK=<learner>#<group>
- grant    PK=GRANT#<id>    SK=META            (Backpack Connect: token digests only)
Index items of a full-fidelity export, none holding a plaintext email:
- PK=ADDRESS#<address id> SK=META -> learner_id, backpack_user_id (address id: the learner-id HMAC
  of the address)
- PK=BPUSER#<backpack user id> SK=META -> learner_id
- PK=BODYHASH#<body_hash> SK=META -> learner_id, badge_id
- PK=CONNECT#ACCESS#<sha256 hex> / PK=CONNECT#REFRESH#<sha256 hex> SK=META -> grant_id
Records travel as one JSON attribute ``data``; ``state`` sits beside it for conditional writes.

The sparse index ``Open`` (OPEN_PK = one of a few shards, OPEN_SK = <since>#...) holds only
what is still expected to move on by itself: badges extracted, queued, retrying,
dead-lettered without Badgr's word, or awaiting their second look; learners not yet invited,
or with a move not yet summed up. The reconciler reads the old end of it instead of scanning
the table.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import ClientError

from .domain import (
    BadgeRecord,
    BadgeState,
    Confirmation,
    ExportRecord,
    GrantRecord,
    GroupRecord,
    LearnerRecord,
    check_transition,
    now_iso,
)

OPEN_SHARDS = 8
# Learner fields kept as attributes of their own, each changed by one conditional update.
_LEARNER_ATTRIBUTES = {"migration_requested_at", "summary_for", "invited_at", "repairs"}
# Badge states a worker will move on from by itself; older than a deadline, they are repaired.
OPEN_BADGE_STATES = frozenset({BadgeState.EXTRACTED, BadgeState.QUEUED, BadgeState.FAILED_RETRYABLE})


def open_shard(learner_id: str) -> str:
    return f"OPEN#{int(hashlib.sha256(learner_id.encode()).hexdigest()[:4], 16) % OPEN_SHARDS}"


def badge_is_open(badge: BadgeRecord) -> bool:
    return (
        badge.state in OPEN_BADGE_STATES
        or (badge.state == BadgeState.DEAD_LETTERED and badge.confirmed_by == Confirmation.NOT_CONFIRMED)
        or badge.awaiting_second_look
    )


class Store(Protocol):
    def put_export_if_absent(self, export: ExportRecord) -> bool: ...
    def save_export(self, export: ExportRecord) -> None: ...
    def get_export(self, export_id: str) -> ExportRecord | None: ...
    def list_exports(self) -> list[ExportRecord]: ...
    def put_learner_if_absent(self, learner: LearnerRecord) -> bool: ...
    def save_learner(self, learner: LearnerRecord) -> None: ...
    def get_learner(self, learner_id: str) -> LearnerRecord | None: ...
    def mark_migration_requested(self, learner_id: str, at: str) -> None: ...
    def claim_summary(self, learner_id: str, requested_at: str) -> bool: ...
    def iter_export_learners(self, export_id: str) -> Iterator[LearnerRecord]: ...
    def put_badges_if_absent(self, badges: Iterable[BadgeRecord]) -> int: ...
    def get_badge(self, learner_id: str, badge_id: str) -> BadgeRecord | None: ...
    def list_badges(self, learner_id: str) -> list[BadgeRecord]: ...
    def iter_export_badges(self, export_id: str) -> Iterator[BadgeRecord]: ...
    def transition(
        self, badge: BadgeRecord, expected: Iterable[BadgeState], *, unchanged: bool = False
    ) -> bool: ...
    def save_token(self, learner_id: str, ciphertext: str, version: int) -> bool: ...
    def get_token(self, learner_id: str) -> tuple[str, int] | None: ...
    def put_session(self, session_id: str, data: dict[str, str], ttl_seconds: int) -> None: ...
    def get_session(self, session_id: str) -> dict[str, str] | None: ...
    def mark_invited(self, learner_id: str, at: str) -> None: ...
    def touch_learner(self, learner_id: str, at: str, close: bool = False) -> None: ...
    def iter_open(self, older_than: str) -> Iterator[BadgeRecord | LearnerRecord]: ...
    def save_reconcile_run(self, run: dict[str, Any]) -> None: ...
    def last_reconcile_run(self) -> dict[str, Any] | None: ...
    def remember_session(self, learner_id: str, session_id: str, ttl_seconds: int) -> None: ...
    def learner_requests(self, learner_id: str) -> list[str]: ...
    def erase_learner(self, learner_id: str, session_ids: Iterable[str] = ()) -> int: ...
    def mark_erased(self, mark: str, at: str) -> None: ...
    def is_erased(self, mark: str) -> bool: ...
    def put_audit(self, entry: dict[str, Any]) -> None: ...
    # -- full-fidelity exports: groups, the Backpack's ids, Connect grants ----------------------
    def put_groups_if_absent(self, groups: Iterable[GroupRecord]) -> int: ...
    def list_groups(self, learner_id: str) -> list[GroupRecord]: ...
    def iter_export_groups(self, export_id: str) -> Iterator[GroupRecord]: ...
    def save_group(self, group: GroupRecord, *, expected_version: int | None = None) -> bool: ...
    def put_learner_index(
        self, learner_id: str, backpack_user_id: int, address_ids: Iterable[str]
    ) -> list[str]: ...
    def learner_for_address(self, address_id: str) -> str | None: ...
    def learner_for_backpack_user(self, user_id: int) -> str | None: ...
    def put_body_hash_index(self, badges: Iterable[BadgeRecord]) -> list[str]: ...
    def badge_for_body_hash(self, body_hash: str) -> BadgeRecord | None: ...
    def put_grants_if_absent(self, grants: Iterable[GrantRecord]) -> int: ...
    def get_grant(self, grant_id: str) -> GrantRecord | None: ...
    def grant_for_access_digest(self, digest: str) -> GrantRecord | None: ...
    def grant_for_refresh_digest(self, digest: str) -> GrantRecord | None: ...
    def rotate_grant(self, current: GrantRecord, rotated: GrantRecord) -> bool: ...


# A chunk's badges are written this many at once (each PutItem keeps its condition).
PARALLEL_PUTS = 8


def _badge(item: dict[str, Any]) -> BadgeRecord:
    badge = BadgeRecord.model_validate_json(item["data"])
    badge.rev = item.get("rev")  # the revision lives on the item alone, so it is never stale
    return badge


def _is_condition_failure(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


class DynamoStore:
    def __init__(self, table: Any, record_ttl_days: int = 180) -> None:
        self._table = table
        self._ttl_seconds = record_ttl_days * 86400

    # -- items -------------------------------------------------------------------------------
    def _expires(self) -> int:
        return int(time.time()) + self._ttl_seconds

    def _export_item(self, export: ExportRecord) -> dict[str, Any]:
        return {
            "PK": f"EXPORT#{export.export_id}",
            "SK": "META",
            "GSI1PK": "EXPORTS",
            "GSI1SK": f"{export.created_at or ''}#{export.export_id}",
            "state": export.status.value,
            "data": export.model_dump_json(),
            "expires_at": self._expires(),
        }

    def _learner_item(self, learner: LearnerRecord) -> dict[str, Any]:
        item = {
            "PK": f"LEARNER#{learner.learner_id}",
            "SK": "META",
            "GSI1PK": f"EXPORT#{learner.export_id}#LEARNERS",
            "GSI1SK": learner.learner_id,
            "data": learner.model_dump_json(
                exclude={"migration_requested_at", "summary_for", "invited_at", "repairs"}
            ),
            "expires_at": self._expires(),
        }
        if learner.migration_requested_at:
            item["requested_at"] = learner.migration_requested_at
        if learner.summary_for:
            item["summary_for"] = learner.summary_for
        if learner.invited_at:
            item["invited_at"] = learner.invited_at
        elif learner.expects_invitation:
            item["OPEN_PK"] = open_shard(learner.learner_id)
            item["OPEN_SK"] = f"{now_iso()}#L#{learner.learner_id}"
        return item

    @staticmethod
    def _learner(item: dict[str, Any]) -> LearnerRecord:
        return LearnerRecord.model_validate_json(item["data"]).model_copy(
            update={
                "migration_requested_at": item.get("requested_at"),
                "summary_for": item.get("summary_for"),
                "invited_at": item.get("invited_at"),
            }
        )

    def _badge_item(self, badge: BadgeRecord) -> dict[str, Any]:
        item = {
            "PK": f"LEARNER#{badge.learner_id}",
            "SK": f"BADGE#{badge.badge_id}",
            "GSI1PK": f"EXPORT#{badge.export_id}#BADGES",
            "GSI1SK": f"{badge.learner_id}#{badge.badge_id}",
            "state": badge.state.value,
            "data": badge.model_dump_json(),
            "expires_at": self._expires(),
        }
        if badge_is_open(badge):
            item["OPEN_PK"], item["OPEN_SK"] = self._badge_open_key(badge, badge.updated_at or now_iso())
        return item

    @staticmethod
    def _badge_open_key(badge: BadgeRecord, since: str) -> tuple[str, str]:
        return open_shard(badge.learner_id), f"{since}#B#{badge.learner_id}#{badge.badge_id}"

    def _put_if_absent(self, item: dict[str, Any]) -> bool:
        try:
            self._table.put_item(Item=item, ConditionExpression=Attr("PK").not_exists())
        except ClientError as error:
            if _is_condition_failure(error):
                return False
            raise
        return True

    def _get(self, pk: str, sk: str) -> dict[str, Any] | None:
        item: dict[str, Any] | None = self._table.get_item(Key={"PK": pk, "SK": sk}, ConsistentRead=True).get(
            "Item"
        )
        return item

    def _query(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        while True:
            page = self._table.query(**kwargs)
            yield from page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    # -- exports -----------------------------------------------------------------------------
    def put_export_if_absent(self, export: ExportRecord) -> bool:
        return self._put_if_absent(self._export_item(export))

    def save_export(self, export: ExportRecord) -> None:
        self._table.put_item(Item=self._export_item(export))

    def get_export(self, export_id: str) -> ExportRecord | None:
        item = self._get(f"EXPORT#{export_id}", "META")
        return ExportRecord.model_validate_json(item["data"]) if item else None

    def list_exports(self) -> list[ExportRecord]:
        items = self._query(IndexName="GSI1", KeyConditionExpression=Key("GSI1PK").eq("EXPORTS"))
        return [ExportRecord.model_validate_json(item["data"]) for item in items]

    # -- learners ----------------------------------------------------------------------------
    def put_learner_if_absent(self, learner: LearnerRecord) -> bool:
        return self._put_if_absent(self._learner_item(learner))

    def save_learner(self, learner: LearnerRecord) -> None:
        self._table.put_item(Item=self._learner_item(learner))

    def get_learner(self, learner_id: str) -> LearnerRecord | None:
        item = self._get(f"LEARNER#{learner_id}", "META")
        return self._learner(item) if item else None

    def mark_migration_requested(self, learner_id: str, at: str) -> None:
        """A new request: its summary is not claimed yet, whatever happened to an earlier one."""
        self._table.update_item(
            Key={"PK": f"LEARNER#{learner_id}", "SK": "META"},
            # Every request is remembered, so erasing the learner can forget each one's summary; the
            # open mark lets the reconciler finish a request that stopped half-way.
            UpdateExpression="SET requested_at = :at, OPEN_PK = :pk, OPEN_SK = :sk, "
            "requests = list_append(if_not_exists(requests, :none), :one) REMOVE summary_for",
            ConditionExpression=Attr("PK").exists(),
            ExpressionAttributeValues={
                ":at": at,
                ":pk": open_shard(learner_id),
                ":sk": f"{at}#L#{learner_id}",
                ":none": [],
                ":one": [at],
            },
        )

    def claim_summary(self, learner_id: str, requested_at: str) -> bool:
        """True for exactly one caller per request, however many workers finish at once."""
        try:
            self._table.update_item(
                Key={"PK": f"LEARNER#{learner_id}", "SK": "META"},
                UpdateExpression="SET summary_for = :at REMOVE OPEN_PK, OPEN_SK",
                ConditionExpression=Attr("requested_at").eq(requested_at) & Attr("summary_for").not_exists(),
                ExpressionAttributeValues={":at": requested_at},
            )
        except ClientError as error:
            if _is_condition_failure(error):
                return False
            raise
        return True

    def iter_export_learners(self, export_id: str) -> Iterator[LearnerRecord]:
        items = self._query(
            IndexName="GSI1", KeyConditionExpression=Key("GSI1PK").eq(f"EXPORT#{export_id}#LEARNERS")
        )
        for item in items:
            yield self._learner(item)

    # -- badges ------------------------------------------------------------------------------
    def put_badges_if_absent(self, badges: Iterable[BadgeRecord]) -> int:
        """Conditional puts, so a chunk resumed after a crash never overwrites a later state.

        A group of badges is written by parallel PutItem calls: BatchWriteItem takes no
        conditions (and would let the function delete items), and a transaction costs twice.
        """
        items = [self._badge_item(badge) for badge in badges]
        if len(items) <= 1:
            return sum(self._put_if_absent(item) for item in items)
        with ThreadPoolExecutor(min(PARALLEL_PUTS, len(items))) as pool:
            return sum(pool.map(self._put_if_absent, items))

    def get_badge(self, learner_id: str, badge_id: str) -> BadgeRecord | None:
        item = self._get(f"LEARNER#{learner_id}", f"BADGE#{badge_id}")
        return _badge(item) if item else None

    def list_badges(self, learner_id: str) -> list[BadgeRecord]:
        items = self._query(
            KeyConditionExpression=Key("PK").eq(f"LEARNER#{learner_id}") & Key("SK").begins_with("BADGE#"),
            ConsistentRead=True,
        )
        return sorted((_badge(item) for item in items), key=lambda b: b.file_name)

    def iter_export_badges(self, export_id: str) -> Iterator[BadgeRecord]:
        items = self._query(
            IndexName="GSI1", KeyConditionExpression=Key("GSI1PK").eq(f"EXPORT#{export_id}#BADGES")
        )
        for item in items:
            yield _badge(item)

    def transition(
        self, badge: BadgeRecord, expected: Iterable[BadgeState], *, unchanged: bool = False
    ) -> bool:
        """Write ``badge`` only if the stored state is still one of ``expected``.

        With ``unchanged``, also only if nothing was written since ``badge`` was read: a write
        that keeps the state (a second look, a repair) would otherwise put a stale copy over a
        newer one of the same state.
        """
        expected = frozenset(expected)
        check_transition(expected, badge.state)
        states = [state.value for state in expected]
        read_rev = badge.rev
        badge = badge.model_copy(update={"updated_at": now_iso(), "rev": secrets.token_hex(8)})
        values: dict[str, Any] = {f":s{i}": state for i, state in enumerate(states)}
        condition = f"#state IN ({', '.join(values)})"
        if unchanged and read_rev:
            condition += " AND #rev = :read_rev"
            values[":read_rev"] = read_rev
        elif unchanged:
            condition += " AND attribute_not_exists(#rev)"  # as put: no change has written one yet
        # In the open index while a worker should still move it on, dated by this change.
        if badge_is_open(badge):
            update = "SET #state = :new, #data = :data, #rev = :rev, OPEN_PK = :open_pk, OPEN_SK = :open_sk"
            values[":open_pk"], values[":open_sk"] = self._badge_open_key(
                badge, badge.updated_at or now_iso()
            )
        else:
            update = "SET #state = :new, #data = :data, #rev = :rev REMOVE OPEN_PK, OPEN_SK"
        try:
            self._table.update_item(
                Key={"PK": f"LEARNER#{badge.learner_id}", "SK": f"BADGE#{badge.badge_id}"},
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames={"#state": "state", "#data": "data", "#rev": "rev"},
                ExpressionAttributeValues={
                    ":new": badge.state.value,
                    ":data": badge.model_dump_json(),
                    ":rev": badge.rev,
                    **values,
                },
            )
        except ClientError as error:
            if _is_condition_failure(error):
                return False
            raise
        return True

    # -- tokens and sessions -----------------------------------------------------------------
    def save_token(self, learner_id: str, ciphertext: str, version: int) -> bool:
        """Optimistic versioning: with refresh-token rotation, only one writer may win."""
        condition = Attr("PK").not_exists() if version == 1 else Attr("version").eq(version - 1)
        try:
            self._table.put_item(
                Item={
                    "PK": f"LEARNER#{learner_id}",
                    "SK": "TOKEN",
                    "ciphertext": ciphertext,
                    "version": version,
                    "expires_at": self._expires(),
                },
                ConditionExpression=condition,
            )
        except ClientError as error:
            if _is_condition_failure(error):
                return False
            raise
        return True

    def get_token(self, learner_id: str) -> tuple[str, int] | None:
        item = self._get(f"LEARNER#{learner_id}", "TOKEN")
        return (str(item["ciphertext"]), int(item["version"])) if item else None

    def put_session(self, session_id: str, data: dict[str, str], ttl_seconds: int) -> None:
        self._table.put_item(
            Item={
                "PK": f"SESSION#{session_id}",
                "SK": "META",
                "data": json.dumps(data),
                "expires_at": int(time.time()) + ttl_seconds,
            }
        )

    def remember_session(self, learner_id: str, session_id: str, ttl_seconds: int) -> None:
        """Note a new session under its learner, so erasing the learner finds every session."""
        self._table.put_item(
            Item={
                "PK": f"LEARNER#{learner_id}",
                "SK": f"SESSION#{session_id}",
                "expires_at": int(time.time()) + ttl_seconds,
            }
        )

    def get_session(self, session_id: str) -> dict[str, str] | None:
        item = self._get(f"SESSION#{session_id}", "META")
        # TTL deletion lags by hours: expiry is enforced here, not by DynamoDB.
        if not item or int(item.get("expires_at", 0)) < time.time():
            return None
        data: dict[str, str] = json.loads(item["data"])
        return data

    # -- what should still move on by itself --------------------------------------------------
    def mark_invited(self, learner_id: str, at: str) -> None:
        """The invitation went out. A learner who asked to move keeps the request's open mark."""
        key = {"PK": f"LEARNER#{learner_id}", "SK": "META"}
        try:
            self._table.update_item(
                Key=key,
                UpdateExpression="SET invited_at = :at REMOVE OPEN_PK, OPEN_SK",
                ConditionExpression=Attr("PK").exists() & Attr("requested_at").not_exists(),
                ExpressionAttributeValues={":at": at},
            )
        except ClientError as error:
            if not _is_condition_failure(error):
                raise
            self._table.update_item(
                Key=key,
                UpdateExpression="SET invited_at = :at",
                ConditionExpression=Attr("PK").exists(),
                ExpressionAttributeValues={":at": at},
            )

    def touch_learner(self, learner_id: str, at: str, close: bool = False) -> None:
        """The reconciler repaired this learner: open again from ``at`` on, or no longer open."""
        key = {"PK": f"LEARNER#{learner_id}", "SK": "META"}
        if close:
            self._table.update_item(Key=key, UpdateExpression="REMOVE OPEN_PK, OPEN_SK")
            return
        try:
            self._table.update_item(
                Key=key,
                UpdateExpression="SET OPEN_SK = :sk ADD open_repairs :one",
                ConditionExpression=Attr("OPEN_PK").exists(),
                ExpressionAttributeValues={":sk": f"{at}#L#{learner_id}", ":one": 1},
            )
        except ClientError as error:
            # A failed condition: closed meanwhile (its summary was claimed), nothing to repair.
            if not _is_condition_failure(error):
                raise

    def iter_open(self, older_than: str) -> Iterator[BadgeRecord | LearnerRecord]:
        """Badges and learners open since before ``older_than``, oldest first in each shard."""
        for shard in range(OPEN_SHARDS):
            items = self._query(
                IndexName="Open",
                KeyConditionExpression=Key("OPEN_PK").eq(f"OPEN#{shard}") & Key("OPEN_SK").lt(older_than),
            )
            for item in items:
                if str(item["SK"]).startswith("BADGE#"):
                    yield _badge(item)
                else:
                    yield self._learner(item).model_copy(update={"repairs": int(item.get("open_repairs", 0))})

    def save_reconcile_run(self, run: dict[str, Any]) -> None:
        self._table.put_item(
            Item={"PK": "RECONCILER", "SK": "LAST", "data": json.dumps(run), "expires_at": self._expires()}
        )

    def last_reconcile_run(self) -> dict[str, Any] | None:
        item = self._get("RECONCILER", "LAST")
        return json.loads(item["data"]) if item else None

    # -- erasure ---------------------------------------------------------------------------
    def learner_requests(self, learner_id: str) -> list[str]:
        item = self._get(f"LEARNER#{learner_id}", "META")
        return [str(at) for at in (item or {}).get("requests", [])]

    def erase_learner(self, learner_id: str, session_ids: Iterable[str] = ()) -> int:
        """Delete every item of a learner: record, badges, token and sessions; returns how many."""
        keys = {
            (str(item["PK"]), str(item["SK"]))
            for item in self._query(
                KeyConditionExpression=Key("PK").eq(f"LEARNER#{learner_id}"),
                ProjectionExpression="PK, SK",
                ConsistentRead=True,
            )
        }
        sessions = {sk.removeprefix("SESSION#") for _, sk in keys if sk.startswith("SESSION#")}
        keys |= {(f"SESSION#{session_id}", "META") for session_id in sessions | set(session_ids)}
        for pk, sk in sorted(keys):
            self._table.delete_item(Key={"PK": pk, "SK": sk})
        return len(keys)

    def mark_erased(self, mark: str, at: str) -> None:
        # No TTL: an export replayed or uploaded again years later must still not bring them back.
        self._table.put_item(Item={"PK": f"ERASED#{mark}", "SK": "META", "erased_at": at})

    def is_erased(self, mark: str) -> bool:
        return self._get(f"ERASED#{mark}", "META") is not None

    def put_audit(self, entry: dict[str, Any]) -> None:
        at = now_iso()
        self._table.put_item(
            Item={
                "PK": f"AUDIT#{at[:10]}",
                "SK": f"{at}#{secrets.token_hex(8)}",
                "data": json.dumps(entry, sort_keys=True),
                "expires_at": self._expires(),
            }
        )

    # -- groups --------------------------------------------------------------------------------
    def _group_item(self, group: GroupRecord) -> dict[str, Any]:
        return {
            "PK": f"LEARNER#{group.learner_id}",
            "SK": f"GROUP#{group.group_id}",
            "GSI1PK": f"EXPORT#{group.export_id}#GROUPS",
            "GSI1SK": f"{group.learner_id}#{group.group_id}",
            "state": group.collection.state if group.collection else "none",
            "version": group.version,
            "data": group.model_dump_json(),
            "expires_at": self._expires(),
        }

    def put_groups_if_absent(self, groups: Iterable[GroupRecord]) -> int:
        """Conditional puts: a replayed intake never resets what a group became in Badgr."""
        return sum(self._put_if_absent(self._group_item(group)) for group in groups)

    def list_groups(self, learner_id: str) -> list[GroupRecord]:
        items = self._query(
            KeyConditionExpression=Key("PK").eq(f"LEARNER#{learner_id}") & Key("SK").begins_with("GROUP#"),
            ConsistentRead=True,
        )
        return sorted(
            (GroupRecord.model_validate_json(item["data"]) for item in items), key=lambda g: g.group_id
        )

    def iter_export_groups(self, export_id: str) -> Iterator[GroupRecord]:
        items = self._query(
            IndexName="GSI1", KeyConditionExpression=Key("GSI1PK").eq(f"EXPORT#{export_id}#GROUPS")
        )
        for item in items:
            yield GroupRecord.model_validate_json(item["data"])

    def save_group(self, group: GroupRecord, *, expected_version: int | None = None) -> bool:
        """Write a group; with ``expected_version``, only if nobody wrote it since that version
        (the record written carries ``expected_version + 1``)."""
        if expected_version is None:
            self._table.put_item(Item=self._group_item(group))
            return True
        group = group.model_copy(update={"version": expected_version + 1, "updated_at": now_iso()})
        try:
            self._table.put_item(
                Item=self._group_item(group),
                ConditionExpression=Attr("version").eq(expected_version),
            )
        except ClientError as error:
            if _is_condition_failure(error):
                return False
            raise
        return True

    # -- the Backpack's ids --------------------------------------------------------------------
    def _index_owner(self, pk: str, values: dict[str, Any], owner: str) -> bool:
        """Write an index item unless it exists; True when it is (now) ``owner``'s."""
        if self._put_if_absent({"PK": pk, "SK": "META", **values, "expires_at": self._expires()}):
            return True
        item = self._get(pk, "META")
        return item is not None and item.get("learner_id") == owner

    def put_learner_index(
        self, learner_id: str, backpack_user_id: int, address_ids: Iterable[str]
    ) -> list[str]:
        """Index a Backpack user by user id and by address; returns the address ids another learner
        already holds (a person in two exports, or a duplicate the export let through)."""
        self._index_owner(f"BPUSER#{backpack_user_id}", {"learner_id": learner_id}, learner_id)
        taken = []
        for address_id in address_ids:
            values = {"learner_id": learner_id, "backpack_user_id": backpack_user_id}
            if not self._index_owner(f"ADDRESS#{address_id}", values, learner_id):
                taken.append(address_id)
        return taken

    def learner_for_address(self, address_id: str) -> str | None:
        item = self._get(f"ADDRESS#{address_id}", "META")
        return str(item["learner_id"]) if item else None

    def learner_for_backpack_user(self, user_id: int) -> str | None:
        item = self._get(f"BPUSER#{user_id}", "META")
        return str(item["learner_id"]) if item else None

    def put_body_hash_index(self, badges: Iterable[BadgeRecord]) -> list[str]:
        """Index badges by the Backpack's body_hash; returns the hashes held by another badge."""
        taken = []
        for badge in badges:
            if not badge.body_hash:
                continue
            pk = f"BODYHASH#{badge.body_hash}"
            values = {"learner_id": badge.learner_id, "badge_id": badge.badge_id}
            if not self._put_if_absent({"PK": pk, "SK": "META", **values, "expires_at": self._expires()}):
                item = self._get(pk, "META")
                if item is None or item.get("badge_id") != badge.badge_id:
                    taken.append(badge.body_hash)
        return taken

    def badge_for_body_hash(self, body_hash: str) -> BadgeRecord | None:
        item = self._get(f"BODYHASH#{body_hash}", "META")
        return self.get_badge(str(item["learner_id"]), str(item["badge_id"])) if item else None

    # -- Backpack Connect grants ---------------------------------------------------------------
    def put_grants_if_absent(self, grants: Iterable[GrantRecord]) -> int:
        written = 0
        for grant in grants:
            for kind, digest in (
                ("ACCESS", grant.access_token_sha256),
                ("REFRESH", grant.refresh_token_sha256),
            ):
                self._put_if_absent(
                    {
                        "PK": f"CONNECT#{kind}#{digest}",
                        "SK": "META",
                        "grant_id": grant.grant_id,
                        "expires_at": self._expires(),
                    }
                )
            written += self._put_if_absent(
                {
                    "PK": f"GRANT#{grant.grant_id}",
                    "SK": "META",
                    "data": grant.model_dump_json(),
                    "expires_at": self._expires(),
                }
            )
        return written

    def get_grant(self, grant_id: str) -> GrantRecord | None:
        item = self._get(f"GRANT#{grant_id}", "META")
        return GrantRecord.model_validate_json(item["data"]) if item else None

    def _grant_by(self, kind: str, digest: str) -> GrantRecord | None:
        item = self._get(f"CONNECT#{kind}#{digest}", "META")
        grant = self.get_grant(str(item["grant_id"])) if item else None
        # The index may outlive a rotation: only the grant's current digest counts.
        current = (
            None
            if grant is None
            else (grant.access_token_sha256 if kind == "ACCESS" else grant.refresh_token_sha256)
        )
        return grant if current == digest else None

    def grant_for_access_digest(self, digest: str) -> GrantRecord | None:
        return self._grant_by("ACCESS", digest)

    def grant_for_refresh_digest(self, digest: str) -> GrantRecord | None:
        return self._grant_by("REFRESH", digest)

    def rotate_grant(self, current: GrantRecord, rotated: GrantRecord) -> bool:
        """Replace a grant's tokens, only if nobody rotated it since ``current`` was read: of two
        refreshes with the same refresh token, exactly one wins."""
        for kind, digest in (
            ("ACCESS", rotated.access_token_sha256),
            ("REFRESH", rotated.refresh_token_sha256),
        ):
            self._put_if_absent(
                {
                    "PK": f"CONNECT#{kind}#{digest}",
                    "SK": "META",
                    "grant_id": rotated.grant_id,
                    "expires_at": self._expires(),
                }
            )
        try:
            self._table.put_item(
                Item={
                    "PK": f"GRANT#{rotated.grant_id}",
                    "SK": "META",
                    "data": rotated.model_dump_json(),
                    "expires_at": self._expires(),
                },
                ConditionExpression=Attr("data").eq(current.model_dump_json()),
            )
        except ClientError as error:
            if _is_condition_failure(error):
                return False
            raise
        return True
