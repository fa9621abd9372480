"""The learner's own data: a download of their badges, and erasing what the service holds.

The download is a ZIP built on request from the export itself: every baked image exactly as the
Backpack exported it, ``badges.json`` (each badge's assertion, our verdict and its outcome) and
an ``index.html`` that reads offline. Nothing of it is kept: it is built in the function's
temporary storage and answered directly, or, past what a Lambda answer can carry, put in a
short-lived S3 object (SSE-KMS) behind a presigned URL that works for a few minutes.

Erasing deletes the learner's records, badges, encrypted email, sessions, Badgr tokens and the
idempotency records of their jobs, marks them as erased under an HMAC of their id (so a replayed
or re-uploaded export does not bring them back, nor email them), and leaves an audit entry that
names no one.
"""

from __future__ import annotations

import json
import secrets
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import IO, Any

from .crypto import erasure_mark
from .domain import GROUP_WORDS, BadgeRecord, badge_group, now_iso
from .export import ExportError, open_export, read_member
from .observability import logger, metrics
from .pages import badge_title, outcome_line, readable_date
from .services import Services

# A presigned download link is for the click that asked for it, not for later.
DOWNLOAD_URL_SECONDS = 300
DOWNLOAD_PREFIX = "downloads/"


@dataclass(frozen=True)
class Download:
    """A built ZIP: its bytes when small enough to answer directly, else a presigned URL."""

    file_name: str
    size: int
    data: bytes | None = None
    url: str | None = None


def _member_path(badge: BadgeRecord, taken: set[str]) -> str:
    """A safe, unique path inside the ZIP for a badge's image, named after its file."""
    name = badge.file_name.replace("\\", "/").rsplit("/", 1)[-1].lstrip(".") or badge.badge_id
    path = f"badges/{name}"
    if path in taken:
        path = f"badges/{badge.badge_id}-{name}"
    taken.add(path)
    return path


def _assertion(image: bytes) -> Any:
    """The assertion as it was baked: the JSON object, or the URL or JWS string; None if none."""
    from .openbadges.errors import UnbakeError
    from .openbadges.unbake import unbake

    try:
        baked = unbake(image)
    except UnbakeError:  # an image with nothing (readable) baked in has no assertion
        return None
    try:
        return json.loads(baked)
    except ValueError:
        return baked.strip()


def _badge_entry(badge: BadgeRecord, path: str | None, assertion: Any) -> dict[str, Any]:
    verdict = badge.verdict
    return {
        "file": badge.file_name,
        "image": path,
        "name": verdict.name if verdict else None,
        "issuer": verdict.issuer_name if verdict else None,
        "issued_on": verdict.issued_on if verdict else None,
        "assertion": assertion,
        "verdict": {
            "valid": verdict.valid,
            "errors": [e.model_dump() for e in verdict.errors],
            "warnings": [w.model_dump() for w in verdict.warnings],
        }
        if verdict
        else None,
        "outcome": {
            "state": badge.state.value,
            "group": badge_group(badge).value,
            "words": outcome_line(badge),
            "reason": badge.problem.model_dump() if badge.problem else None,
            "badgr_entity_id": badge.badgr.entity_id if badge.badgr else None,
        },
    }


def _offline_index(entries: Sequence[dict[str, Any]], badges: Sequence[BadgeRecord]) -> str:
    """A page that opens from the unpacked ZIP with no network: no script, no remote anything."""
    items = []
    for entry, badge in zip(entries, badges, strict=True):
        image = (
            f"<img src='{escape(entry['image'])}' alt=''>"
            if entry["image"] and badge.media_type in ("image/png", "image/svg+xml")
            else ""
        )
        facts = []
        if entry["issuer"]:
            facts.append(f"Issued by {escape(entry['issuer'])}")
        if entry["issued_on"]:
            facts.append(f"on {escape(readable_date(entry['issued_on']))}")
        items.append(
            f"<li>{image}<div><h2>{escape(badge_title(badge))}</h2>"
            f"<p>{' '.join(facts)}</p>"
            f"<p>{escape(GROUP_WORDS[badge_group(badge)])}: {escape(entry['outcome']['words'])}</p>"
            f"<p>File: {escape(entry['file'])}</p></div></li>"
        )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        "<title>My Mozilla Backpack badges</title><style>"
        "body{font-family:system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem;color:#1d1d1f}"
        "ul{list-style:none;padding:0}li{display:flex;gap:1rem;border-bottom:1px solid #ddd;padding:.8rem 0}"
        "h2{font-size:1.1rem;margin:0}img{flex:none;max-width:100%;height:auto}"
        "</style></head><body><main><h1>My Mozilla Backpack badges</h1>"
        f"<p>{len(badges)} badge{'' if len(badges) == 1 else 's'}, as the Backpack kept them. "
        "Each image is the badge itself, with its assertion baked in: you can upload it to any "
        "backpack that reads Open Badges. The details are also in badges.json.</p>"
        f"<ul>{''.join(items)}</ul></main></body></html>"
    )


