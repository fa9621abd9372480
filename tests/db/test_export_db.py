"""``export-db`` against a real MariaDB holding the Backpack's schema and generated rows."""

from __future__ import annotations

import base64
import hashlib
import logging
import zipfile
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from backpack_migrate import fullexport as fx
from backpack_migrate.backpack_db import DatabaseError
from backpack_migrate.cli import main
from backpack_migrate.domain import normalize_email
from backpack_migrate.export_db import ExportSummary, export_database
from infra.local.backpack_data import SampleDatabase
from infra.local.mariadb import MariaDBServer

pytestmark = pytest.mark.db

Export = tuple[Path, ExportSummary]


def _records(path: Path) -> dict[str, list[object]]:
    with zipfile.ZipFile(path) as archive:
        return {member: list(fx.iter_member(archive, member)) for member in fx.RECORD_MEMBERS}


def _table_rows(mariadb: MariaDBServer, database: str, table: str) -> int:
    return int(mariadb.sql(f"SELECT COUNT(*) FROM `{table}`", database).strip())


def test_every_row_arrived_or_was_left_out_for_a_stated_reason(
    mariadb: MariaDBServer, sample: SampleDatabase, sample_export: Export
) -> None:
    path, summary = sample_export
    records = _records(path)
    users = {u.id: u for u in records[fx.USERS_MEMBER]}  # type: ignore[attr-defined]
    badges = {b.id: b for b in records[fx.BADGES_MEMBER]}  # type: ignore[attr-defined]
    groups = {g.id: g for g in records[fx.GROUPS_MEMBER]}  # type: ignore[attr-defined]
    grants = {g.id: g for g in records[fx.GRANTS_MEMBER]}  # type: ignore[attr-defined]
    inactive = set(sample.inactive_users)

    assert set(users) == set(sample.users) - inactive
    assert set(badges) == {b for b, u in sample.badges.items() if u not in inactive}
    assert set(groups) == {g for g, u in sample.groups.items() if u not in inactive}
    assert set(grants) == {g for g, u in sample.grants.items() if u not in inactive}

    with zipfile.ZipFile(path) as archive:
        report = fx.read_report(archive)
        found_format = fx.parse_format(archive.read(fx.FORMAT_MEMBER))
        images = {n for n in archive.namelist() if n.startswith(fx.IMAGES_PREFIX)}
        assert found_format is not None
        assert found_format.counts == {
            "users": len(users),
            "badges": len(badges),
            "groups": len(groups),
            "grants": len(grants),
            "images": len(images),
        }
        # Each image is the Backpack's base64 text decoded, byte for byte.
        for badge in badges.values():
            if badge.image is None:
                continue
            stored = mariadb.sql(
                f"SELECT image_data FROM badge_image WHERE badge_hash = '{badge.body_hash}'"
                " ORDER BY id LIMIT 1",
                sample.database,
            ).strip()
            assert archive.read(badge.image) == base64.b64decode(stored)
            assert (
                badge.image
                == f"images/{badge.body_hash}.{'svg' if badge.media_type == 'image/svg+xml' else 'png'}"
            )
    assert report is not None
    assert images == {b.image for b in badges.values() if b.image}

    # Every table: every row read, and each either exported or left out with a reason.
    for table in ("user", "badge", "badge_image", "group", "portfolio", "bpc_session"):
        count = report.tables[table]
        assert count.read == _table_rows(mariadb, sample.database, table), table
        assert count.read == count.exported + sum(count.left_out.values()), table
    assert report.tables["user"].left_out == {"USER_INACTIVE": len(inactive)} == {"USER_INACTIVE": 1}
    assert report.inactive_users == summary.inactive_users == 1
    assert report.tables["badge_image"].left_out == {
        "BADGE_LEFT_OUT": 2,  # the inactive user's badge, the badge of no user
        "IMAGE_REPEATED": 1,
        "IMAGE_UNDECODABLE": 1,
        "IMAGE_NOT_AN_IMAGE": 1,
        "NO_SUCH_BADGE": 1,
    }
    assert report.tables["portfolio"].left_out == {
        "GROUP_LEFT_OUT": 1,
        "PORTFOLIO_REPEATED": 1,
        "NO_SUCH_GROUP": 1,
    }
    listed = {(row.table, row.id): row.problem.code for row in report.left_out}
    assert listed == {("badge", b): code for b, code in sample.left_out["badge"].items()}

    # Problems land on the record they touch.
    for badge_id, codes in sample.badge_problems.items():
        assert [p.code for p in badges[badge_id].problems] == codes, badge_id
    assert badges[min(sample.badge_problems)].body is None
    for user_id, codes in sample.user_problems.items():
        assert [p.code for p in users[user_id].problems] == codes, user_id
    for group_id, codes in sample.group_problems.items():
        assert [p.code for p in groups[group_id].problems] == codes, group_id
    clean = set(badges) - set(sample.badge_problems)
    assert all(not badges[b].problems and badges[b].body and badges[b].image for b in clean)

    # Groups keep their stored order and stale ids, lose other users' badges; portfolios travel.
    for group_id, expected in sample.group_badges.items():
        assert groups[group_id].badges == expected, group_id
    work = groups[1]
    assert work.public and not groups[2].public
    assert work.portfolio is not None and work.portfolio.title == "What I learnt at work"
    assert set(work.portfolio.stories) == {str(i) for i in work.badges[:2]}

    # Addresses: primary first, case kept, unverified flagged; a shared address has one keeper.
    for user_id, user in users.items():
        assert [e.primary for e in user.emails] == sorted((e.primary for e in user.emails), reverse=True)
        if user_id in sample.contact:
            assert user.emails[0].address == sample.contact[user_id]
    assert [(e.address, e.verified) for e in users[2].emails] == [
        ("grace@example.org", False),
        ("Grace.Hopper@Navy.example", True),
    ]
    holders: dict[str, list[int]] = {}
    for user in users.values():
        for email in user.emails:
            holders.setdefault(normalize_email(email.address), []).append(user.id)
    assert all(len(ids) == 1 for ids in holders.values())
    for address, keeper in sample.email_keepers.items():
        assert holders[address] == [keeper]
        conflict = next(c for c in report.email_conflicts if c.kept_by.user_id == keeper)
        assert conflict.reported and all(h.user_id != keeper for h in conflict.reported)

    # Grants: origin and permissions as stored, tokens as SHA-256 digests only.
    for grant_id, grant in grants.items():
        access, refresh = sample.tokens[grant_id]
        assert grant.access_token_sha256 == hashlib.sha256(access.encode()).hexdigest()
        assert grant.refresh_token_sha256 == hashlib.sha256(refresh.encode()).hexdigest()
        assert grant.permissions == ["issue"]


