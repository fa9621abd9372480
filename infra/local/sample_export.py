"""The demo Backpack export and the small world around it (issuer sites, Badgr accounts, expectations).

``build_demo(out_dir, issuer_base_url)`` writes:

- ``export.zip``: about 20 manifest entries and 100 really baked badges (PNG and SVG; hosted 2.0,
  hosted 1.0 baked as JSON, hosted 0.5, signed 2.0) with deliberate problems;
- ``site/``: the issuers' documents (issuers, badge classes, assertions, keys, revocation lists,
  images, criteria pages) and ``site/statuses.json``, served by :class:`IssuerSite`;
- ``expectations.json``: the :class:`DemoWorld`, i.e. the final state every listed file should
  reach and what each Badgr account should hold at the end.

The hosted URLs embed ``issuer_base_url``, so start the site first::

    site = IssuerSite(out_dir / "site").start()
    world = build_demo(out_dir, site.url)

``write_large_export`` streams a big export (thousands of learners) to disk for benchmarks.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import uuid
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import BaseModel, Field

from backpack_migrate.domain import BadgeState
from infra.local.bakery import (
    bake_png,
    bake_svg,
    iter_chunks,
    itxt_data,
    make_png,
    make_svg,
    new_rsa_key,
    png_chunk,
    public_pem,
    sign_jws,
    tamper_jws,
)

V2_CONTEXT = "https://w3id.org/openbadges/v2"
SALT_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
DEMO_SEED = 2019


# --------------------------------------------------------------------------------------------
# The world's description


class BadgrEmail(BaseModel):
    email: str
    verified: bool = True
    primary: bool = False


class BadgrAccount(BaseModel):
    username: str
    password: str
    first_name: str
    last_name: str = "Learner"
    emails: list[BadgrEmail]


class DemoLearner(BaseModel):
    email: str  # exactly as written in the manifest
    account: str  # username of the Badgr account this learner signs in with


class ExpectedBadge(BaseModel):
    email: str  # manifest key
    file: str  # file name in the manifest
    kind: str  # hosted-2.0 | hosted-1.0 | hosted-0.5 | signed-2.0 | none
    media: str  # png | svg | other
    state: BadgeState
    reason: str
    assertion_id: str | None = None  # hosted URL, or the signed assertion's id
    badge_name: str | None = None
    issuer_name: str | None = None
    recipient: str | None = None  # the email the badge was issued to


class HeldBadge(BaseModel):
    assertion_id: str
    badge_name: str
    issuer_name: str
    state: BadgeState  # imported | already_in_badgr | pending


class DemoWorld(BaseModel):
    zip_path: Path
    site_dir: Path
    expectations_path: Path
    issuer_base_url: str
    learners: list[DemoLearner]
    accounts: list[BadgrAccount]
    expected: list[ExpectedBadge]
    # username -> assertions (URL or compact JWS) the demo imports into Badgr before the migration
    preimport: dict[str, list[str]] = Field(default_factory=dict)
    # username -> what Badgr holds at the end (imported, already there, or pending email confirmation)
    holdings: dict[str, list[HeldBadge]] = Field(default_factory=dict)

    def expected_for(self, email: str, file: str) -> ExpectedBadge:
        for badge in self.expected:
            if badge.email == email and badge.file == file:
                return badge
        raise KeyError((email, file))

    def counts(self) -> dict[str, int]:
        return dict(Counter(str(b.state) for b in self.expected))

    def held_ids(self, username: str, *, include_pending: bool = False) -> set[str]:
        """The assertion ids Badgr should hold for ``username`` (and pending ones if asked)."""
        return {
            h.assertion_id
            for h in self.holdings.get(username, [])
            if include_pending or h.state != BadgeState.PENDING
        }


# --------------------------------------------------------------------------------------------
# Issuer documents


def hash_recipient(email: str, salt: str) -> str:
    return "sha256$" + hashlib.sha256((email + salt).encode("utf-8")).hexdigest()


@dataclass
class _BadgeClass:
    issuer: str
    slug: str
    name: str
    color: str
    url: str
    image_url: str
    png: bytes


@dataclass
class _Issuer:
    slug: str
    name: str
    url: str  # id of the issuer profile
    version: str
    key: rsa.RSAPrivateKey | None = None
    key_url: str | None = None
    revocation_url: str | None = None
    revoked: list[dict[str, str]] = field(default_factory=list)
    gone: bool = False
    classes: list[_BadgeClass] = field(default_factory=list)


@dataclass
class _Made:
    data: bytes
    media: str
    kind: str
    assertion_id: str
    preimport: str  # what a Badgr import by URL/JWS would be given
    badge_name: str
    issuer_name: str


def write_document(site_dir: Path, path: str, content: Any) -> None:
    """Put one document of an issuer site on disk: bytes, text, or JSON for anything else."""
    target = site_dir / path
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        target.write_bytes(content)
    elif isinstance(content, str):
        target.write_text(content, "utf-8")
    else:
        target.write_text(json.dumps(content, indent=2), "utf-8")


class _Site:
    """Writes the issuers' documents under ``site_dir`` with URLs under ``base``."""

    def __init__(self, site_dir: Path, base: str, rng: random.Random) -> None:
        self.dir = site_dir
        self.base = base.rstrip("/")
        self.rng = rng
        self.statuses: dict[str, int] = {}
        self.issuers: dict[str, _Issuer] = {}
        self.counter = 0

    def url(self, path: str) -> str:
        return f"{self.base}/{path.lstrip('/')}"

    def write(self, path: str, content: Any) -> None:
        write_document(self.dir, path, content)

    def salt(self) -> str:
        return "".join(self.rng.choice(SALT_ALPHABET) for _ in range(16))

    def next_id(self) -> str:
        self.counter += 1
        return f"{self.counter:04d}-{uuid.UUID(int=self.rng.getrandbits(128), version=4).hex[:12]}"

    # issuers and badge classes ----------------------------------------------------------

    def add_issuer(
        self, slug: str, name: str, version: str, *, signed: bool = False, gone: bool = False
    ) -> None:
        issuer = _Issuer(
            slug=slug, name=name, url=self.url(f"{slug}/issuer.json"), version=version, gone=gone
        )
        self.issuers[slug] = issuer
        if gone:
            self.statuses[f"/{slug}/"] = 404
            return
        if version == "2.0":
            doc: dict[str, Any] = {
                "@context": V2_CONTEXT,
                "type": "Issuer",
                "id": issuer.url,
                "name": name,
                "url": self.url(f"{slug}/"),
                "email": f"badges@{slug}.example.org",
            }
            if signed:
                issuer.key = new_rsa_key()
                issuer.key_url = self.url(f"{slug}/key.json")
                issuer.revocation_url = self.url(f"{slug}/revocations.json")
                doc["publicKey"] = issuer.key_url
                doc["revocationList"] = issuer.revocation_url
                self.write(
                    f"{slug}/key.json",
                    {
                        "@context": V2_CONTEXT,
                        "type": "CryptographicKey",
                        "id": issuer.key_url,
                        "owner": issuer.url,
                        "publicKeyPem": public_pem(issuer.key),
                    },
                )
        else:
            doc = {"name": name, "url": self.url(f"{slug}/"), "email": f"badges@{slug}.example.org"}
        self.write(f"{slug}/issuer.json", doc)
        self.write(f"{slug}/index.html", f"<!doctype html><title>{name}</title><h1>{name}</h1>")

    def add_class(self, issuer_slug: str, slug: str, name: str, color: str) -> None:
        issuer = self.issuers[issuer_slug]
        png = make_png(color, 48)
        bc = _BadgeClass(
            issuer=issuer_slug,
            slug=slug,
            name=name,
            color=color,
            url=self.url(f"{issuer_slug}/badges/{slug}.json"),
            image_url=self.url(f"{issuer_slug}/images/{slug}.png"),
            png=png,
        )
        issuer.classes.append(bc)
        if issuer.gone:
            return
        criteria = self.url(f"{issuer_slug}/criteria/{slug}.html")
        self.write(f"{issuer_slug}/images/{slug}.png", png)
        self.write(
            f"{issuer_slug}/criteria/{slug}.html",
            f"<!doctype html><title>{name}</title><p>Earned by completing {name}.</p>",
        )
        if issuer.version == "2.0":
            doc: dict[str, Any] = {
                "@context": V2_CONTEXT,
                "type": "BadgeClass",
                "id": bc.url,
                "name": name,
                "description": f"Awarded for {name.lower()}.",
                "image": bc.image_url,
                "criteria": {"id": criteria, "narrative": f"Complete {name}."},
                "issuer": issuer.url,
            }
        else:
            doc = {
                "name": name,
                "description": f"Awarded for {name.lower()}.",
                "image": bc.image_url,
                "criteria": criteria,
                "issuer": issuer.url,
            }
        if issuer.version != "0.5":
            self.write(f"{issuer_slug}/badges/{slug}.json", doc)

    def finish(self) -> None:
        for issuer in self.issuers.values():
            if issuer.revocation_url:
                self.write(
                    f"{issuer.slug}/revocations.json",
                    {
                        "@context": V2_CONTEXT,
                        "id": issuer.revocation_url,
                        "type": "RevocationList",
                        "issuer": issuer.url,
                        "revokedAssertions": issuer.revoked,
                    },
                )
        self.write("statuses.json", self.statuses)

    # badges -------------------------------------------------------------------------------

    def _recipient2(self, email: str, hashed: bool) -> dict[str, Any]:
        if not hashed:
            return {"type": "email", "hashed": False, "identity": email}
        salt = self.salt()
        return {"type": "email", "hashed": True, "salt": salt, "identity": hash_recipient(email, salt)}

    def _image(
        self, bc: _BadgeClass, payload: str, media: str, *, json_text: str | None, chunk: str
    ) -> bytes:
        if media == "svg":
            return bake_svg(make_svg(bc.color, bc.name[:10]), json_text, payload).encode("utf-8")
        return bake_png(bc.png, payload, chunk=chunk)

    def hosted2(
        self,
        bc: _BadgeClass,
        email: str,
        *,
        hashed: bool = True,
        media: str = "png",
        revoked: bool = False,
        expires: str | None = None,
    ) -> _Made:
        issuer = self.issuers[bc.issuer]
        aid = self.next_id()
        url = self.url(f"{bc.issuer}/assertions/{aid}.json")
        doc: dict[str, Any] = {
            "@context": V2_CONTEXT,
            "type": "Assertion",
            "id": url,
            "recipient": self._recipient2(email, hashed),
            "badge": bc.url,
            "verification": {"type": "hosted"},
            "issuedOn": f"2018-{self.rng.randint(1, 12):02d}-{self.rng.randint(1, 28):02d}T10:00:00+00:00",
        }
        if expires:
            doc["expires"] = expires
        if revoked:
            doc["revoked"] = True
            doc["revocationReason"] = "Awarded in error."
        self.write(f"{bc.issuer}/assertions/{aid}.json", doc)
        text = json.dumps(doc)
        data = self._image(bc, url, media, json_text=text, chunk="iTXt")
        return _Made(data, media, "hosted-2.0", url, url, bc.name, issuer.name)

    def hosted1(self, bc: _BadgeClass, email: str, *, hashed: bool = True, chunk: str = "iTXt") -> _Made:
        """A 1.0 hosted assertion, baked as its JSON (as 1.0 tools did)."""
        issuer = self.issuers[bc.issuer]
        aid = self.next_id()
        url = self.url(f"{bc.issuer}/assertions/{aid}.json")
        recipient: dict[str, Any] = {"type": "email", "hashed": hashed}
        if hashed:
            recipient["salt"] = self.salt()
            recipient["identity"] = hash_recipient(email, recipient["salt"])
        else:
            recipient["identity"] = email
        doc = {
            "uid": aid,
            "recipient": recipient,
            "badge": bc.url,
            "verify": {"type": "hosted", "url": url},
            "issuedOn": 1_400_000_000 + self.rng.randint(0, 60_000_000),
        }
        self.write(f"{bc.issuer}/assertions/{aid}.json", doc)
        data = bake_png(bc.png, json.dumps(doc), chunk=chunk)
        return _Made(data, "png", "hosted-1.0", url, url, bc.name, issuer.name)

    def hosted05(self, bc: _BadgeClass, email: str, *, hashed: bool = True) -> _Made:
        """A 0.5 assertion (badge and issuer embedded), hosted at a URL baked into the image."""
        issuer = self.issuers[bc.issuer]
        aid = self.next_id()
        url = self.url(f"{bc.issuer}/assertions/{aid}.json")
        doc: dict[str, Any] = {
            "recipient": email,
            "issued_on": f"2013-{self.rng.randint(1, 12):02d}-{self.rng.randint(1, 28):02d}",
            "badge": {
                "version": "0.5.0",
                "name": bc.name,
                "image": bc.image_url,
                "description": f"Awarded for {bc.name.lower()}.",
                "criteria": self.url(f"{bc.issuer}/criteria/{bc.slug}.html"),
                "issuer": {
                    "origin": self.base,
                    "name": issuer.name,
                    "org": issuer.name,
                    "contact": f"badges@{bc.issuer}.example.org",
                },
            },
        }
        if hashed:
            doc["salt"] = self.salt()
            doc["recipient"] = hash_recipient(email, doc["salt"])
        self.write(f"{bc.issuer}/assertions/{aid}.json", doc)
        data = bake_png(bc.png, url)
        return _Made(data, "png", "hosted-0.5", url, url, bc.name, issuer.name)

    def signed2(
        self,
        bc: _BadgeClass,
        email: str,
        *,
        hashed: bool = True,
        media: str = "png",
        tampered: bool = False,
        revoked: bool = False,
    ) -> _Made:
        issuer = self.issuers[bc.issuer]
        assert issuer.key is not None and issuer.key_url is not None
        aid = f"urn:uuid:{uuid.UUID(int=self.rng.getrandbits(128), version=4)}"
        payload: dict[str, Any] = {
            "@context": V2_CONTEXT,
            "type": "Assertion",
            "id": aid,
            "recipient": self._recipient2(email, hashed),
            "badge": bc.url,
            "verification": {"type": "SignedBadge", "creator": issuer.key_url},
            "issuedOn": f"2019-{self.rng.randint(1, 6):02d}-{self.rng.randint(1, 28):02d}T09:00:00+00:00",
        }
        jws = sign_jws(payload, issuer.key)
        if tampered:
            payload["issuedOn"] = "2015-01-01T00:00:00+00:00"
            jws = tamper_jws(jws, {"issuedOn": payload["issuedOn"]})
        if revoked:
            issuer.revoked.append({"id": aid, "revocationReason": "Awarded in error."})
        # As the reference bakery does: a signed SVG carries the JWS in both the attribute and the CDATA.
        data = self._image(bc, jws, media, json_text=jws, chunk="iTXt")
        return _Made(data, media, "signed-2.0", aid, jws, bc.name, issuer.name)