def write_badges_zip(svc: Services, badges: Sequence[BadgeRecord], out: IO[bytes]) -> None:
    """Write the learner's ZIP to ``out``; images are read from the export one at a time."""
    taken: set[str] = set()
    entries = []
    readers: dict[str, Any] = {}
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for badge in badges:
            path = None
            assertion = None
            image = _image(svc, badge, readers)
            if image is not None:
                path = _member_path(badge, taken)
                # Images are compressed already: stored as they are.
                archive.writestr(path, image, compress_type=zipfile.ZIP_STORED)
                assertion = _assertion(image)
            entries.append(_badge_entry(badge, path, assertion))
        archive.writestr("badges.json", json.dumps({"badges": entries}, indent=2, ensure_ascii=False))
        archive.writestr("index.html", _offline_index(entries, badges))


def _image(svc: Services, badge: BadgeRecord, readers: dict[str, Any]) -> bytes | None:
    if badge.member is None:
        return None
    if badge.export_id not in readers:
        export = svc.store.get_export(badge.export_id)
        readers[badge.export_id] = open_export(svc, export) if export else None
    reader = readers[badge.export_id]
    if reader is None:
        return None
    try:
        return read_member(reader, badge.member)
    except ExportError:
        return None  # the export has expired: the record stays in badges.json, without the image


def build_download(svc: Services, learner_id: str) -> Download:
    badges = svc.store.list_badges(learner_id)
    name = "my-backpack-badges.zip"
    with tempfile.TemporaryFile() as spool:
        write_badges_zip(svc, badges, spool)
        size = spool.tell()
        spool.seek(0)
        metrics.add_metric(name="DownloadsBuilt", unit="Count", value=1)
        if size <= svc.settings.download_inline_bytes:
            return Download(name, size, data=spool.read())
        # Too big for a Lambda answer: a random key no one can guess, encrypted under the
        # service's key, expired by the bucket's lifecycle, reachable for minutes.
        key = f"{DOWNLOAD_PREFIX}{secrets.token_urlsafe(24)}.zip"
        svc.s3.put_object(
            Bucket=svc.settings.exports_bucket,
            Key=key,
            Body=spool,
            ContentType="application/zip",
            ContentDisposition=f'attachment; filename="{name}"',
            ServerSideEncryption="aws:kms",
            SSEKMSKeyId=svc.settings.kms_key_id,
        )
    url = svc.s3.generate_presigned_url(
        "get_object",
        Params={"Bucket": svc.settings.exports_bucket, "Key": key},
        ExpiresIn=DOWNLOAD_URL_SECONDS,
    )
    return Download(name, size, url=str(url))


# -- erasure ---------------------------------------------------------------------------------
def _idempotency_jobs(
    svc: Services,
    learner_id: str,
    export_ids: set[str],
    badges: Sequence[BadgeRecord],
    latest_request: str | None,
) -> list[tuple[str, dict[str, Any]]]:
    """Every job of this learner a side effect was recorded for, as (name, job) the way the
    jobs wrap them: the invitation per export, the summary per request, each badge's imports."""
    jobs: list[tuple[str, dict[str, Any]]] = [
        ("notice", {"kind": "invite", "learner_id": learner_id, "export_id": export_id})
        for export_id in sorted(export_ids)
    ]
    jobs += [
        ("notice", {"kind": "summary", "learner_id": learner_id, "requested_at": at})
        # Requests made before the store remembered each one still have the latest on record.
        for at in sorted(
            set(svc.store.learner_requests(learner_id)) | ({latest_request} if latest_request else set())
        )
    ]
    for badge in badges:
        jobs += [
            ("badgr-import", {"learner_id": learner_id, "badge_id": badge.badge_id, "moved_again": n})
            for n in range(badge.moved_again + 1)
        ]
    return jobs


def is_erased(svc: Services, learner_id: str) -> bool:
    return svc.store.is_erased(erasure_mark(learner_id))


def erase_learner(svc: Services, learner_id: str, session_ids: Sequence[str] = ()) -> int:
    """Forget a learner; returns how many items were deleted. Safe to repeat."""
    learner = svc.store.get_learner(learner_id)
    badges = svc.store.list_badges(learner_id)
    export_ids = {b.export_id for b in badges} | ({learner.export_id} if learner else set())
    # The mark goes first: a chunk replayed while this runs must already find it.
    svc.store.mark_erased(erasure_mark(learner_id), now_iso())
    forgotten = 0
    latest = learner.migration_requested_at if learner else None
    for name, job in _idempotency_jobs(svc, learner_id, export_ids, badges, latest):
        svc.forget_once(name, job)
        forgotten += 1
    deleted = svc.store.erase_learner(learner_id, session_ids)
    svc.store.put_audit(
        {
            "action": "learner_erased",
            "at": now_iso(),
            "items_deleted": deleted,
            "idempotency_records_cleared": forgotten,
            "badges": len(badges),
            "exports": sorted(export_ids),
        }
    )
    metrics.add_metric(name="LearnersErased", unit="Count", value=1)
    logger.info("learner erased", extra={"items_deleted": deleted})
    return deleted
