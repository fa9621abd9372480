"""The local Badgr sandbox's world for tests: a tiny issuer site, baked PNGs, signed badges, fixtures.

Hosted assertions, badge classes (with their images) and issuers are served by the issuer site
on 127.0.0.1, where the sandbox's loopback-only fetch reaches them.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import struct
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from backpack_migrate.badgr import BadgrClient
from infra.local.badgr_sandbox import BadgrSandbox
from infra.local.bakery import new_rsa_key, public_pem, sign_jws

CLIENT_ID = "backpack-migrate"
CLIENT_SECRET = "sandbox-secret-value"
REDIRECT = "http://127.0.0.1:9/oauth/callback"
LEARNER = "learner@example.org"
PASSWORD = "correct horse"
BADGE_IMAGE = b"\x89PNG\r\n\x1a\n" + b"\x00" * 24  # what issuers serve as a badge class's image


# ---------------------------------------------------------------- a tiny issuer site


@dataclass
class IssuerSite:
    documents: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def put(self, path: str, document: Any, status: int = 200) -> str:
        body = document if isinstance(document, bytes) else json.dumps(document).encode()
        self.documents[path] = (status, body)
        return self.url + path

    def badge(self, slug: str, email: str, *, revoked: bool = False, hashed: bool = True) -> dict[str, Any]:
        """A hosted Open Badges 2.0 assertion (sha256-hashed recipient with salt) and its parts."""
        salt = secrets.token_hex(8)
        self.put(f"/badges/{slug}.png", BADGE_IMAGE)  # Badgr fetches it to keep its own copy
        issuer = self.put("/issuer", {"@context": "https://w3id.org/openbadges/v2", "type": "Issuer",
                                      "id": self.url + "/issuer", "name": "Test Issuer",
                                      "url": self.url, "email": "issuer@example.org"})  # fmt: skip
        badge_class = self.put(
            f"/badges/{slug}",
            {
                "@context": "https://w3id.org/openbadges/v2",
                "type": "BadgeClass",
                "id": f"{self.url}/badges/{slug}",
                "name": f"Badge {slug}",
                "description": "A badge for tests.",
                "image": f"{self.url}/badges/{slug}.png",
                "criteria": {"narrative": "Do the thing."},
                "issuer": issuer,
            },
        )
        assertion: dict[str, Any] = {
            "@context": "https://w3id.org/openbadges/v2",
            "type": "Assertion",
            "id": f"{self.url}/assertions/{slug}",
            "recipient": {
                "type": "email",
                "hashed": True,
                "salt": salt,
                "identity": "sha256$" + hashlib.sha256((email + salt).encode()).hexdigest(),
            },
            "badge": badge_class,
            "issuedOn": "2016-05-01T00:00:00Z",
            "verification": {"type": "hosted"},
        }
        if revoked:
            assertion["revoked"] = True
        if not hashed:
            assertion["recipient"] = {"type": "email", "hashed": False, "identity": email}
        self.put(f"/assertions/{slug}", assertion)
        return assertion


def signed_badge(
    site: IssuerSite, slug: str, email: str, *, revoked_among: int = 0, listed_key: bool = True
) -> tuple[str, str]:
    """A signed 2.0 assertion for ``email``: its id and compact JWS. ``revoked_among``: put it on
    the issuer's revocation list with that many entries in all (0: not revoked)."""
    key = new_rsa_key()
    issuer_id = f"{site.url}/signer/{slug}/issuer"
    key_id = site.put(f"/signer/{slug}/key", {
        "@context": "https://w3id.org/openbadges/v2", "type": "CryptographicKey",
        "id": f"{site.url}/signer/{slug}/key", "owner": issuer_id, "publicKeyPem": public_pem(key),
    })  # fmt: skip
    assertion_id = f"urn:uuid:{secrets.token_hex(16)}"
    revocations = [f"urn:uuid:{secrets.token_hex(16)}" for _ in range(max(0, revoked_among - 1))]
    if revoked_among:
        revocations.append(assertion_id)
    revocation_list = site.put(f"/signer/{slug}/revocations", {
        "@context": "https://w3id.org/openbadges/v2", "type": "RevocationList",
        "id": f"{site.url}/signer/{slug}/revocations", "issuer": issuer_id,
        "revokedAssertions": [{"id": r, "revocationReason": "Awarded in error"} for r in revocations],
    })  # fmt: skip
    site.put(f"/signer/{slug}/issuer", {
        "@context": "https://w3id.org/openbadges/v2", "type": "Issuer", "id": issuer_id,
        "name": "Signing Issuer", "url": site.url, "email": "signer@example.org",
        "publicKey": key_id if listed_key else f"{site.url}/signer/{slug}/other-key",
        "revocationList": revocation_list,
    })  # fmt: skip
    site.put(f"/signer/{slug}/badge.png", BADGE_IMAGE)
    badge_class = site.put(f"/signer/{slug}/badge", {
        "@context": "https://w3id.org/openbadges/v2", "type": "BadgeClass",
        "id": f"{site.url}/signer/{slug}/badge", "name": f"Signed {slug}", "description": "Signed.",
        "image": f"{site.url}/signer/{slug}/badge.png", "criteria": {"narrative": "Sign."},
        "issuer": issuer_id,
    })  # fmt: skip
    payload = {
        "@context": "https://w3id.org/openbadges/v2",
        "type": "Assertion",
        "id": assertion_id,
        "recipient": {"type": "email", "hashed": False, "identity": email},
        "badge": badge_class,
        "issuedOn": "2019-02-02T09:00:00Z",
        "verification": {"type": "SignedBadge", "creator": key_id},
    }
    return assertion_id, sign_jws(payload, key)


def _site_handler(site: IssuerSite) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_GET(self) -> None:
            status, body = site.documents.get(self.path, (404, b"<h1>Not Found</h1>"))
            self.send_response(status)
            self.send_header("Content-Type", "application/json" if body[:1] == b"{" else "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


def bake_png(text: str) -> bytes:
    """A 1x1 PNG with an iTXt 'openbadges' chunk holding ``text``."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00\x00")
    itxt = b"openbadges\x00\x00\x00\x00\x00" + text.encode()
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"iTXt", itxt)
        + chunk(b"IDAT", idat)
        + (chunk(b"IEND", b""))
    )


# ---------------------------------------------------------------- running them (for fixtures)


@contextmanager
def running_site() -> Iterator[IssuerSite]:
    issuer_site = IssuerSite()
    issuer_site.server = ThreadingHTTPServer(("127.0.0.1", 0), _site_handler(issuer_site))
    issuer_site.server.daemon_threads = True
    thread = threading.Thread(target=issuer_site.server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield issuer_site
    finally:
        issuer_site.server.shutdown()
        issuer_site.server.server_close()


@contextmanager
def running_sandbox() -> Iterator[BadgrSandbox]:
    """The sandbox with the learner's account: one verified email and one not yet verified."""
    with BadgrSandbox(CLIENT_ID, CLIENT_SECRET, [REDIRECT], backoff_base=0.1) as running:
        running.add_account(LEARNER, PASSWORD, [(LEARNER, True), ("old@example.org", False)])
        yield running


def client_for(sandbox: BadgrSandbox) -> BadgrClient:
    return BadgrClient(sandbox.url, CLIENT_ID, CLIENT_SECRET, timeout=5)