# --------------------------------------------------------------------------------------------
# The demo


PEOPLE = [
    "ada",
    "grace",
    "alan",
    "barbara",
    "edsger",
    "ken",
    "margaret",
    "donald",
    "john",
    "frances",
    "linus",
    "pat",
    "mallory",
    "dennis",
    "radia",
    "tim",
    "hedy",
    "katherine",
    "annie",
]
BADGES_PER_KEY = 5

# (person, what) for the deliberate problems; every other slot gets a good badge.
SPECIAL = [
    ("ada", "already_in_badgr"),
    ("grace", "issuer_gone"),
    ("alan", "revoked_hosted"),
    ("barbara", "revoked_410"),
    ("edsger", "expired"),
    ("ken", "tampered_signed"),
    ("ken", "revoked_signed"),
    ("margaret", "nothing_baked"),
    ("donald", "missing_file"),
    ("john", "not_an_image"),
    ("frances", "empty_file"),
    ("mallory", "recipient_mismatch"),
]
GOOD_KINDS = [
    "hosted2-png",
    "hosted2-svg",
    "signed2-png",
    "hosted1-json",
    "signed2-svg",
    "hosted2-png",
    "hosted05",
    "hosted1-text",
]


def _accounts() -> tuple[list[BadgrAccount], dict[str, str]]:
    """Badgr accounts, and manifest key (normalized) -> username."""
    accounts: list[BadgrAccount] = []
    owner: dict[str, str] = {}
    for person in PEOPLE:
        email = f"{person}@example.org"
        if person == "pat":
            # Pat signed up to Badgr with another address; the export's address is unconfirmed.
            username = "pat.primary@example.net"
            emails = [
                BadgrEmail(email=username, verified=True, primary=True),
                BadgrEmail(email=email, verified=False),
            ]
        else:
            username = email
            emails = [BadgrEmail(email=email, verified=True, primary=True)]
        accounts.append(
            BadgrAccount(
                username=username,
                password=f"demo-{person}-pass-2019",
                first_name=person.capitalize(),
                emails=emails,
            )
        )
        owner[email] = username
    return accounts, owner


