"""A small Backpack world as intake stores it from a full-fidelity export: users with their
addresses, badges with body hashes and baked images, groups, Connect grants.

Written through the store's own methods, so the same world serves unit tests (fake store) and
end-to-end tests (DynamoDB on the local stack).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import zipfile
from dataclasses import dataclass, field
from typing import Any

from backpack_migrate.crypto import badge_id_for
from backpack_migrate.domain import (
    BadgeRecord,
    BadgeState,
    CollectionRecord,
    ExportRecord,
    ExportStatus,
    GrantRecord,
    GroupRecord,
    LearnerRecord,
    MemberLocation,
)
from backpack_migrate.services import Services

PNG = (
    b"\x89PNG\r\n\x1a\n"
    + b"\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00"
    + b"png-bytes"
)
SVG = b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>"
ACCESS_TOKEN = "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB_1h2k3l4m5"  # Backpack's shape: base64(24 bytes) "_" time
REFRESH_TOKEN = "UlJSUlJSUlJSUlJSUlJSUlJSUlJSUlJS_1h2k3l4m5"
CONNECT_ORIGIN = "https://moodle.example.edu"


@dataclass
class Seeded:
    export: ExportRecord
    learners: dict[str, str] = field(default_factory=dict)  # contact address -> learner id
    body_hashes: dict[int, str] = field(default_factory=dict)  # Backpack badge id -> body_hash
    images: dict[str, bytes] = field(default_factory=dict)  # body_hash -> bytes


def body_of(badge_id: int) -> dict[str, Any]:
    return {
        "recipient": "sha256$abc",
        "salt": "s",
        "badge": {
            "name": f"Badge {badge_id}",
            "image": f"https://issuer.example.org/b{badge_id}.png",
            "criteria": "https://issuer.example.org/criteria",
            "issuer": {"name": "Example", "origin": "https://issuer.example.org"},
        },
        "issued_on": "2016-01-01",
    }


def _zip(members: dict[str, bytes]) -> tuple[bytes, dict[str, MemberLocation]]:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("format.json", json.dumps({"format": "backpack-full-fidelity", "version": 1}))
        for name, data in members.items():
            archive.writestr(name, data)
    data = buffer.getvalue()
    locations = {}
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            locations[info.filename] = MemberLocation(
                name=info.filename,
                header_offset=info.header_offset,
                compressed_size=info.compress_size,
                size=info.file_size,
                method=info.compress_type,
                crc=info.CRC,
            )
    return data, locations


def seed(svc: Services, s3_put: Any, bucket: str = "exports-bucket", grant_age_s: float = 60.0) -> Seeded:
    """Two Backpack users.

    - user 7 (ada): primary ada@example.org unverified, additional ada.l@example.org verified,
      ada.old@example.org unverified; badges 11, 12, 13 (12 an SVG); groups 21 public [13, 11, 99
      stale], 22 private [12], 23 public and already a filled Badgr collection holding badge 12
      only and published; a Connect grant for CONNECT_ORIGIN.
    - user 8 (bob): one public group 31 [14].
    """
    images = {}
    badges_spec = {11: ("png", 7), 12: ("svg", 7), 13: ("png", 7), 14: ("png", 8)}
    hashes = {}
    for badge_id, (ext, _user) in badges_spec.items():
        body = body_of(badge_id)
        body_hash = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        hashes[badge_id] = body_hash
        images[f"images/{body_hash}.{ext}"] = SVG if ext == "svg" else PNG + str(badge_id).encode()
    data, locations = _zip(images)
    key = f"exports/full-{time.time_ns()}.zip"
    etag = s3_put(bucket, key, data)
    export_id = hashlib.sha256(key.encode()).hexdigest()[:24]
    export = ExportRecord(
        export_id=export_id,
        bucket=bucket,
        key=key,
        etag=etag.strip('"'),
        size=len(data),
        status=ExportStatus.CHUNKED,
        data_key_ciphertext=svc.emails.new_data_key(export_id),
    )
    svc.store.put_export_if_absent(export)
    seeded = Seeded(export=export, body_hashes=hashes)
    users = {
        7: [
            ("ada@example.org", False, True),
            ("Ada.L@Example.org", True, False),
            ("ada.old@example.org", False, False),
        ],
        8: [("bob@example.org", True, True)],
    }
    learner_of_user = {}
    for user_id, addresses in users.items():
        contact = next((a for a, verified, _p in addresses if verified), addresses[0][0])
        learner_id = svc.learner_id(contact)
        learner_of_user[user_id] = learner_id
        seeded.learners[contact.lower()] = learner_id
        sealed = svc.emails.encrypt(
            contact,
            learner_id=learner_id,
            export_id=export_id,
            data_key_ciphertext=export.data_key_ciphertext,
        )
        listed = json.dumps([{"address": a.lower(), "verified": v, "primary": p} for a, v, p in addresses])
        all_sealed = _seal_text(svc, listed, learner_id, export)
        svc.store.put_learner_if_absent(
            LearnerRecord(
                learner_id=learner_id,
                export_id=export_id,
                email_ciphertext=sealed,
                backpack_user_id=user_id,
                addresses_ciphertext=all_sealed,
            )
        )
        indexed = [svc.learner_id(a) for a, verified, primary in addresses if verified or primary]
        svc.store.put_learner_index(learner_id, user_id, indexed)
    records = []
    for badge_id, (ext, user_id) in badges_spec.items():
        learner_id = learner_of_user[user_id]
        body_hash = hashes[badge_id]
        member = f"images/{body_hash}.{ext}"
        seeded.images[body_hash] = images[member]
        records.append(
            BadgeRecord(
                learner_id=learner_id,
                badge_id=badge_id_for(learner_id, export_id, member),
                export_id=export_id,
                file_name=member,
                media_type="image/svg+xml" if ext == "svg" else "image/png",
                member=locations[member],
                state=BadgeState.IMPORTED if badge_id == 12 else BadgeState.VERIFIED,
                backpack_badge_id=badge_id,
                body_hash=body_hash,
                endpoint=f"https://issuer.example.org/assertions/{badge_id}" if badge_id != 13 else None,
                validated_on="2016-02-03T04:05:06.000Z",
                backpack_body=body_of(badge_id),
                badgr={"status": 201, "entity_id": f"E{badge_id}"} if badge_id == 12 else None,  # type: ignore[arg-type]
            )
        )
    svc.store.put_badges_if_absent(records)
    svc.store.put_body_hash_index(records)
    ada, bob = learner_of_user[7], learner_of_user[8]
    svc.store.put_groups_if_absent(
        [
            GroupRecord(
                learner_id=ada,
                export_id=export_id,
                group_id=21,
                name="Science",
                public=True,
                badge_ids=[13, 11, 99],
            ),
            GroupRecord(
                learner_id=ada, export_id=export_id, group_id=22, name="Private", public=False, badge_ids=[12]
            ),
            GroupRecord(
                learner_id=ada,
                export_id=export_id,
                group_id=23,
                name="Moved",
                public=False,
                badge_ids=[11, 12],
                collection=CollectionRecord(
                    entity_id="C23", state="filled", published=True, assertion_ids=["E12"]
                ),
            ),
            GroupRecord(
                learner_id=bob, export_id=export_id, group_id=31, name="Bob's", public=True, badge_ids=[14]
            ),
        ]
    )
    svc.store.put_grants_if_absent(
        [
            GrantRecord(
                grant_id="g7",
                learner_id=ada,
                origin=CONNECT_ORIGIN,
                permissions=["issue"],
                access_token_sha256=hashlib.sha256(ACCESS_TOKEN.encode()).hexdigest(),
                refresh_token_sha256=hashlib.sha256(REFRESH_TOKEN.encode()).hexdigest(),
                access_time_ms=int((time.time() - grant_age_s) * 1000),
                export_id=export_id,
            )
        ]
    )
    return seeded


def _seal_text(svc: Services, text: str, learner_id: str, export: ExportRecord) -> str:
    """Sealed as intake seals the address list: AES-GCM under the export's key, bound to the learner."""
    import base64
    import os

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    key = svc.emails._data_key(export.data_key_ciphertext, export.export_id)
    nonce = os.urandom(12)
    return base64.b64encode(nonce + AESGCM(key).encrypt(nonce, text.encode(), learner_id.encode())).decode()
