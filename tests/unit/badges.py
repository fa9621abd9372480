"""Small, real Open Badges for tests: hosted 2.0 assertions baked into PNGs, served offline."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

from backpack_migrate.openbadges import MapFetcher
from infra.local.bakery import bake_png, make_png
from infra.local.sample_export import hash_recipient

ISSUER = "https://issuer.example.org"
CONTEXT = "https://w3id.org/openbadges/v2"


def hosted_assertion(slug: str, email: str, salt: str = "pepper", **extra: Any) -> dict[str, Any]:
    identity = hash_recipient(email, salt)
    return {
        "@context": CONTEXT,
        "type": "Assertion",
        "id": f"{ISSUER}/assertions/{slug}.json",
        "recipient": {"type": "email", "hashed": True, "salt": salt, "identity": identity},
        "badge": f"{ISSUER}/badges/{slug}.json",
        "verification": {"type": "hosted"},
        "issuedOn": "2018-03-01T10:00:00Z",
        **extra,
    }


def issuer_documents(slugs: list[str]) -> dict[str, tuple[int, bytes, str]]:
    docs: dict[str, Any] = {
        f"{ISSUER}/issuer.json": {
            "@context": CONTEXT,
            "type": "Issuer",
            "id": f"{ISSUER}/issuer.json",
            "name": "Example Academy",
            "url": ISSUER,
            "email": "badges@issuer.example.org",
        }
    }
    for slug in slugs:
        docs[f"{ISSUER}/badges/{slug}.json"] = {
            "@context": CONTEXT,
            "type": "BadgeClass",
            "id": f"{ISSUER}/badges/{slug}.json",
            "name": f"Badge {slug}",
            "description": "A badge for tests.",
            "image": f"{ISSUER}/images/{slug}.png",
            "criteria": {"narrative": "Did the thing."},
            "issuer": f"{ISSUER}/issuer.json",
        }
    return {url: (200, json.dumps(doc).encode(), "application/json") for url, doc in docs.items()}


def baked(assertion: dict[str, Any], hosted: bool = True) -> bytes:
    payload = assertion["id"] if hosted else json.dumps(assertion)
    return bake_png(make_png("#3366cc"), payload)


def make_export(
    learners: dict[str, dict[str, bytes]], extra_manifest: dict[str, list[str]] | None = None
) -> bytes:
    """A Backpack export ZIP: manifest.txt and the given files, per learner email."""
    manifest = {email: list(files) for email, files in learners.items()}
    manifest.update(extra_manifest or {})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("manifest.txt", json.dumps(manifest))
        for files in learners.values():
            for name, data in files.items():
                archive.writestr(name, data)
    return buffer.getvalue()


def fetcher(served: dict[str, tuple[int, bytes, str]]) -> MapFetcher:
    return MapFetcher(served)