def build_demo(
    out_dir: Path, issuer_base_url: str, extra_learners: int = 0, *, demo_learners: bool = True
) -> DemoWorld:
    """Write the demo export, its issuer site and its expectations under ``out_dir``.

    ``extra_learners`` adds that many more learners, each with a Badgr account and good badges
    only (for runs that want volume, such as the chaos run); ``demo_learners=False`` leaves the
    demo's own learners (and their deliberate problems) out.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    site_dir = out_dir / "site"
    rng = random.Random(DEMO_SEED)
    site = _Site(site_dir, issuer_base_url, rng)

    site.add_issuer("acme", "Acme Academy", "2.0")
    site.add_issuer("openu", "Open University of Badges", "2.0")
    site.add_issuer("signer", "Signed Skills Institute", "2.0", signed=True)
    site.add_issuer("legacy", "Legacy Learning Lab", "1.0")
    site.add_issuer("oldschool", "Old School Web Makers", "0.5")
    site.add_issuer("gone", "Vanished Venture Academy", "2.0", gone=True)
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
    class_names = {
        "acme": ["Python Basics", "Data Wrangling", "Team Player"],
        "openu": ["Open Science", "Peer Reviewer"],
        "signer": ["Cryptography 101", "Secure Coding"],
        "legacy": ["Web Literacy", "HTML Hacker"],
        "oldschool": ["Webmaker Mentor"],
        "gone": ["Lost Art"],
    }
    n = 0
    for slug, names in class_names.items():
        for name in names:
            site.add_class(slug, name.lower().replace(" ", "-"), name, palette[n % len(palette)])
            n += 1

    def cls(slug: str, i: int = 0) -> _BadgeClass:
        classes = site.issuers[slug].classes
        return classes[i % len(classes)]

    accounts, owner = _accounts()
    keys = [f"{p}@example.org" for p in PEOPLE]
    keys.insert(keys.index("linus@example.org"), "Linus@Example.org")  # listed twice, other case
    for i in range(extra_learners):
        email = f"learner{i:03d}@example.org"
        accounts.append(
            BadgrAccount(
                username=email,
                password=f"generated-{i:03d}-pass",
                first_name=f"Learner {i}",
                emails=[BadgrEmail(email=email, verified=True, primary=True)],
            )
        )
        owner[email] = email
        keys.append(email)
    specials: dict[str, list[str]] = {}
    for person, what in SPECIAL:
        specials.setdefault(f"{person}@example.org", []).append(what)
    if not demo_learners:
        keys = [key for key in keys if key.startswith("learner")]
        specials.clear()

    learners: list[DemoLearner] = []
    expected: list[ExpectedBadge] = []
    manifest: dict[str, list[str]] = {}
    members: list[tuple[str, bytes, int]] = []
    preimport: dict[str, list[str]] = {}
    holdings: dict[str, list[HeldBadge]] = {}
    file_no = 0
    good_no = 0

    for key in keys:
        email = key.lower()
        username = owner[email]
        learners.append(DemoLearner(email=key, account=username))
        todo = specials.pop(email, []) if key == email else []
        files: list[str] = []
        for slot in range(BADGES_PER_KEY):
            file_no += 1
            what = todo[slot] if slot < len(todo) else "good"
            hashed = file_no % 4 != 0  # most recipients hashed, some plain
            made: _Made | None = None
            state = BadgeState.IMPORTED
            reason = "A valid badge issued to this learner."
            raw: bytes | None = None
            name_ext = "png"
            recipient = email
            if what in {"good", "already_in_badgr"}:
                kind = GOOD_KINDS[good_no % len(GOOD_KINDS)]
                good_no += 1
                if what == "already_in_badgr":
                    kind = "hosted2-png"
                made = _good_badge(site, kind, cls, good_no, email, hashed)
                if what == "already_in_badgr":
                    preimport.setdefault(username, []).append(made.preimport)
                    state = BadgeState.ALREADY_IN_BADGR
                    reason = "The learner imported this badge into Badgr before the migration."
                elif email == "pat@example.org":
                    state = BadgeState.PENDING
                    reason = "Issued to an address the learner has not confirmed in Badgr."
            elif what == "issuer_gone":
                made = site.hosted2(cls("gone"), email, hashed=hashed)
                state, reason = (
                    BadgeState.REJECTED,
                    "The issuer's site is gone: the hosted assertion answers 404.",
                )
            elif what == "revoked_hosted":
                made = site.hosted2(cls("acme", 1), email, hashed=hashed, revoked=True)
                state, reason = BadgeState.REJECTED, "The hosted assertion says it is revoked."
            elif what == "revoked_410":
                made = site.hosted1(cls("legacy", 1), email, hashed=hashed)
                site.statuses[made.assertion_id.removeprefix(site.base)] = 410
                state, reason = BadgeState.REJECTED, "The hosted assertion answers 410 Gone (revoked)."
            elif what == "expired":
                made = site.hosted2(
                    cls("openu", 1), email, hashed=hashed, expires="2019-01-31T00:00:00+00:00"
                )
                state, reason = BadgeState.REJECTED, "The badge expired on 2019-01-31."
            elif what == "tampered_signed":
                made = site.signed2(cls("signer"), email, hashed=hashed, tampered=True)
                state, reason = (
                    BadgeState.REJECTED,
                    "The signed badge was edited after signing: bad signature.",
                )
            elif what == "revoked_signed":
                made = site.signed2(cls("signer", 1), email, hashed=hashed, revoked=True)
                state, reason = (
                    BadgeState.REJECTED,
                    "The issuer's revocation list (one entry) lists this badge.",
                )
            elif what == "recipient_mismatch":
                recipient = "someone.else@example.org"
                made = site.hosted2(cls("openu"), recipient, hashed=hashed)
                state, reason = BadgeState.REJECTED, "Issued to another email address: Badgr refuses it."
            elif what == "nothing_baked":
                raw = make_png("#777777", 48)
                state, reason = BadgeState.UNREADABLE, "A PNG with no badge baked into it."
            elif what == "missing_file":
                state, reason = BadgeState.UNREADABLE, "Listed in the manifest, but not in the ZIP."
            elif what == "not_an_image":
                raw = b"%PDF-1.4\n% A certificate, not a badge image.\n%%EOF\n"
                state, reason = BadgeState.UNREADABLE, "Not a PNG or SVG image."
            elif what == "empty_file":
                raw = b""
                state, reason = BadgeState.UNREADABLE, "An empty file."
            else:  # pragma: no cover - SPECIAL and this chain go together
                raise AssertionError(what)
            if made is not None:
                raw = made.data
                name_ext = made.media
            file_name = f"badges/{file_no:03d}-{what.replace('_', '-')}.{name_ext}"
            files.append(file_name)
            if raw is not None:
                members.append(
                    (file_name, raw, zipfile.ZIP_STORED if name_ext == "png" else zipfile.ZIP_DEFLATED)
                )
            expected.append(
                ExpectedBadge(
                    email=key,
                    file=file_name,
                    kind=made.kind if made else "none",
                    media=name_ext if made or what == "nothing_baked" else "other",
                    state=state,
                    reason=reason,
                    assertion_id=made.assertion_id if made else None,
                    badge_name=made.badge_name if made else None,
                    issuer_name=made.issuer_name if made else None,
                    recipient=recipient if made else None,
                )
            )
            if made is not None and state in (
                BadgeState.IMPORTED,
                BadgeState.ALREADY_IN_BADGR,
                BadgeState.PENDING,
            ):
                holdings.setdefault(username, []).append(
                    HeldBadge(
                        assertion_id=made.assertion_id,
                        badge_name=made.badge_name,
                        issuer_name=made.issuer_name,
                        state=state,
                    )
                )
        manifest[key] = files
    assert not specials, specials
    site.finish()

    zip_path = out_dir / "export.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.writestr("manifest.txt", json.dumps(manifest, indent=2), compress_type=zipfile.ZIP_DEFLATED)
        for name, data, method in members:
            zf.writestr(name, data, compress_type=method)

    world = DemoWorld(
        zip_path=zip_path,
        site_dir=site_dir,
        expectations_path=out_dir / "expectations.json",
        issuer_base_url=site.base,
        learners=learners,
        accounts=accounts,
        expected=expected,
        preimport=preimport,
        holdings=holdings,
    )
    world.expectations_path.write_text(world.model_dump_json(indent=2), "utf-8")
    return world


def _good_badge(site: _Site, kind: str, cls: Any, n: int, email: str, hashed: bool) -> _Made:
    if kind == "hosted2-png":
        return site.hosted2(cls("acme", n), email, hashed=hashed)
    if kind == "hosted2-svg":
        return site.hosted2(cls("openu", n), email, hashed=hashed, media="svg")
    if kind == "signed2-png":
        return site.signed2(cls("signer", n), email, hashed=hashed)
    if kind == "signed2-svg":
        return site.signed2(cls("signer", n), email, hashed=hashed, media="svg")
    if kind == "hosted1-json":
        return site.hosted1(cls("legacy", n), email, hashed=hashed)
    if kind == "hosted1-text":
        return site.hosted1(cls("legacy", n), email, hashed=hashed, chunk="tEXt")
    if kind == "hosted05":
        return site.hosted05(cls("oldschool", n), email, hashed=hashed)
    raise ValueError(kind)


def load_world(path: Path) -> DemoWorld:
    """Read ``expectations.json`` back."""
    return DemoWorld.model_validate_json(Path(path).read_text("utf-8"))


# --------------------------------------------------------------------------------------------
# Large exports for benchmarks


def write_large_export(
    path: Path,
    learners: int,
    badges: int,
    issuer_base_url: str,
    issuers: int = 200,
    *,
    svg_every: int = 5,
) -> None:
    """Stream an export of ``learners`` x ``badges`` hosted-2.0 bakes to ``path``, member by member.

    Each issuer has one PNG and one SVG template; only the baked URL changes from badge to badge.
    Badge ``j`` belongs to learner ``j % learners`` and issuer ``j % issuers``; its URL is
    ``{issuer_base_url}/i{issuer}/assertions/{j}.json``.
    """
    base = issuer_base_url.rstrip("/")
    rng = random.Random(badges * 31 + learners)
    png_parts: list[tuple[bytes, bytes]] = []
    svg_templates: list[str] = []
    for k in range(issuers):
        color = f"#{rng.randrange(0x1000000):06x}"
        chunks = iter_chunks(make_png(color, 24))
        head = b"\x89PNG\r\n\x1a\n" + png_chunk(*chunks[0])
        tail = b"".join(png_chunk(kind, data) for kind, data in chunks[1:])
        png_parts.append((head, tail))
        svg_templates.append(make_svg(color, f"I{k}"))

    def name_of(j: int) -> str:
        return f"badges/{j:07d}.{'svg' if svg_every and j % svg_every == svg_every - 1 else 'png'}"

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", allowZip64=True) as zf:
        for j in range(badges):
            k = j % issuers
            url = f"{base}/i{k}/assertions/{j}.json"
            name = name_of(j)
            if name.endswith(".svg"):
                data = bake_svg(svg_templates[k], None, url).encode("utf-8")
                zf.writestr(name, data, compress_type=zipfile.ZIP_DEFLATED)
            else:
                head, tail = png_parts[k]
                zf.writestr(name, head + png_chunk(b"iTXt", itxt_data(url)) + tail)
        info = zipfile.ZipInfo("manifest.txt")
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w", force_zip64=True) as manifest:
            manifest.write(b"{")
            for i in range(learners):
                files = [name_of(j) for j in range(i, badges, learners)]
                sep = b"," if i else b""
                manifest.write(sep + json.dumps(f"learner{i}@example.org").encode() + b":")
                manifest.write(json.dumps(files).encode())
            manifest.write(b"}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the demo export, or a large one for benchmarks.")
    parser.add_argument("out", type=Path)
    parser.add_argument("--issuer-base-url", default="http://127.0.0.1:8765")
    parser.add_argument("--large", nargs=2, type=int, metavar=("LEARNERS", "BADGES"))
    args = parser.parse_args(argv)
    if args.large:
        write_large_export(args.out, args.large[0], args.large[1], args.issuer_base_url)
        print(args.out)
    else:
        world = build_demo(args.out, args.issuer_base_url)
        print(world.zip_path, world.counts())


if __name__ == "__main__":
    main()
