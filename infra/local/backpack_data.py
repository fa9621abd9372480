"""Generated contents for the Backpack's database (dev only): a small world and a large one.

``fill_sample(server, database, site_dir, base_url)`` writes a dozen users with every email
combination and every kind of bad row the export must survive, with really baked badges
(hosted 2.0/1.0/0.5 and signed 2.0, PNG and SVG) whose issuer documents go under ``site_dir``
(serve it with :class:`infra.local.issuer_site.IssuerSite` at ``base_url``). It returns a
:class:`SampleDatabase`: what each row should become and every secret value it stored.

``fill_bulk(server, database, users, badges)`` loads a large database for the bench with
``LOAD DATA LOCAL INFILE`` from tab-separated files written in one streaming pass.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import secrets
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from infra.local.bakery import iter_chunks, itxt_data, make_png, png_chunk
from infra.local.mariadb import MariaDBServer
from infra.local.sample_export import _BadgeClass, _Made, _Site

SAMPLE_SEED = 2012


class SampleDatabase(BaseModel):
    """What the sample database holds and what its export must show."""

    database: str
    site_dir: Path
    base_url: str
    users: dict[int, str] = Field(default_factory=dict, description="user id -> its role in the sample")
    inactive_users: list[int] = Field(default_factory=list)
    badges: dict[int, int] = Field(default_factory=dict, description="badge id -> user id (every badge row)")
    groups: dict[int, int] = Field(default_factory=dict, description="group id -> user id")
    portfolios: dict[int, int] = Field(default_factory=dict, description="portfolio id -> group id")
    grants: dict[int, int] = Field(default_factory=dict, description="grant id -> user id")
    image_rows: int = 0
    # What the export must say about the rows that are bad on purpose.
    badge_problems: dict[int, list[str]] = Field(default_factory=dict)
    user_problems: dict[int, list[str]] = Field(default_factory=dict)
    group_problems: dict[int, list[str]] = Field(default_factory=dict)
    left_out: dict[str, dict[int, str]] = Field(
        default_factory=dict, description="table -> row id -> reason code (rows listed one by one)"
    )
    group_badges: dict[int, list[int]] = Field(default_factory=dict, description="what each group must list")
    email_keepers: dict[str, int] = Field(
        default_factory=dict, description="shared address -> user keeping it"
    )
    contact: dict[int, str] = Field(default_factory=dict, description="user id -> expected first address")
    addresses: dict[int, list[tuple[str, bool, bool]]] = Field(default_factory=dict)
    secrets: list[str] = Field(default_factory=list, description="every secret value stored")
    tokens: dict[int, tuple[str, str]] = Field(default_factory=dict, description="grant id -> raw tokens")
    emails: list[str] = Field(default_factory=list, description="every address stored")
    kinds: dict[int, str] = Field(default_factory=dict, description="badge id -> hosted-2.0, signed-2.0, ...")


# --------------------------------------------------------------------------------------------
# Rows the Backpack wrote


def connect(server: MariaDBServer, database: str) -> Any:
    import pymysql

    connection = pymysql.connect(
        unix_socket=str(server.socket), user="root", database=database, charset="utf8mb4", autocommit=True
    )
    with connection.cursor() as cursor:
        # Timestamps are written in UTC, as export-db reads them, whatever the machine's zone.
        cursor.execute("SET time_zone = '+00:00'")
    return connection


def backpack_token(rng: random.Random) -> str:
    """As the Backpack made them: base64 of 24 random bytes, ``_``, the time in base 32."""
    raw = base64.b64encode(bytes(rng.getrandbits(8) for _ in range(24))).decode()
    stamp = rng.randrange(1_300_000_000_000, 1_560_000_000_000)
    digits = "0123456789abcdefghijklmnopqrstuv"
    text = ""
    while stamp:
        stamp, d = divmod(stamp, 32)
        text = digits[d] + text
    return f"{raw}_{text}"


def _secret(rng: random.Random, label: str) -> str:
    return f"{label}-{rng.getrandbits(64):016x}"


def _body_of(made: _Made, site: _Site, bc: _BadgeClass) -> dict[str, Any]:
    """The assertion as the Backpack stored it (normalized: badge and issuer objects inlined)."""
    if made.kind == "signed-2.0":
        payload = made.preimport.split(".")[1]
        doc: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    else:
        doc = json.loads((site.dir / made.assertion_id.removeprefix(site.base + "/")).read_text("utf-8"))
    if made.kind == "hosted-0.5":
        return doc
    badge_path = site.dir / bc.url.removeprefix(site.base + "/")
    badge = json.loads(badge_path.read_text("utf-8")) | {"_location": bc.url}
    issuer_url = site.issuers[bc.issuer].url
    issuer = json.loads((site.dir / issuer_url.removeprefix(site.base + "/")).read_text("utf-8"))
    issuer |= {"_location": issuer_url, "origin": site.base}
    badge["issuer"] = issuer
    body = dict(doc)
    body["badge"] = badge
    recipient = doc["recipient"]
    body["_originalRecipient"] = recipient
    body["recipient"] = recipient["identity"]
    if "salt" in recipient:
        body["salt"] = recipient["salt"]
    if "issuedOn" in doc:
        body["issued_on"] = doc["issuedOn"]
    return body


class _Filler:
    def __init__(self, server: MariaDBServer, database: str, site_dir: Path, base_url: str) -> None:
        self.rng = random.Random(SAMPLE_SEED)
        self.site = _Site(site_dir, base_url, self.rng)
        self.world = SampleDatabase(database=database, site_dir=site_dir, base_url=base_url)
        self.conn = connect(server, database)
        self.badge_id = 100
        self.image_id = 1000

    def sql(self, statement: str, params: Any = ()) -> None:
        with self.conn.cursor() as cursor:
            cursor.execute(statement, params)

    def user(
        self,
        user_id: int,
        role: str,
        primary: tuple[str, bool],
        add1: tuple[str, bool] | None = None,
        add2: tuple[str, bool] | None = None,
        *,
        active: int | None = 1,
    ) -> None:
        rng = self.rng
        codes = {
            "password": "$2a$10$" + secrets.token_urlsafe(40),
            "salt": _secret(rng, "salt"),
            "email_verification_code": _secret(rng, "verify"),
            "additional_email_1_verification_code": _secret(rng, "verify1"),
            "additional_email_2_verification_code": _secret(rng, "verify2"),
            "fb_access_token": _secret(rng, "facebook"),
            "reset_password_token": _secret(rng, "reset"),
            "delete_account_code": _secret(rng, "delete"),
        }
        reset_expires = 9_100_000_000_000 + user_id  # a number no other column holds
        self.world.secrets += [*codes.values(), str(reset_expires)]
        self.sql(
            "INSERT INTO user (id, first_name, last_name, email, email_is_verified, email_verification_code,"
            " additional_email_1, additional_email_1_is_verified, additional_email_1_verification_code,"
            " additional_email_2, additional_email_2_is_verified, additional_email_2_verification_code,"
            " last_login, active, password, salt, fb_access_token, reset_password_token,"
            " reset_password_expires,"
            " created_at, updated_at, delete_account_code_requested, delete_account_code)"
            " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
            (
                user_id,
                role.partition(":")[0].title(),
                "Learner",
                primary[0],
                primary[1],
                codes["email_verification_code"],
                add1[0] if add1 else None,
                add1[1] if add1 else 0,
                codes["additional_email_1_verification_code"],
                add2[0] if add2 else None,
                add2[1] if add2 else 0,
                codes["additional_email_2_verification_code"],
                1_500_000_000 + user_id,
                active,
                codes["password"],
                codes["salt"].encode(),
                codes["fb_access_token"],
                codes["reset_password_token"],
                reset_expires,
                1_350_000_000_000 + user_id * 1000,
                1_550_000_000_000 + user_id * 1000,
                1,
                codes["delete_account_code"],
            ),
        )
        self.world.users[user_id] = role
        stored = [(primary[0], primary[1], True)]
        stored += [(a[0], a[1], False) for a in (add1, add2) if a]
        self.world.addresses[user_id] = stored
        self.world.emails += [a for a, _, _ in stored]
        if active == 0:
            self.world.inactive_users.append(user_id)

    def badge(
        self,
        user_id: int | None,
        made: _Made | None,
        bc: _BadgeClass | None,
        awarded_to: str,
        *,
        body: bytes | None = None,
        image: bytes | None = None,
        images: int = 1,
        public: bool = False,
    ) -> int:
        """One badge row (and its image rows); ``body``/``image`` override the real ones."""
        self.badge_id += 1
        badge_id = self.badge_id
        if body is None:
            assert made is not None and bc is not None
            body = json.dumps(_body_of(made, self.site, bc), sort_keys=True).encode()
        body_hash = hashlib.sha256(body).hexdigest()
        endpoint = signature = None
        if made is not None:
            if made.kind == "signed-2.0":
                signature = made.preimport
            else:
                endpoint = made.assertion_id
            self.world.kinds[badge_id] = f"{made.kind} {made.media}"
        self.sql(
            "INSERT INTO badge (id, user_id, awarded_to_email_address, endpoint, signature, image_path, body,"
            " body_hash, validated_on, public_path, public) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
            (
                badge_id,
                user_id,
                awarded_to,
                endpoint,
                signature,
                f"/images/badge/{body_hash}.png",
                body,
                body_hash,
                "2019-03-03 10:00:00",
                f"share-{badge_id}" if public else None,
                public,
            ),
        )
        if image is None and made is not None:
            image = base64.b64encode(made.data)
        if image is not None:
            for _ in range(images):
                self.image_id += 1
                self.sql(
                    "INSERT INTO badge_image (id, badge_hash, image_data, baked) VALUES (%s,%s,%s,1)",
                    (self.image_id, body_hash, image),
                )
                self.world.image_rows += 1
        if user_id is not None:
            self.world.badges[badge_id] = user_id
        return badge_id

    def group(
        self,
        group_id: int,
        user_id: int,
        name: str,
        badges: Any,
        *,
        public: bool,
        portfolio: dict[str, Any] | None = None,
        raw_badges: bytes | None = None,
    ) -> None:
        self.sql(
            "INSERT INTO `group` (id, user_id, name, url, public, badges) VALUES (%s,%s,%s,%s,%s,%s)",
            (group_id, user_id, name, f"group-{group_id}", public, raw_badges or json.dumps(badges).encode()),
        )
        self.world.groups[group_id] = user_id
        if portfolio is not None:
            stories = portfolio.get("stories", {})
            self.sql(
                "INSERT INTO portfolio (id, group_id, url, title, subtitle, preamble, stories)"
                " VALUES (%s,%s,%s,%s,%s,%s,%s)",
                (
                    portfolio["id"],
                    group_id,
                    f"portfolio-{portfolio['id']}",
                    portfolio.get("title"),
                    portfolio.get("subtitle"),
                    portfolio.get("preamble"),
                    stories if isinstance(stories, bytes) else json.dumps(stories).encode(),
                ),
            )
            self.world.portfolios[int(portfolio["id"])] = group_id

    def grant(self, grant_id: int, user_id: int, origin: str, permissions: str = "issue") -> None:
        access, refresh = backpack_token(self.rng), backpack_token(self.rng)
        self.sql(
            "INSERT INTO bpc_session (id, user_id, access_time, access_token, refresh_token, permissions,"
            " origin) VALUES (%s,%s,%s,%s,%s,%s,%s)",
            (grant_id, user_id, 1_560_000_000 + grant_id, access, refresh, permissions, origin),
        )
        self.world.grants[grant_id] = user_id
        self.world.tokens[grant_id] = (access, refresh)
        self.world.secrets += [access, refresh]


def fill_sample(server: MariaDBServer, database: str, site_dir: Path, base_url: str) -> SampleDatabase:
    """The small world (the database must hold the Backpack's empty schema)."""
    f = _Filler(server, database, site_dir, base_url)
    site = f.site
    site.add_issuer("acme", "Acme Academy", "2.0")
    site.add_issuer("signer", "Signed Skills Institute", "2.0", signed=True)
    site.add_issuer("legacy", "Legacy Learning Lab", "1.0")
    site.add_issuer("oldschool", "Old School Web Makers", "0.5")
    site.add_class("acme", "python-basics", "Python Basics", "#1f77b4")
    site.add_class("acme", "team-player", "Team Player", "#ff7f0e")
    site.add_class("signer", "crypto-101", "Cryptography 101", "#2ca02c")
    site.add_class("legacy", "web-literacy", "Web Literacy", "#d62728")
    site.add_class("oldschool", "webmaker", "Webmaker Mentor", "#9467bd")
    acme, team = site.issuers["acme"].classes
    (crypto,) = site.issuers["signer"].classes
    (legacy,) = site.issuers["legacy"].classes
    (old,) = site.issuers["oldschool"].classes
    w = f.world

    # Users: every email combination, shared and case-variant addresses across users.
    f.user(
        1,
        "ada: all three addresses, two verified",
        ("ada@example.org", True),
        ("ada.lovelace@work.example", True),
        ("ada@old.example", False),
    )
    f.user(
        2,
        "grace: unverified primary, verified additional",
        ("grace@example.org", False),
        ("Grace.Hopper@Navy.example", True),
    )
    f.user(
        3,
        "linus: another user's primary as a case variant, his own repeated",
        ("linus@example.org", True),
        ("ADA@EXAMPLE.ORG", True),
        ("Linus@Example.org", False),
    )
    f.user(
        4,
        "margaret: an unverified case variant of grace's verified address",
        ("margaret@example.org", True),
        None,
        ("grace.hopper@navy.example", False),
    )
    f.user(
        5,
        "gone: inactive, with everything",
        ("gone@example.org", True),
        ("gone2@example.org", True),
        active=0,
    )
    f.user(
        6,
        "katherine: a verified additional address another user has as unverified primary",
        ("katherine@example.org", True),
        ("shared@example.org", True),
    )
    f.user(
        7,
        "dorothy: loses her unverified primary to katherine",
        ("Shared@Example.org", False),
        ("dorothy@example.org", True),
    )
    f.user(8, "mallory: bad rows of every kind", ("mallory@example.org", True))
    f.user(9, "nobody: no badges, one address", ("nobody@example.org", True))
    f.user(
        10,
        "annie: active never set (NULL) counts as active",
        ("annie@example.org", False),
        ("annie@work.example", False),
        active=None,
    )
    f.user(
        11,
        "joan: both additional addresses unverified",
        ("joan@example.org", True),
        ("joan@one.example", False),
        ("joan@two.example", False),
    )
    w.email_keepers = {"ada@example.org": 1, "grace.hopper@navy.example": 2, "shared@example.org": 6}
    w.user_problems = {
        3: ["EMAIL_KEPT_BY_OTHER_USER", "EMAIL_REPEATED"],
        4: ["EMAIL_KEPT_BY_OTHER_USER"],
        7: ["EMAIL_KEPT_BY_OTHER_USER"],
    }
    w.contact = {
        1: "ada@example.org",
        2: "grace@example.org",
        3: "linus@example.org",
        7: "dorothy@example.org",
    }

    # Ada: hosted 2.0 PNG and SVG, signed 2.0 to her second (verified) address, 1.0, 0.5.
    a1 = f.badge(1, site.hosted2(acme, "ada@example.org"), acme, "ada@example.org", public=True)
    a2 = f.badge(1, site.hosted2(team, "ada@example.org", media="svg"), team, "ada@example.org")
    a3 = f.badge(1, site.signed2(crypto, "ada.lovelace@work.example"), crypto, "ada.lovelace@work.example")
    a4 = f.badge(1, site.hosted1(legacy, "ada@example.org"), legacy, "ada@example.org")
    a5 = f.badge(1, site.hosted05(old, "ada@example.org"), old, "ada@example.org")
    a6 = f.badge(
        1, site.signed2(crypto, "ada@example.org", media="svg", hashed=False), crypto, "ada@example.org"
    )
    f.group(
        1,
        1,
        "Work",
        [a1, a3, 999_999],
        public=True,
        portfolio={
            "id": 1,
            "title": "What I learnt at work",
            "subtitle": "2018-2019",
            "preamble": "Badges from my job.",
            "stories": {str(a1): "My first Python course.", str(a3): "Signed, sealed, delivered."},
        },
    )
    f.group(2, 1, "Private things", [a4, a5, a6], public=False)
    f.group(3, 1, "Empty", [], public=True)
    w.group_badges.update({1: [a1, a3, 999_999], 2: [a4, a5, a6], 3: []})
    f.grant(1, 1, "https://moodle.example")
    f.grant(2, 1, "https://wordpress.example", "issue")

    # Grace: a badge to her verified additional address; a 1.0 unhashed one to her primary.
    g1 = f.badge(2, site.hosted2(acme, "grace.hopper@navy.example"), acme, "Grace.Hopper@Navy.example")
    g2 = f.badge(2, site.hosted1(legacy, "grace@example.org", hashed=False), legacy, "grace@example.org")
    f.group(4, 2, "Navy", [g2, g1], public=True, portfolio={"id": 2, "title": "Navy days"})
    w.group_badges[4] = [g2, g1]
    f.grant(3, 2, "https://issuer.example")

    # Linus, Margaret, Katherine, Dorothy, Annie, Joan: a badge each.
    f.badge(3, site.hosted2(team, "linus@example.org"), team, "linus@example.org")
    f.badge(4, site.hosted2(team, "margaret@example.org", media="svg"), team, "margaret@example.org")
    f.badge(6, site.hosted2(acme, "shared@example.org"), acme, "shared@example.org")
    f.badge(7, site.hosted2(acme, "dorothy@example.org", hashed=False), acme, "dorothy@example.org")
    f.badge(10, site.hosted2(acme, "annie@example.org"), acme, "annie@example.org")
    f.badge(11, site.hosted05(old, "joan@example.org", hashed=False), old, "joan@example.org")

    # Gone (inactive): badges, a group with its portfolio and a grant, all left out.
    z1 = f.badge(5, site.hosted2(acme, "gone@example.org"), acme, "gone@example.org")
    f.group(5, 5, "Gone's group", [z1], public=True, portfolio={"id": 3, "title": "Gone"})
    f.grant(4, 5, "https://moodle.example")

    # Mallory: every kind of bad row.
    m_body = f.badge(
        8, None, None, "mallory@example.org", body=b"{not json", image=base64.b64encode(make_png("#000", 8))
    )
    m_noimg = f.badge(
        8, site.hosted2(acme, "mallory@example.org"), acme, "mallory@example.org", image=b"", images=0
    )
    m_b64 = f.badge(
        8, site.hosted2(team, "mallory@example.org"), team, "mallory@example.org", image=b"%%% not base64 %%%"
    )
    m_text = f.badge(
        8,
        site.hosted2(team, "mallory@example.org"),
        team,
        "mallory@example.org",
        image=base64.b64encode(b"just some text, not a picture"),
    )
    m_two = f.badge(8, site.hosted2(acme, "mallory@example.org"), acme, "mallory@example.org", images=2)
    m_list = f.badge(
        8,
        None,
        None,
        "mallory@example.org",
        body=b'["an", "array"]',
        image=base64.b64encode(make_png("#111", 8)),
    )
    w.badge_problems = {
        m_body: ["BODY_NOT_JSON"],
        m_noimg: ["IMAGE_MISSING"],
        m_b64: ["IMAGE_UNDECODABLE"],
        m_text: ["IMAGE_NOT_AN_IMAGE"],
        m_two: ["IMAGE_REPEATED"],
        m_list: ["BODY_NOT_JSON"],
    }
    f.group(
        6,
        8,
        "Not mine",
        [m_body, a2, g1, 888_888],
        public=True,
        portfolio={"id": 4, "title": "Stolen", "stories": b"{broken"},
    )
    f.group(7, 8, "Broken list", None, public=False, raw_badges=b"[1, 2")
    f.group(8, 8, "Odd ids", [m_two, "12x", None, str(m_noimg)], public=False)
    w.group_badges.update({6: [m_body, 888_888], 7: [], 8: [m_two, m_noimg]})
    w.group_problems = {
        6: ["GROUP_LISTS_OTHERS_BADGES", "STORIES_NOT_JSON"],
        7: ["GROUP_BADGES_NOT_JSON"],
        8: ["GROUP_BADGE_ID_INVALID"],
    }
    # Rows that belong to nothing: a badge with no user, an image of no badge, a second
    # portfolio of a group, a portfolio of no group (the Backpack's foreign keys were not
    # always on: its migrations ran with them off).
    orphan = f.badge(None, site.hosted2(acme, "nobody@example.org"), acme, "nobody@example.org")
    w.left_out["badge"] = {orphan: "NO_SUCH_USER"}
    f.sql("INSERT INTO portfolio (id, group_id, title, stories) VALUES (5, 4, 'A second page', NULL)")
    w.portfolios[5] = 4
    w.group_problems[4] = ["PORTFOLIO_REPEATED"]
    f.sql("SET FOREIGN_KEY_CHECKS=0")
    f.sql(
        "INSERT INTO badge_image (id, badge_hash, image_data, baked) VALUES (5000, 'no-such-hash', 'AAAA', 0)"
    )
    w.image_rows += 1
    f.sql("INSERT INTO portfolio (id, group_id, title, stories) VALUES (6, 4242, 'No group', NULL)")
    w.portfolios[6] = 4242
    f.sql("SET FOREIGN_KEY_CHECKS=1")
    site.finish()
    f.conn.close()
    return w


# --------------------------------------------------------------------------------------------
# The large database, for the bench


def _tsv(value: object) -> str:
    """One field of LOAD DATA's default format (tab-separated, backslash escapes, \\N for NULL)."""
    if value is None:
        return "\\N"
    text = value if isinstance(value, str) else str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def _write_rows(path: Path, rows: Iterator[tuple[object, ...]]) -> None:
    with path.open("w", encoding="utf-8", buffering=1 << 20) as out:
        for row in rows:
            out.write("\t".join(_tsv(v) for v in row))
            out.write("\n")


def fill_bulk(
    server: MariaDBServer, database: str, users: int, badges: int, *, seed: int = 7
) -> dict[str, int]:
    """``users`` users and ``badges`` badges (with baked PNGs), a group per user and a grant per
    ten users, loaded with ``LOAD DATA LOCAL INFILE``. Returns the rows of each table."""
    rng = random.Random(seed)
    chunks = iter_chunks(make_png("#336699", 12))
    head = b"\x89PNG\r\n\x1a\n" + png_chunk(*chunks[0])
    tail = b"".join(png_chunk(kind, data) for kind, data in chunks[1:])
    base = "https://issuer.example"
    counts = {
        "user": users,
        "badge": badges,
        "badge_image": badges,
        "group": users,
        "portfolio": users // 2,
        "bpc_session": users // 10,
    }

    def user_rows() -> Iterator[tuple[object, ...]]:
        for i in range(1, users + 1):
            add1 = f"learner{i}@work.example" if i % 3 == 0 else None
            yield (
                i,
                "Learner",
                str(i),
                f"learner{i}@example.org",
                i % 5 != 0,
                add1,
                add1 is not None,
                f"$2a$10${rng.getrandbits(128):032x}",
                1_350_000_000_000 + i,
                1_550_000_000_000 + i,
                0 if i % 50 == 0 else 1,
            )

    def badge_body(j: int, user: int) -> str:
        return json.dumps(
            {
                "uid": str(j),
                "recipient": f"learner{user}@example.org",
                "issued_on": "2018-05-01",
                "verify": {"type": "hosted", "url": f"{base}/assertions/{j}.json"},
                "badge": {
                    "name": f"Badge {j % 100}",
                    "image": f"{base}/b/{j % 100}.png",
                    "criteria": f"{base}/c",
                    "issuer": {"name": "Example Issuer", "origin": base, "_location": f"{base}/issuer.json"},
                    "_location": f"{base}/b/{j % 100}.json",
                },
            },
            separators=(",", ":"),
        )

    def badge_and_image_rows() -> Iterator[tuple[tuple[object, ...], tuple[object, ...]]]:
        for j in range(1, badges + 1):
            user = (j - 1) % users + 1
            body = badge_body(j, user)
            body_hash = hashlib.sha256(body.encode()).hexdigest()
            png = head + png_chunk(b"iTXt", itxt_data(f"{base}/assertions/{j}.json")) + tail
            yield (
                (
                    j,
                    user,
                    f"learner{user}@example.org",
                    f"{base}/assertions/{j}.json",
                    f"/images/badge/{body_hash}.png",
                    body,
                    body_hash,
                    "2019-01-01 00:00:00",
                    0,
                ),
                (j, body_hash, base64.b64encode(png).decode(), 1),
            )

    def group_rows() -> Iterator[tuple[object, ...]]:
        for i in range(1, users + 1):
            held = list(range(i, badges + 1, users))[:5]
            yield (i, i, f"Group of {i}", f"g{i}", i % 2, json.dumps(held))

    def portfolio_rows() -> Iterator[tuple[object, ...]]:
        for i in range(1, users + 1, 2):
            yield (i, i, f"p{i}", "My badges", "so far", "Things I learnt.", json.dumps({str(i): "A story."}))

    def grant_rows() -> Iterator[tuple[object, ...]]:
        for k in range(1, users // 10 + 1):
            yield (
                k,
                k * 10,
                1_560_000_000 + k,
                backpack_token(rng),
                backpack_token(rng),
                "issue",
                "https://moodle.example",
            )

    with tempfile.TemporaryDirectory(prefix="bpbulk-") as folder:
        tmp = Path(folder)
        _write_rows(tmp / "user.tsv", user_rows())
        with (
            (tmp / "badge.tsv").open("w", encoding="utf-8", buffering=1 << 20) as b_out,
            (tmp / "image.tsv").open("w", encoding="utf-8", buffering=1 << 20) as i_out,
        ):
            for badge_row, image_row in badge_and_image_rows():
                b_out.write("\t".join(_tsv(v) for v in badge_row) + "\n")
                i_out.write("\t".join(_tsv(v) for v in image_row) + "\n")
        _write_rows(tmp / "group.tsv", group_rows())
        _write_rows(tmp / "portfolio.tsv", portfolio_rows())
        _write_rows(tmp / "grant.tsv", grant_rows())
        script = f"""
SET FOREIGN_KEY_CHECKS=0; SET UNIQUE_CHECKS=0;
LOAD DATA LOCAL INFILE '{tmp}/user.tsv' INTO TABLE user (id, first_name, last_name, email, email_is_verified,
  additional_email_1, additional_email_1_is_verified, password, created_at, updated_at, active);
LOAD DATA LOCAL INFILE '{tmp}/badge.tsv' INTO TABLE badge (id, user_id, awarded_to_email_address, endpoint,
  image_path, body, body_hash, validated_on, public);
LOAD DATA LOCAL INFILE '{tmp}/image.tsv' INTO TABLE badge_image (id, badge_hash, image_data, baked);
LOAD DATA LOCAL INFILE '{tmp}/group.tsv' INTO TABLE `group` (id, user_id, name, url, public, badges);
LOAD DATA LOCAL INFILE '{tmp}/portfolio.tsv' INTO TABLE portfolio (id, group_id, url, title, subtitle,
  preamble, stories);
LOAD DATA LOCAL INFILE '{tmp}/grant.tsv' INTO TABLE bpc_session (id, user_id, access_time, access_token,
  refresh_token, permissions, origin);
SET FOREIGN_KEY_CHECKS=1; SET UNIQUE_CHECKS=1;
"""
        done = subprocess.run(
            [*server.client_args(database), "--local-infile=1"],
            input=script.encode(),
            capture_output=True,
            check=False,
            timeout=3600,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"loading the bulk data failed: {done.stderr.decode(errors='replace')[-2000:]}"
            )
    return counts