def test_every_kind_of_badge_travels_with_its_body_and_image(
    sample: SampleDatabase, sample_export: Export
) -> None:
    badges = {b.id: b for b in _records(sample_export[0])[fx.BADGES_MEMBER]}  # type: ignore[attr-defined]
    kinds = {sample.kinds[b] for b in badges if b in sample.kinds}
    assert {"hosted-2.0 png", "hosted-2.0 svg", "signed-2.0 png", "signed-2.0 svg", "hosted-1.0 png"} <= kinds
    assert "hosted-0.5 png" in kinds
    for badge_id, badge in badges.items():
        kind = sample.kinds.get(badge_id, "")
        if kind.startswith("signed"):
            assert badge.signature and badge.signature.count(".") == 2 and badge.endpoint is None
        elif kind.startswith("hosted"):
            assert badge.endpoint and badge.endpoint.startswith(sample.base_url) and badge.signature is None
    one_oh = next(b for b, k in sample.kinds.items() if k == "hosted-1.0 png" and b in badges)
    body = badges[one_oh].body
    assert body is not None and body["badge"]["issuer"]["origin"] == sample.base_url
    assert badges[one_oh].validated_on == "2019-03-03T10:00:00Z"


def test_no_secret_leaves_the_database(sample: SampleDatabase, sample_export: Export) -> None:
    path = sample_export[0]
    raw = path.read_bytes()
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    assert len(sample.secrets) > 50
    assert b"ada@example.org" in members[fx.USERS_MEMBER]  # the scan reads what the members hold
    for secret in sample.secrets:
        needle = secret.encode()
        assert needle not in raw, secret
        for name, data in members.items():
            assert needle not in data, (name, secret)
            # JSON would escape "/" as is; any other spelling of a token is its digest only.
            assert needle.replace(b"/", b"\\/") not in data, (name, secret)


def test_no_email_in_logs_or_output(
    mariadb: MariaDBServer,
    sample: SampleDatabase,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    assert (
        main(["export-db", "--database", mariadb.url(sample.database), "--out", str(tmp_path / "e.zip")]) == 0
    )
    said = capsys.readouterr()
    shown = (said.out + said.err + caplog.text).lower()
    assert "wrote" in shown and "user" in shown
    for email in sample.emails:
        assert normalize_email(email) not in shown, email
        assert normalize_email(email).split("@")[0] + "@" not in shown, email


def test_a_database_user_with_a_password_over_loopback(
    mariadb: MariaDBServer, sample: SampleDatabase, tmp_path: Path
) -> None:
    mariadb.sql(
        "CREATE USER IF NOT EXISTS 'reader'@'127.0.0.1' IDENTIFIED BY 'p@ss:w/rd';"
        f"GRANT SELECT ON `{sample.database}`.* TO 'reader'@'127.0.0.1';"
    )
    url = mariadb.url(sample.database, user="reader", password="p@ss:w/rd", tcp=True)
    out = tmp_path / "tcp.zip"
    assert main(["export-db", "--database", url, "--out", str(out), "--quiet"]) == 0
    assert fx.USERS_MEMBER in zipfile.ZipFile(out).namelist()


@pytest.mark.parametrize(
    "case",
    ["unreachable", "wrong password", "no such database", "not a URL", "not the Backpack"],
)
def test_unusable_input_exits_2_with_one_line(
    case: str,
    mariadb: MariaDBServer,
    sample: SampleDatabase,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    mariadb.sql(
        "CREATE USER IF NOT EXISTS 'reader'@'127.0.0.1' IDENTIFIED BY 'p@ss:w/rd';"
        f"GRANT SELECT ON `{sample.database}`.* TO 'reader'@'127.0.0.1';"
    )
    mariadb.sql(
        "DROP DATABASE IF EXISTS other_app; CREATE DATABASE other_app;"
        "CREATE TABLE other_app.user (id BIGINT PRIMARY KEY, email VARCHAR(255));"
        "CREATE TABLE other_app.badge (id BIGINT PRIMARY KEY, user_id BIGINT, body BLOB);"
    )
    closed_port = 9  # discard: nothing listens there on a test machine
    url, expected = {
        "unreachable": (f"mysql://root@127.0.0.1:{closed_port}/x", "cannot reach"),
        "wrong password": (
            mariadb.url(sample.database, user="reader", password="guess", tcp=True),
            "refused the credentials",
        ),
        "no such database": (mariadb.url("no_such_db"), "has no database 'no_such_db'"),
        "not a URL": ("postgres://somewhere/db", "must look like mysql://"),
        "not the Backpack": (
            mariadb.url("other_app"),
            "missing table(s) badge_image, group, portfolio, bpc_session",
        ),
    }[case]
    out = tmp_path / "never.zip"
    assert main(["export-db", "--database", url, "--out", str(out), "--quiet"]) == 2
    said = capsys.readouterr()
    assert said.err.count("\n") == 1 and said.err.startswith("error: ")
    assert expected in said.err
    assert "guess" not in said.err and "p@ss" not in said.err
    if case == "not the Backpack":
        assert "user.first_name" in said.err and "badge.signature" in said.err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_a_failure_midway_leaves_no_file(
    mariadb: MariaDBServer, sample: SampleDatabase, tmp_path: Path
) -> None:
    def lost(table: str, _n: int) -> None:
        if table == "group":
            raise DatabaseError("the connection was lost")

    with pytest.raises(DatabaseError):
        export_database(mariadb.url(sample.database), tmp_path / "cut.zip", progress=lost)
    assert list(tmp_path.iterdir()) == []


def test_upload_sends_the_export_to_the_exports_bucket(
    mariadb: MariaDBServer, sample: SampleDatabase, capsys: pytest.CaptureFixture[str]
) -> None:
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="exports")
        code = main(
            [
                "export-db",
                "--database",
                mariadb.url(sample.database),
                "--upload",
                "--bucket",
                "exports",
                "--key",
                "db.zip",
            ]
        )
        assert code == 0
        body = s3.get_object(Bucket="exports", Key="exports/db.zip")["Body"].read()
    assert body.startswith(b"PK")
    assert "s3://exports/exports/db.zip" in capsys.readouterr().out
